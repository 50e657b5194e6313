"""Durable record of the provider batch jobs a run started, so a killed run resumes by polling
them, never by paying for them again.

A job's file id and the cache keys of its requests are committed before the job is started, and
its batch id the moment the provider returns it; a crash between the two leaves a file id whose
batch `BatchJobs.find` looks up. A job is forgotten once its answers are in the request cache.
The store is an SQLite file beside the request cache (`batches.sqlite`), shared by every run
that uses that cache; `synthkd cache clear` leaves it, since its jobs are paid for.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class BatchRecord:
    file_id: str
    batch_id: str | None  # None: the job may not have been started (see `BatchJobs.find`)
    keys: tuple[str, ...]


class BatchStore:
    """The jobs of one teacher (`teacher`: its backend, endpoint and model) not yet collected."""

    def __init__(self, path: Path | None, teacher: str) -> None:
        """`path` None keeps the record in memory only (a run without the request cache)."""
        self.teacher = teacher
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", timeout=BUSY_TIMEOUT_SECONDS)
        with self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS batches (file_id TEXT PRIMARY KEY, teacher TEXT NOT NULL, "
                "batch_id TEXT, keys TEXT NOT NULL, created REAL NOT NULL)"
            )

    def pending(self) -> list[BatchRecord]:
        """This teacher's jobs whose answers are not collected yet, oldest first."""
        rows = self._db.execute(
            "SELECT file_id, batch_id, keys FROM batches WHERE teacher = ? ORDER BY created", (self.teacher,)
        ).fetchall()
        return [BatchRecord(file_id, batch_id, tuple(json.loads(keys))) for file_id, batch_id, keys in rows]

    def uploaded(self, file_id: str, keys: list[str]) -> None:
        """A batch file is uploaded and about to be started."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, NULL, ?, ?)",
                (file_id, self.teacher, json.dumps(keys), time.time()),
            )

    def started(self, file_id: str, batch_id: str) -> None:
        with self._db:
            self._db.execute("UPDATE batches SET batch_id = ? WHERE file_id = ?", (batch_id, file_id))

    def collected(self, file_id: str) -> None:
        """The job's answers are in the request cache (or its items will be asked again)."""
        with self._db:
            self._db.execute("DELETE FROM batches WHERE file_id = ?", (file_id,))

    def close(self) -> None:
        self._db.close()
