"""The run folder is replaced whole: all old or all new outputs, never a mix, nothing left beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

import synthkd
from synthkd.output import write_run
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.testing.fake_openai import FakeOpenAIServer

DEAD_PID = 999_999_999  # no such process: folders named after it belong to a killed writer


def side_folders(out: Path) -> list[str]:
    return sorted(path.name for path in out.parent.iterdir() if path.name.startswith(f".{out.name}."))


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_rerun_replaces_the_outputs_keeps_other_files_and_leaves_nothing_beside(tmp_path: Path):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Explain item {i}."} for i in range(4)])
    with FakeOpenAIServer() as server:
        recipe = {
            "name": "out",
            "teacher": {"backend": "openai", "model": "m", "base_url": server.base_url, "api_key_env": None},
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "runs" / "out")},
        }
        path = write_recipe(tmp_path / "r.yaml", recipe)
        run_recipe(load_recipe(path))
        out = tmp_path / "runs" / "out"
        assert side_folders(out) == []
        # What else lives in a run folder (a trained student, notes) survives a rerun.
        (out / "student").mkdir()
        (out / "student" / "model.safetensors").write_bytes(b"weights")
        (out / "notes.txt").write_text("mine")
        os.symlink("notes.txt", out / "link")
        run_recipe(load_recipe(path, ["steps.0.limit=2"]))
    assert len(read_jsonl(out / "data.jsonl")) == 2
    assert json.loads((out / "manifest.json").read_text())["rows"] == 2
    assert (out / "student" / "model.safetensors").read_bytes() == b"weights"
    assert (out / "notes.txt").read_text() == "mine" and os.readlink(out / "link") == "notes.txt"
    assert side_folders(out) == []


def test_a_write_that_fails_leaves_the_previous_outputs_intact(tmp_path: Path):
    out = tmp_path / "out"
    write_run(out, [{"id": "a", "x": 1}], [], {"rows": 1})
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(Exception, match="convert"):  # Arrow cannot store an int and a str in one column
        write_run(out, [{"id": "a", "x": 2}, {"id": "b", "x": "text"}], [], {"rows": 2})
    assert snapshot(out) == before
    assert side_folders(out) == []


def test_folders_of_a_killed_writer_are_cleaned_up_or_put_back(tmp_path: Path):
    out = tmp_path / "out"
    write_run(out, [{"id": "old"}], [], {"rows": 1})
    (out / "notes.txt").write_text("mine")
    # Killed between its two renames: the old run folder is retired, the new one still staged.
    os.rename(out, tmp_path / f".out.retired-{DEAD_PID}-0")
    (tmp_path / f".out.staging-{DEAD_PID}-0").mkdir()
    (tmp_path / f".out.staging-{DEAD_PID}-0" / "data.jsonl").write_text("half")
    write_run(out, [{"id": "new"}], [], {"rows": 1})
    assert read_jsonl(out / "data.jsonl") == [{"id": "new"}]
    assert (out / "notes.txt").read_text() == "mine"  # carried over from the folder put back
    assert side_folders(out) == []
    # A folder of a writer still running is not touched.
    live = tmp_path / f".out.staging-{os.getpid()}-0"
    live.mkdir()
    write_run(out, [{"id": "newer"}], [], {"rows": 1})
    assert side_folders(out) == [live.name]


WRITER = """
import json, sys
from pathlib import Path
import synthkd
from synthkd.output import write_run

out = Path(sys.argv[1])
generation = 0
while True:
    generation += 1
    rows = [{"id": str(i), "generation": generation, "text": "x" * 200} for i in range(3000)]
    write_run(out, rows, [], {"generation": generation})
    print(generation, flush=True)
"""


def test_kill_9_while_writing_leaves_one_whole_generation(tmp_path: Path):
    out = tmp_path / "out"
    root = str(Path(synthkd.__file__).resolve().parents[1])  # this copy of synthkd, installed or not
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert writer.stdout is not None
        for _ in range(3):  # a few whole writes, then kill it in the middle of another one
            assert writer.stdout.readline()
        time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    generation = json.loads((out / "manifest.json").read_text())["generation"]
    rows = read_jsonl(out / "data.jsonl")
    assert len(rows) == 3000 and {row["generation"] for row in rows} == {generation}
    from datasets import load_from_disk

    assert set(load_from_disk(str(out / "dataset"))["generation"]) == {generation}
    write_run(out, [{"id": "after"}], [], {})
    assert side_folders(out) == []
