"""Durable, content-addressed store of teacher responses.

Every completed response is committed as it arrives (SQLite in WAL mode), so a run killed at any
moment loses at most the requests that were in flight. The key is a hash of everything that
decides the answer: backend, endpoint, model, messages, generation parameters, response format
and sample index. Never the API key. A local teacher's scores of given answers (top-k
log-probabilities, for the `logits` step) are kept the same way, under keys of their own.

A damaged file (truncated, overwritten) raises `CacheDamagedError` at the first statement that
meets the damage, which for the usual cases is the constructor; `clear_cache` sets such a file
aside and starts a new one. A write lock held past the busy timeout raises `CacheLockedError`. A
full disk raises `StorageFullError` at the first answer that does not fit: SQLite rolls back only
that answer's transaction, so every answer committed before stays, and a rerun sends only the rest.
A cache (or folder) that cannot be written raises `UnwritableFileError`. `sqlite_errors_as` makes
these one-line errors, for this file and for the other SQLite files beside it (`batches.sqlite`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthkd.atomic import is_disk_full, process_running
from synthkd.errors import (
    CacheDamagedError,
    CacheLockedError,
    StorageFullError,
    SynthkdError,
    UnwritableFileError,
)
from synthkd.kd.topk import TopK
from synthkd.paths import cache_root
from synthkd.teachers.base import ChatRequest, Completion, ScoreRequest
from synthkd.teachers.config import TeacherConfig

BUSY_TIMEOUT_SECONDS = 30.0  # how long a write waits for another process's lock before giving up

# The files SQLite keeps beside a database; a damaged database is set aside with them, so a
# stale journal is never applied to the new, empty cache.
COMPANIONS = ("-wal", "-shm", "-journal")
# A folder that cannot be made: it, or one above it, is read-only or another user's.
UNWRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def request_key(teacher: TeacherConfig, request: ChatRequest) -> str:
    """The cache key of a request: what decides the answer, and nothing secret."""
    material = {
        "backend": teacher.backend,
        "base_url": (teacher.base_url or "").rstrip("/"),
        "model": teacher.model,
        "messages": list(request.messages),
        "params": request.params,
        "response_format": request.response_format,
        "sample": request.sample,
    }
    if request.continue_final:  # added only when set, so earlier keys stay valid
        material["continue_final"] = True
    return _digest(material)


def score_key(teacher: TeacherConfig, request: ScoreRequest, vocab_sha256: str) -> str:
    """The cache key of a scoring request: the teacher and its vocabulary (the stored ids are
    its token ids), the conversation scored and k. Generation params do not change a forward
    pass, so they are left out."""
    return _digest(
        {
            "kind": "score",
            "backend": teacher.backend,
            "base_url": (teacher.base_url or "").rstrip("/"),
            "model": teacher.model,
            "vocab_sha256": vocab_sha256,
            "messages": list(request.messages),
            "top_k": request.top_k,
        }
    )


def _digest(material: dict[str, Any]) -> str:
    canonical = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """A SQLite table of key -> completion (or scored answer, as JSON). Safe to share between
    processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timeout = BUSY_TIMEOUT_SECONDS
        self._claims_ready = False
        # The set-up statements read the file's header and schema, so a damaged file is reported
        # here, before any request is sent, and not at the first lookup. WAL + synchronous=NORMAL:
        # a commit survives the process being killed (not a power cut) and costs microseconds, so
        # committing every response is affordable.
        with self._guard():
            self._db = open_database(
                path,
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                "CREATE TABLE IF NOT EXISTS responses "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL)",
                timeout=self.timeout,
                check_same_thread=False,
            )

    @staticmethod
    def default_path() -> Path:
        return cache_root() / "requests.sqlite"

    @classmethod
    def default(cls) -> ResponseCache:
        return cls(cls.default_path())

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite's damage, lock, full-disk and read-only errors as one-line errors naming the file;
        others unchanged."""
        errors = FileErrors(
            full=cache_full_error,
            damaged=CacheDamagedError,
            locked=lambda path: CacheLockedError(path, self.timeout),
            unwritable=cache_unwritable_error,
        )
        with sqlite_errors_as(self.path, errors):
            yield

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        return {key: Completion(**value) for key, value in self._get_values(keys).items()}

    def put(self, key: str, completion: Completion) -> None:
        value: dict[str, Any] = {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        }
        if completion.logprobs is not None:  # a resumed `logits` step needs them as much as the text
            value["logprobs"] = completion.logprobs
        self._put_value(key, value)

    def get_scores(self, keys: Iterable[str]) -> dict[str, TopK]:
        return {key: TopK(**value) for key, value in self._get_values(keys).items()}

    def put_score(self, key: str, scored: TopK) -> None:
        self._put_value(key, asdict(scored))

    def _get_values(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        keys = list(keys)
        with self._guard():
            for start in range(0, len(keys), 500):  # stay under SQLite's bound-variable limit
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(
                    f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk
                ):
                    found[key] = json.loads(value)
        return found

    def _put_value(self, key: str, value: dict[str, Any]) -> None:
        with self._guard():
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, value, created) VALUES (?, ?, ?)",
                (key, json.dumps(value, ensure_ascii=False), time.time()),
            )

    def claim(self, key: str, seconds: float) -> tuple[Completion | None, bool]:
        """(the answer, if some process has put it here since the caller looked; whether this
        process may ask `key` now). Asking marks the request as this process's for up to `seconds`;
        while another running process has it marked, the caller waits for its answer rather than
        paying for it twice. Runs that share a cache (other output folders) so split the work
        instead of racing through it in step. One transaction: the look and the mark."""
        now, me = time.time(), os.getpid()
        with self._guard():
            if not self._claims_ready:  # made on first use: a cache only read needs no such table
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS claims "
                    "(key TEXT PRIMARY KEY, pid INTEGER NOT NULL, until REAL NOT NULL)"
                )
                self._claims_ready = True
            self._db.execute("BEGIN IMMEDIATE")
            try:
                answered = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
                held = self._db.execute("SELECT pid, until FROM claims WHERE key = ?", (key,)).fetchone()
                taken = held is not None and held[0] != me and held[1] > now and process_running(held[0])
                if answered is None and not taken:
                    self._db.execute(
                        "INSERT OR REPLACE INTO claims (key, pid, until) VALUES (?, ?, ?)",
                        (key, me, now + seconds),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        if answered is not None:
            return Completion(**json.loads(answered[0])), False
        return None, not taken

    def release(self, key: str) -> None:
        """This process is done asking `key` (answered or failed)."""
        with self._guard():
            self._db.execute("DELETE FROM claims WHERE key = ? AND pid = ?", (key, os.getpid()))

    def count(self) -> int:
        with self._guard():
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def clear(self) -> int:
        removed = self.count()
        with self._guard():
            self._db.execute("DELETE FROM responses")
            exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'claims'"
            if self._db.execute(exists).fetchone():  # claims of processes that may be gone
                self._db.execute("DELETE FROM claims")
            self._db.execute("VACUUM")
        return removed

    def close(self) -> None:
        self._db.close()


def open_database(
    path: Path, *setup: str, timeout: float = BUSY_TIMEOUT_SECONDS, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A connection (autocommit) to the SQLite file at `path`, its folder made if missing, after
    running `setup` (pragmas, CREATE TABLE). Those read the file's header and schema, so the usual
    damage is met here; the connection is closed if they fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread)
    try:
        for statement in setup:
            db.execute(statement)
    except BaseException:
        db.close()
        raise
    return db


@dataclass(frozen=True)
class FileErrors:
    """The one-line errors that SQLite's errors on one file become (see `sqlite_errors_as`), each
    made from the file's path and, for `damaged` and `unwritable`, the error's own words."""

    full: Callable[[Path], StorageFullError]
    damaged: Callable[[Path, str], SynthkdError]
    locked: Callable[[Path], SynthkdError]
    unwritable: Callable[[Path, str], SynthkdError]


@contextmanager
def sqlite_errors_as(path: Path, errors: FileErrors) -> Iterator[None]:
    """A full disk, damage, a lock held past the busy timeout, or a read-only file or folder, met
    by SQLite on the file at `path` or by making its folder, raised as `errors` says; other errors
    unchanged."""
    try:
        yield
    except (sqlite3.DatabaseError, OSError) as exc:
        one_line = _one_line_error(exc, path, errors)
        if one_line is None:
            raise
        raise one_line from exc


def _one_line_error(
    exc: sqlite3.DatabaseError | OSError, path: Path, errors: FileErrors
) -> SynthkdError | None:
    # A full disk first: SQLite reports one met while opening the file as a file it cannot open.
    if is_full(exc, path):
        return errors.full(path)
    if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
        return errors.damaged(path, str(exc))
    if isinstance(exc, sqlite3.DatabaseError) and is_lock(exc):
        return errors.locked(path)
    if is_unwritable(exc):
        return errors.unwritable(path, _words(exc))
    return None


def _words(exc: sqlite3.DatabaseError | OSError) -> str:
    """What went wrong, without the path an OSError repeats (the one-line error names it)."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


@contextmanager
def full_disk_as(path: Path, error: Callable[[Path], StorageFullError]) -> Iterator[None]:
    """A full disk met by SQLite on the file at `path`, or by creating its folder, raised as
    `error(path)`; other errors unchanged."""
    try:
        yield
    except (sqlite3.DatabaseError, OSError) as exc:
        if is_full(exc, path):
            raise error(path) from exc
        raise


def cache_full_error(path: Path) -> StorageFullError:
    return StorageFullError(
        path,
        what="the request cache",
        outcome="the answers already cached are kept",
        fix="free some space there, or point SYNTHKD_CACHE_DIR at a disk with room, and run the same "
        "command again: it sends only the requests not answered yet",
    )


def cache_unwritable_error(path: Path, detail: str) -> UnwritableFileError:
    return UnwritableFileError(
        path,
        detail,
        what="the request cache",
        outcome="the answers already cached are kept",
        fix="make it and its folder writable, or point SYNTHKD_CACHE_DIR at a folder that is, and run "
        "the same command again",
    )


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""  # Python 3.11+
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


def is_lock(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(exc)


def is_unwritable(exc: sqlite3.DatabaseError | OSError) -> bool:
    """A file SQLite may not write (SQLITE_READONLY: a read-only file or mount) or cannot open (its
    folder is read-only, so neither it nor its -wal file can be made), or a folder that cannot be
    made. Asked once a full disk is ruled out (`is_full`), which SQLite reports the same way."""
    if isinstance(exc, OSError):
        return exc.errno in UNWRITABLE_ERRNOS
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
        return True
    text = str(exc)
    return "readonly database" in text or "unable to open database file" in text


def is_full(exc: sqlite3.DatabaseError | OSError, path: Path) -> bool:
    """ENOSPC/EDQUOT or SQLITE_FULL (see `is_disk_full`); or an I/O error, or a file that cannot be
    created, on a disk with no space left (SQLite reports a full disk met while sizing its
    shared-memory file or creating the database that way, without the errno)."""
    if is_disk_full(exc):
        return True
    name = getattr(exc, "sqlite_errorname", "") or ""
    if not name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        return False
    with contextlib.suppress(OSError):
        disk = os.statvfs(path.parent)
        return disk.f_bavail == 0 or (disk.f_files > 0 and disk.f_favail == 0)
    return False


def set_aside(path: Path) -> list[Path]:
    """Rename a damaged cache and its companion files to `<name>.damaged-<UTC time>` beside them
    (kept for whoever wants to recover from them); returns the new names."""
    sources = [source for source in _files_of(path) if source.exists()]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tag, attempt = stamp, 1
    while any(source.with_name(f"{source.name}.damaged-{tag}").exists() for source in sources):
        attempt += 1  # two clears within a second: never overwrite an earlier damaged copy
        tag = f"{stamp}-{attempt}"
    moved = []
    for source in sources:
        target = source.with_name(f"{source.name}.damaged-{tag}")
        source.rename(target)
        moved.append(target)
    return moved


def clear_cache(path: Path) -> tuple[int, list[Path]]:
    """Empty the cache at `path`: (responses deleted, []) for a healthy cache (on a full disk, where
    emptying it in place cannot be written, its files are deleted instead); a damaged one is set
    aside and replaced by a new, empty cache: (0, the damaged files' new names)."""
    try:
        cache = ResponseCache(path)
        try:
            return cache.clear(), []
        finally:  # closed before its files are deleted or set aside below
            cache.close()
    except CacheDamagedError:  # met opening it, or past the header by the count or the delete
        pass
    except StorageFullError as exc:
        return _delete_from_full_disk(path, exc), []
    moved = set_aside(path)
    ResponseCache(path).close()
    return 0, moved


def _delete_from_full_disk(path: Path, full: StorageFullError) -> int:
    """Clear a cache on a full disk by deleting its files; returns how many responses it held.

    Opening it as usual sizes its shared-memory file and emptying it in place writes to its
    journal, both of which a full disk refuses; the user is clearing it, perhaps to free that very
    space. The responses are counted in exclusive locking mode, in which SQLite keeps the WAL index
    in memory and writes nothing. If even that fails, nothing is deleted and `full` is raised."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        removed = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.DatabaseError:
        raise full from None
    finally:
        db.close()
    # No new cache is made here: on a disk this full its tables and journal would take back the
    # space just freed. The next run makes it.
    for file in _files_of(path):
        file.unlink(missing_ok=True)
    return removed


def _files_of(path: Path) -> list[Path]:
    """The database at `path` and the companion files SQLite may keep beside it."""
    return [path.with_name(path.name + suffix) for suffix in ("", *COMPANIONS)]
