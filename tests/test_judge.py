"""The judge: good, malformed and out-of-range scores; aspects; min_score; the swap-agreement rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.errors import RecipeError, RunIncompleteError
from synthkd.pipeline import check, run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.parsing import ParseError
from synthkd.steps.scoring import agreed_winner, score_parser
from synthkd.testing.fake_openai import FakeOpenAIServer

POINTWISE = "(?s)You are an impartial judge of an AI assistant's answer.*"
SCRIPT = [
    {
        "match": POINTWISE + "Response:\nGood answer",
        "reply": '{"score": 9, "justification": "Correct and clear."}',
    },
    {
        "match": POINTWISE + "Response:\nWeak answer",
        "reply": '```json\n{"score": 3, "justification": "Vague."}\n```',
    },
    {"match": POINTWISE + "Response:\nOff scale", "reply": '{"score": 11, "justification": "Amazing."}'},
    {"match": POINTWISE + "Response:\nGarbled", "reply": "I'd give it a solid eight!"},
    {"match": "(?s)outside the scale|not a JSON object", "reply": "still no score"},
]


def rows_recipe(tmp_path: Path, base_url: str, rows: list[dict], **step) -> Path:
    write_jsonl(tmp_path / "rows.jsonl", rows)
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "j",
            "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
            "steps": [{"step": "load", "path": "rows.jsonl"}, {"step": "judge", **step}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def test_score_parser():
    parse = score_parser((1, 10), None)
    assert parse('{"score": 7, "justification": "ok"}') == (7.0, "ok", {})
    for bad in ('{"score": 0}', '{"score": "7"}', '{"score": true}', "seven", "[7]"):
        with pytest.raises(ParseError):
            parse(bad)
    aspects = score_parser((1, 5), ["helpfulness", "honesty"])
    value = aspects('{"helpfulness": {"score": 4, "justification": "a"}, "honesty": {"score": 5}}')
    assert value[0] == 4.5 and value[2] == {"helpfulness": 4.0, "honesty": 5.0}
    with pytest.raises(ParseError, match='missing "honesty"'):
        aspects('{"helpfulness": {"score": 4}}')


def test_pointwise_scores_failures_and_min_score(tmp_path: Path):
    rows = [
        {"id": name, "instruction": "Explain tides.", "response": text}
        for name, text in [
            ("good", "Good answer"),
            ("weak", "Weak answer"),
            ("off", "Off scale"),
            ("garbled", "Garbled"),
        ]
    ]
    with FakeOpenAIServer(script=SCRIPT) as server:
        result = run_recipe(load_recipe(rows_recipe(tmp_path, server.base_url, rows, min_score=5)))
        assert server.stats()["requests"] == 6  # the two bad answers were each re-asked once
    kept = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert [(row["id"], row["score"], row["justification"]) for row in kept] == [
        ("good", 9.0, "Correct and clear.")
    ]
    assert result.reports[1].rows_dropped == {"below_min_score": 1}  # weak: 3 < 5, parsed through its fence
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert [(f["id"], f["reason"], f["attempts"]) for f in failures] == [
        ("off", "unparseable_score", 2),
        ("garbled", "unparseable_score", 2),
    ]  # never silently counted as 1 or 10
    assert failures[0]["raw"] == "still no score"


def test_identical_rows_that_fail_count_their_own_attempts_on_a_run_and_a_rerun(tmp_path: Path):
    """Two rows asking the same question share one answer: each failure still counts its own ask and
    re-ask (2), not 3, and a rerun from the cache writes the same (it once wrote 0)."""
    rows = [
        {"id": "a", "instruction": "Explain wind.", "response": "Garbled"},
        {"id": "b", "instruction": "Explain wind.", "response": "Garbled"},
        {"id": "c", "instruction": "Explain rain.", "response": "Good answer"},
    ]
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = rows_recipe(tmp_path, server.base_url, rows)
        written = []
        for _ in range(2):
            run_recipe(load_recipe(path))
            written.append((tmp_path / "out" / "failures.jsonl").read_bytes())
    failures = [json.loads(line) for line in written[0].splitlines()]
    assert [(f["id"], f["reason"], f["attempts"]) for f in failures] == [
        ("a", "unparseable_score", 2),
        ("b", "unparseable_score", 2),
    ]
    assert written[1] == written[0]


def test_swap_agreement_rule():
    columns = ("response_a", "response_b")
    assert agreed_winner("A", "B", columns) == "response_a"
    assert agreed_winner("B", "A", columns) == "response_b"
    assert agreed_winner("A", "A", columns) == "tie"  # the judge always picked the first: position bias
    assert agreed_winner("tie", "A", columns) == "tie"


def test_pairwise_counts_a_win_only_when_both_orders_agree(tmp_path: Path):
    script = [
        {"match": "(?s)Response A:\nPrecise.*Response B:\nSloppy", "reply": '{"winner": "A"}'},
        {"match": "(?s)Response A:\nSloppy.*Response B:\nPrecise", "reply": '{"winner": "B"}'},
        {"match": "(?s)Response A:", "reply": '{"winner": "A", "justification": "first is best"}'},
    ]
    rows = [
        {"id": "clear", "instruction": "Define pi.", "response_a": "Sloppy", "response_b": "Precise"},
        {"id": "biased", "instruction": "Define e.", "response_a": "One", "response_b": "Two"},
    ]
    with FakeOpenAIServer(script=script) as server:
        run_recipe(load_recipe(rows_recipe(tmp_path, server.base_url, rows, mode="pairwise")))
    winners = {row["id"]: row["winner"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert winners == {"clear": "response_b", "biased": "tie"}


def test_multi_aspect_scores(tmp_path: Path):
    reply = json.dumps(
        {
            a: {"score": s, "justification": a}
            for a, s in [
                ("helpfulness", 4),
                ("honesty", 5),
                ("instruction_following", 3),
                ("truthfulness", 4),
            ]
        }
    )
    with FakeOpenAIServer(script=[{"match": ".", "reply": reply}]) as server:
        rows = [{"id": "r", "instruction": "Explain tides.", "response": "Tides come from the moon."}]
        step = {
            "scale": [1, 5],
            "aspects": ["helpfulness", "honesty", "instruction_following", "truthfulness"],
        }
        run_recipe(load_recipe(rows_recipe(tmp_path, server.base_url, rows, **step)))
    (row,) = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert row["score"] == 4.0 and json.loads(row["aspect_scores"])["honesty"] == 5.0


def test_pairwise_failures_give_their_real_reason(tmp_path: Path):
    too_long = {"status": 400, "code": "context_length_exceeded", "message": "maximum context length"}
    script = [
        {"match": "(?s)Response A:\nHuge", **too_long},
        {"match": "(?s)Response A:\nGarbled", "reply": "A, I think"},
        {"match": "(?s)not a JSON object", "reply": "A, really"},
        {"match": "(?s)Response A:", "reply": '{"winner": "A"}'},
    ]
    rows = [
        {"id": "long", "instruction": "Define pi.", "response_a": "Huge", "response_b": "Small"},
        {"id": "garbled", "instruction": "Define e.", "response_a": "Garbled", "response_b": "Fine"},
    ]
    with FakeOpenAIServer(script=script) as server, pytest.raises(RunIncompleteError, match="no rows"):
        run_recipe(load_recipe(rows_recipe(tmp_path, server.base_url, rows, mode="pairwise")))
    failures = read_jsonl(tmp_path / "out.incomplete" / "failures.jsonl")  # no row left: the run failed
    reasons = {f["id"]: f["reason"] for f in failures}
    assert reasons == {"long": "context_length_exceeded", "garbled": "unparseable_verdict"}


def test_a_low_aspect_is_not_averaged_away(tmp_path: Path):
    """min_score checks the mean; min_aspect_scores drops an answer unsafe in one aspect however
    good the others are, and is named as the reason when the mean is low too."""
    # (the first rule whose name the response starts with answers: the longer name goes first)
    scores = {"unsafe-and-poor": (3, 2, 3), "unsafe": (10, 2, 10), "safe": (8, 8, 8), "poor": (5, 6, 5)}
    script = [
        {
            "match": f"(?s)Response:\n{name}",
            "reply": json.dumps(
                {a: {"score": s} for a, s in zip(("accuracy", "safety", "help"), values, strict=True)}
            ),
        }
        for name, values in scores.items()
    ]
    rows = [{"id": name, "instruction": "How much paracetamol?", "response": name} for name in scores]
    step = {"aspects": ["accuracy", "safety", "help"], "min_score": 7, "min_aspect_scores": {"safety": 4}}
    with FakeOpenAIServer(script=script) as server:
        result = run_recipe(load_recipe(rows_recipe(tmp_path, server.base_url, rows, **step)))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["safe"]
    # "unsafe" (mean 7.33) passed min_score; "unsafe-and-poor" fails both and is counted as unsafe.
    assert result.reports[1].rows_dropped == {"below_min_safety": 2, "below_min_score": 1}


def test_min_aspect_scores_names_only_scored_aspects(tmp_path: Path):
    rows = [{"id": "r", "instruction": "i", "response": "r"}]
    step = {"aspects": ["accuracy"], "min_aspect_scores": {"safety": 4}}
    with pytest.raises(RecipeError, match="safety: not among the aspects scored") as error:
        check(load_recipe(rows_recipe(tmp_path, "http://127.0.0.1:9/v1", rows, **step)))
    assert "steps.1.min_aspect_scores" in str(error.value)
