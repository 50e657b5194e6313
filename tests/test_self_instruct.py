"""Self-Instruct: parsing, each filter's decision, instances, resume, and the shipped recipe end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.cli import main
from synthkd.errors import RunIncompleteError
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.parsing import ParseError, parse_yes_no
from synthkd.steps.self_instruct import parse_any_instances, parse_tasks
from synthkd.testing.fake_openai import FakeOpenAIServer

SEEDS = [
    {"instruction": "Write a short poem about the sea.", "is_classification": False},
    {"instruction": "Classify the sentiment of the given movie review as positive or negative.",
     "is_classification": True},
    {"instruction": "Explain how a bicycle gear system works to a child.", "is_classification": False},
]  # fmt: skip

GENERATED = """Here are new tasks:
Task 4: Write a short poem about the ocean sea.
Task 5: Draw a picture of a cat sitting on a mat.
Task 6: Do it.
Task 7: "Quote" the most famous line of a play you like.
Task 8: Écris un poème sur la montagne en hiver.
Task 9: Detect whether a tweet expresses sarcasm or sincere sentiment.
Task 10: Summarise the main argument of the given essay in two sentences.
Task 11: Suggest three names for a bakery that sells only bread."""

SCRIPT = [
    {"match": "We are collecting a varied set of tasks", "reply": GENERATED},
    {"match": "(?s)Is the following task a classification.*sarcasm", "reply": "Yes."},
    {"match": "Is the following task a classification", "reply": "No"},
    {
        "match": "(?s)classification task below.*sarcasm",
        "reply": "Class label: sarcastic\nInput: Great, more rain.",
    },
    {"match": "(?s)task below.*bakery", "reply": "Sure, happy to help!"},  # malformed, then re-asked
    {
        "match": "Your answer could not be used",
        "reply": "Input: <none>\nOutput: Crumb & Co; Daily Loaf; Rise",
    },
    {
        "match": "task below",
        "reply": "Input: An essay about cities.\nOutput: Cities grow. They need planning.",
    },
]


def test_parse_tasks_accepts_common_numbering_and_rejects_prose():
    assert parse_tasks("Task 9: First one.\n10. Second one\n**Task 11:** Third one\nnoise") == [
        "First one.",
        "Second one",
        "Third one",
    ]
    with pytest.raises(ParseError, match="no numbered tasks"):
        parse_tasks("I would be happy to help with that!")


def test_parse_yes_no_and_instances():
    assert parse_yes_no("Yes, it is.") is True and parse_yes_no("no") is False
    with pytest.raises(ParseError):
        parse_yes_no("Maybe")
    text = "Input: <none>\nOutput: 42\nInput: two plus two\nOutput: four\nsecond line"
    assert parse_any_instances(text) == [("", "42"), ("two plus two", "four\nsecond line")]
    assert parse_any_instances("Class label: spam\nInput: WIN A PRIZE") == [("WIN A PRIZE", "spam")]
    with pytest.raises(ParseError):
        parse_any_instances("Output only, no input")


def make_recipe(tmp_path: Path, base_url: str, **step) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    return write_recipe(tmp_path / "r.yaml", {
        "name": "si",
        "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
        "steps": [{"step": "load", "path": "seeds.jsonl"},
                  {"step": "self_instruct", "requests_per_round": 1, **step}],
        "output": {"dir": str(tmp_path / "out")},
    })  # fmt: skip


def test_each_filter_decides_as_the_paper_says(tmp_path: Path):
    with FakeOpenAIServer(script=SCRIPT) as server:
        result = run_recipe(load_recipe(make_recipe(tmp_path, server.base_url, num_instructions=3)))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert [row["instruction"] for row in rows] == [
        "Detect whether a tweet expresses sarcasm or sincere sentiment.",
        "Summarise the main argument of the given essay in two sentences.",
        "Suggest three names for a bakery that sells only bread.",
    ]
    assert result.reports[1].rows_dropped == {
        "near_duplicate": 1,  # the ocean poem: ROUGE-L 0.93 against the seed sea poem
        "unsupported_keyword": 1,  # "draw a picture"
        "too_short": 1,
        "starts_with_punctuation": 1,
        "non_english_start": 1,
    }
    sarcasm, essay, bakery = rows
    # Classification tasks get their instances label first: the label is the output.
    assert (sarcasm["is_classification"], sarcasm["input"], sarcasm["output"]) == (
        True,
        "Great, more rain.",
        "sarcastic",
    )
    assert (essay["is_classification"], essay["input"]) == (False, "An essay about cities.")
    # The malformed answer was re-asked once and the second answer parsed; "<none>" means no input.
    assert (bakery["input"], bakery["output"]) == ("", "Crumb & Co; Daily Loaf; Rise")
    assert [row["id"] for row in rows] == [f"self-instruct-{i:05d}" for i in range(3)]
    assert read_jsonl(tmp_path / "out" / "failures.jsonl") == []


def test_unparseable_generation_is_reasked_then_recorded_with_raw_text(tmp_path: Path):
    script = [{"match": ".", "reply": "I cannot think of any tasks."}]
    with FakeOpenAIServer(script=script) as server:
        recipe = load_recipe(make_recipe(tmp_path, server.base_url, num_instructions=2, max_rounds=2))
        with pytest.raises(RunIncompleteError, match="produced no rows"):
            run_recipe(recipe)
        assert server.stats()["requests"] == 4  # two rounds, each answer re-asked once
    # A run without rows leaves what it got beside the run folder (which it does not create).
    assert not (tmp_path / "out").exists()
    failures = read_jsonl(tmp_path / "out.incomplete" / "failures.jsonl")
    assert [(f["id"], f["reason"], f["attempts"]) for f in failures] == [
        ("round0-request0", "unparseable", 2),
        ("round1-request0", "unparseable", 2),
    ]
    assert failures[0]["raw"] == "I cannot think of any tasks."
    assert read_jsonl(tmp_path / "out.incomplete" / "data.jsonl") == []


NEW_TASK = "Task {n}: Write about {{word}} and {{word}} for a {{word}} {{word}} audience."
VARIED = [  # {word} placeholders make every request's answer different but reproducible
    {"match": "We are collecting", "reply": "\n".join(NEW_TASK.format(n=n) for n in range(9, 13))},
    {"match": "Is the following task", "reply": "No"},
    {"match": "task below", "reply": "Input: {word}\nOutput: {word} {word}"},
]  # fmt: skip


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_dataset(tmp_path: Path):
    with FakeOpenAIServer(script=VARIED, latency_ms=60) as server:

        def run(name: str) -> subprocess.Popen:
            recipe = make_recipe(tmp_path, server.base_url, num_instructions=40, new_per_request=4)
            text = recipe.read_text().replace("requests_per_round: 1", "requests_per_round: 4")
            path = tmp_path / f"{name}.yaml"
            path.write_text(text.replace(str(tmp_path / "out"), str(tmp_path / name)))
            env = {**os.environ, "SYNTHKD_CACHE_DIR": str(tmp_path / f"cache-{name}")}
            return subprocess.Popen([sys.executable, "-m", "synthkd.cli", "run", str(path)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

        assert run("reference").wait(timeout=120) == 0
        server.reset()
        process = run("resumed")
        deadline = time.monotonic() + 60
        while server.stats()["requests"] < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "resumed").exists()
        assert run("resumed").wait(timeout=120) == 0
    reference = read_jsonl(tmp_path / "reference" / "data.jsonl")
    assert len(reference) == 40
    assert read_jsonl(tmp_path / "resumed" / "data.jsonl") == reference


SHIPPED_TASKS = """Task 9: Brainstorm a list of possible New Year's resolutions for a student.
Task 10: Draw a picture of a lighthouse at night.
Task 11: Do it.
Task 12: "Quote" a line from a poem you like.
Task 13: Écris une lettre à ton voisin.
Task 14: Classify the tone of the given tweet as angry, happy or neutral.
Task 15: Summarise the given paragraph in one sentence.
Task 16: Suggest three names for a bakery that sells only bread.
Task 17: Write a haiku about autumn rain on a tin roof.
Task 18: Explain why the sky is blue to a child."""
SHIPPED_SCRIPT = [
    {"match": "^We are collecting a varied set of tasks", "reply": SHIPPED_TASKS},
    {"match": "(?s)^Is the following task a classification.*tweet", "reply": "Yes"},
    {"match": "^Is the following task a classification", "reply": "No."},
    {"match": "(?s)classification task below.*tweet",
     "reply": "Class label: angry\nInput: My train is late AGAIN."},
    {"match": "(?s)task below.*paragraph", "reply": "Input: Rain fell all day. The match was cancelled.\n"
                                                    "Output: The match was rained off."},
    {"match": "(?s)task below.*bakery", "reply": "Input: <none>\nOutput: Crumb & Co; Daily Loaf; Rise"},
    {"match": "(?s)task below.*haiku", "reply": "Input: <none>\nOutput: Rain taps the tin roof"},
]  # fmt: skip


@pytest.mark.slow
def test_shipped_recipe_runs_end_to_end(tmp_path: Path):
    """recipes/self_instruct.yaml with its 175 seed tasks, the teacher being the fake server: the
    paper's filters drop the planted bad tasks; the kept ones get instances, then answers."""
    with FakeOpenAIServer(script=SHIPPED_SCRIPT) as server:
        overrides = ["teacher.backend=openai", "teacher.model=fake-model",
                     f"teacher.base_url={server.base_url}", "teacher.api_key_env=null",
                     "steps.1.num_instructions=4", "steps.1.requests_per_round=1",
                     "steps.1.new_per_request=10"]  # fmt: skip
        args = ["run", "recipes/self_instruct.yaml", "--output", str(tmp_path / "si")]
        assert main(args + [item for override in overrides for item in ("--set", override)]) == 0
        # One generation, then for each of the 4 kept tasks: classify, instances, the label's answer.
        assert server.stats()["requests"] == 1 + 3 * 4
    import json

    manifest = json.loads((tmp_path / "si" / "manifest.json").read_text())
    load, step, label = manifest["steps"]
    assert load["rows_out"] == 175
    assert step["rows_dropped"] == {
        "near_duplicate": 1,  # seed_task_6 is "Brainstorm a list of possible New Year's resolutions."
        "unsupported_keyword": 1,
        "too_short": 1,
        "starts_with_punctuation": 1,
        "non_english_start": 1,
        "over_target": 1,  # the tenth task: four were enough
    }
    rows = read_jsonl(tmp_path / "si" / "data.jsonl")
    assert manifest["rows"] == label["rows_out"] == len(rows) == 4
    made = [
        (row["id"], row["instruction"], row["is_classification"], row["input"], row["output"]) for row in rows
    ]
    assert made == [
        ("self-instruct-00000", "Classify the tone of the given tweet as angry, happy or neutral.", True,
         "My train is late AGAIN.", "angry"),
        ("self-instruct-00001", "Summarise the given paragraph in one sentence.", False,
         "Rain fell all day. The match was cancelled.", "The match was rained off."),
        ("self-instruct-00002", "Suggest three names for a bakery that sells only bread.", False, "",
         "Crumb & Co; Daily Loaf; Rise"),
        ("self-instruct-00003", "Write a haiku about autumn rain on a tin roof.", False, "",
         "Rain taps the tin roof"),
    ]  # fmt: skip
    for row in rows:
        # The label step answered the task with its input (the fake teacher echoes the prompt).
        # (written as teacher_prompt, so TRL's SFTTrainer does not read the rows as prompt/completion)
        prompt = row["teacher_prompt"]
        assert prompt.startswith(row["instruction"]) and row["input"] in prompt
        assert row["response"] == f"Answer: {prompt}"
        assert row["round"] == 0
        assert row["messages"] == [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": row["response"]},
        ]
    assert read_jsonl(tmp_path / "si" / "failures.jsonl") == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"id", "instruction", "round", "input", "output", "is_classification"}),
        ({"instances": False}, {"id", "instruction", "round"}),
        (
            {"instances": False, "keep_seeds": True},
            {"id", "instruction", "round", "is_classification", "topic"},
        ),
    ],
)
def test_check_returns_the_columns_run_produces(tmp_path: Path, options, expected):
    from synthkd.pipeline import check

    with FakeOpenAIServer(script=SCRIPT) as server:
        path = make_recipe(tmp_path, server.base_url, num_instructions=2, **options)
        write_jsonl(tmp_path / "seeds.jsonl", [{**seed, "topic": "t"} for seed in SEEDS])
        loaded = load_recipe(path)
        assert check(loaded)[1] == expected
        result = run_recipe(loaded)
    produced = {column for row in result.rows for column in row} - {"provenance"}
    assert produced == expected
