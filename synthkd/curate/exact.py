"""Exact duplicates after normalising case, whitespace and punctuation."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)


def normalise(text: str) -> str:
    """Lowercase, Unicode-normalised, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def exact_duplicates(texts: Iterable[str]) -> dict[int, int]:
    """{index of a duplicate: index of the first row with the same normalised text}."""
    first: dict[bytes, int] = {}
    duplicates = {}
    for index, text in enumerate(texts):
        key = hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=16).digest()
        if key in first:
            duplicates[index] = first[key]
        else:
            first[key] = index
    return duplicates
