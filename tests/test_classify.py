"""classify: labels from a fixed set, validated; a label outside the set is re-asked, then a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.errors import RecipeError
from synthkd.pipeline import check, plan, run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.classify import label_parser
from synthkd.steps.parsing import ParseError
from synthkd.testing.fake_openai import FakeOpenAIServer

LABELS = {"positive": "the writer likes the product", "negative": "the writer dislikes it", "neutral": ""}
ROWS = [
    {"id": "great", "review": "Great phone, the screen is gorgeous.", "gold": "positive"},
    {"id": "battery", "review": "Terrible battery, dead by noon.", "gold": "positive"},  # teacher disagrees
    {"id": "plain", "review": "It is a phone.", "gold": "neutral"},
    {"id": "odd", "review": "Purple monkey dishwasher.", "gold": "neutral"},  # the teacher fails it
]
SCRIPT = [
    # Answers shaped like a chat model's: decorated, cased differently, with a full stop.
    {"match": "(?s)- positive: the writer likes the product.*Great phone", "reply": "**Label:** Positive."},
    {"match": "(?s)Text:\nTerrible battery", "reply": "Label: NEGATIVE"},
    {"match": "(?s)Text:\nIt is a phone", "reply": "Label: mixed"},  # outside the set: re-asked
    {"match": "'mixed' is not one of the labels", "reply": "Label: neutral"},
    {"match": "(?s)Text:\nPurple monkey", "reply": "Label: surreal"},  # outside the set, twice
    {"match": "'surreal' is not one of the labels", "reply": "Label: Surreal"},
]


def test_label_parser():
    parse = label_parser(["positive", "negative"], rationale=False)
    assert parse("Label: Positive") == ("positive", "")
    assert parse("**label**: `NEGATIVE`.") == ("negative", "")
    assert parse("negative") == ("negative", "")  # a bare label, when no reasoning was asked for
    assert parse("Thinking...\nFinal label: positive") == ("positive", "Thinking...")
    with pytest.raises(ParseError, match="'great' is not one of the labels; answer with one of: positive"):
        parse("Label: great")
    with pytest.raises(ParseError, match="not one of"):
        parse("Label: positively")  # exact match only, no prefixes
    with pytest.raises(ParseError, match="no 'Label: <label>' line"):
        parse("It is positive.\nI think.")
    reasoned = label_parser(["positive", "negative"], rationale=True)
    assert reasoned("The screen is praised.\nLabel: positive") == ("positive", "The screen is praised.")
    with pytest.raises(ParseError, match="no reasoning"):
        reasoned("Label: positive")


def _recipe(tmp_path: Path, base_url: str, **step: object) -> Path:
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "classify",
            "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
            "steps": [
                {"step": "load", "path": "rows.jsonl"},
                {"step": "classify", "labels": LABELS, "text_column": "review", **step},
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def test_labels_validated_and_reasked_through_the_server(tmp_path: Path):
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = _recipe(tmp_path, server.base_url, task="the sentiment of the review", gold_column="gold")
        result = run_recipe(load_recipe(path))
        assert server.stats()["requests"] == 4 + 2  # one re-ask each for 'mixed' and 'surreal'
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert {key: row["label"] for key, row in rows.items()} == {
        "great": "positive",
        "battery": "negative",
        "plain": "neutral",  # 'mixed' was rejected, the re-ask gave a label in the set
    }
    [(_, failure)] = result.failures
    assert (failure.id, failure.reason, failure.attempts) == ("odd", "invalid_label", 2)
    assert failure.error.startswith("'Surreal' is not one of the labels") and failure.raw == "Label: Surreal"
    assert result.reports[1].rows_failed == 1
    details = result.manifest["steps"][1]["details"]
    assert details["label_counts"] == {"positive": 1, "negative": 1, "neutral": 1}
    # The failed gold row counts as wrong: 2 right of 4.
    assert (details["gold_rows"], details["gold_rows_failed"], details["teacher_accuracy"]) == (4, 1, 0.5)
    great = rows["great"]
    assert great["response"] == "positive"
    assert great["messages"] == [
        {
            "role": "user",
            "content": "Classify the text by the sentiment of the review as one of: positive, negative, "
            "neutral.\nAnswer with the label only.\n\nText:\nGreat phone, the screen is gorgeous.",
        },
        {"role": "assistant", "content": "positive"},
    ]


def test_rationale_goes_before_the_label(tmp_path: Path):
    script = [{"match": "explain your reasoning", "reply": "The reviewer is pleased.\n\nLabel: positive"}]
    with FakeOpenAIServer(script=script) as server:
        run_recipe(load_recipe(_recipe(tmp_path, server.base_url, rationale=True)))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 4
    assert rows[0]["rationale"] == "The reviewer is pleased."
    assert rows[0]["response"] == "The reviewer is pleased.\n\nLabel: positive"
    assert "Explain briefly" in rows[0]["messages"][0]["content"]


def test_recipe_errors_and_dry_run(tmp_path: Path):
    bad = _recipe(tmp_path, "http://127.0.0.1:9/v1")
    text = bad.read_text().replace("neutral: ''", "Positive: ''")
    bad.write_text(text)
    with pytest.raises(RecipeError, match="same up to case"):
        load_recipe(bad)
    loaded = load_recipe(_recipe(tmp_path, "http://127.0.0.1:9/v1", text_column="body"))
    with pytest.raises(RecipeError, match="needs column"):
        check(loaded)
    loaded = load_recipe(_recipe(tmp_path, "http://127.0.0.1:9/v1"))
    check(loaded)
    assert plan(loaded)[1][1].requests == len(ROWS)
