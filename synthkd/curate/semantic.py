"""Semantic duplicates: cosine similarity of normalised embeddings, searched with faiss.

A row is a duplicate when its similarity to an earlier *kept* row reaches the threshold. The rows'
neighbours above the threshold are found by range searches of `chunk` rows at a time, exact
(`IndexFlatIP`) up to `exact_max` rows and approximate above it (an inverted-file index probing
the nearest `IVF_PROBES` of about 2 sqrt(n) clusters, or HNSW's top-k), and each chunk's rows are
decided in order before the next is searched: the same decisions as one search over all rows, in
memory bounded by the vectors and one chunk's results.

The vectors may be float16 (`embeddings.embed_float16`): the inverted-file index then stores them
as float16 too (`QT_fp16`, exactly the values given, at half the memory of float32); only the rows
being added or searched are widened to float32, a chunk at a time.
"""

from __future__ import annotations

import numpy as np

from synthkd.extras import require

# A query scans IVF_PROBES of 2 sqrt(n) clusters: 2 sqrt(n) rows. Near duplicates sit in the same or
# a neighbouring cluster: on 200,000 rows 4 probes dropped 99.9% of what 16 did, in a third of the time.
IVF_PROBES = 4
IVF_CLUSTERS_PER_SQRT = 2
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


def _chunk_pairs(
    searcher, queries: np.ndarray, threshold: float, index: str, start: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, earlier row, similarity) arrays of the pairs at or above `threshold` whose row is in
    this chunk (rows numbered from `start`): by row, most similar first, then earliest."""
    if index == "hnsw":
        distances, labels = searcher.search(queries, min(HNSW_NEIGHBOURS, searcher.ntotal))
        owners = np.broadcast_to(np.arange(start, start + len(queries))[:, None], labels.shape)
        hits = (labels >= 0) & (distances >= threshold - 1e-6)
        owners, labels, distances = owners[hits], labels[hits], distances[hits]
    else:
        limits, distances, labels = searcher.range_search(queries, threshold - 1e-6)
        owners = np.repeat(np.arange(start, start + len(queries)), np.diff(limits.astype(np.int64)))
    earlier = labels < owners  # itself and later rows never make a row a duplicate
    owners, labels, distances = owners[earlier], labels[earlier], distances[earlier]
    order = np.lexsort((labels, -distances, owners))
    return owners[order], labels[order], distances[order]


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
    dropped = bytearray(len(vectors))  # 1: dropped; read per pair, faster than a numpy array
    for start in range(0, len(vectors), chunk):
        owners, labels, scores = _chunk_pairs(
            searcher, _float32(vectors, start, start + chunk), threshold, kind, start
        )
        if not len(owners):
            continue
        firsts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        ends = np.r_[firsts[1:], len(owners)].tolist()
        rows, others, similarities = owners.tolist(), labels.tolist(), scores.tolist()
        for first, end in zip(firsts.tolist(), ends, strict=True):
            for pair in range(first, end):  # the most similar earlier row that was kept
                if not dropped[others[pair]]:
                    duplicates[rows[pair]] = (others[pair], similarities[pair])
                    dropped[rows[pair]] = 1
                    break
    return duplicates
