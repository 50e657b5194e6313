"""Dry-run plans of topics, doc_qa, magpie, tool_calls, code_check, recompute and logits, each
checked against what a run of the same recipe then sends; a step without a plan; and the dry run's
time estimate, code_check's sandbox runs and logits' forward passes included."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe
from tiny_model import build_tiny_model

import synthkd
from synthkd.cli import main
from synthkd.dry_run import (
    API_FIRST_TOKEN_S,
    API_TOKENS_PER_S,
    EMBEDDED_BATCH_START_S,
    EMBEDDED_SECONDS_PER_READ_TOKEN,
    EMBEDDED_SECONDS_PER_TOKEN,
    LOCAL_TIME_UNKNOWN,
    concurrency_minutes,
    estimate_steps,
    totals,
)
from synthkd.pipeline import check, plan, run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.base import Row, StepPlan, TeacherStep
from synthkd.testing.fake_openai import FakeOpenAIServer


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_server(server):
    server.reset()
    server.configure(script=[])
    yield


def api_recipe(tmp_path: Path, base_url: str, steps: list[dict], **teacher) -> Path:
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "plans",
            "teacher": {
                "backend": "openai",
                "model": "fake-model",
                "base_url": base_url,
                "api_key_env": None,
                "params": {"max_tokens": 100},
                **teacher,
            },
            "steps": steps,
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def plans_of(path: Path) -> list[tuple[str, StepPlan]]:
    loaded = load_recipe(path)
    check(loaded)
    return [(step.step, step_plan) for step, step_plan in plan(loaded)]


def counts(plans: list[tuple[str, StepPlan]]) -> list[tuple[str, str, int, int | None]]:
    return [(name, p.count, p.requests, p.requests_max) for name, p in plans]


def sent_by_step(result) -> list[int]:  # noqa: ANN001 (a RunResult)
    return [report.requests_sent for report in result.reports]


TOPICS_SCRIPT = [
    {"match": "List 3 distinct subtopics", "reply": "1. {word} {word}\n2. {word} {word}\n3. {word} {word}"},
    {
        "match": "Write 2 different requests",
        "reply": "1. Explain {word} {word}.\n2. Compare {word} and {word}.",
    },
]


def test_topics_plan_is_the_full_tree_the_run_sends(tmp_path, server):
    server.configure(script=TOPICS_SCRIPT)
    steps = [
        {"step": "topics", "domain": "home baking", "breadth": 3, "depth": 2, "per_topic": 2},
        {"step": "label"},
    ]
    path = api_recipe(tmp_path, server.base_url, steps)
    before = plans_of(path)
    # The tree: 1 root request, 3 second-level ones, then 9 leaves; each may be re-asked once.
    # Label answers 9 leaves x 2 requests, counted from the rows topics stands for.
    assert counts(before) == [("topics", "estimate", 1 + 3 + 9, 2 * 13), ("label", "exact", 18, None)]
    assert before[0][1].rounds == 3  # two levels, then the leaves
    assert "home baking" in before[0][1].sample_prompts[0][-1]["content"]
    assert server.stats()["requests"] == 0

    result = run_recipe(load_recipe(path))
    assert result.reports[0].rows_dropped == {}  # a full tree: what the estimate assumes
    assert sent_by_step(result) == [13, 18] == [before[0][1].requests, before[1][1].requests]
    assert server.stats()["requests"] == 13 + 18

    # Only the root request is known in advance, so only it is found in the cache afterwards.
    assert [p.cached for _, p in plans_of(path)] == [1, 0]


def write_documents(tmp_path: Path) -> Path:
    documents = [
        {"id": f"d{d}", "title": f"Notes {d}", "text": " ".join(
            f"Document {d}, part {i}: water boils at 100 degrees at sea level." for i in range(3 + 4 * d))}
        for d in range(3)
    ]  # fmt: skip
    return write_jsonl(tmp_path / "docs.jsonl", documents)


DOC_QA_SCRIPT = [
    {
        "match": "(?s)question.*answer.*evidence",  # the generation prompt
        "reply": json.dumps(
            [
                {
                    "question": "At what temperature does water boil? ({word})",
                    "answer": "100 degrees",
                    "evidence": "water boils at 100 degrees",
                },
                {
                    "question": "Where does water boil at 100 degrees? ({word})",
                    "answer": "at sea level",
                    "evidence": "at sea level",
                },
            ]
        ),  # fmt: skip
    }
]


def test_doc_qa_plan_counts_the_chunks_and_cached_answers_stand_in(tmp_path, server):
    server.configure(script=DOC_QA_SCRIPT)
    write_documents(tmp_path)
    steps = [
        {"step": "doc_qa", "documents": "docs.jsonl", "chunk_tokens": 48, "pairs_per_chunk": 2},
        {"step": "label"},
    ]
    path = api_recipe(tmp_path, server.base_url, steps)
    before = plans_of(path)
    chunks = before[0][1].requests
    assert chunks > 3  # the longer documents are split: read and chunked without a request
    assert counts(before) == [
        ("doc_qa", "estimate", chunks, 2 * chunks),
        ("label", "exact", 2 * chunks, None),
    ]
    assert server.stats()["requests"] == 0

    result = run_recipe(load_recipe(path))
    assert result.reports[0].rows_dropped == {} and not result.failures
    assert sent_by_step(result) == [chunks, 2 * chunks]

    # Every chunk's answer is cached, and its pairs stand in for themselves: label's requests about
    # them are found in the cache too, so a rerun would send nothing.
    after = plans_of(path)
    assert [(p.requests, p.cached) for _, p in after] == [(chunks, chunks), (2 * chunks, 2 * chunks)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_magpie_plan_is_the_most_before_and_exact_once_its_instructions_are_cached(tmp_path, tiny_model):
    path = write_recipe(tmp_path / "r.yaml", {
        "name": "m",
        "teacher": {"backend": "transformers", "model": str(tiny_model), "batch_size": 4,
                    "params": {"temperature": 1.0, "max_tokens": 8}},
        "steps": [{"step": "magpie", "num_rows": 6, "min_words": 2}, {"step": "label"}],
        "output": {"dir": str(tmp_path / "out")},
    })  # fmt: skip
    # Before: 6 instructions, each assumed kept and answered, then labelled.
    assert counts(plans_of(path)) == [("magpie", "estimate", 12, None), ("label", "exact", 6, None)]

    result = run_recipe(load_recipe(path))
    magpie, label = result.reports
    assert 6 + magpie.rows_out == magpie.requests_sent <= 12  # an answer for each instruction kept

    # After: the cached instructions are screened as the run screened them, so the count is what
    # the run asked for, all of it cached, and label's rows are the ones magpie kept (their
    # answers are magpie's own: label found them in the cache).
    after = plans_of(path)
    asked = [report.requests_sent + report.cache_hits for report in result.reports]
    assert counts(after) == [("magpie", "exact", asked[0], None), ("label", "exact", asked[1], None)]
    assert asked[1] == magpie.rows_out
    assert [p.cached for _, p in after] == asked


TOOLS = [
    {"name": "get_weather", "description": "Current weather in a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
]  # fmt: skip
TOOL_SCRIPT = [
    {"match": "Write one realistic message", "reply": "Is it raining in {word}?"},
    {"match": "Decide which tool calls", "reply": '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]'},
    {"match": "Decide whether more", "reply": "[]"},
    {"match": "The assistant made these calls", "reply": '{"rain": true}'},
    {"match": "To answer, you called tools", "reply": "Yes, take an umbrella."},
]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # 4 written requests, then per conversation: calls, results, "more?", answer. At most every
        # conversation calls in both rounds (5 requests) and everything is re-asked once.
        ({"num_requests": 4, "max_rounds": 2}, ("estimate", 4 + 4 * 4, 2 * (4 + 4 * 5))),
        # Requests from a column, one round: calls, results, answer per row.
        ({"request_column": "request", "max_rounds": 1, "reask": 2}, ("estimate", 3 * 3, 3 * 3 * 3)),
    ],
)
def test_tool_calls_plan_counts_what_a_conversation_sends(tmp_path, server, options, expected):
    server.configure(script=TOOL_SCRIPT)
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    write_jsonl(
        tmp_path / "requests.jsonl", [{"id": f"r{i}", "request": f"Rain in city {i}?"} for i in range(3)]
    )
    steps = [
        {"step": "load", "path": "requests.jsonl"},
        {"step": "tool_calls", "tools": "tools.json", **options},
    ]
    path = api_recipe(tmp_path, server.base_url, steps)
    before = plans_of(path)
    assert counts(before)[1] == ("tool_calls", *expected)
    assert server.stats()["requests"] == 0

    result = run_recipe(load_recipe(path))
    assert result.reports[1].rows_dropped == {} and not result.failures
    assert sent_by_step(result)[1] == server.stats()["requests"] == expected[1]

    # Known in advance, so cached now: the written requests and each conversation's first calls.
    conversations = options.get("num_requests", 3)
    assert plans_of(path)[1][1].cached == (conversations if "num_requests" in options else 0) + conversations


def test_dry_run_of_these_steps_sends_nothing_and_prints_a_total(tmp_path, server, capsys):
    server.configure(script=TOOL_SCRIPT)
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    write_documents(tmp_path)
    steps = [
        {"step": "topics", "domain": "home baking", "breadth": 2, "depth": 1, "per_topic": 2},
        {"step": "doc_qa", "documents": "docs.jsonl", "chunk_tokens": 48},
        {"step": "tool_calls", "tools": "tools.json", "num_requests": 2},
    ]
    assert main(["run", str(api_recipe(tmp_path, server.base_url, steps)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert server.stats()["requests"] == 0
    assert "not estimated" not in out
    total = next(line for line in out.splitlines() if "total" in line and "│" in line)
    cells = [cell.strip() for cell in total.split("│") if cell.strip()]
    assert cells[0] == "total" and cells[1].startswith("~") and cells[-1].startswith("~")


def planned_rows(path: Path) -> list[Row]:
    """The rows a dry run passes on after the recipe's last step (what its plan stands for)."""
    loaded = load_recipe(path)
    check(loaded)
    rows: list[Row] = []
    for step in loaded.recipe.steps:
        rows, _ = step.plan(rows, None)
    return rows


def code_answer(code: str) -> str:
    return f"Here is a solution.\n\n```python\n{code}```"


ADD = "def add(a, b):\n    return a + b\n"
MUL = "def mul(a, b):\n    return a * b\n"
CODE_CHECK_SCRIPT = [
    {"match": "Your answer could not be used", "reply": "```python\nassert mul(2, 3) == 6\n```"},
    {"match": "(?s)Task:\nWrite mul", "reply": "assert mul(2, 3) == 6"},  # no code block: re-asked
    {"match": "You are checking an answer", "reply": "```python\nassert add(1, 2) == 3\n```"},
    {"match": "^Write add", "reply": code_answer(ADD)},  # label's answers
]
SANDBOX = {"cpu_seconds": 1, "wall_seconds": 5}


def test_code_check_plan_counts_answers_not_written_yet_and_finds_them_cached_after(tmp_path, server):
    server.configure(script=CODE_CHECK_SCRIPT)
    write_jsonl(tmp_path / "tasks.jsonl", [{"instruction": f"Write add(a, b), take {i}."} for i in range(3)])
    steps = [{"step": "load", "path": "tasks.jsonl"}, {"step": "label"}, {"step": "code_check", **SANDBOX}]
    path = api_recipe(tmp_path, server.base_url, steps)
    before = plans_of(path)
    # label's answers are not written yet: each is assumed to hold code and to get one request for
    # tests, re-asked once at most; the prompt shows where the code will go.
    assert counts(before)[1:] == [("label", "exact", 3, None), ("code_check", "estimate", 3, 6)]
    assert "[the answer's code, written by an earlier step]" in before[2][1].sample_prompts[0][-1]["content"]
    assert server.stats()["requests"] == 0

    result = run_recipe(load_recipe(path))
    assert result.reports[2].rows_dropped == {} and not result.failures  # every answer passed
    assert sent_by_step(result) == [0, 3, 3]

    # label's cached answers stand in for themselves, so code_check renders its requests from their
    # code as the run did, and finds every one in the cache.
    after = plans_of(path)
    assert [(p.count, p.requests, p.cached) for _, p in after][1:] == [("exact", 3, 3), ("estimate", 3, 3)]
    assert "def add(a, b):" in after[2][1].sample_prompts[0][-1]["content"]


def test_code_check_plan_reads_written_answers_as_the_run_does(tmp_path, server):
    server.configure(script=CODE_CHECK_SCRIPT)
    answers = {
        "add": ("Write add(a, b).", code_answer(ADD)),
        "mul": ("Write mul(a, b).", code_answer(MUL)),
        "prose": ("Write add(a, b), no code please.", "Just use the + operator."),
    }
    rows = [{"id": key, "instruction": task, "response": text} for key, (task, text) in answers.items()]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    steps = [{"step": "load", "path": "rows.jsonl"}, {"step": "code_check", **SANDBOX}]
    path = api_recipe(tmp_path, server.base_url, steps)
    # The answer without code gets no request and is dropped; the other two get one each.
    assert counts(plans_of(path))[1] == ("code_check", "estimate", 2, 4)
    assert [row["id"] for row in planned_rows(path)] == ["add", "mul"]

    result = run_recipe(load_recipe(path))
    assert result.reports[1].rows_dropped == {"no_code": 1} and not result.failures
    assert sent_by_step(result)[1] == server.stats()["requests"] == 2 + 1  # mul's tests re-asked
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["add", "mul"]
    # Every first request was known in advance, so every one is cached now (the re-ask was not).
    assert plans_of(path)[1][1].cached == 2


def test_code_check_with_a_tests_column_plans_nothing_to_send(tmp_path, server):
    rows = [{"id": "add", "response": code_answer(ADD), "tests": "assert add(1, 2) == 3\n"}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    steps = [
        {"step": "load", "path": "rows.jsonl"},
        {"step": "code_check", "tests_column": "tests", **SANDBOX},
    ]
    path = api_recipe(tmp_path, server.base_url, steps)
    assert counts(plans_of(path))[1] == ("code_check", "exact", 0, None)

    result = run_recipe(load_recipe(path))
    assert result.reports[1].rows_out == 1 and sent_by_step(result)[1] == server.stats()["requests"] == 0


STATEMENT = "Revenue: 1250. Operating costs: 300. Shares outstanding: 50."
RECOMPUTE_SCRIPT = [
    {"match": "no commas in numbers", "reply": "Expression: 1250 - 300"},  # the re-ask of "commas"
    {"match": "(?s)revenue less costs\\?.*Write one arithmetic", "reply": "Expression: 1,250 - 300"},
    {"match": "(?s)revenue per share\\?.*Write one arithmetic", "reply": "Expression: 1250 / 50"},
    {"match": "Write one arithmetic", "reply": "Expression: 1250 - 300"},
    {"match": "profitable\\?", "reply": "It earns more than it spends.\nFinal answer: Yes"},  # rationale's
    {"match": "operating profit", "reply": "1250 - 300 = 950.\nFinal answer: 950"},
]


def test_recompute_plan_assumes_answers_not_written_yet_are_numbers(tmp_path, server):
    server.configure(script=RECOMPUTE_SCRIPT)
    questions = ["What is operating profit?", "What is the operating profit, in euros?", "Is it profitable?"]
    write_jsonl(tmp_path / "rows.jsonl", [{"input": STATEMENT, "instruction": q} for q in questions])
    steps = [{"step": "load", "path": "rows.jsonl"}, {"step": "rationale", "n": 1}, {"step": "recompute"}]
    path = api_recipe(tmp_path, server.base_url, steps)
    before = plans_of(path)
    # rationale's answers are not written yet, so each is assumed to be a number and checked; the
    # requests do not show the answer, so they are rendered in full (and looked up) already.
    assert counts(before)[1:] == [("rationale", "estimate", 3, 6), ("recompute", "estimate", 3, 6)]
    assert "Question: What is operating profit?" in before[2][1].sample_prompts[0][-1]["content"]
    assert server.stats()["requests"] == 0

    result = run_recipe(load_recipe(path))
    assert result.reports[2].rows_dropped == {} and not result.failures
    # "Yes" is not a number: recompute asks nothing for it, one fewer than the estimate.
    assert sent_by_step(result) == [0, 3, 2]
    # rationale's answers do not stand in for themselves, so recompute still counts 3; the 2 it
    # sent are found in the cache: the plan rendered the same requests as the run.
    assert [(p.requests, p.cached) for _, p in plans_of(path)][2] == (3, 2)


RECOMPUTE_ROWS = [
    {"id": "right", "input": STATEMENT, "instruction": "What is operating profit?", "answer": "950"},
    {"id": "per-share", "input": STATEMENT, "instruction": "What is revenue per share?", "answer": "$25"},
    {"id": "commas", "input": STATEMENT, "instruction": "What is revenue less costs?", "answer": "950"},
    {"id": "words", "input": STATEMENT, "instruction": "Is the company profitable?", "answer": "Yes"},
]


@pytest.mark.parametrize(
    ("options", "expected", "sent"),
    [
        # Three answers are numbers; each may be re-asked once ("commas" is).
        ({"reask": 1}, ("estimate", 3, 6), 3 + 1),
        # Every answer known and nothing re-asked: the count is exact ("commas" fails instead).
        ({"reask": 0, "drop_non_numeric": True}, ("exact", 3, None), 3),
    ],
)
def test_recompute_plan_of_written_answers(tmp_path, server, options, expected, sent):
    server.configure(script=RECOMPUTE_SCRIPT)
    write_jsonl(tmp_path / "rows.jsonl", RECOMPUTE_ROWS)
    steps = [{"step": "load", "path": "rows.jsonl"}, {"step": "recompute", **options}]
    path = api_recipe(tmp_path, server.base_url, steps)
    assert counts(plans_of(path))[1] == ("recompute", *expected)
    planned = [row["id"] for row in planned_rows(path)]

    result = run_recipe(load_recipe(path))
    assert sent_by_step(result)[1] == server.stats()["requests"] == sent
    # The plan's rows are the run's, as if every expression were valid and matched.
    kept = [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")]
    failed = [failure.id for _, failure in result.failures]
    assert sorted(planned) == sorted(kept + failed)
    assert plans_of(path)[1][1].cached == 3  # every first request; the re-ask was not known


# A step without a plan.


class AskAgainStep(TeacherStep):
    """A custom teacher step with no `plan`: a dry run cannot count its requests (never run here)."""

    step: Literal["ask_again"] = "ask_again"


def test_a_teacher_step_without_a_plan_is_not_estimated_and_left_out_of_the_total(tmp_path, server, capsys):
    synthkd.register_step(AskAgainStep)
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Say {i}."} for i in range(4)])
    steps = [
        {"step": "load", "path": "seeds.jsonl"},
        {"step": "label"},
        {"step": "ask_again"},
        {"step": "label"},
    ]
    assert main(["run", str(api_recipe(tmp_path, server.base_url, steps)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert server.stats()["requests"] == 0
    table = {cells[0]: cells for cells in table_rows(out)}
    assert table["2:ask_again"][1:] == ["not estimated"] + ["-"] * 6
    assert table["3:label"][:4] == ["3:label", "4", "0", "4"]  # its input rows count as its output
    assert table["total"][1:4] == ["", "", "8"]  # the two labels; ask_again left out
    notes = " ".join(out.split())
    assert "not estimated: a teacher step that cannot count its requests" in notes
    assert "The total leaves out 2:ask_again." in notes


def table_rows(out: str) -> list[list[str]]:
    """The dry-run table's body rows, as lists of cells (the total's has empty ones)."""
    lines = [line for line in out.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


# The time estimate.


def test_api_time_is_the_larger_of_the_rate_limit_and_the_concurrency_estimate(tmp_path, server):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Say {i}."} for i in range(10)])
    steps = [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}]
    path = api_recipe(tmp_path, server.base_url, steps, concurrency=4)
    loaded = load_recipe(path)
    check(loaded)
    [_, label] = estimate_steps(plan(loaded))
    # 10 requests, 4 at a time: 3 waves of a first token and 100 tokens.
    waves = math.ceil(10 / 4)
    assert label.minutes == pytest.approx(waves * (API_FIRST_TOKEN_S + 100 / API_TOKENS_PER_S) / 60)
    assert label.speed == "api" and label.time_unknown is None

    limited = load_recipe(path, ["teacher.rpm=2"])
    check(limited)
    [_, label] = estimate_steps(plan(limited))
    assert label.minutes == pytest.approx(10 / 2)  # the rate limit is the longer bound here


def test_embedded_time_counts_batches(capsys):
    loaded = load_recipe("recipes/quickstart.yaml")
    check(loaded)
    estimates = estimate_steps(plan(loaded))
    label = estimates[1]
    batches = math.ceil(label.to_send / 8)  # the recipe's batch_size
    per_batch = EMBEDDED_BATCH_START_S + 160 * EMBEDDED_SECONDS_PER_TOKEN  # its max_tokens
    assert label.to_send == 24 and label.minutes == pytest.approx(batches * per_batch / 60)
    assert totals(estimates).minutes == pytest.approx(label.minutes)
    assert main(["run", "recipes/quickstart.yaml", "--dry-run"]) == 0
    notes = " ".join(capsys.readouterr().out.split())
    assert f"the embedded model takes ~{EMBEDDED_BATCH_START_S:g} s plus" in notes
    assert "an API request takes" not in notes  # only the assumptions this recipe used are stated


def test_another_local_model_has_its_time_not_estimated_and_says_why(tmp_path, capsys):
    path = write_recipe(tmp_path / "r.yaml", {
        "name": "local",
        "teacher": {"backend": "transformers", "model": str(tmp_path / "model")},
        "steps": [{"step": "magpie", "num_rows": 3}],
    })  # fmt: skip
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "0:magpie" in line and "│" in line)
    assert [cell.strip() for cell in row.split("│") if cell.strip()][-1] == "not estimated"
    assert f"The time of 0:magpie is not estimated: {LOCAL_TIME_UNKNOWN}" in " ".join(out.split())


def test_api_time_assumption_is_printed(tmp_path, server, capsys):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Say hi."}])
    steps = [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}]
    assert main(["run", str(api_recipe(tmp_path, server.base_url, steps)), "--dry-run"]) == 0
    notes = " ".join(capsys.readouterr().out.split())
    assumed = f"~{API_FIRST_TOKEN_S:g} s to its first token, then ~{API_TOKENS_PER_S:g} tokens/s"
    assert f"an API request takes {assumed}" in notes
    assert "price unknown" in notes  # fake-model has no price


# logits: a local teacher scores each conversation in forward passes; an API teacher is asked each
# prompt again with log-probs on.

ANSWERED = [
    {"id": f"q{i}", "prompt": f"Question {i}: what is {i} plus {i}?", "response": f"It is {2 * i}."}
    for i in range(10)
]


def local_recipe(tmp_path: Path, model: str, steps: list[dict], **teacher) -> Path:
    return write_recipe(tmp_path / "r.yaml", {
        "name": "logits",
        "teacher": {"backend": "transformers", "model": model, **teacher},
        "steps": steps,
        "output": {"dir": str(tmp_path / "out")},
    })  # fmt: skip


def estimates_of(path: Path) -> list:
    loaded = load_recipe(path)
    check(loaded)
    return estimate_steps(plan(loaded))


def record_forward_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the forward passes the transformers teacher runs when scoring, as they run:
    `teacher_top_k` runs one per `batch_size` conversations it is given."""
    import synthkd.teachers.transformers_backend as backend

    sizes: list[int] = []
    score = backend.teacher_top_k

    def recording(model, tokenizer, conversations, k, batch_size=4):  # noqa: ANN001, ANN202
        sizes.extend(
            len(conversations[start : start + batch_size])
            for start in range(0, len(conversations), batch_size)
        )
        return score(model, tokenizer, conversations, k, batch_size)

    monkeypatch.setattr(backend, "teacher_top_k", recording)
    return sizes


def refuse_to_load_a_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    raise AssertionError("a dry run loaded a model")


def test_logits_plan_of_a_local_teacher_counts_its_forward_passes_and_finds_them_cached_after(
    tmp_path, tiny_model, monkeypatch
):
    from transformers import AutoModelForCausalLM

    write_jsonl(tmp_path / "rows.jsonl", ANSWERED)
    steps = [{"step": "load", "path": "rows.jsonl"}, {"step": "logits", "top_k": 5, "batch_size": 4}]
    path = local_recipe(tmp_path, str(tiny_model), steps, batch_size=3)
    with monkeypatch.context() as dry:
        dry.setattr(AutoModelForCausalLM, "from_pretrained", refuse_to_load_a_model)
        [_, estimate] = estimates_of(path)
    logits = estimate.plan
    # 10 conversations, handed to the teacher 4 at a time (4, 4, 2), which runs them 3 at a time:
    # 2 + 2 + 1 forward passes, one after another. Nothing is generated; a local model is free.
    assert (logits.count, logits.requests, logits.cached, logits.rounds) == ("exact", 10, 0, 5)
    assert logits.max_completion_tokens == 0 and logits.read_tokens == logits.prompt_tokens > 0
    assert logits.sample_prompts[0][-1] == {"role": "assistant", "content": "It is 0."}
    assert estimate.cost_usd == 0.0
    assert estimate.minutes is None and estimate.time_unknown == LOCAL_TIME_UNKNOWN  # not the embedded model

    passes = record_forward_passes(monkeypatch)
    result = run_recipe(load_recipe(path))
    assert result.reports[1].requests_sent == 10 and passes == [3, 1, 3, 1, 2]

    # The score keys name the tokenizer's vocabulary, read without the model: all found now.
    with monkeypatch.context() as dry:
        dry.setattr(AutoModelForCausalLM, "from_pretrained", refuse_to_load_a_model)
        after = plans_of(path)[1][1]
    assert (after.requests, after.cached, after.time_note) == (10, 10, "")


def test_logits_plan_counts_answers_not_written_yet_and_finds_their_scores_cached_after(
    tmp_path, tiny_model, monkeypatch
):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Say {i} in words."} for i in range(6)])
    steps = [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}, {"step": "logits", "top_k": 5}]
    params = {"temperature": 1.0, "max_tokens": 8}
    path = local_recipe(tmp_path, str(tiny_model), steps, batch_size=8, params=params)
    before = plans_of(path)
    # label's answers are not written yet: each is assumed to be, then scored 4 at a time.
    assert counts(before)[1:] == [("label", "exact", 6, None), ("logits", "exact", 6, None)]
    assert before[2][1].rounds == 2
    assert before[2][1].sample_prompts[0][-1]["content"] == "[the answer, written by an earlier step]"

    passes = record_forward_passes(monkeypatch)
    result = run_recipe(load_recipe(path))
    assert result.reports[2].rows_dropped == {} and not result.failures
    assert sent_by_step(result) == [0, 6, 6] and passes == [4, 2]

    # label's cached answers stand in for themselves, so logits scores the conversations the run
    # scored, and finds every one in the cache.
    assert [(p.requests, p.cached) for _, p in plans_of(path)][1:] == [(6, 6), (6, 6)]


LOGPROBS_SCRIPT = [{"match": "Say", "reply": "The quick brown fox."}]


def test_logits_plan_of_an_api_teacher_is_the_requests_the_run_sends(tmp_path, server, tiny_model):
    server.configure(script=LOGPROBS_SCRIPT)
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Say {i}."} for i in range(4)])
    steps = [
        {"step": "load", "path": "seeds.jsonl"},
        {"step": "label"},
        {"step": "logits", "top_k": 4, "tokenizer": str(tiny_model)},
    ]
    path = api_recipe(tmp_path, server.base_url, steps)
    before = plans_of(path)
    # One request per row, its prompt asked again: known although label has not answered yet.
    assert counts(before)[1:] == [("label", "exact", 4, None), ("logits", "exact", 4, None)]
    logits = before[2][1]
    assert logits.max_completion_tokens == 4 * 100 and logits.read_tokens == 0
    assert [message["role"] for message in logits.sample_prompts[0]] == ["user"]
    assert "Say 0." in logits.sample_prompts[0][0]["content"]
    assert server.stats()["requests"] == 0

    result = run_recipe(load_recipe(path))
    assert sent_by_step(result) == [0, 4, 4] and server.stats()["requests"] == 8
    assert all(row["kd_input_ids"] for row in result.rows)  # asked with logprobs, mapped to ids
    # The plan rendered the requests the run sent (logprobs and all): every one is cached now.
    assert [(p.requests, p.cached) for _, p in plans_of(path)][1:] == [(4, 4), (4, 4)]


def test_embedded_logits_time_counts_forward_passes_and_the_tokens_read(tmp_path, capsys):
    write_jsonl(tmp_path / "rows.jsonl", ANSWERED)
    steps = [{"step": "load", "path": "rows.jsonl"}, {"step": "logits", "batch_size": 4}]
    path = local_recipe(tmp_path, "embedded", steps, batch_size=8)
    [_, logits] = estimates_of(path)
    # 4, 4 and 2 conversations: 3 passes (the teacher's batch of 8 holds each), every token read.
    assert logits.plan.rounds == 3 and logits.speed == "embedded"
    reading = logits.plan.read_tokens * EMBEDDED_SECONDS_PER_READ_TOKEN
    assert logits.minutes == pytest.approx((3 * EMBEDDED_BATCH_START_S + reading) / 60)
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert table_rows_by_label(out)["1:logits"][1:4] == ["10", "0", "10"]
    notes = " ".join(out.split())
    assert f"~{EMBEDDED_SECONDS_PER_READ_TOKEN:g} s a token of every text it scores" in notes
    assert "1:logits: 10 conversation(s) scored in 3 forward pass(es) of up to 4" in notes


def table_rows_by_label(out: str) -> dict[str, list[str]]:
    return {cells[0]: cells for cells in table_rows(out)}


# code_check's sandbox runs: added to its time at their most.


def test_code_check_dry_run_adds_the_sandbox_runs_at_their_most(tmp_path, server, capsys):
    rows = [
        {"id": f"a{i}", "response": code_answer(ADD), "tests": "assert add(1, 2) == 3\n"} for i in range(5)
    ]
    rows.append({"id": "prose", "response": "Use +.", "tests": "assert add(1, 2) == 3\n"})  # no code: not run
    write_jsonl(tmp_path / "rows.jsonl", rows)
    sandbox = {"tests_column": "tests", "workers": 2, "cpu_seconds": 1, "wall_seconds": 6}
    steps = [{"step": "load", "path": "rows.jsonl"}, {"step": "code_check", **sandbox}]
    assert main(["run", str(api_recipe(tmp_path, server.base_url, steps)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    table = table_rows_by_label(out)
    # Nothing is asked, but 5 answers are run 2 at a time: 3 waves of at most 6 s = 0.3 min.
    assert table["1:code_check"][1:4] == ["0", "0", "0"] and table["1:code_check"][-1] == "0.3"
    assert table["total"][-1] == "0.3"
    notes = " ".join(out.split())
    assert "plus the most a step's own local work may take" in notes
    assert (
        "1:code_check: 5 sandboxed check(s), 2 at a time (`workers`), each killed after 6 s "
        "(`wall_seconds`): at most 0.3 min" in notes
    )
    assert [row["id"] for row in planned_rows(tmp_path / "r.yaml")] == [f"a{i}" for i in range(5)]


def test_code_recipe_dry_run_adds_the_sandbox_runs_to_code_checks_time(capsys):
    loaded = load_recipe("recipes/code/python.yaml")
    check(loaded)
    estimates = estimate_steps(plan(loaded))
    [code_check] = [estimate for estimate in estimates if estimate.label.endswith(":code_check")]
    step = loaded.recipe.steps[int(code_check.label.split(":")[0])]
    checks = code_check.plan.requests  # each answer asked for tests is then run
    assert step.workers == 4 and step.limits.wall == 2 * 10 + 5  # the recipe's; wall_seconds' default
    sandbox = math.ceil(checks / 4) * 25
    asking = concurrency_minutes(checks, 800, step.teacher_config, "api")  # its max_tokens
    assert code_check.minutes == pytest.approx(asking + sandbox / 60)
    assert totals(estimates).minutes == pytest.approx(sum(e.minutes for e in estimates if e.minutes))

    assert main(["run", "recipes/code/python.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert table_rows_by_label(out)[code_check.label][-1] == f"~{code_check.minutes:.1f}"
    notes = " ".join(out.split())
    assert (
        f"{code_check.label}: {checks} sandboxed check(s), 4 at a time (`workers`), each killed after 25 s "
        f"(`wall_seconds`): at most {sandbox / 60:.1f} min, added in full" in notes
    )
