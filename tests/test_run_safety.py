"""A failed run never reports success and never replaces good data; outages are waited out; one
output folder takes one run at a time; an output folder that cannot be written stops the run before
the first request."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, run_cli, write_jsonl, write_recipe

from synthkd.testing.fake_openai import FakeOpenAIServer

KEY = "sk-canary-0123456789abcdef"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("SYNTHKD_TEST_KEY", KEY)


def recipe(tmp_path: Path, base_url: str, rows: int = 30, output: dict | None = None, **teacher) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Explain item {i}."} for i in range(rows)])
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "safety",
            "teacher": {
                "backend": "openai",
                "model": "fake-model",
                "base_url": base_url,
                "api_key_env": "SYNTHKD_TEST_KEY",
                "concurrency": 4,
                "timeout": 5,
                **teacher,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out"), **(output or {})},
        },
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_run_where_every_request_fails_exits_3_and_keeps_the_good_dataset(tmp_path, capsys):
    with FakeOpenAIServer() as server:
        path = recipe(tmp_path, server.base_url, max_attempts=2)
        assert run_cli(["run", str(path)], capsys)[0] == 0
        good = (tmp_path / "out" / "data.jsonl").read_bytes()
        assert len(good.splitlines()) == 30

        server.configure(fail_500=1.0)
        code, out = run_cli(["run", str(path), "--no-cache"], capsys)
        assert code == 3
        assert "step 1:label lost 30 of 30 rows to failed requests (http_500 30)" in out
        assert "output.max_failure_ratio 0.1" in out
        # The good dataset is untouched; what the failed run got is beside it, named as such.
        assert (tmp_path / "out" / "data.jsonl").read_bytes() == good
        aside = tmp_path / "out.incomplete"
        assert str(aside) in out
        assert read_jsonl(aside / "data.jsonl") == []
        assert len(read_jsonl(aside / "failures.jsonl")) == 30

        # A rerun once the teacher is well replaces the outputs and removes the side folder.
        server.configure(fail_500=0.0)
        assert run_cli(["run", str(path)], capsys)[0] == 0
        assert not aside.exists()


def test_failures_within_max_failure_ratio_pass_and_beyond_it_fail(tmp_path, capsys):
    # Every row whose instruction mentions item 1x gets HTTP 500: 10 of 30 rows (a third).
    script = [{"match": r"item 1\d\.", "status": 500, "message": "boom"}]
    with FakeOpenAIServer(script=script) as server:
        path = recipe(tmp_path, server.base_url, max_attempts=1)
        code, out = run_cli(["run", str(path)], capsys)
        assert code == 3 and "lost 10 of 30 rows" in out
        assert not (tmp_path / "out").exists()  # no previous outputs, and none made up

        path = recipe(tmp_path, server.base_url, max_attempts=1, output={"max_failure_ratio": 0.4})
        code, out = run_cli(["run", str(path)], capsys)
        assert code == 0
        assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 20
        assert len(read_jsonl(tmp_path / "out" / "failures.jsonl")) == 10


def test_a_run_with_no_rows_out_fails_and_names_the_step_that_emptied_it(tmp_path, capsys):
    with FakeOpenAIServer() as server:
        path = recipe(tmp_path, server.base_url, rows=5)
        data = (
            (tmp_path / "r.yaml")
            .read_text()
            .replace("- step: label\n", "- step: label\n- step: filter\n  min_chars: 5000\n")
        )
        (tmp_path / "r.yaml").write_text(data)
        code, out = run_cli(["run", str(path)], capsys)
    assert code == 3
    assert "the run produced no rows: step 2:filter kept none of 5" in out
    assert not (tmp_path / "out").exists()


def test_a_refused_or_dropped_connection_is_a_connection_error_and_stops_the_run(tmp_path, capsys):
    """A port that accepts and closes every connection: the run stops with one line after the
    first-contact window, instead of failing all 30 rows one by one; nothing is written."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted = []

    def accept_and_close() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        path = recipe(tmp_path, f"http://127.0.0.1:{port}/v1", outage_seconds=2)
        started = time.monotonic()
        code, out = run_cli(["run", str(path)], capsys)
        took = time.monotonic() - started
    finally:
        listener.close()
    assert code == 1
    assert "no connection to the teacher at http://127.0.0.1" in out and "Is the server running?" in out
    assert "connection failed" in out and "timed out" not in out
    assert took < 15
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()


@pytest.mark.slow
def test_an_outage_is_waited_out_and_no_row_is_lost_or_sent_twice(tmp_path, capsys):
    port = free_port()
    first = FakeOpenAIServer(port=port, latency_ms=40)
    first.__enter__()
    path = recipe(tmp_path, first.base_url, rows=60)
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(code=run_cli(["run", str(path)], capsys)[0]))
    run.start()
    try:
        deadline = time.monotonic() + 30
        while first.stats()["by_status"].get("200", 0) < 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        answered_before = first.stats()["by_status"]["200"]
        first.close()  # the server is gone: connections are refused
        time.sleep(4)
        with FakeOpenAIServer(port=port, latency_ms=40) as second:
            run.join(60)
            answered_after = second.stats()["by_status"].get("200", 0)
    finally:
        first.close()
    assert result["code"] == 0
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 60 and len({row["instruction"] for row in rows}) == 60
    assert read_jsonl(tmp_path / "out" / "failures.jsonl") == []
    # Requests in flight when the server died were lost with it and sent again: at most concurrency.
    assert answered_before + answered_after <= 60 + 4
    import json

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["steps"][1]["retries"].get("connection", 0) > 0


def test_an_output_dir_that_is_a_file_stops_before_the_first_request(tmp_path, capsys):
    with FakeOpenAIServer() as server:
        path = recipe(tmp_path, server.base_url)
        (tmp_path / "out").write_text("not a folder")
        code, out = run_cli(["run", str(path)], capsys)
        assert code == 2
        assert "r.yaml" in out and "output.dir" in out and "is a file" in out
        assert server.stats()["requests"] == 0

        (tmp_path / "out").unlink()
        (tmp_path / "parent").write_text("a file where a folder should be")
        code, out = run_cli(["run", str(path), "--output", str(tmp_path / "parent" / "run")], capsys)
        assert code == 2 and "--output" in out and "is a file" in out
        assert server.stats()["requests"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only folder does not stop root: only root's case")
def test_an_output_dir_on_a_read_only_mount_stops_before_the_first_request(tmp_path, capsys):
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is needed (make test installs it)"
    with FakeOpenAIServer() as server:
        path = recipe(tmp_path, server.base_url)
        (tmp_path / "ro").mkdir()
        command = [
            bwrap, "--dev-bind", "/", "/", "--ro-bind", str(tmp_path / "ro"), str(tmp_path / "ro"),
            sys.executable, "-m", "synthkd.cli", "run", str(path), "--output", str(tmp_path / "ro" / "run"),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert done.returncode == 2, done.stderr + done.stdout
        assert "cannot write into" in done.stdout + done.stderr
        assert server.stats()["requests"] == 0


@pytest.mark.slow
def test_an_output_dir_that_is_a_mount_point_is_written_and_rewritten(tmp_path):
    """A Docker volume as output.dir: the folder cannot be renamed (EBUSY), so its contents are
    swapped instead; a second run replaces them and keeps other files."""
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is needed (make test installs it)"
    with FakeOpenAIServer() as server:
        path = recipe(tmp_path, server.base_url, rows=5)
        out = tmp_path / "out"
        out.mkdir()
        script = (
            f"set -e; {sys.executable} -m synthkd.cli run {path}; echo kept > {out}/notes.txt; "
            f"{sys.executable} -m synthkd.cli run {path} --no-cache; ls -A {out}; cat {out}/notes.txt"
        )
        command = [bwrap, "--dev-bind", "/", "/", "--tmpfs", str(out), "sh", "-c", script]
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=240)
        answered = server.stats()["by_status"].get("200", 0)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    listing = done.stdout.split()
    assert {"dataset", "data.jsonl", "failures.jsonl", "manifest.json", "notes.txt", "kept"} <= set(listing)
    assert not [name for name in listing if name.startswith(".synthkd.")]  # no side folder left inside
    assert answered == 10  # both runs wrote their outputs: nothing was paid for in vain


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path, capsys):
    with FakeOpenAIServer(latency_ms=200) as server:
        path = recipe(tmp_path, server.base_url, rows=20)
        first = subprocess.Popen(
            [sys.executable, "-m", "synthkd.cli", "run", str(path)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while server.stats()["requests"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            code, out = run_cli(["run", str(path)], capsys)
            assert code == 1
            assert f"another synthkd run (pid {first.pid}) is writing {tmp_path / 'out'}" in out
        finally:
            output, _ = first.communicate(timeout=120)
        assert first.returncode == 0, output
        # The refused run sent nothing: every request was the first run's, each sent once.
        assert server.stats()["requests"] == 20
        # Once the first is done, the folder is free again.
        assert run_cli(["run", str(path)], capsys)[0] == 0


@pytest.mark.slow
def test_two_runs_sharing_one_cache_seldom_pay_twice_for_one_request(tmp_path):
    """Two runs on different output folders and one cache, started together: each starts at its own
    place in the requests and looks in the cache before sending, so few requests are paid twice
    (before: the two runs went in step and paid for nearly every request twice)."""
    with FakeOpenAIServer(latency_ms=100) as server:
        paths = []
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            path = recipe(folder, server.base_url, rows=80)
            paths.append(path)
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "synthkd.cli", "run", str(path)],
                cwd=path.parent,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "SYNTHKD_CACHE_DIR": str(tmp_path / "shared-cache")},
            )
            for path in paths
        ]
        outputs = [run.communicate(timeout=240)[0] for run in runs]
        answered = server.stats()["by_status"].get("200", 0)
    assert [run.returncode for run in runs] == [0, 0], outputs
    for path in paths:
        assert len(read_jsonl(path.parent / "out" / "data.jsonl")) == 80
    # 80 answers are needed; what two runs can overlap on is what they have in flight at once.
    assert 80 <= answered <= 80 + 2 * 4, answered
