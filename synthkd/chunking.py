"""Split documents into chunks of at most N tokens (semchunk), keeping character offsets."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from synthkd.model_source import local_or_hub
from synthkd.teachers.config import EMBEDDED_MODEL
from synthkd.teachers.embedded import embedded_tokenizer


@lru_cache(maxsize=4)
def token_counter(tokenizer: str) -> Callable[[str], int]:
    """Count tokens with a Hugging Face tokenizer (a Hub id, a folder, or `embedded`)."""
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
