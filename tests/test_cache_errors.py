"""A damaged or locked request cache: one clear line naming the file and the fix, never a traceback;
`synthkd cache clear` sets a damaged cache aside and starts a new one."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

import synthkd.cache
from synthkd.cache import ResponseCache
from synthkd.cli import main
from synthkd.errors import CacheDamagedError
from synthkd.teachers.base import Completion
from synthkd.testing.fake_openai import FakeOpenAIServer

ROWS = 6


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_server(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("SYNTHKD_TEST_KEY", "sk-test")


def recipe(tmp_path: Path, server) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Name prime number {i}."} for i in range(ROWS)])
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "cache-errors",
            "teacher": {
                "backend": "openai",
                "model": "fake-model",
                "base_url": server.base_url,
                "api_key_env": "SYNTHKD_TEST_KEY",
                "timeout": 5,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def healthy_cache(path: Path, rows: int = 200) -> bytes:
    """A cache of several pages, so that truncating it cuts into its data."""
    cache = ResponseCache(path)
    for i in range(rows):
        cache.put(f"key-{i}", Completion(text="x" * 400, finish_reason="stop"))
    cache.close()
    return path.read_bytes()


def damage(path: Path, kind: str) -> bytes:
    """Write a damaged cache at `path`; returns its bytes."""
    content = healthy_cache(path)[:20_000] if kind == "truncated" else os.urandom(50_000)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(content)
    return content


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_damaged_cache_stops_the_run_with_one_line_and_cache_clear_fixes_it(
    tmp_path, server, private_cache, capsys, kind
):
    path = recipe(tmp_path, server)
    cache_file = private_cache / "requests.sqlite"
    content = damage(cache_file, kind)

    if kind == "random":  # once through the real entry point: stderr holds one line, no traceback
        process = subprocess.run(
            [sys.executable, "-m", "synthkd.cli", "run", str(path)],
            env={**os.environ, "COLUMNS": "400"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert process.returncode == 2, process.stderr
        assert "Traceback" not in process.stderr
        lines = [line for line in process.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, process.stderr
        message = lines[0]
    else:
        assert main(["run", str(path)]) == 2
        message = one_line(capsys.readouterr().err)
    assert f"the request cache {cache_file} is damaged" in message
    assert "run `synthkd cache clear`" in message
    assert f"{cache_file}.damaged-" in message
    assert server.stats()["requests"] == 0  # stopped before sending anything
    assert not (tmp_path / "out").exists()

    assert main(["cache", "clear"]) == 0
    err = one_line(capsys.readouterr().err)
    kept = list(private_cache.glob("requests.sqlite.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == content  # the damaged file, untouched, beside
    assert f"the request cache {cache_file} was damaged: kept it as {kept[0]}" in err
    assert main(["cache", "info"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(cache_file), "responses": 0}

    assert main(["run", str(path)]) == 0
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == ROWS
    assert main(["cache", "info"]) == 0
    assert json.loads(capsys.readouterr().out)["responses"] == ROWS
    assert main(["cache", "clear"]) == 0  # a healthy cache is emptied as before, nothing set aside
    assert f"removed {ROWS} cached responses" in capsys.readouterr().err
    assert len(list(private_cache.glob("*.damaged-*"))) == 1


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_cache_info_on_a_damaged_cache_says_so(private_cache, capsys, kind):
    cache_file = private_cache / "requests.sqlite"
    damage(cache_file, kind)
    assert main(["cache", "info"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = one_line(captured.err)
    assert f"the request cache {cache_file} is damaged" in err
    assert "run `synthkd cache clear`" in err


def test_damage_past_the_header_is_met_by_a_lookup_and_cleared(private_cache, capsys):
    """The header and schema are intact, the table's pages are not: the first read says so."""
    cache_file = private_cache / "requests.sqlite"
    content = bytearray(healthy_cache(cache_file))
    page = 4096
    content[2 * page :] = os.urandom(len(content) - 2 * page)
    cache_file.write_bytes(bytes(content))

    cache = ResponseCache(cache_file)  # opens: what it reads is whole
    with pytest.raises(CacheDamagedError, match="is damaged"):
        cache.get_many([f"key-{i}" for i in range(200)])
    cache.close()
    assert main(["cache", "info"]) == 2
    assert f"the request cache {cache_file} is damaged" in one_line(capsys.readouterr().err)

    assert main(["cache", "clear"]) == 0
    assert len(list(private_cache.glob("requests.sqlite.damaged-*"))) == 1
    assert main(["cache", "info"]) == 0
    assert json.loads(capsys.readouterr().out)["responses"] == 0


def test_a_second_clear_within_the_second_keeps_both_damaged_files(private_cache, capsys):
    cache_file = private_cache / "requests.sqlite"
    first = damage(cache_file, "random")
    assert main(["cache", "clear"]) == 0
    second = damage(cache_file, "random")
    assert main(["cache", "clear"]) == 0
    kept = {p.read_bytes() for p in private_cache.glob("requests.sqlite.damaged-*")}
    assert kept == {first, second}


def test_a_locked_cache_stops_the_run_with_one_line(tmp_path, server, private_cache, capsys, monkeypatch):
    """Another process holds the write lock past the busy timeout (30 s; shortened here)."""
    path = recipe(tmp_path, server)
    cache_file = private_cache / "requests.sqlite"
    ResponseCache(cache_file).close()
    monkeypatch.setattr(synthkd.cache, "BUSY_TIMEOUT_SECONDS", 0.2, raising=False)
    holder = sqlite3.connect(cache_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another run's long write would hold it
    try:
        code = main(["run", str(path)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1
    err = one_line(capsys.readouterr().err)
    assert f"the request cache {cache_file} is locked" in err
    assert "SYNTHKD_CACHE_DIR" in err

    assert main(["run", str(path)]) == 0  # once it is free, the same command finishes
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == ROWS
