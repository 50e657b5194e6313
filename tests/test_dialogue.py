"""Dialogue: the teacher plays both sides; conversations end on <end>; failures are recorded."""

from __future__ import annotations

from pathlib import Path

from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.testing.fake_openai import FakeOpenAIServer

USER_SIDE = "(?s)You are playing the user"
SCRIPT = [
    {"match": USER_SIDE + ".*What about green tea", "reply": "<end>"},
    {"match": USER_SIDE + ".*The user is: a student.*tea", "reply": "User: What about green tea?"},
    {"match": USER_SIDE, "reply": "And then, {word}?"},
    {"match": "^Say nothing", "reply": ""},
]


def test_conversations_alternate_end_early_and_fail_visibly(tmp_path: Path):
    write_jsonl(
        tmp_path / "openings.jsonl",
        [
            {"id": "tea", "instruction": "How do I brew tea?", "persona": "a student"},
            {"id": "bread", "instruction": "How is bread made?", "persona": "a baker"},
            {"id": "mute", "instruction": "Say nothing", "persona": "anyone"},
        ],
    )
    path = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "dlg",
            "teacher": {"backend": "openai", "model": "m", "base_url": "", "api_key_env": None},
            "steps": [
                {"step": "load", "path": "openings.jsonl"},
                {"step": "dialogue", "turns": 3, "persona_column": "persona", "system": "Be kind."},
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    with FakeOpenAIServer(script=SCRIPT) as server:
        run_recipe(load_recipe(path, [f"teacher.base_url={server.base_url}"]))
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(rows) == {"tea", "bread"}
    tea = rows["tea"]["messages"]
    assert [m["role"] for m in tea] == ["system", "user", "assistant", "user", "assistant"]
    assert tea[3]["content"] == "What about green tea?"  # the "User:" label was stripped
    assert tea[4]["content"] == "Answer: What about green tea?"
    assert rows["tea"]["turns"] == 2  # the simulated user said <end>
    bread = rows["bread"]["messages"]
    assert [m["role"] for m in bread][1:] == ["user", "assistant"] * 3 and rows["bread"]["turns"] == 3
    assert bread[3]["content"].startswith("And then, ") and bread[3]["content"] != bread[5]["content"]
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert [(f["id"], f["reason"]) for f in failures] == [("mute", "empty_answer")]
