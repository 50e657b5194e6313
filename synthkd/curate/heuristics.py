"""Cheap text-quality signals: repetition, language, token counts."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from synthkd.extras import require

_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of the text's word n-grams that repeat an earlier one (0 for varied text, near 1 for loops)."""
    words = tokens(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(count - 1 for count in counts.values()) / len(grams)


@lru_cache(maxsize=1)
def _detector():
    lingua = require("lingua", "curate", "language identification")
    # Low-accuracy mode loads far smaller models and is plenty for telling whole answers apart.
    return lingua.LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode().build()


def language_of(text: str) -> str | None:
    """ISO 639-1 code of the text's language (lingua), or None when it cannot tell."""
    language = _detector().detect_language_of(text)
    return language.iso_code_639_1.name.lower() if language is not None else None
