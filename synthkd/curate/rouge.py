"""ROUGE-L near-duplicate search, with the same decisions as the `rouge-score` package.

Self-Instruct drops a new task whose ROUGE-L F1 with any task already in the pool is 0.7 or more.
Computed naively that is an LCS for every pair. Here each text is tokenised once (rouge-score's
tokeniser) into integer ids, and two cheap upper bounds on the LCS prune nearly every pair:
LCS <= min(len_a, len_b), and LCS <= the multiset overlap of the two token bags, which an inverted
index computes for the whole pool at once with numpy. Only pairs whose bound reaches the threshold
get an exact LCS, by the bit-parallel algorithm of Allison-Dix / Hyyrö on Python integers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_EPSILON = 1e-9  # bounds are compared with a little slack; exact F1 decides


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation (no stemming): lowercase ASCII letters and digits."""
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def f1_from_lcs(lcs: int, candidate_length: int, reference_length: int) -> float:
    """F1 exactly as rouge-score computes it, so that decisions at the threshold agree bit for bit."""
    if lcs == 0 or candidate_length == 0 or reference_length == 0:
        return 0.0
    precision = lcs / candidate_length
    recall = lcs / reference_length
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common subsequence, bit-parallel over `b` (Hyyrö 2004)."""
    if len(a) < len(b):
        a, b = b, a
    masks: dict[int, int] = {}
    for position, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        matches = row & masks.get(token, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(b) - row.bit_count()


class _Postings:
    """A growable (pool row, count) list for one token, kept as numpy arrays."""

    __slots__ = ("rows", "counts", "size")

    def __init__(self) -> None:
        self.rows = np.empty(8, dtype=np.int32)
        self.counts = np.empty(8, dtype=np.int32)
        self.size = 0

    def append(self, row: int, count: int) -> None:
        if self.size == len(self.rows):
            self.rows = np.resize(self.rows, 2 * self.size)
            self.counts = np.resize(self.counts, 2 * self.size)
        self.rows[self.size] = row
        self.counts[self.size] = count
        self.size += 1


class RougeLPool:
    """A growing set of texts that answers "is this text ROUGE-L-close to any of them?"."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._vocabulary: dict[str, int] = {}
        self._tokens: list[list[int]] = []
        self._lengths = np.empty(64, dtype=np.int32)
        self._postings: dict[int, _Postings] = {}
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._tokens)

    def _ids(self, text: str, grow: bool) -> list[int]:
        ids = []
        for token in rouge_tokens(text):
            token_id = self._vocabulary.get(token)
            if token_id is None:
                # A token the pool has never seen cannot match; -1 keeps its place in the sequence.
                token_id = len(self._vocabulary) if grow else -1
                if grow:
                    self._vocabulary[token] = token_id
            ids.append(token_id)
        return ids

    def add(self, text: str) -> None:
        ids = self._ids(text, grow=True)
        row = len(self._tokens)
        self._tokens.append(ids)
        if row == len(self._lengths):
            self._lengths = np.resize(self._lengths, 2 * row)
        self._lengths[row] = len(ids)
        for token_id, count in Counter(ids).items():
            self._postings.setdefault(token_id, _Postings()).append(row, count)

    def max_f1(self, text: str, threshold: float = 0.0) -> float:
        """The best ROUGE-L F1 of `text` against the pool; exact when it is >= `threshold`."""
        ids = self._ids(text, grow=False)
        size = len(self._tokens)
        if not ids or size == 0:
            return 0.0
        overlap = np.zeros(size, dtype=np.int32)
        for token_id, count in Counter(ids).items():
            postings = self._postings.get(token_id)
            if postings is not None:
                rows = postings.rows[: postings.size]
                np.add.at(overlap, rows, np.minimum(postings.counts[: postings.size], count))
        lengths = self._lengths[:size]
        bound = np.minimum(overlap, np.minimum(lengths, len(ids)))
        upper = 2.0 * bound / (lengths + len(ids))
        promising = np.flatnonzero(upper >= threshold - _EPSILON)
        best = 0.0
        # Best bounds first: the first pair that reaches the threshold ends the search.
        for row in promising[np.argsort(-upper[promising], kind="stable")]:
            # The bound and the exact F1 are rounded differently; the slack keeps a row whose F1 ties
            # `best` to the last bit from being skipped, so max_f1 stays exactly rouge-score's maximum.
            if upper[row] + _EPSILON < best:
                break
            reference = self._tokens[row]
            score = f1_from_lcs(lcs_length(ids, reference), len(ids), len(reference))
            best = max(best, score)
            if threshold > 0 and best >= threshold:
                break
        return best

    def is_near_duplicate(self, text: str, threshold: float = 0.7) -> bool:
        return self.max_f1(text, threshold) >= threshold

    def filter_candidates(
        self, candidates: Iterable[str], threshold: float = 0.7, add_kept: bool = True
    ) -> list[bool]:
        """Keep (True) or drop each candidate in order; kept ones join the pool when `add_kept`."""
        decisions = []
        for candidate in candidates:
            keep = not self.is_near_duplicate(candidate, threshold)
            decisions.append(keep)
            if keep and add_kept:
                self.add(candidate)
        return decisions
