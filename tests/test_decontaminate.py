"""Decontamination: a planted benchmark item is found by 13-gram overlap or, when short, whole."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.curate.decontamination import NgramIndex
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe

FARMER = "A farmer has 17 sheep and all but 9 run away. How many sheep does the farmer have left now?"
BENCHMARK = [
    {"question": FARMER},
    {"question": "What is the boiling point of water at sea level in Celsius?"},  # 11 words: matched whole
    {"question": "Name a prime."},  # too short to match on
]


def test_ngram_index_matches_long_overlaps_and_whole_short_items():
    index = NgramIndex(n=13, min_words=8)
    index.add_all((row["question"], "bench") for row in BENCHMARK)
    planted = "Please solve: " + FARMER.lower().replace(" now?", "?")
    assert index.match(planted) == ("bench", "a farmer has 17 sheep and all but 9 run away how many")
    assert index.match("Q: What is the boiling point of water at sea level in Celsius? A: 100") is not None
    assert index.match("What is the boiling point of milk at sea level in Celsius?") is None
    assert index.match("Name a prime. Seven.") is None  # short items under min_words are not used
    assert index.match("A farmer has 17 sheep.") is None


def test_step_drops_planted_rows_and_reports_them(tmp_path: Path):
    write_jsonl(tmp_path / "bench.jsonl", BENCHMARK)
    write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"id": "clean", "instruction": "How many legs does a spider have?", "response": "Eight."},
            {
                "id": "copied",
                "instruction": "Solve this.",
                "response": FARMER + " 9.",
            },
            {
                "id": "short",
                "instruction": "What is the boiling point of water at sea level in Celsius?",
                "response": "100",
            },
        ],
    )
    path = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "dc",
            "teacher": {"backend": "transformers", "model": "embedded"},
            "steps": [
                {"step": "load", "path": "rows.jsonl"},
                {
                    "step": "decontaminate",
                    "eval_sets": [{"path": "bench.jsonl", "columns": ["question"], "name": "riddles"}],
                },
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    run_recipe(load_recipe(path))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["clean"]
    step = json.loads((tmp_path / "out" / "manifest.json").read_text())["steps"][1]
    assert step["rows_dropped"] == {"contaminated": 2}
    assert step["details"]["checked"] == ["riddles"]
    assert [(r["id"], r["eval_set"]) for r in step["details"]["removed"]] == [
        ("copied", "riddles"),
        ("short", "riddles"),
    ]


def test_embedding_check_catches_a_paraphrase(tmp_path: Path):
    write_jsonl(
        tmp_path / "bench.jsonl",
        [{"question": "What is the boiling point of water at sea level in Celsius?"}],
    )
    write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {
                "id": "paraphrase",
                "instruction": "At sea level, what temperature in Celsius does water boil at?",
            },
            {"id": "other", "instruction": "How do spiders spin webs?"},
        ],
    )
    steps = [
        {"step": "load", "path": "rows.jsonl"},
        {
            "step": "decontaminate",
            "columns": ["instruction"],
            "embedding_threshold": 0.8,
            "eval_sets": [{"path": "bench.jsonl", "columns": ["question"]}],
        },
    ]
    path = write_recipe(
        tmp_path / "r.yaml", {"name": "dc", "steps": steps, "output": {"dir": str(tmp_path / "out")}}
    )
    result = run_recipe(load_recipe(path))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["other"]
    assert result.reports[1].details["removed"][0]["id"] == "paraphrase"  # no 13-gram in common: embeddings
