"""Semantic duplicates: cosine similarity of normalised embeddings, searched with faiss.

A row is a duplicate when its similarity to an earlier *kept* row reaches the threshold. The rows'
neighbours above the threshold are found by range searches of `chunk` rows at a time, exact
(`IndexFlatIP`) up to `exact_max` rows and approximate above it (an inverted-file index probing
the nearest `IVF_PROBES` of about 4 sqrt(n) clusters, or HNSW's top-k), and each chunk's rows are
decided in order before the next is searched: the same decisions as one search over all rows, in
memory bounded by the vectors and one chunk's results.

The vectors may be float16 (`embeddings.embed_float16`): the inverted-file index then stores them
as float16 too (`QT_fp16`, exactly the values given, at half the memory of float32); only the rows
being added or searched are widened to float32, a chunk at a time.
"""

from __future__ import annotations

import numpy as np

from synthkd.extras import require

IVF_PROBES = 16  # clusters searched per query: recall against exact search stays near 1 for near-duplicates
IVF_CLUSTERS_PER_SQRT = 4  # clusters = 4 sqrt(n): a query scans ~16/(4 sqrt(n)) of the rows
IVF_TRAIN_PER_CLUSTER = 40  # training sample per cluster (faiss asks at least 39)
IVF_TRAIN_ITERATIONS = 10
HNSW_NEIGHBOURS = 32  # neighbours fetched per row from an HNSW index
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128
CHUNK = 65_536  # rows added or searched at a time


def choose_index(rows: int, index: str, exact_max: int) -> str:
    if index != "auto":
        return index
    return "flat" if rows <= exact_max else "ivf"


def _float32(vectors: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(vectors[start:stop], dtype=np.float32)


def build_index(vectors: np.ndarray, index: str, chunk: int = CHUNK):
    """A faiss index of inner products holding `vectors`, added `chunk` rows at a time."""
    faiss = require("faiss", "curate", "similarity search (faiss)")
    count, dim = vectors.shape
    if index == "flat":
        searcher = faiss.IndexFlatIP(dim)
    elif index == "hnsw":
        searcher = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        searcher.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        clusters = max(1, min(int(IVF_CLUSTERS_PER_SQRT * np.sqrt(count)), count // IVF_TRAIN_PER_CLUSTER))
        quantizer = faiss.IndexFlatIP(dim)  # the faiss wrapper keeps it alive with the index
        if vectors.dtype == np.float16:
            searcher = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, clusters, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        else:
            searcher = faiss.IndexIVFFlat(quantizer, dim, clusters, faiss.METRIC_INNER_PRODUCT)
        searcher.cp.niter = IVF_TRAIN_ITERATIONS
        sample = np.sort(np.random.default_rng(0).permutation(count)[: clusters * IVF_TRAIN_PER_CLUSTER])
        searcher.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        searcher.nprobe = min(IVF_PROBES, clusters)
    for start in range(0, count, chunk):
        searcher.add(_float32(vectors, start, start + chunk))
    return searcher


def _chunk_neighbours(searcher, queries: np.ndarray, threshold: float, index: str, start: int):
    """(row, [(earlier row, similarity), ...]) for the rows of this chunk with an earlier neighbour
    at or above `threshold`; rows are numbered from `start`."""
    if index == "hnsw":
        distances, labels = searcher.search(queries, min(HNSW_NEIGHBOURS, searcher.ntotal))
        rows = np.arange(start, start + len(queries))[:, None]
        hits = (labels >= 0) & (labels < rows) & (distances >= threshold - 1e-6)
        for offset in np.flatnonzero(hits.any(axis=1)):
            row = start + int(offset)
            yield (
                row,
                [
                    (int(label), float(score))
                    for label, score in zip(
                        labels[offset][hits[offset]], distances[offset][hits[offset]], strict=True
                    )
                ],
            )
        return
    limits, distances, labels = searcher.range_search(queries, threshold - 1e-6)
    limits = limits.astype(np.int64)
    owners = np.repeat(np.arange(start, start + len(queries)), np.diff(limits))
    earlier = labels < owners  # itself and later rows never make a row a duplicate
    for row in np.unique(owners[earlier]):
        lo, hi = limits[row - start], limits[row - start + 1]
        keep = earlier[lo:hi]
        yield int(row), list(zip(labels[lo:hi][keep].tolist(), distances[lo:hi][keep].tolist(), strict=True))


def semantic_duplicates(
    vectors: np.ndarray,
    threshold: float = 0.95,
    index: str = "auto",
    exact_max: int = 20_000,
    chunk: int = CHUNK,
) -> dict[int, tuple[int, float]]:
    """{index of a duplicate: (earlier kept row it is closest to, cosine similarity)}."""
    if len(vectors) == 0:
        return {}
    if vectors.dtype not in (np.float16, np.float32):
        vectors = vectors.astype(np.float32)
    kind = choose_index(len(vectors), index, exact_max)
    searcher = build_index(vectors, kind, chunk)
    duplicates: dict[int, tuple[int, float]] = {}
    for start in range(0, len(vectors), chunk):
        queries = _float32(vectors, start, start + chunk)
        for row, candidates in _chunk_neighbours(searcher, queries, threshold, kind, start):
            kept = [(other, score) for other, score in candidates if other not in duplicates]
            if kept:
                duplicates[row] = max(kept, key=lambda pair: (pair[1], -pair[0]))
    return duplicates
