"""Evol-Instruct: each elimination rule, lineage over rounds, the teacher-judged variant, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.evol_instruct import OPERATIONS, EvolInstructStep
from synthkd.testing.fake_openai import FakeOpenAIServer

LONG_ANSWER = " ".join(["This answer explains the idea carefully with a worked example."] * 3)
REWRITE = "(?s)Rewrite the instruction below.*"
SCRIPT = [
    {"match": REWRITE + "Say hello", "reply": "#Rewritten Prompt#: Say hello politely to a new colleague."},
    {"match": REWRITE + "Name a fruit", "reply": "Name a fruit."},
    {
        "match": REWRITE + "Explain gravity",
        "reply": "Explain gravity to a ten-year-old with one everyday example.",
    },
    {
        "match": REWRITE + "Describe a cat",
        "reply": "Describe a cat in exactly three sentences, mentioning its diet.",
    },
    {"match": REWRITE + "List primes", "reply": "   "},
    {
        "match": "Your answer could not be used",
        "reply": "Instruction: List the first ten primes and say why 1 is not one.",
    },
    {"match": "(?s)Name a fruit.*Does the second ask for exactly the same", "reply": "Yes"},
    {"match": "Does the second ask for exactly the same", "reply": "No"},
    {"match": "^Describe a cat in exactly", "reply": "I'm sorry, but I cannot help with that."},
    {"match": ".", "reply": LONG_ANSWER},
]
SEEDS = [
    {"id": name, "instruction": text}
    for name, text in [
        ("hello", "Say hello."),
        ("fruit", "Name a fruit."),
        ("gravity", "Explain gravity."),
        ("cat", "Describe a cat."),
        ("primes", "List primes."),
    ]
]


def make_recipe(tmp_path: Path, base_url: str, **step) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "evol",
            "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
            "steps": [
                {"step": "load", "path": "seeds.jsonl"},
                {"step": "evol_instruct", "operations": ["add_constraints"], **step},
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


@pytest.mark.parametrize("elimination", ["similarity", "teacher"])
def test_each_elimination_rule(tmp_path: Path, elimination: str):
    with FakeOpenAIServer(script=SCRIPT) as server:
        result = run_recipe(
            load_recipe(make_recipe(tmp_path, server.base_url, rounds=1, elimination=elimination))
        )
    rows = {row["parent_id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(rows) == {"gravity", "primes"}
    assert result.reports[1].rows_dropped == {
        "copied_prompt_words": 1,  # hello
        "no_information_gain": 1,  # fruit
        "refusal_or_short_answer": 1,  # cat
    }
    gravity = rows["gravity"]
    assert gravity["instruction"] == "Explain gravity to a ten-year-old with one everyday example."
    assert (gravity["id"], gravity["operation"], gravity["round"]) == ("gravity-r1", "add_constraints", 1)
    assert gravity["response"] == LONG_ANSWER
    # The empty rewrite was re-asked once; the heading the model added was stripped.
    assert rows["primes"]["instruction"] == "List the first ten primes and say why 1 is not one."


def test_lineage_across_rounds_and_failed_parents_carry_on(tmp_path: Path):
    script = [
        {"match": REWRITE + "and tides", "reply": "Explain gravity, tides and orbits to a {word} child."},
        {
            "match": REWRITE + "Explain gravity",
            "reply": "Explain gravity and tides to a child, in {word} words.",
        },
        {"match": REWRITE, "reply": "#Rewritten Prompt#: {word}"},  # every other rewrite is eliminated
        {"match": ".", "reply": LONG_ANSWER},
    ]
    with FakeOpenAIServer(script=script) as server:
        run_recipe(load_recipe(make_recipe(tmp_path, server.base_url, rounds=2, keep_original=True)))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    evolved = [row for row in rows if row.get("parent_id")]
    assert [(row["id"], row["parent_id"], row["round"]) for row in evolved] == [
        ("gravity-r1", "gravity", 1),
        ("gravity-r1-r2", "gravity-r1", 2),
    ]
    assert len(rows) == len(SEEDS) + 2  # keep_original keeps the five seeds


def test_operations_are_drawn_reproducibly_and_breadth_is_rarer():
    step = EvolInstructStep(step="evol_instruct", breadth_probability=0.2)
    draws = [step.choose_operation(42, f"row{i}", 1) for i in range(2000)]
    assert draws == [step.choose_operation(42, f"row{i}", 1) for i in range(2000)]
    assert set(draws) == set(OPERATIONS)
    assert 0.15 < draws.count("breadth") / len(draws) < 0.25


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_dataset(tmp_path: Path):
    script = [
        {
            "match": "Rewrite the instruction|brand-new instruction",
            "reply": "Explain {word} and {word} to a {word} reader.",
        },
        {"match": ".", "reply": LONG_ANSWER + " {word}"},
    ]
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Explain topic {i}."} for i in range(40)])
    with FakeOpenAIServer(script=script, latency_ms=40) as server:

        def run(name: str) -> subprocess.Popen:
            path = write_recipe(
                tmp_path / f"{name}.yaml",
                {
                    "name": name,
                    "teacher": {
                        "backend": "openai",
                        "model": "m",
                        "base_url": server.base_url,
                        "api_key_env": None,
                        "concurrency": 8,
                    },
                    "steps": [
                        {"step": "load", "path": "seeds.jsonl"},
                        {"step": "evol_instruct", "rounds": 3},
                    ],
                    "output": {"dir": str(tmp_path / name)},
                },
            )
            env = {**os.environ, "SYNTHKD_CACHE_DIR": str(tmp_path / f"cache-{name}")}
            return subprocess.Popen(
                [sys.executable, "-m", "synthkd.cli", "run", str(path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        assert run("reference").wait(timeout=120) == 0
        server.reset()
        process = run("resumed")
        deadline = time.monotonic() + 60
        while server.stats()["requests"] < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "resumed").exists()
        assert run("resumed").wait(timeout=120) == 0
    reference = read_jsonl(tmp_path / "reference" / "data.jsonl")
    assert len(reference) == 120  # 40 instructions x 3 rounds, none eliminated
    assert read_jsonl(tmp_path / "resumed" / "data.jsonl") == reference


def test_evolved_rows_do_not_inherit_the_parents_answer_or_conversation(tmp_path: Path):
    stale = {
        "input": "for kids",
        "output": "old output",
        "prompt": "Explain gravity.\n\nfor kids",
        "system": "Be terse.",
        "response": "old answer",
        "messages": [
            {"role": "user", "content": "Explain gravity."},
            {"role": "assistant", "content": "old"},
        ],
    }
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = make_recipe(tmp_path, server.base_url, rounds=1)
        write_jsonl(tmp_path / "seeds.jsonl", [{**SEEDS[2], **stale, "topic": "physics"}])
        run_recipe(load_recipe(path))
    (row,) = read_jsonl(tmp_path / "out" / "data.jsonl")
    instruction = "Explain gravity to a ten-year-old with one everyday example."
    assert row["instruction"] == instruction and row["response"] == LONG_ANSWER
    assert row["messages"] == [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": LONG_ANSWER},
    ]
    assert not {"input", "output", "prompt", "system"} & set(row)
    assert (row["parent_id"], row["topic"]) == ("gravity", "physics")  # lineage and other columns stay
    assert row["provenance"][0]["step"] == "evol_instruct"
