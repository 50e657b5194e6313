"""The student in the loop (`loop:`): each round the student answers, the teacher (a scripted
OpenAI-compatible server) critiques and revises those answers, and the student trains by DPO on
revision-over-answer pairs. Tiny random models on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli, write_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.cache import ResponseCache, request_key
from synthkd.errors import RecipeError
from synthkd.loop.run import ROUND_FILE, read_round, round_rows, student_steps
from synthkd.pipeline import check
from synthkd.recipe import load_recipe, recipe_from_data
from synthkd.teachers.config import TeacherConfig

QUESTIONS = [f"What is {a} plus {b}?" for a in range(4) for b in range(4)]
CRITIQUE = "(?s)Critique the response against"
REVISE = "(?s)and a critique of that response"
# The teacher finds fault with every answer the student writes and revises it to the right form.
SCRIPT = [
    {"match": CRITIQUE, "reply": "1. It does not give the sum.\nNeeds revision: yes"},
    {"match": REVISE, "reply": "The sum is {word}."},
]


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "student")


def loop_recipe(tmp_path: Path, base_url: str, student: Path, **loop: object) -> Path:
    write_jsonl(tmp_path / "questions.jsonl", [{"instruction": q} for q in QUESTIONS])
    return write_recipe(
        tmp_path / "loop.yaml",
        {
            "name": "tiny-loop",
            "teacher": {"backend": "openai", "model": "teacher", "base_url": base_url, "api_key_env": None},
            "steps": [{"step": "load", "path": "questions.jsonl"}, {"step": "label"}],
            "output": {"dir": "run", "report": "basic"},
            "loop": {
                "rounds": 2,
                "student_params": {"temperature": 1.0, "max_tokens": 8},
                "steps": [
                    {"step": "label", "teacher": "student"},
                    {"step": "critique_revise", "principles": ["Give the sum."]},
                ],
                **loop,
            },
            "train": {
                "method": "dpo",
                "student": str(student),
                "eval_split": 0.25,
                "eval_max_new_tokens": 8,
                "args": {"max_steps": 4, "learning_rate": 1e-3, "per_device_train_batch_size": 4},
            },
        },
    )


def student_answers(round_dir: Path) -> dict[str, str]:
    """Each row's answer from the round's student: the `rejected` side of its pair."""
    rows = [json.loads(line) for line in (round_dir / "data" / "data.jsonl").read_text().splitlines()]
    return {row["id"]: row["rejected"][-1]["content"] for row in rows}


@pytest.mark.slow
def test_two_rounds_each_answered_by_the_checkpoint_before_it(tmp_path: Path, student: Path, capsys):
    from synthkd.testing.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(script=SCRIPT) as server:
        recipe = loop_recipe(tmp_path, server.base_url, student)
        code, out = run_cli(["run", str(recipe)], capsys)
    assert code == 0, out
    assert "'loss':" not in out  # each round's training on a bar, not transformers' log dicts
    rounds = [read_round(tmp_path / "run" / "rounds" / f"round-{n}") for n in (1, 2)]
    first, second = rounds
    assert first is not None and second is not None
    # Round 1 starts from train.student; round 2 from the student round 1 trained.
    assert first.checkpoint == str(student) and second.checkpoint == first.trained
    assert Path(first.trained).name.startswith("student-") and first.trained != second.trained
    # 16 rows, 4 held out for the evaluation: 12 answered, critiqued and revised each round.
    assert first.rows_in == second.rows_in == 12 and first.rows_out == 12
    assert [step["step"] for step in first.steps] == ["label", "critique_revise"]
    assert len(first.train_losses) == 4
    # Every student on the same held-out rows: the first checkpoint, then each round's.
    assert all(r.after["rows"] == 4 and "agreement" in r.after for r in rounds)

    # The round-2 student's answers differ from round 1's, and each was cached under a key whose
    # model is round 1's checkpoint: recomputing the key from that checkpoint finds that answer.
    answers = [student_answers(tmp_path / "run" / "rounds" / f"round-{n}") for n in (1, 2)]
    assert answers[0].keys() == answers[1].keys()
    assert any(answers[0][key] != answers[1][key] for key in answers[0])
    manifest = json.loads((tmp_path / "run" / "rounds" / "round-2" / "data" / "manifest.json").read_text())
    round_recipe = recipe_from_data(manifest["recipe"], base_dir=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "run" / "data.jsonl").read_text().splitlines()]
    held_out = set(json.loads((tmp_path / "run" / "rounds" / "held_out.json").read_text()))
    pool = [row for row in rows if row["id"] not in held_out]
    check(round_recipe, set(pool[0]))  # loads the steps' templates
    slots, requests = round_recipe.recipe.steps[0]._requests(pool)  # the label step's requests
    answered_by = TeacherConfig(
        backend="transformers", model=first.trained, params={"temperature": 1.0, "max_tokens": 8, "seed": 42}
    )
    keys = [request_key(answered_by, request) for request in requests]
    cached = ResponseCache.default().get_many(keys)
    assert len(cached) == len(requests) == 12
    for (row, _, _), key in zip(slots, keys, strict=True):
        assert cached[key].text == answers[1][row["id"]]

    # The run's report and dataset card show the rounds.
    page = (tmp_path / "run" / "report.html").read_text()
    assert '<section id="loop">' in page and Path(second.trained).name in page
    card = (tmp_path / "run" / "README.md").read_text()
    assert "## The student in the loop" in card
    assert f"| 2 | {Path(first.trained).name} | {Path(second.trained).name} | 12 of 12 |" in card


@pytest.mark.slow
def test_kill_9_in_round_2_then_rerun_repeats_no_finished_round(tmp_path: Path, student: Path):
    from synthkd.testing.fake_openai import FakeOpenAIServer

    # Slow answers from the teacher, one at a time: round 2 takes seconds, time to kill it.
    with FakeOpenAIServer(script=SCRIPT, latency_ms=150) as server:
        recipe = loop_recipe(tmp_path, server.base_url, student)
        text = recipe.read_text().replace("api_key_env: null", "api_key_env: null\n  concurrency: 1")
        recipe.write_text(text)
        command = [sys.executable, "-m", "synthkd.cli", "run", str(recipe)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True)
        round_1 = tmp_path / "run" / "rounds" / "round-1" / ROUND_FILE
        round_2_data = tmp_path / "run" / "rounds" / "round-2"
        deadline = time.monotonic() + 300
        while not round_2_data.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert round_1.is_file() and not (round_2_data / ROUND_FILE).exists()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        finished = round_1.read_text()
        first_student = json.loads(finished)["trained"]
        stamp = round_1.stat().st_mtime_ns
        rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr + rerun.stdout
    assert "round 1: finished before, kept" in rerun.stderr  # the console's lines go to stderr
    assert round_1.read_text() == finished and round_1.stat().st_mtime_ns == stamp
    assert Path(first_student).is_dir()
    second = read_round(round_2_data)
    assert second is not None and second.checkpoint == first_student


def test_round_rows_move_on_each_round_and_wrap():
    pool = [{"id": str(n)} for n in range(5)]
    assert [row["id"] for row in round_rows(pool, 1, 2)] == ["0", "1"]
    assert [row["id"] for row in round_rows(pool, 3, 2)] == ["4", "0"]
    assert round_rows(pool, 2, None) == pool


def test_student_stands_for_the_checkpoint_and_the_teacher_judges_it():
    teacher = {"backend": "openai", "model": "judge-model"}
    steps = student_steps(
        [
            {"step": "preference", "teacher": "student", "n": 2},
            {"step": "critique_revise", "principles": ["x"]},
        ],
        "/ckpt/student-abc",
        {"temperature": 0.8},
        teacher,
    )
    assert steps[0]["teacher"]["model"] == "/ckpt/student-abc"
    assert steps[0]["teacher"]["backend"] == "transformers"
    assert steps[0]["judge_teacher"] == teacher  # the student's answers, the teacher's scores
    assert "teacher" not in steps[1]  # a step of the teacher's own is left to the recipe's teacher


def test_a_loop_needs_a_train_section_and_messages(tmp_path: Path, student: Path):
    from synthkd.loop.run import run_loop

    recipe = loop_recipe(tmp_path, "http://127.0.0.1:9/v1", student)
    data = json.loads(json.dumps(load_recipe(recipe).recipe.model_dump(mode="json", exclude_unset=True)))
    data.pop("train")
    loaded = recipe_from_data(data, base_dir=tmp_path)
    with pytest.raises(RecipeError, match="add a train: section"):
        run_loop(loaded, tmp_path / "run")


def test_a_loop_step_with_a_wrong_key_is_refused_when_the_recipe_loads(tmp_path: Path, student: Path, capsys):
    recipe = loop_recipe(tmp_path, "http://127.0.0.1:9/v1", student)
    recipe.write_text(recipe.read_text().replace("teacher: student", "teacher: student\n    samples: 3"))
    code, out = run_cli(["validate", str(recipe)], capsys)
    assert code == 2
    assert "loop.steps: steps.0.samples: Extra inputs are not permitted" in out
    assert f"{recipe}:" in out  # the file and line of the loop's steps


@pytest.mark.slow
def test_a_star_round_that_verifies_no_answer_leaves_the_student_unchanged(
    tmp_path: Path, student: Path, capsys
):
    """STaR: the student samples rationales and only those whose final answer matches the gold
    are kept. A tiny random student never writes one, so nothing is trained on, and it says so."""
    from synthkd.testing.fake_openai import FakeOpenAIServer

    write_jsonl(tmp_path / "problems.jsonl", [{"instruction": q, "answer_gold": "4"} for q in QUESTIONS])
    with FakeOpenAIServer() as server:
        recipe = loop_recipe(tmp_path, server.base_url, student)
        data = load_recipe(recipe).recipe.model_dump(mode="json", exclude_unset=True)
        data["steps"][0]["path"] = "problems.jsonl"
        data["loop"]["steps"] = [
            {"step": "rationale", "teacher": "student", "gold_column": "answer_gold", "n": 2}
        ]
        data["train"]["method"] = "sft"
        write_recipe(recipe, data)
        code, out = run_cli(["run", str(recipe)], capsys)
    assert code == 0, out
    first = read_round(tmp_path / "run" / "rounds" / "round-1")
    assert first is not None and first.rows_in == 12 and first.rows_out == 0
    assert first.trained == first.checkpoint == str(student)  # nothing to train on: unchanged
    dropped = first.steps[0]["rows_dropped"]
    assert sum(dropped.values()) + first.steps[0]["rows_failed"] == 12
    assert "round 1: 12 rows -> none kept to train on, the student is unchanged" in out


def test_pair_prefers_the_first_answer_and_drops_what_cannot_be_a_pair():
    import asyncio

    from synthkd.steps.base import CheckContext, StepContext
    from synthkd.steps.pair import PairStep

    rows = [
        {"id": "a", "system": "Be brief.", "prompt": "2+2?", "response": "4", "student_response": "5"},
        {"id": "b", "instruction": "Say hi", "response": "Hi.", "student_response": " Hi. "},
        {"id": "c", "instruction": "Say no", "response": "No.", "student_response": ""},
    ]
    step = PairStep(step="pair")
    assert step.check(set(rows[0]), CheckContext(Path.cwd(), lambda key: key)) >= {"chosen", "rejected"}
    result = asyncio.run(step.run(rows, StepContext(Path.cwd(), 0, None)))
    assert [row["id"] for row in result.rows] == ["a"]
    pair = result.rows[0]
    assert pair["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "4"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "5"}]
    assert result.dropped == {"identical_answers": 1, "empty_answer": 1}
    with pytest.raises(RecipeError, match="pair needs column"):
        step.check({"id", "response"}, CheckContext(Path.cwd(), lambda key: key))
