"""`batches.sqlite`, the record of the batch jobs a run started (beside the request cache): damaged,
read-only, locked or on a full disk, it is one `error:` line naming the file and what to do, with
its exit code, never a sqlite3 traceback. And nothing paid for is lost: once the file is put right,
the same command collects the jobs already started and sends only the requests not answered yet.

Real files throughout: a damaged file written by the test, a read-only bind mount (bubblewrap: a
read-only folder does not stop root), a write lock held by another connection, a small tmpfs that
fills up (`small_disk.SmallDisk`)."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe
from small_disk import SmallDisk, one_error_line

import synthkd.dispatch.batch_store
from synthkd.cache import ResponseCache
from synthkd.cli import main
from synthkd.dispatch.batch_store import BatchRecord, BatchStore
from synthkd.dispatch.dispatcher import BATCH_STORE_NAME
from synthkd.testing.fake_openai import FakeOpenAIServer, ServerConfig

ROWS = 6
FAST = {**asdict(ServerConfig()), "batch_seconds": 0.3}
KEPT = "the answers received so far are cached and the jobs already started are recorded"


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.configure(**FAST)
    server.reset()


def recipe(tmp_path: Path, server) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Name river {i}."} for i in range(ROWS)])
    return write_recipe(
        tmp_path / "batched.yaml",
        {
            "name": "batched",
            "teacher": {
                "backend": "openai",
                "model": "fake-model",
                "base_url": server.base_url,
                "api_key_env": None,
                "batch": True,
                "batch_poll_seconds": 0.1,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out"), "report": "none"},
        },
    )


def run_cli(path: Path, *, inside: list[str] = ()) -> subprocess.CompletedProcess:
    """`synthkd run` through its real entry point (so a traceback would show), `inside` a wrapper."""
    return subprocess.run(
        [*inside, sys.executable, "-m", "synthkd.cli", "run", str(path)],
        env={**os.environ, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_only(*paths: Path) -> list[str]:
    """A bubblewrap command line that runs the rest with `paths` bound read-only."""
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is needed (make test installs it)"
    binds = [arg for path in paths for arg in ("--ro-bind", str(path), str(path))]
    return [bwrap, "--dev-bind", "/", "/", *binds]


def batch_stats(server) -> dict:
    return server.stats()["batches"]


def rows(tmp_path: Path) -> list[dict]:
    return read_jsonl(tmp_path / "out" / "data.jsonl")


def test_a_damaged_batch_record_stops_the_run_before_anything_is_sent(tmp_path, server, private_cache):
    path = recipe(tmp_path, server)
    store_file = private_cache / BATCH_STORE_NAME
    store_file.write_bytes(random.Random(0).randbytes(50_000))

    process = run_cli(path)
    assert process.returncode == 2, process.stderr
    message = one_error_line(process)
    assert f"the batch job record {store_file} is damaged (file is not a database)" in message
    assert f"move it aside (mv {store_file} {store_file}.damaged) and run the same command again" in message
    assert "the answers received so far are cached" in message
    assert batch_stats(server)["files_uploaded"] == 0 and server.stats()["requests"] == 0

    store_file.rename(store_file.with_name(f"{store_file.name}.damaged"))  # as the line says
    assert main(["run", str(path)]) == 0
    assert len(rows(tmp_path)) == ROWS


def test_a_read_only_batch_record_stops_the_run_before_anything_is_uploaded(tmp_path, server, private_cache):
    path = recipe(tmp_path, server)
    store_file = private_cache / BATCH_STORE_NAME
    BatchStore(store_file, "another teacher").close()  # say, restored from a read-only backup

    process = run_cli(path, inside=read_only(store_file))
    assert process.returncode == 2, process.stderr
    message = one_error_line(process)
    assert f"cannot write the batch job record {store_file} (attempt to write a readonly database)" in message
    assert KEPT in message and "make it and its folder writable and run the same command again" in message
    assert batch_stats(server)["files_uploaded"] == 0

    assert main(["run", str(path)]) == 0
    assert len(rows(tmp_path)) == ROWS and batch_stats(server)["batches_created"] == 1


def test_a_read_only_cache_folder_stops_the_run_with_one_line(tmp_path, server, private_cache):
    """The batch job record lives beside the request cache, which meets a read-only folder first."""
    path = recipe(tmp_path, server)
    cache_file = private_cache / "requests.sqlite"
    ResponseCache(cache_file).close()

    process = run_cli(path, inside=read_only(private_cache))
    assert process.returncode == 2, process.stderr
    message = one_error_line(process)
    assert f"cannot write the request cache {cache_file} (unable to open database file)" in message
    assert "make it and its folder writable, or point SYNTHKD_CACHE_DIR at a folder that is" in message
    assert batch_stats(server)["files_uploaded"] == 0


def test_a_batch_record_locked_mid_run_stops_it_and_the_job_is_never_paid_twice(
    tmp_path, server, private_cache, capsys, monkeypatch
):
    """Another process takes the record's write lock once the job has started, and holds it past
    the busy timeout (30 s; shortened here). Whichever record the run then fails to write (the
    job's id, or that its answers are collected), the rerun gets the answers of that same job."""
    server.configure(batch_seconds=4.0)  # the job runs for seconds after the lock is taken
    monkeypatch.setattr(synthkd.dispatch.batch_store, "BUSY_TIMEOUT_SECONDS", 0.2)
    path = recipe(tmp_path, server)
    store_file = private_cache / BATCH_STORE_NAME
    locked, release = threading.Event(), threading.Event()

    def lock_once_the_job_has_started() -> None:
        deadline = time.monotonic() + 60
        while batch_stats(server)["batches_created"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        holder = sqlite3.connect(store_file, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(120)
        holder.execute("ROLLBACK")
        holder.close()

    thread = threading.Thread(target=lock_once_the_job_has_started, daemon=True)
    thread.start()
    try:
        code = main(["run", str(path)])
    finally:
        release.set()
        thread.join()
    assert locked.is_set() and code == 1
    message = one_error_line(capsys.readouterr().err)
    assert f"the batch job record {store_file} is locked" in message
    assert KEPT in message and "wait for it to finish and run the same command again" in message
    assert "SYNTHKD_CACHE_DIR" not in message  # a run on another cache would pay for the job again
    assert not (tmp_path / "out").exists()

    assert main(["run", str(path)]) == 0
    assert len(rows(tmp_path)) == ROWS
    stats = batch_stats(server)
    assert stats["files_uploaded"] == 1 and stats["batches_created"] == 1 and stats["items_submitted"] == ROWS


FILL_AFTER_ONE_RECORD = """
import sys
from pathlib import Path
from synthkd.dispatch.batch_store import BatchStore
from synthkd.errors import StorageFullError

path = Path(sys.argv[1])
store = BatchStore(path, "t")
store.uploaded("file-kept", ["a"])
with (path.parent / "filler").open("wb") as filler:  # the disk fills up between two records
    try:
        while True:
            filler.write(b"x" * 65536)
            filler.flush()
    except OSError:
        pass
try:
    store.uploaded("file-lost", ["b"])
except StorageFullError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_full_disk_under_the_batch_record_is_one_line_and_keeps_the_records_before(tmp_path):
    disk = SmallDisk(tmp_path / "disk", 1 << 20)
    try:
        store_file = disk.mount_point / "cache" / BATCH_STORE_NAME
        done = disk.run(
            [sys.executable, "-c", FILL_AFTER_ONE_RECORD, str(store_file)], env=dict(os.environ), cwd=tmp_path
        )
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout.strip() == (
            f"the disk holding the batch job record {store_file} is full: {KEPT}; free some space there "
            "and run the same command again: it collects those jobs and sends only the requests not "
            "answered yet"
        )
        disk.outside(store_file.parent / "filler").unlink()
        kept = disk.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from synthkd.dispatch.batch_store "
             "import BatchStore; print(BatchStore(Path(sys.argv[1]), 't').pending())", str(store_file)],
            env=dict(os.environ), cwd=tmp_path,
        )  # fmt: skip
        assert kept.stdout.strip() == repr([BatchRecord("file-kept", None, ("a",))]), kept.stderr
    finally:
        disk.close()
