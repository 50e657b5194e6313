"""Did you mean: the names spelled like a mistyped one (a recipe key, a param, a file)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_SUGGESTIONS = 3


def close_names(word: str, names: Iterable[str], cutoff: float = 0.7) -> list[str]:
    """The names spelled most like `word` (a typo of it), best first: at most three, and only
    those about as close as the best (`temprature` -> temperature, not also top_p)."""
    matches = difflib.get_close_matches(word, list(names), n=MAX_SUGGESTIONS, cutoff=cutoff)
    if not matches:
        return []
    best = similarity(word, matches[0])
    return [name for name in matches if similarity(word, name) >= best - 0.1]


def similarity(word: str, name: str) -> float:
    """How alike two spellings are, 0 to 1 (difflib's ratio: 0.95 for one letter left out of ten)."""
    return difflib.SequenceMatcher(None, word, name).ratio()
