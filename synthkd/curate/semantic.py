"""Semantic duplicates: cosine similarity of normalised embeddings, searched with faiss.

A row is a duplicate when its similarity to an earlier *kept* row reaches the threshold. Each row's
neighbours above the threshold are found in one batched range search, exact (`IndexFlatIP`) up to
`exact_max` rows and approximate above it (an inverted-file index probing the nearest
`IVF_PROBES` of about sqrt(n) clusters, or HNSW's top-k), then rows are decided in order.
"""

from __future__ import annotations

import numpy as np

from synthkd.extras import require

IVF_PROBES = 16  # clusters searched per query: recall against exact search stays near 1 for near-duplicates
HNSW_NEIGHBOURS = 32  # neighbours fetched per row from an HNSW index
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128


def choose_index(rows: int, index: str, exact_max: int) -> str:
    if index != "auto":
        return index
    return "flat" if rows <= exact_max else "ivf"


def neighbours(vectors: np.ndarray, threshold: float, index: str) -> list[list[tuple[int, float]]]:
    """For each row, the (row, similarity) pairs at or above `threshold`, itself excluded."""
    faiss = require("faiss", "curate", "similarity search (faiss)")
    count, dim = vectors.shape
    if index in ("flat", "ivf"):
        if index == "flat":
            searcher = faiss.IndexFlatIP(dim)
        else:
            clusters = max(1, int(np.sqrt(count)))
            searcher = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, clusters, faiss.METRIC_INNER_PRODUCT)
            sample = vectors[np.random.default_rng(0).permutation(count)[: clusters * 64]]
            searcher.train(sample)
            searcher.nprobe = min(IVF_PROBES, clusters)
        searcher.add(vectors)
        limits, distances, labels = searcher.range_search(vectors, threshold - 1e-6)
        return [
            [(int(labels[j]), float(distances[j])) for j in range(limits[i], limits[i + 1]) if labels[j] != i]
            for i in range(count)
        ]
    hnsw = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    hnsw.add(vectors)
    distances, labels = hnsw.search(vectors, min(HNSW_NEIGHBOURS, count))
    return [
        [
            (int(label), float(score))
            for label, score in zip(labels[i], distances[i], strict=True)
            if label >= 0 and label != i and score >= threshold - 1e-6
        ]
        for i in range(count)
    ]


def semantic_duplicates(
    vectors: np.ndarray, threshold: float = 0.95, index: str = "auto", exact_max: int = 20_000
) -> dict[int, tuple[int, float]]:
    """{index of a duplicate: (earlier kept row it is closest to, cosine similarity)}."""
    if len(vectors) == 0:
        return {}
    found = neighbours(
        np.ascontiguousarray(vectors, dtype=np.float32),
        threshold,
        choose_index(len(vectors), index, exact_max),
    )
    duplicates: dict[int, tuple[int, float]] = {}
    for row, candidates in enumerate(found):
        earlier_kept = [
            (other, score) for other, score in candidates if other < row and other not in duplicates
        ]
        if earlier_kept:
            duplicates[row] = max(earlier_kept, key=lambda pair: (pair[1], -pair[0]))
    return duplicates
