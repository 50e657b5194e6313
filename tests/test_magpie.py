"""Magpie: the pre-query prefix, the step on a tiny local model, the refusal for API teachers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.cli import main
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.teachers import ChatRequest, TeacherConfig, build_teacher


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_prefix_stops_inside_the_open_user_turn(tiny_model: Path):
    teacher = build_teacher(TeacherConfig(backend="transformers", model=str(tiny_model)))
    open_turn = ChatRequest(({"role": "system", "content": "Be brief."}, {"role": "user", "content": ""}),
                            continue_final=True)  # fmt: skip
    assert teacher.render_prompt(open_turn) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    answer = ChatRequest(({"role": "user", "content": "Hi"},))
    assert teacher.render_prompt(answer).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_magpie_samples_instructions_then_answers_them(tmp_path: Path, tiny_model: Path):
    path = write_recipe(tmp_path / "r.yaml", {
        "name": "m",
        "teacher": {"backend": "transformers", "model": str(tiny_model), "batch_size": 4,
                    "params": {"temperature": 1.0, "max_tokens": 12}},
        "steps": [{"step": "magpie", "num_rows": 10, "min_words": 2, "system": "Talk about bread."}],
        "output": {"dir": str(tmp_path / "out")},
    })  # fmt: skip
    result = run_recipe(load_recipe(path))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    report = result.reports[0]
    assert report.rows_out + sum(report.rows_dropped.values()) + report.rows_failed == 10
    assert report.requests_sent == 10 + len(rows)  # one instruction, then one answer, per kept row
    assert len({row["instruction"].lower() for row in rows}) == len(rows)  # duplicates were dropped
    for row in rows:
        assert row["id"].startswith("magpie-") and len(row["instruction"].split()) >= 2
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][1]["content"] == row["instruction"]


def test_api_teacher_is_refused_before_anything_runs(tmp_path: Path, capsys):
    path = write_recipe(tmp_path / "r.yaml", {
        "name": "m", "teacher": {"backend": "openai", "model": "gpt-4o-mini", "api_key_env": None},
        "steps": [{"step": "magpie"}],
    })  # fmt: skip
    assert main(["validate", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "r.yaml:3: teacher.backend: magpie needs a local teacher (backend: transformers), not openai" in err
    )


@pytest.mark.slow
def test_shipped_recipe_runs_on_the_embedded_teacher(tmp_path: Path):
    args = ["run", "recipes/magpie.yaml", "--output", str(tmp_path / "mp"),
            "--set", "steps.0.num_rows=6", "--set", "teacher.params.max_tokens=40"]  # fmt: skip
    assert main(args) == 0
    manifest = json.loads((tmp_path / "mp" / "manifest.json").read_text())
    magpie, kept = manifest["steps"]
    assert magpie["requests_sent"] == 6 + magpie["rows_out"]  # an instruction each, then an answer each
    assert magpie["rows_out"] + sum(magpie["rows_dropped"].values()) + magpie["rows_failed"] == 6
    rows = read_jsonl(tmp_path / "mp" / "data.jsonl")
    # Sampling is seeded per request, so on CPU the embedded model writes the same 6 distinct
    # instructions every time (all 6 kept); the filter may drop a refusal, not most of them.
    assert 4 <= len(rows) == kept["rows_out"] == manifest["rows"]
    system = "You are a helpful assistant for questions about cooking and nutrition."
    assert len({row["instruction"] for row in rows}) == len(rows)
    for row in rows:
        assert row["id"].startswith("magpie-") and len(row["instruction"].split()) >= 3
        assert len(row["response"].strip()) >= 20 and row["system"] == system
        assert row["messages"] == [
            {"role": "system", "content": system},
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["response"]},
        ]
