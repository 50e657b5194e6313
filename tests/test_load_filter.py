"""The load and filter steps on real files."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from synthkd.errors import RecipeError
from synthkd.steps.base import CheckContext, StepContext
from synthkd.steps.filter import FilterStep
from synthkd.steps.load import LoadStep

ROWS = [{"instruction": "Add 2 and 3.", "input": ""}, {"instruction": "Translate 'chat'.", "input": "French"}]
# All 175 Self-Instruct seed tasks, shipped with the self_instruct recipe (Apache-2.0, see its README).
SELF_INSTRUCT_SEEDS = Path(__file__).resolve().parents[1] / "recipes/self_instruct/seed_tasks.jsonl"


def load(path: str, base: Path, **options) -> list[dict]:
    step = LoadStep(step="load", path=path, **options)
    step.check(set(), CheckContext(base, lambda key: key))
    return asyncio.run(step.run([], StepContext(base, 0, None))).rows


def test_every_file_format_reads_the_same_rows(tmp_path: Path):
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    with (tmp_path / "d.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "input"])
        writer.writeheader()
        writer.writerows(ROWS)
    from datasets import Dataset

    Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    results = [load(name, tmp_path) for name in ("d.jsonl", "d.json", "d.csv", "d.parquet", "saved")]
    for rows in results:
        assert [(r["instruction"], r["input"]) for r in rows] == [
            (r["instruction"], r["input"]) for r in ROWS
        ]
        assert rows == results[0]  # same content -> same ids, whatever the format
    assert len({row["id"] for row in results[0]}) == 2


def test_ids_are_stable_and_unique_for_duplicate_rows(tmp_path: Path):
    write_jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[0], ROWS[1]])
    first, second = load("d.jsonl", tmp_path), load("d.jsonl", tmp_path)
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert len({r["id"] for r in first}) == 3


def test_given_ids_that_collide_with_suffixes_stay_unique(tmp_path: Path):
    ids = ["a", "a", "a-1", "b", "b-1", "b", "b"]
    write_jsonl(
        tmp_path / "d.jsonl", [{"id": row_id, "instruction": f"task {i}"} for i, row_id in enumerate(ids)]
    )
    rows = load("d.jsonl", tmp_path)
    assert [row["id"] for row in rows] == ["a", "a-2", "a-1", "b", "b-1", "b-2", "b-3"]


def test_self_instruct_seed_tasks_are_flattened():
    rows = load(str(SELF_INSTRUCT_SEEDS), Path("."))
    source = [json.loads(line) for line in SELF_INSTRUCT_SEEDS.read_text().splitlines()]
    assert len(rows) == sum(len(task["instances"]) for task in source)
    first = rows[0]
    assert first["id"] == source[0]["id"]
    assert first["instruction"] == source[0]["instruction"]
    assert first["output"] == source[0]["instances"][0]["output"]
    assert "instances" not in first
    assert sum(r["is_classification"] for r in rows) >= 25


def test_limit_and_rename(tmp_path: Path):
    write_jsonl(tmp_path / "d.jsonl", [{"question": f"q{i}"} for i in range(10)])
    rows = load("d.jsonl", tmp_path, limit=3, rename={"question": "instruction"})
    assert [r["instruction"] for r in rows] == ["q0", "q1", "q2"]
    with pytest.raises(RecipeError, match="cannot rename missing column"):
        load("d.jsonl", tmp_path, rename={"nope": "instruction"})


def filtered(rows: list[dict], **options) -> tuple[list[dict], dict]:
    step = FilterStep(step="filter", **options)
    step.check({"response", "finish_reason", "id"}, CheckContext(Path("."), lambda key: key))
    result = asyncio.run(step.run(rows, StepContext(Path("."), 0, None)))
    return result.rows, dict(result.dropped)


def test_filter_counts_every_reason():
    rows = [
        {"id": "a", "response": "A full and useful answer.", "finish_reason": "stop"},
        {"id": "b", "response": "short", "finish_reason": "stop"},
        {"id": "c", "response": "I'm sorry, but I cannot help with that request.", "finish_reason": "stop"},
        {
            "id": "d",
            "response": "As an AI language model, I have no opinions on this.",
            "finish_reason": "stop",
        },
        {"id": "e", "response": "An answer that was cut off in the midd", "finish_reason": "length"},
        {"id": "f", "response": "Contains a FORBIDDEN word here.", "finish_reason": "stop"},
    ]
    kept, dropped = filtered(
        rows, min_chars=10, drop_refusals=True, drop_truncated=True, drop_regex="FORBIDDEN"
    )
    assert [r["id"] for r in kept] == ["a"]
    assert dropped == {"too_short": 1, "refusal": 2, "truncated": 1, "drop_regex_matched": 1}


def test_filter_keep_regex_and_max_chars():
    rows = [{"id": str(i), "response": text} for i, text in enumerate(["42", "forty-two", "4" * 50])]
    kept, dropped = filtered(rows, keep_regex=r"^\d+$", max_chars=10)
    assert [r["id"] for r in kept] == ["0"]
    assert dropped == {"keep_regex_unmatched": 1, "too_long": 1}


def test_refusal_late_in_a_long_answer_is_kept():
    answer = "Here is the procedure in detail. " * 10 + "I cannot stress enough how important step 2 is."
    kept, _ = filtered([{"id": "a", "response": answer}], drop_refusals=True)
    assert len(kept) == 1


def test_invalid_regex_is_a_recipe_error():
    with pytest.raises(RecipeError, match="invalid regular expression"):
        FilterStep(step="filter", drop_regex="(").check({"response"}, CheckContext(Path("."), lambda k: k))
