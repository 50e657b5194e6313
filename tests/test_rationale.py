"""Rationales: parsing the final answer, the gold check, self-consistency, re-asks."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.parsing import ParseError
from synthkd.steps.rationale import check_answers, normalise_answer, parse_final_answer
from synthkd.testing.fake_openai import FakeOpenAIServer

SCRIPT = [
    {"match": "What is 2 \\+ 2", "reply": "Two and two make four.\nFinal answer: 4"},
    {"match": "What is 3 \\+ 3", "reply": "Three and three make seven.\nFinal answer: 7"},  # wrong
    {"match": "capital of France", "reply": "It is Paris.\n\n**Final answer:** Paris."},
    {"match": "Name a primary colour", "reply": "Blue is a primary colour."},  # no final line
    {"match": "Your answer could not be used", "reply": "Blue is one.\nFinal answer: blue"},
    {"match": "How many legs", "reply": "A spider has eight legs.\nFinal answer: 8"},
]
ROWS = [
    {"id": "add", "instruction": "What is 2 + 2?", "output": "4"},
    {"id": "wrong", "instruction": "What is 3 + 3?", "output": "6"},
    {"id": "paris", "instruction": "What is the capital of France?", "output": "paris"},
    {"id": "colour", "instruction": "Name a primary colour.", "output": "Blue"},
    {"id": "legs", "instruction": "How many legs does a spider have?", "output": ""},  # no gold: votes decide
]


def test_parse_final_answer():
    assert parse_final_answer("Step 1.\nStep 2.\nFinal answer: 42") == ("Step 1.\nStep 2.", "42")
    assert parse_final_answer("final answer is: **yes**")[1] == "yes"
    with pytest.raises(ParseError):
        parse_final_answer("The answer is probably 42.")


def test_normalise_and_check_answers():
    assert normalise_answer(" 1,000. ") == normalise_answer("1000") == "1000"
    assert normalise_answer("3.0") == "3" and normalise_answer("Paris!") == "paris"
    assert check_answers(["4", "4", "5"], 3, "4", 0.5) == ("4", None, 2 / 3)
    assert check_answers(["5"], 3, "4", 0.5) == (None, "wrong_answer", 0.0)
    assert check_answers(["a", "a", "b", "c", "d"], 5, None, 0.5) == (None, "no_consensus", 0.4)
    assert check_answers(["a", "a", "a", "b"], 5, None, 0.5) == ("a", None, 0.6)


def test_gold_check_and_reask_through_the_server(tmp_path: Path):
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    path = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "rat",
            "teacher": {"backend": "openai", "model": "m", "base_url": "", "api_key_env": None},
            "steps": [
                {"step": "load", "path": "rows.jsonl"},
                {"step": "rationale", "gold_column": "output", "n": 2, "system": "Explain simply."},
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    with FakeOpenAIServer(script=SCRIPT) as server:
        result = run_recipe(load_recipe(path, [f"teacher.base_url={server.base_url}"]))
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(rows) == {"add", "paris", "colour", "legs"}
    assert result.reports[1].rows_dropped == {"wrong_answer": 1}
    assert (rows["add"]["rationale"], rows["add"]["answer"], rows["add"]["agreement"]) == (
        "Two and two make four.",
        "4",
        1.0,
    )
    assert rows["paris"]["answer"] == "Paris."
    assert rows["colour"]["answer"] == "blue"  # re-asked once, then parsed
    assert rows["legs"]["answer"] == "8"  # no gold: both samples agreed
    assert rows["add"]["messages"][0] == {"role": "system", "content": "Explain simply."}
    assert rows["add"]["messages"][-1]["content"].endswith("Final answer: 4")
