"""Near duplicates by MinHash LSH over word or character shingles (datasketch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from synthkd.curate.exact import normalise
from synthkd.extras import require

if TYPE_CHECKING:
    from datasketch import LeanMinHash


def shingles(text: str, kind: str = "word", size: int = 3) -> set[bytes]:
    """Overlapping n-grams of words or characters of the normalised text (the text itself if shorter)."""
    normal = normalise(text)
    units: Sequence[str] = normal.split() if kind == "word" else normal
    joiner = " " if kind == "word" else ""
    if len(units) <= size:
        return {joiner.join(units).encode("utf-8")}
    return {joiner.join(units[i : i + size]).encode("utf-8") for i in range(len(units) - size + 1)}


def minhash_duplicates(
    texts: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    kind: str = "word",
    size: int = 3,
    seed: int = 1,
) -> dict[int, tuple[int, float]]:
    """{index of a near duplicate: (index of the earlier kept row it matches, estimated Jaccard)}.

    Rows are taken in order; a row is compared, through the LSH index, only with rows kept before
    it, and dropped when the estimated Jaccard similarity of their shingle sets reaches `threshold`.
    """
    # Imported here: datasketch pulls in scipy (0.6 s), which every recipe would pay at startup.
    datasketch = require("datasketch", "curate", "MinHash dedup")

    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = datasketch.MinHash.bulk(
        [list(shingles(t, kind, size)) for t in texts], num_perm=num_perm, seed=seed
    )
    kept: dict[int, LeanMinHash] = {}
    duplicates = {}
    for index, signature in enumerate(signatures):
        lean = datasketch.LeanMinHash(signature)
        best: tuple[int, float] | None = None
        for key in lsh.query(lean):
            other = int(key)
            similarity = lean.jaccard(kept[other])
            if similarity >= threshold and (best is None or (similarity, -other) > (best[1], -best[0])):
                best = (other, similarity)
        if best is None:
            lsh.insert(str(index), lean)
            kept[index] = lean
        else:
            duplicates[index] = best
    return duplicates
