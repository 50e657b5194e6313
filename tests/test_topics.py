"""Topic tree from a domain prompt: duplicate topics and instructions dropped, paths kept."""

from __future__ import annotations

from pathlib import Path

from helpers import read_jsonl, write_recipe

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.testing.fake_openai import FakeOpenAIServer

SUBTOPICS = "List 4 distinct subtopics"
REQUESTS = "(?s)Write 3 different requests.*"
SCRIPT = [
    {
        "match": SUBTOPICS,
        "reply": "1. Heart failure\n2. Atrial fibrillation\n3. Heart failure management\n4. Hypertension",
    },
    {
        "match": REQUESTS + '"Atrial fibrillation"',
        "reply": "1. How is atrial fibrillation diagnosed?\n"
        "2. How is atrial fibrillation diagnosed in adults?\n3. Compare rate and rhythm control.",
    },
    {"match": REQUESTS + '"Heart failure"', "reply": "Sure, here you go!"},
    {"match": "Your answer could not be used", "reply": "1. What are the early signs of heart failure?"},
    {
        "match": REQUESTS + '"Hypertension"',
        "reply": "1. What blood pressure counts as hypertension?\n"
        "2. List lifestyle changes that lower blood pressure.\n3. Explain how ACE inhibitors work.",
    },
]


def make_recipe(tmp_path: Path, base_url: str, **step) -> Path:
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "topics",
            "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
            "steps": [{"step": "topics", "domain": "cardiology for general practitioners", **step}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def test_tree_drops_near_duplicates_and_keeps_paths(tmp_path: Path):
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = make_recipe(tmp_path, server.base_url, breadth=4, depth=1, per_topic=3)
        result = run_recipe(load_recipe(path))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert result.reports[0].rows_dropped == {"duplicate_topic": 1, "duplicate_instruction": 1}
    assert [(row["topic"], row["instruction"]) for row in rows] == [
        ("Heart failure", "What are the early signs of heart failure?"),  # after one re-ask
        ("Atrial fibrillation", "How is atrial fibrillation diagnosed?"),
        ("Atrial fibrillation", "Compare rate and rhythm control."),
        ("Hypertension", "What blood pressure counts as hypertension?"),
        ("Hypertension", "List lifestyle changes that lower blood pressure."),
        ("Hypertension", "Explain how ACE inhibitors work."),
    ]
    assert rows[0]["topic_path"] == ["Heart failure"] and rows[0]["id"] == "topic-0000-0"


def test_two_levels_give_breadth_squared_leaves(tmp_path: Path):
    script = [
        {
            "match": "List 3 distinct subtopics",
            "reply": "1. {word} {word}\n2. {word} {word}\n3. {word} {word}",
        },
        {
            "match": "Write 2 different requests",
            "reply": "1. Explain {word} {word} {word}.\n2. Compare {word} and {word}.",
        },
    ]
    with FakeOpenAIServer(script=script) as server:
        run_recipe(load_recipe(make_recipe(tmp_path, server.base_url, breadth=3, depth=2, per_topic=2)))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    leaves = {tuple(row["topic_path"]) for row in rows}
    assert len(leaves) == 9 and all(len(leaf) == 2 for leaf in leaves)
    assert len({leaf[0] for leaf in leaves}) == 3
    assert len(rows) == 18
