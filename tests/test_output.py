"""The run folder is replaced whole: all old or all new outputs, never a mix, nothing left beside it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

import synthkd
from synthkd.output import write_run
from synthkd.output_folder import recover
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
    with pytest.raises(Exception, match="convert"):  # Arrow cannot store a Python object
        write_run(out, [{"id": "a", "x": object()}, {"id": "b", "x": object()}], [], {"rows": 2})
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


# A writer that writes one generation, waits for the test's go, then writes a second one and
# stops dead at a chosen point of that write (the test then kills it there):
#   writing:  half of data.jsonl written in the staging folder, nothing swapped yet;
#   swapping: just before the new run folder is renamed into place (the old one is out of the way);
#   swapped:  just after, the old one not yet deleted.
WRITER = """
import json, os, sys, time
from pathlib import Path
from synthkd.output import write_run
from synthkd.output_folder import recover

out, mode = Path(sys.argv[1]).absolute(), sys.argv[2]
ROWS = 3000
generation = 0
dumped = 0

def pause():
    print("paused", flush=True)
    time.sleep(600)

real_dumps = json.dumps
def dumps(value, *args, **kwargs):
    global dumped
    if mode == "writing" and isinstance(value, dict) and value.get("generation") == 2:
        dumped += 1
        if dumped == ROWS // 2:
            pause()
    return real_dumps(value, *args, **kwargs)

real_rename = os.rename
def rename(source, target, *args, **kwargs):
    into_place = generation == 2 and Path(target).absolute() == out
    if into_place and mode == "swapping":
        pause()
    real_rename(source, target, *args, **kwargs)
    if into_place and mode == "swapped":
        pause()

json.dumps, os.rename = dumps, rename
for generation in (1, 2):
    if generation == 2:
        sys.stdin.readline()
    rows = [{"id": str(i), "generation": generation, "text": "x" * 200} for i in range(ROWS)]
    write_run(out, rows, [], {"generation": generation})
    print("written", generation, flush=True)
"""


def read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def whole_generation(out: Path) -> int:
    """The one generation every output file in `out` holds (all 3000 rows of it)."""
    generation = json.loads((out / "manifest.json").read_text())["generation"]
    rows = read_jsonl(out / "data.jsonl")
    assert len(rows) == 3000 and {row["generation"] for row in rows} == {generation}
    from datasets import load_from_disk

    dataset = load_from_disk(str(out / "dataset"))
    assert dataset.num_rows == 3000 and set(dataset["generation"]) == {generation}
    return generation


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["writing", "swapping", "swapped"])
def test_kill_9_while_writing_leaves_one_whole_generation(tmp_path: Path, mode: str):
    out = tmp_path / "out"
    root = str(Path(synthkd.__file__).resolve().parents[1])  # this copy of synthkd, installed or not
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert writer.stdin is not None and writer.stdout is not None
        assert read_line(writer.stdout, 120) == "written 1\n"
        (out / "notes.txt").write_text("mine")  # not an output: every write carries it over
        before = snapshot(out)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert read_line(writer.stdout, 120) == "paused\n", f"the writer never reached {mode!r}"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    beside = side_folders(out)
    if mode == "writing":  # killed with the new outputs half staged: the old ones are untouched
        assert [name.split("-")[0] for name in beside] == [".out.staging"]
        assert snapshot(out) == before
    elif mode == "swapping":  # killed with no run folder: the old one is whole beside it ...
        assert not out.exists()
        assert [name.split("-")[0] for name in beside] == [".out.retired", ".out.staging"]
        recover(out)  # ... and is put back by the next write to it (which starts with this)
        assert snapshot(out) == before and side_folders(out) == []
    else:  # killed after the swap: the new outputs are whole, the old ones wait to be deleted
        assert [name.split("-")[0] for name in beside] == [".out.retired"]
        assert whole_generation(out) == 2 and (out / "notes.txt").read_text() == "mine"
    assert whole_generation(out) == (2 if mode == "swapped" else 1)
    # The next write completes and cleans up after the killed one.
    write_run(out, [{"id": "after", "generation": 3}], [], {"generation": 3})
    assert read_jsonl(out / "data.jsonl") == [{"id": "after", "generation": 3}]
    assert (out / "notes.txt").read_text() == "mine"
    assert side_folders(out) == []


def _tool_turns(name: str, arguments: dict) -> list[dict]:
    return [
        {"role": "user", "content": f"use {name}"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_0_0", "type": "function", "function": {"name": name, "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_0_0", "name": name, "content": '{"ok": true}'},
        {"role": "assistant", "content": "Done."},
    ]


def test_conversations_are_lists_of_structs_with_only_tool_arguments_as_json(tmp_path: Path):
    """Turns with and without tool calls, calls of tools whose arguments differ in keys and types
    (a key `when` a string in one tool, a list in another): one struct type for every turn, None
    where a turn lacks a key, and only `arguments` JSON, read back as written."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Json, List, Value, load_from_disk

    rows = [
        {"id": "a", "messages": _tool_turns("weather", {"city": "Oslo", "when": "today"})},
        {"id": "b", "messages": _tool_turns("calendar", {"when": ["2025-03-14", "2025-03-15"], "n": 2})},
        {
            "id": "c",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}],
        },
    ]
    write_run(tmp_path / "out", rows, [], {"rows": 3})
    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    call = {
        "id": Value("string"),
        "type": Value("string"),
        "function": {"name": Value("string"), "arguments": Json()},
    }
    turn = {
        "role": Value("string"),
        "content": Value("string"),
        "tool_calls": List(call),
        "tool_call_id": Value("string"),
        "name": Value("string"),
    }
    assert dataset.features["messages"] == List(turn)
    for read, row in zip(dataset, rows, strict=True):
        # The keys a turn lacks are None (chat templates and transformers take None as absent).
        assert [{k: v for k, v in m.items() if v is not None} for m in read["messages"]] == row["messages"]
    assert dataset[1]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "when": ["2025-03-14", "2025-03-15"],
        "n": 2,
    }
    assert read_jsonl(tmp_path / "out" / "data.jsonl") == rows  # the JSON lines keep each turn's own keys
    # What pandas and pyarrow see in parquet: nested lists and dicts, the arguments as JSON text.
    dataset.to_parquet(str(tmp_path / "rows.parquet"))
    table = pq.read_table(tmp_path / "rows.parquet")
    assert pa.types.is_struct(table.schema.field("messages").type.value_type)
    [read_call] = table.to_pylist()[0]["messages"][1]["tool_calls"]
    assert json.loads(read_call["function"]["arguments"]) == {"city": "Oslo", "when": "today"}


def test_plain_conversations_keep_their_inferred_types_and_odd_ones_fall_back_to_json():
    from datasets import Json, List, Value

    from synthkd.output import to_dataset

    chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    plain = to_dataset([{"id": "a", "messages": chat, "prompt": chat[:1], "chosen": chat[1:]}])
    assert plain.features["messages"] == List({"role": Value("string"), "content": Value("string")})
    # Turns Arrow cannot unify (text content here, a list of parts there) are stored as JSON, whole,
    # even with the same keys; the other conversation columns keep their types.
    parts = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    rows = [
        {"id": "a", "messages": chat, "chosen": chat[1:]},
        {"id": "b", "messages": parts, "chosen": chat[1:]},
    ]
    mixed = to_dataset(rows)
    assert (
        isinstance(mixed.features["messages"], Json) and mixed.features["chosen"] == plain.features["chosen"]
    )
    assert mixed[1]["messages"] == parts and mixed[0]["messages"] == chat
