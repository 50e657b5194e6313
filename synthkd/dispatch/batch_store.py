"""Durable record of the provider batch jobs a run started, so a killed run resumes by polling
them, never by paying for them again.

A job's file id and the cache keys of its requests are committed before the job is started, and
its batch id the moment the provider returns it; a crash between the two leaves a file id whose
batch `BatchJobs.find` looks up. A job is forgotten once its answers are in the request cache.
The store is an SQLite file beside the request cache (`batches.sqlite`), shared by every run
that uses that cache; `synthkd cache clear` leaves it, since its jobs are paid for.

Its SQLite errors are one-line errors naming the file (`cache.sqlite_errors_as`): a full disk
(`StorageFullError`), a lock held past the busy timeout (`LockedFileError`), a damaged file
(`DamagedFileError`), a read-only file or folder (`UnwritableFileError`, found when the store
opens, before anything is uploaded). Each says what is kept: every record is committed before the
step it guards, so the jobs already started are recorded (or findable by their upload) and their
answers, once collected, are in the request cache.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from synthkd.cache import FileErrors, open_database, sqlite_errors_as
from synthkd.errors import DamagedFileError, LockedFileError, StorageFullError, UnwritableFileError

BUSY_TIMEOUT_SECONDS = 30.0
WHAT = "the batch job record"
KEPT = "the answers received so far are cached and the jobs already started are recorded"
SETUP = (
    "PRAGMA journal_mode=WAL",
    "CREATE TABLE IF NOT EXISTS batches (file_id TEXT PRIMARY KEY, teacher TEXT NOT NULL, "
    "batch_id TEXT, keys TEXT NOT NULL, created REAL NOT NULL)",
)
# A write that changes nothing: a read-only file is found when the store opens, before a job's
# requests are uploaded, rather than at the first record.
WRITE_PROBE = "DELETE FROM batches WHERE 0"


@dataclass(frozen=True)
class BatchRecord:
    file_id: str
    batch_id: str | None  # None: the job may not have been started (see `BatchJobs.find`)
    keys: tuple[str, ...]


class BatchStore:
    """The jobs of one teacher (`teacher`: its backend, endpoint and model) not yet collected."""

    def __init__(self, path: Path | None, teacher: str) -> None:
        """`path` None keeps the record in memory only (a run without the request cache)."""
        self.path = path
        self.teacher = teacher
        with self._guard():
            if path is None:
                self._db = sqlite3.connect(":memory:", isolation_level=None)
                for statement in SETUP:
                    self._db.execute(statement)
            else:
                self._db = open_database(path, *SETUP, WRITE_PROBE, timeout=BUSY_TIMEOUT_SECONDS)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with sqlite_errors_as(self.path, _file_errors()):
            yield

    def pending(self) -> list[BatchRecord]:
        """This teacher's jobs whose answers are not collected yet, oldest first."""
        with self._guard():
            rows = self._db.execute(
                "SELECT file_id, batch_id, keys FROM batches WHERE teacher = ? ORDER BY created",
                (self.teacher,),
            ).fetchall()
        return [BatchRecord(file_id, batch_id, tuple(json.loads(keys))) for file_id, batch_id, keys in rows]

    def uploaded(self, file_id: str, keys: list[str]) -> None:
        """A batch file is uploaded and about to be started."""
        self._write(
            "INSERT OR REPLACE INTO batches VALUES (?, ?, NULL, ?, ?)",
            (file_id, self.teacher, json.dumps(keys), time.time()),
        )

    def started(self, file_id: str, batch_id: str) -> None:
        self._write("UPDATE batches SET batch_id = ? WHERE file_id = ?", (batch_id, file_id))

    def refused(self, file_id: str) -> None:
        """The provider refused the job before it ran (its queue was full): the upload waits to be
        started again. Its batch id is dropped first, so a run killed between starting the next
        job and recording it finds that job by its upload (`BatchJobs.find`), never the refused one."""
        self._write("UPDATE batches SET batch_id = NULL WHERE file_id = ?", (file_id,))

    def collected(self, file_id: str) -> None:
        """The job's answers are in the request cache (or its items will be asked again)."""
        self._write("DELETE FROM batches WHERE file_id = ?", (file_id,))

    def _write(self, statement: str, values: tuple[object, ...]) -> None:
        with self._guard():
            self._db.execute(statement, values)  # autocommit: committed when it returns

    def close(self) -> None:
        self._db.close()


def _file_errors() -> FileErrors:
    """The one-line errors of `batches.sqlite`. None of them advises another SYNTHKD_CACHE_DIR, as
    the request cache's do: a run there would not see the jobs recorded here and would pay for
    their requests again."""
    again = "run the same command again: it collects those jobs and sends only the requests not answered yet"
    return FileErrors(
        full=lambda path: StorageFullError(
            path, what=WHAT, outcome=KEPT, fix=f"free some space there and {again}"
        ),
        locked=lambda path: LockedFileError(
            path, BUSY_TIMEOUT_SECONDS, what=WHAT, fix=f"{KEPT}; wait for it to finish and {again}"
        ),
        damaged=lambda path, detail: DamagedFileError(
            path,
            detail,
            what=WHAT,
            fix=f"move it aside (mv {shlex.quote(str(path))} {shlex.quote(f'{path}.damaged')}) and run the "
            "same command again: the answers received so far are cached and are not asked again, but "
            "the requests of the jobs it recorded and that were not collected yet are sent again, in "
            "new jobs",
        ),
        unwritable=lambda path, detail: UnwritableFileError(
            path, detail, what=WHAT, outcome=KEPT, fix=f"make it and its folder writable and {again}"
        ),
    )
