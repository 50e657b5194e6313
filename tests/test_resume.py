"""kill -9 in the middle of a run, then the same command: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_jsonl, write_recipe

from synthkd.testing.fake_openai import FakeOpenAIServer

ROWS = 400
CONCURRENCY = 16


def synthkd_run(recipe: Path, cache: Path, extra_env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "SYNTHKD_CACHE_DIR": str(cache), "SYNTHKD_TEST_KEY": "k", **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "synthkd.cli", "run", str(recipe)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path: Path):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}: name a prime."} for i in range(ROWS)])
    with FakeOpenAIServer(latency_ms=40) as server:

        def make(name: str) -> Path:
            return write_recipe(
                tmp_path / f"{name}.yaml",
                {
                    "name": name,
                    "teacher": {
                        "backend": "openai",
                        "model": "fake-model",
                        "base_url": server.base_url,
                        "api_key_env": "SYNTHKD_TEST_KEY",
                        "concurrency": CONCURRENCY,
                    },
                    "steps": [
                        {"step": "load", "path": "seeds.jsonl"},
                        {"step": "label"},
                        {"step": "filter", "min_chars": 3},
                    ],
                    "output": {"dir": str(tmp_path / name)},
                },
            )

        reference = make("reference")
        assert synthkd_run(reference, tmp_path / "cache-ref").wait(timeout=120) == 0
        server.reset()

        interrupted = make("interrupted")
        process = synthkd_run(interrupted, tmp_path / "cache")
        deadline = time.monotonic() + 60
        while server.stats()["requests"] < ROWS // 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        sent_before_kill = server.stats()["requests"]
        assert 0 < sent_before_kill < ROWS, "the kill must land mid-run"
        assert not (tmp_path / "interrupted").exists()  # nothing half-written

        assert synthkd_run(interrupted, tmp_path / "cache").wait(timeout=120) == 0
        stats = server.stats()
        # Requests sent twice are at most the ones in flight when the process died.
        assert stats["duplicates"] <= CONCURRENCY
        assert stats["requests"] - ROWS == stats["duplicates"]
        for name in ("data.jsonl", "failures.jsonl"):
            assert (tmp_path / "interrupted" / name).read_text() == (
                tmp_path / "reference" / name
            ).read_text()
        from datasets import load_from_disk

        resumed = load_from_disk(str(tmp_path / "interrupted" / "dataset")).to_list()
        assert resumed == load_from_disk(str(tmp_path / "reference" / "dataset")).to_list()
        assert len(resumed) == ROWS
