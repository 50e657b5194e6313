"""Benchmark decontamination by word n-gram overlap (the GPT-3 paper's 13-grams).

An evaluation text of at least `n` words contributes its n-grams; a shorter one (a short question)
contributes itself whole, as long as it has at least `min_words` words. A row is contaminated when
any of its own n-grams, or any contiguous run of words, equals one of those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


@dataclass
class NgramIndex:
    """Hashed n-grams of evaluation texts, with the source of each for the report."""

    n: int = 13
    min_words: int = 8
    grams: dict[tuple[str, ...], str] = field(default_factory=dict)
    short_lengths: set[int] = field(default_factory=set)

    def add(self, text: str, source: str) -> None:
        tokens = words(text)
        if len(tokens) >= self.n:
            for start in range(len(tokens) - self.n + 1):
                self.grams.setdefault(tuple(tokens[start : start + self.n]), source)
        elif len(tokens) >= self.min_words:
            self.grams.setdefault(tuple(tokens), source)
            self.short_lengths.add(len(tokens))

    def add_all(self, items: Iterable[tuple[str, str]]) -> None:
        for text, source in items:
            self.add(text, source)

    def match(self, text: str) -> tuple[str, str] | None:
        """(source, the matching words) of the first overlap with the evaluation texts, or None."""
        tokens = words(text)
        for length in (self.n, *sorted(self.short_lengths)):
            for start in range(len(tokens) - length + 1):
                gram = tuple(tokens[start : start + length])
                source = self.grams.get(gram)
                if source is not None:
                    return source, " ".join(gram)
        return None
