"""A static (model2vec) encoder distilled from a sentence-transformers model, made once, offline.

Distilling runs the model once over every token of its vocabulary (`[CLS] token [SEP]`, mean-pooled),
reduces the vectors to `PCA_DIMS` dimensions and weighs each token down by its estimated frequency
(Zipf's law on the vocabulary order, smooth inverse frequency `SIF`), as model2vec's `distill` does.
Encoding is then a table look-up and a mean per text: about 40x faster than the transformer on a CPU,
at some cost in quality that bench/dedup.py measures.

We distil here rather than with `model2vec.distill`: that needs model2vec's `distill` extra
(skeletoken, and a transformers older than the one synthkd needs), while the forward pass, a PCA
and a weight per token need only torch and transformers, already in the `curate` extra. The result
is a `model2vec.StaticModel` folder, kept under the cache folder (`encoders/<name>`, written
whole or not at all) and named by `RECIPE`, so that changing how it is made makes a new one.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from synthkd.extras import require
from synthkd.paths import cache_root

if TYPE_CHECKING:
    import numpy as np
    from model2vec import StaticModel

PCA_DIMS = 256
SIF = 1e-4  # model2vec's default smooth-inverse-frequency coefficient
BATCH = 1024  # tokens per forward pass while distilling
# Names how the vectors are made: part of the folder name and of the embedding cache's key.
RECIPE = f"model2vec-mean-pca{PCA_DIMS}-sif{SIF:g}"


def encoder_dir(model: str) -> Path:
    """Where the static encoder distilled from `model` is kept."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    return cache_root() / "encoders" / f"{safe}--{RECIPE}"


def load_static(model: str, source: str) -> StaticModel:
    """The static encoder for `model` (whose files are at `source`), distilled on first use."""
    model2vec = require("model2vec", "curate", "the static encoder")
    folder = encoder_dir(model)
    if not (folder / "config.json").exists():
        print(
            f"distilling a static encoder from {model} (once; about 10-20 s on 2 cores) into {folder}",
            file=sys.stderr,
            flush=True,
        )
        distil(source, folder)
    return model2vec.StaticModel.from_pretrained(str(folder), normalize=True, force_download=False)


def distil(source: str, folder: Path, only: Sequence[int] | None = None) -> None:
    """Distil the static encoder of the transformer at `source` into `folder` (see the module).
    Written into a temporary folder beside it and renamed: a killed run leaves no half encoder,
    and of two processes distilling at once, the first to finish wins. `only`: distil just these
    token ids, the others left zero (a test's encoder for a few texts, in a second, not 15)."""
    import numpy as np

    model2vec = require("model2vec", "curate", "the static encoder")
    tokenizers = require("tokenizers", "curate", "the static encoder")
    tokenizer = tokenizers.Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
    ids = np.arange(tokenizer.get_vocab_size()) if only is None else np.unique(np.asarray(only))
    projected = _pca(_token_vectors(source, tokenizer, ids))
    vectors = np.zeros((tokenizer.get_vocab_size(), projected.shape[1]), dtype=np.float32)
    vectors[ids] = projected
    vectors = _weighted(vectors)
    static = model2vec.StaticModel(
        vectors=vectors.astype("float16"),
        tokenizer=tokenizer,
        config={"model_type": "model2vec", "architectures": ["StaticModel"], "recipe": RECIPE},
        normalize=True,
        base_model_name=Path(source).name,
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        static.save_pretrained(str(work))
        try:
            os.rename(work, folder)
        except OSError:
            if not (folder / "config.json").exists():  # not another process's finished encoder
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _token_vectors(source: str, tokenizer, token_ids: np.ndarray) -> np.ndarray:
    """Each token's output vector, mean-pooled over `[CLS] token [SEP]`."""
    import numpy as np

    torch = require("torch", "curate", "the static encoder")
    transformers = require("transformers", "curate", "the static encoder")
    model = transformers.AutoModel.from_pretrained(source).eval()
    first, last = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if first is None or last is None:
        first, last = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    out = np.zeros((len(token_ids), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(token_ids), BATCH):
            ids = torch.from_numpy(token_ids[start : start + BATCH]).long()
            edges = [torch.full_like(ids, token) for token in (first, last) if token is not None]
            batch = torch.stack([*edges[:1], ids, *edges[1:]], dim=1)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            out[start : start + len(ids)] = hidden.mean(dim=1).float().numpy()
    return np.nan_to_num(out)


def _pca(vectors: np.ndarray) -> np.ndarray:
    """The vectors projected onto their first `PCA_DIMS` principal components."""
    import numpy as np

    centred = vectors - vectors.mean(axis=0)
    dims = min(PCA_DIMS, vectors.shape[1])
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    components = eigenvectors[:, ::-1][:, :dims]
    projected = centred @ components
    # A fixed sign per component, so that distilling twice gives the same vectors.
    signs = np.sign(projected[np.abs(projected).argmax(axis=0), np.arange(dims)])
    return projected * np.where(signs == 0, 1, signs)


def _weighted(vectors: np.ndarray) -> np.ndarray:
    """Frequent tokens weigh less (SIF), with frequencies estimated by Zipf's law on the vocabulary
    order, as model2vec does."""
    import numpy as np

    inverse_rank = 1 / np.arange(2, len(vectors) + 2)
    probability = inverse_rank / inverse_rank.sum()
    return vectors * (SIF / (SIF + probability))[:, None]
