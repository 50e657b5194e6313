"""recompute: the safe evaluator, answer parsing, and the step through the local server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.parsing import ParseError
from synthkd.steps.recompute import (
    ExpressionError,
    answer_targets,
    matches,
    parse_expression,
    safe_eval,
)
from synthkd.testing.fake_openai import FakeOpenAIServer


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1250 - 300", 950),
        ("(1250 - 300) / 1250 * 100", 76),
        ("-3 ** 2", -9),
        ("2 ** -1", 0.5),
        ("17 % 5", 2),
        ("round(2 / 3, 2)", 0.67),
        ("round(2.6)", 3),
        ("abs(-4.5) + max(1, 2, 3) - min(4, 5)", 3.5),
        ("1000 * 1.05 ** 2", 1102.5),
        ("+(((7)))", 7),
    ],
)
def test_safe_eval_computes_arithmetic(expression: str, value: float):
    assert safe_eval(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("__import__('os').system('touch pwned')", "not allowed"),
        ("__import__('pathlib').Path('pwned').touch()", "not allowed"),
        ("open('pwned', 'w')", "'open' is not allowed"),
        ("eval('1 + 1')", "'eval' is not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
        ("(1).real", "Attribute is not allowed"),
        ("x + 1", "names such as 'x'"),
        ("round", "must be called"),
        ("lambda: 1", "Lambda is not allowed"),
        ("[1, 2][0]", "not allowed"),
        ("1 if 2 else 3", "IfExp is not allowed"),
        ("2 < 3", "Compare is not allowed"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1j * 2", "only numbers"),
        ("1,250 - 300", "no commas"),
        ("7 // 2", "FloorDiv is not allowed"),
        ("1 << 100", "LShift is not allowed"),
        ("round(1.5, ndigits=0)", "positional arguments only"),
        ("abs(1, 2)", "1 to 1 arguments"),
        ("max(1250)", "2 to 64 arguments"),
        ("round(1e308 * 10 - 1e308 * 10)", "cannot be evaluated"),
        ("10 ** 10 ** 10", "exponents above"),
        ("9.0 ** 999", "too large"),
        ("1e308 * 10", "not a finite number"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("1 / (2 - 2)", "divides by zero"),
        ("1 +", "not an arithmetic expression"),
        ("1" + "+1" * 400, "longer than"),
    ],
)
def test_safe_eval_refuses_everything_else(expression: str, says: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExpressionError, match=None) as raised:
        safe_eval(expression)
    assert says in str(raised.value)
    assert not (tmp_path / "pwned").exists()


def test_parse_expression_reads_the_expression_line():
    assert parse_expression("Expression: 1250 - 300") == ("1250 - 300", 950)
    assert parse_expression("Revenue less costs.\n**Expression:** `$1250 × 2 = 2500`.") == ("1250 * 2", 2500)
    assert parse_expression("```\n(10 − 4) ÷ 3\n```") == ("(10 - 4) / 3", 2)
    with pytest.raises(ParseError, match="no 'Expression"):
        parse_expression("First take revenue.\nThen subtract costs.")
    with pytest.raises(ParseError, match="not allowed"):
        parse_expression("Expression: __import__('os').getcwd()")


def test_answer_targets_and_matches():
    assert answer_targets("1,250") == [(1250, 0.5)]
    assert answer_targets("-$3.5 million") == [(-3.5, 0.05), (-3.5e6, 0.05e6)]
    assert answer_targets("12.5%")[1] == pytest.approx((0.125, 0.0005))
    assert answer_targets("Paris") is None
    assert answer_targets("(300)") == [(-300, 0.5)]  # accounting notation for a negative
    assert answer_targets("($1,250.5)") == [(-1250.5, 0.05)]
    assert answer_targets("1e6") is None and answer_targets("about 2.5E-3") is None  # not read as 1 or 2.5
    assert answer_targets("300 (approx.)")[0] == (300, 0.5)
    assert answer_targets("from 10% to 12%") is None  # two numbers: not checked
    assert matches(76.0, answer_targets("76%"), 0.001)
    assert matches(0.76, answer_targets("76%"), 0.001)
    assert matches(33.333, answer_targets("33.3%"), 0.001)  # within the rounding of the written answer
    assert matches(1_234_567, answer_targets("$1.2 million"), 0.001)
    assert not matches(1_300_000, answer_targets("$1.2 million"), 0.001)
    assert not matches(950, answer_targets("1000"), 0.001)
    assert matches(1000.4, answer_targets("1000"), 0.001) and matches(1001, answer_targets("1000"), 0.001)
    assert not matches(1002, answer_targets("1000"), 0.001)


STATEMENT = "Revenue: 1250. Operating costs: 300. Shares outstanding: 50."
ROWS = [
    {"id": "right", "input": STATEMENT, "instruction": "What is operating profit?", "answer": "950"},
    {"id": "planted", "input": STATEMENT, "instruction": "What is the operating margin?", "answer": "80%"},
    {"id": "per-share", "input": STATEMENT, "instruction": "What is revenue per share?", "answer": "$25"},
    {"id": "commas", "input": STATEMENT, "instruction": "What is revenue less costs?", "answer": "950"},
    {"id": "unsafe", "input": STATEMENT, "instruction": "What are costs per share?", "answer": "6"},
    {"id": "words", "input": STATEMENT, "instruction": "Is the company profitable?", "answer": "Yes"},
]
SCRIPT = [
    {"match": "no commas in numbers", "reply": "Expression: 1250 - 300"},  # the re-ask of "commas"
    {"match": "the only functions are", "reply": "Expression: __import__('os').system('touch pwned')"},
    {"match": "operating profit\\?", "reply": "Expression: 1250 - 300"},
    {"match": "operating margin\\?", "reply": "Expression: (1250 - 300) / 1250 * 100"},  # 76, not 80
    {"match": "revenue per share\\?", "reply": "The revenue divided by the shares.\nExpression: 1250 / 50"},
    {"match": "revenue less costs\\?", "reply": "Expression: 1,250 - 300"},
    {"match": "costs per share\\?", "reply": "Expression: __import__('os').system('touch pwned')"},
]


def test_recompute_drops_a_planted_wrong_answer_and_refuses_unsafe_code(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    path = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "recompute",
            "teacher": {"backend": "openai", "model": "m", "base_url": "", "api_key_env": None},
            "steps": [{"step": "load", "path": "rows.jsonl"}, {"step": "recompute"}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    with FakeOpenAIServer(script=SCRIPT) as server:
        result = run_recipe(load_recipe(path, [f"teacher.base_url={server.base_url}"]))
        sent = server.stats()["requests"]
    assert sent == 5 + 2  # no request for the answer in words; one re-ask each for commas and unsafe
    report = result.reports[1]
    assert (report.rows_in, report.rows_out, report.rows_dropped) == (6, 4, {"recompute_mismatch": 1})
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(rows) == {"right", "per-share", "commas", "words"}
    assert (rows["right"]["expression"], rows["right"]["recomputed"]) == ("1250 - 300", 950)
    assert rows["per-share"]["recomputed"] == 25 and rows["commas"]["recomputed"] == 950
    assert rows["words"]["expression"] is None  # not a number: passed through unchecked
    (failure,) = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert (failure["id"], failure["reason"], failure["attempts"]) == ("unsafe", "invalid_expression", 2)
    assert "__import__" in failure["raw"] and "not allowed" in failure["error"]
    assert not (tmp_path / "pwned").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    details = manifest["steps"][1]["details"]
    assert (details["checked"], details["matched"], details["not_numeric"]) == (5, 3, 1)
    assert details["mismatches"] == [
        {"id": "planted", "answer": "80%", "expression": "(1250 - 300) / 1250 * 100", "recomputed": 76.0}
    ]
