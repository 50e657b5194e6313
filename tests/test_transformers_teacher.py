"""The transformers backend on a tiny random model: batching, finish reasons, cache, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def make_recipe(tmp_path: Path, model: Path, **teacher) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Question number {i}?"} for i in range(11)])
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "tiny",
            "teacher": {
                "backend": "transformers",
                "model": str(model),
                "batch_size": 4,
                "params": {"max_tokens": 12, "temperature": 0.8},
                **teacher,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label", "n": 2}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def test_local_teacher_labels_every_row_in_batches(tmp_path: Path, tiny_model: Path):
    result = run_recipe(load_recipe(make_recipe(tmp_path, tiny_model)))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 22  # 11 prompts x n=2
    assert [r["id"] for r in rows[:2]] == [f"{rows[0]['id'][:-2]}-0", f"{rows[0]['id'][:-2]}-1"]
    assert {r["sample"] for r in rows} == {0, 1}
    # A random model rarely emits its end token within 12 tokens: those answers are marked truncated.
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    assert any(r["finish_reason"] == "length" for r in rows)
    assert all(r["messages"][-1] == {"role": "assistant", "content": r["response"]} for r in rows)
    label = result.reports[1]
    assert label.requests_sent == 22 and label.cache_hits == 0
    assert label.completion_tokens > 0 and label.cost_usd == 0.0


def test_rerun_is_served_from_cache_and_identical(tmp_path: Path, tiny_model: Path):
    recipe = make_recipe(tmp_path, tiny_model)
    run_recipe(load_recipe(recipe))
    first = (tmp_path / "out" / "data.jsonl").read_text()
    again = run_recipe(load_recipe(recipe))
    assert again.reports[1].requests_sent == 0 and again.reports[1].cache_hits == 22
    assert (tmp_path / "out" / "data.jsonl").read_text() == first


def test_greedy_decoding_is_reproducible_without_cache(tmp_path: Path, tiny_model: Path):
    recipe = make_recipe(tmp_path, tiny_model)
    overrides = ["teacher.params.temperature=0"]
    run_recipe(load_recipe(recipe, overrides), use_cache=False)
    first = read_jsonl(tmp_path / "out" / "data.jsonl")
    run_recipe(load_recipe(recipe, overrides), use_cache=False)
    assert read_jsonl(tmp_path / "out" / "data.jsonl") == first


def test_requests_in_flight_are_generated_in_full_batches(tiny_model: Path):
    import asyncio

    from synthkd.dispatch.dispatcher import Dispatcher
    from synthkd.teachers import ChatRequest, TeacherConfig, build_teacher

    config = TeacherConfig(
        backend="transformers", model=str(tiny_model), batch_size=4, params={"max_tokens": 4}
    )
    teacher = build_teacher(config)
    requests = [
        ChatRequest(({"role": "user", "content": f"question {i}"},), config.params) for i in range(10)
    ]
    outcomes = asyncio.run(Dispatcher(teacher, config, cache=None, price=None).run(requests))
    assert all(outcome.completion is not None for outcome in outcomes)
    assert teacher.batch_sizes == [4, 4, 2]


def test_a_sampled_answer_does_not_depend_on_its_batch(tiny_model: Path):
    import asyncio

    from synthkd.dispatch.dispatcher import Dispatcher
    from synthkd.teachers import ChatRequest, TeacherConfig, build_teacher

    config = TeacherConfig(
        backend="transformers",
        model=str(tiny_model),
        batch_size=4,
        params={"max_tokens": 16, "temperature": 1.0},
    )
    teacher = build_teacher(config, seed=7)
    dispatcher = Dispatcher(teacher, config, cache=None, price=None)

    def ask(content: str, sample: int = 0) -> ChatRequest:
        return ChatRequest(({"role": "user", "content": content},), config.params, sample=sample)

    def texts(requests: list[ChatRequest]) -> list[str]:
        return [outcome.completion.text for outcome in asyncio.run(dispatcher.run(requests))]

    alone = texts([ask("Explain tides.")])[0]
    # In a full batch, with prompts of other lengths (other padding), in another position.
    others = [ask("Hi."), ask("A much longer question about the quick brown fox and the lazy dog?")]
    batched = texts([others[0], ask("Explain tides."), others[1], ask("Explain tides.", sample=1)])
    assert teacher.batch_sizes == [1, 4]
    assert batched[1] == alone
    assert len({alone, batched[3], *texts([ask("Explain tides.", sample=s) for s in (2, 3, 4)])}) > 1
    other_seed = build_teacher(config, seed=8)
    again = asyncio.run(Dispatcher(other_seed, config, cache=None, price=None).run([ask("Explain tides.")]))
    assert texts([ask("Explain tides.")])[0] == alone  # and the same on a second call
    assert again[0].completion.text != alone


def test_the_recipe_seed_is_part_of_the_local_cache_key(tmp_path: Path, tiny_model: Path):
    recipe = make_recipe(tmp_path, tiny_model)
    first = run_recipe(load_recipe(recipe, ["seed=1"]))
    assert first.reports[1].requests_sent == 22
    other = run_recipe(load_recipe(recipe, ["seed=2"]))
    assert other.reports[1].cache_hits == 0 and other.reports[1].requests_sent == 22
    again = run_recipe(load_recipe(recipe, ["seed=1"]))
    assert again.reports[1].cache_hits == 22 and again.reports[1].requests_sent == 0
