"""Split documents into chunks of at most N tokens (semchunk), keeping character offsets."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from synthkd.teachers.config import EMBEDDED_MODEL


@lru_cache(maxsize=4)
def token_counter(tokenizer: str) -> Callable[[str], int]:
    """Count tokens with a Hugging Face tokenizer (a Hub id, a folder, or `embedded`)."""
    from transformers import AutoTokenizer

    if tokenizer == EMBEDDED_MODEL:
        from synthkd.cache import cache_root
        from synthkd.teachers.embedded import embedded_gguf

        gguf = embedded_gguf()
        converted = cache_root() / "models" / gguf.stem  # read in 0.1 s, where the GGUF takes 5 s
        if (converted / "tokenizer.json").is_file():
            loaded = AutoTokenizer.from_pretrained(converted)
        else:
            loaded = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        loaded = AutoTokenizer.from_pretrained(
            str(Path(tokenizer).expanduser()) if Path(tokenizer).exists() else tokenizer
        )
    return lambda text: len(loaded.encode(text, add_special_tokens=False))


def chunk_text(text: str, max_tokens: int, count_tokens: Callable[[str], int], overlap: int = 0):
    """(chunk, start, end) triples; semchunk splits at the largest semantic unit that fits."""
    import semchunk

    chunker = semchunk.chunkerify(count_tokens, max_tokens)
    chunks, offsets = chunker(text, offsets=True, overlap=overlap or None)
    return [(chunk, start, end) for chunk, (start, end) in zip(chunks, offsets, strict=True)]
