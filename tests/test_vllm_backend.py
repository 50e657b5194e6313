"""The vllm backend without a GPU: what it sends vLLM (sampling params, seeds, structured output),
how it reads vLLM's prompt log-probs back, and how it refuses a CPU-only machine or a missing extra.

vLLM itself runs only on a GPU; `bench/gpu_generate.sh` runs the backend against it there (speed,
and its log-probs against a transformers forward pass). Here the backend's pure mapping is checked
against the transformers backend itself on a tiny real model: the same seeds for the same requests,
the same sampling settings, and the same TopK from log-probs shaped as vLLM returns them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_cli, write_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.errors import MissingExtraError, RecipeError
from synthkd.pipeline import check
from synthkd.recipe import load_recipe
from synthkd.teachers import TeacherConfig, build_teacher, capabilities_of
from synthkd.teachers import transformers_backend as transformers_module
from synthkd.teachers.base import ChatRequest, ScoreRequest, TeacherError
from synthkd.teachers.transformers_backend import DEFAULT_MAX_NEW_TOKENS, TransformersTeacher, request_seed
from synthkd.teachers.vllm_backend import (
    VLLM_PARAMS,
    classify_engine_error,
    sampling_kwargs,
    structured_output_kwargs,
    top_k_from_prompt_logprobs,
)

NO_GPU = "the vllm backend needs a GPU and this machine has none"
CONVERSATIONS = [
    [
        {"role": "user", "content": "What is distillation?"},
        {"role": "assistant", "content": "A student learns."},
    ],
    [
        {"role": "system", "content": "Answer clearly."},
        {"role": "user", "content": "The quick brown fox?"},
        {"role": "assistant", "content": "It jumps over the lazy dog, with one example."},
    ],
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_teacher(tiny_model: Path) -> TransformersTeacher:
    teacher = build_teacher(
        TeacherConfig(backend="transformers", model=str(tiny_model), device="cpu"), seed=7
    )
    assert isinstance(teacher, TransformersTeacher)
    return teacher


def _request(sample: int = 0, **params) -> ChatRequest:
    return ChatRequest(({"role": "user", "content": "Name a fox."},), params, sample=sample)


# ---- params ----------------------------------------------------------------------------------------


def test_every_recipe_param_maps_to_a_sampling_param():
    params = {
        "max_tokens": 40,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "seed": 5,
        "stop": ["\n\n"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    assert set(params) | {"max_new_tokens"} == VLLM_PARAMS
    request = _request(**params)
    assert sampling_kwargs(request, 1, None, {3, 2}) == {
        "max_tokens": 40,
        "seed": request_seed(5, request),  # the request's seed param replaces the recipe's
        "repetition_penalty": 1.1,
        "stop_token_ids": [2, 3],
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.9,
        "min_p": 0.05,
        "stop": ["\n\n"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    assert sampling_kwargs(_request(max_new_tokens=9), 1, None, ())["max_tokens"] == 9


def test_defaults_are_the_transformers_backends_not_vllms():
    """Without params: at most DEFAULT_MAX_NEW_TOKENS (vLLM's own default is 16), the model's
    generation config, else transformers' defaults (top_k 50; vLLM's is off)."""
    bare = sampling_kwargs(_request(), 3, None, ())
    assert bare == {
        "max_tokens": DEFAULT_MAX_NEW_TOKENS,
        "seed": request_seed(3, _request()),
        "repetition_penalty": 1.0,
        "stop_token_ids": [],
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
        "min_p": 0.0,
    }
    config = SimpleNamespace(temperature=0.6, top_p=0.92, top_k=None, min_p=None, repetition_penalty=1.2)
    configured = sampling_kwargs(_request(top_k=0), 3, config, ())
    assert (configured["temperature"], configured["top_p"], configured["top_k"]) == (0.6, 0.92, 0)
    assert configured["repetition_penalty"] == 1.2
    greedy = sampling_kwargs(_request(temperature=0), 3, config, ())
    assert greedy["temperature"] == 0.0 and "top_p" not in greedy and "top_k" not in greedy


def test_sampling_settings_are_the_ones_the_transformers_backend_applies(tiny_teacher: TransformersTeacher):
    """The warpers the transformers backend builds for a request, from the same generation
    config, hold the values the vllm backend sends."""
    from transformers import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    config = tiny_teacher._model.generation_config
    saved = {name: getattr(config, name, None) for name in ("temperature", "top_p", "top_k", "min_p")}
    try:
        config.temperature, config.top_p, config.top_k, config.min_p = 0.6, 0.9, 40, 0.02
        for params in ({}, {"temperature": 0.8, "top_k": 7}, {"top_p": 0.5, "min_p": 0.1}):
            processors = tiny_teacher._sampling_processors(params, [1])
            applied = {
                "temperature": next(
                    p.temperature for p in processors if isinstance(p, TemperatureLogitsWarper)
                ),
                "top_k": next(p.top_k for p in processors if isinstance(p, TopKLogitsWarper)),
                "top_p": next(p.top_p for p in processors if isinstance(p, TopPLogitsWarper)),
                "min_p": next(p.min_p for p in processors if isinstance(p, MinPLogitsWarper)),
            }
            sent = sampling_kwargs(_request(**params), 0, config, ())
            assert {name: sent[name] for name in applied} == pytest.approx(applied), params
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


def test_a_param_vllm_cannot_honour_is_refused_naming_its_key(tmp_path: Path):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Hi?"}])
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "v",
            "teacher": {
                "backend": "vllm",
                "model": "embedded",
                "params": {"max_tokens": 8, "logit_bias": {}},
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    with pytest.raises(RecipeError) as caught:
        check(load_recipe(recipe))
    message = str(caught.value)
    assert "teacher.params.logit_bias: logit_bias not supported by the vllm backend; valid: " in message
    assert "frequency_penalty" in message and "stop" in message


# ---- seeds ------------------------------------------------------------------------------------------


def test_a_request_gets_the_seed_the_transformers_backend_gives_it(tiny_teacher, monkeypatch):
    """The seeds the transformers backend's per-request sampler is built with, for the same
    recipe seed and requests, are the ones sent to vLLM; each sample has its own."""
    seen: list[int] = []
    original = transformers_module.PerRequestSampler

    def spy(seeds, device):  # noqa: ANN001, ANN202
        seen.extend(seeds)
        return original(seeds, device)

    monkeypatch.setattr(transformers_module, "PerRequestSampler", spy)
    requests = [_request(sample, max_tokens=2, temperature=0.9) for sample in range(3)]
    requests.append(
        ChatRequest(({"role": "user", "content": "Go on: "},), {"max_tokens": 2}, continue_final=True)
    )

    async def complete_all() -> None:
        await asyncio.gather(*(tiny_teacher.complete(request) for request in requests))

    asyncio.run(complete_all())
    sent = [sampling_kwargs(request, 7, None, ())["seed"] for request in requests]
    assert sorted(seen) == sorted(sent)
    assert len(set(sent)) == len(sent)  # samples (and continue_final) differ
    assert sent[0] != sampling_kwargs(requests[0], 8, None, ())["seed"]  # and the recipe seed counts


# ---- structured output and errors ------------------------------------------------------------------


def test_response_format_maps_to_structured_outputs():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    label_format = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert structured_output_kwargs(label_format) == {"json": schema}
    assert structured_output_kwargs({"type": "json_object"}) == {"json_object": True}
    assert structured_output_kwargs({"type": "text"}) is None and structured_output_kwargs(None) is None
    with pytest.raises(TeacherError, match="cannot honour response_format type 'grammar'"):
        structured_output_kwargs({"type": "grammar"})
    capabilities = capabilities_of(TeacherConfig(backend="vllm", model="embedded"))
    assert capabilities.structured_output and capabilities.scores_text and capabilities.needs_gpu


def test_vllm_errors_are_classified_for_the_dispatcher():
    def named(name: str, *bases: type) -> type:
        return type(name, bases or (Exception,), {})

    client = named("VLLMClientError")
    dead = classify_engine_error(named("EngineDeadError")("engine core died"))
    assert dead is not None and dead.fatal and not dead.retryable
    refused = classify_engine_error(named("VLLMValidationError", client)("prompt longer than max_model_len"))
    assert refused is not None and not refused.fatal and not refused.retryable
    assert refused.reason == "invalid_request" and "max_model_len" in str(refused)
    busy = classify_engine_error(named("EngineGenerateError")())
    assert busy is not None and busy.retryable
    assert classify_engine_error(ValueError("ours")) is None


# ---- prompt log-probs -> TopK ------------------------------------------------------------------------


@dataclass
class Logprob:
    """vllm.logprobs.Logprob's fields."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def _vllm_prompt_logprobs(model, tokenizer, ids: list[int], k: int) -> list:  # noqa: ANN001
    """What vLLM returns as `prompt_logprobs` for these ids, from a forward pass of the model:
    None at position 0, then per position the token that is there (with its rank: the tokens
    more likely than it, plus one) followed by the top k with ranks 1..k, in one dict (so the
    token appears once, with its top-k rank, when it is among them): vllm.logprobs'
    append_logprobs_for_next_position."""
    import torch

    with torch.inference_mode():
        logprobs = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(dim=-1)
    positions: list = [None]
    for position in range(1, len(ids)):
        scores = logprobs[position - 1]
        actual = ids[position]
        rank = int((scores > scores[actual]).sum()) + 1
        top = scores.topk(k)
        ranks = [rank, *range(1, k + 1)]
        tokens = [actual, *top.indices.tolist()]
        values = [float(scores[actual]), *top.values.tolist()]
        positions.append(
            {
                token: Logprob(value, token_rank, tokenizer.decode([token]))
                for token, value, token_rank in zip(tokens, values, ranks, strict=True)
            }
        )
    return positions


@pytest.mark.parametrize("k", [1, 5, 50])
def test_prompt_logprobs_give_the_topk_the_transformers_backend_scores(tiny_teacher, k: int):
    """Log-probs shaped as vLLM returns them (from a forward pass of the same tiny model over the
    same token ids) become exactly the TopK that TransformersTeacher.score stores."""
    from synthkd.kd.topk import tokenize_conversation

    expected = asyncio.run(tiny_teacher.score([ScoreRequest(tuple(c), k) for c in CONVERSATIONS]))
    outside = 0
    for conversation, want in zip(CONVERSATIONS, expected, strict=True):
        ids, prompt_length = tokenize_conversation(tiny_teacher._tokenizer, conversation)
        prompt_logprobs = _vllm_prompt_logprobs(tiny_teacher._model, tiny_teacher._tokenizer, ids, k)
        outside += sum(len(prompt_logprobs[p]) > k for p in range(prompt_length, len(ids)))
        got = top_k_from_prompt_logprobs(ids, prompt_length, prompt_logprobs, k)
        assert (got.input_ids, got.prompt_length, got.top_ids) == (
            want.input_ids,
            want.prompt_length,
            want.top_ids,
        )
        for got_row, want_row in zip(got.top_logprobs, want.top_logprobs, strict=True):
            assert got_row == pytest.approx(want_row, abs=1e-5)
    if k < 50:  # a random model: its tokens are mostly outside a small top k, so that case is covered
        assert outside > 0


# ---- refusals on this machine ----------------------------------------------------------------------


def _recipe(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Hi?"}])
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "v",
            "teacher": {"backend": "vllm", "model": "embedded", "params": {"max_tokens": 8}},
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


@pytest.fixture
def vllm_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable `vllm` (an empty package: preflight only looks for it) on a machine whose
    torch sees no GPU, as a CUDA install of the extra would be on a CPU-only machine."""
    import torch

    stub = tmp_path / "stub"
    (stub / "vllm").mkdir(parents=True)
    (stub / "vllm" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(stub))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    yield stub
    sys.modules.pop("vllm", None)  # imported by the backend's check: gone with the stub


def test_run_on_a_cpu_machine_is_refused_before_any_model_load(tmp_path, vllm_found, capsys, monkeypatch):
    def no_model(*args):  # noqa: ANN002, ANN202
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("synthkd.teachers.vllm_backend.resolve_model_source", no_model)
    code, out = run_cli(["run", str(_recipe(tmp_path))], capsys)
    assert code == 2
    assert out == f"error: {tmp_path / 'r.yaml'}:3: teacher.backend: {NO_GPU}"
    # validate checks the recipe; the machine not being ready to run it is a warning, as a missing key is
    code, out = run_cli(["validate", str(_recipe(tmp_path))], capsys)
    assert code == 0 and f"warning: {tmp_path / 'r.yaml'}:3: teacher.backend: {NO_GPU}" in out
    # From Python, building the teacher refuses the same way, before loading anything.
    with pytest.raises(RecipeError, match=r"^teacher\.backend: the vllm backend needs a GPU"):
        build_teacher(TeacherConfig(backend="vllm", model="embedded"))


def test_without_the_extra_the_line_names_it(tmp_path, capsys):
    import importlib.util

    assert importlib.util.find_spec("vllm") is None, "the test environment has no vllm (see pyproject.toml)"
    code, out = run_cli(["run", str(_recipe(tmp_path))], capsys)
    assert code == 2
    assert out == (
        f"error: {tmp_path / 'r.yaml'}:3: teacher.backend: the embedded teacher (on the vllm backend) "
        "needs the 'vllm' extra (vllm is not installed): pip install 'synthkd[vllm]'"
    )
    with pytest.raises(MissingExtraError, match="the vllm backend needs the 'vllm' extra"):
        build_teacher(TeacherConfig(backend="vllm", model="embedded"))


def test_the_command_prints_one_line(tmp_path):
    """The real command in a fresh process, CUDA hidden: one line on stderr, exit code 2."""
    stub = tmp_path / "stub"
    (stub / "vllm").mkdir(parents=True)
    (stub / "vllm" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(stub), "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-m", "synthkd.cli", "run", str(_recipe(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'r.yaml'}:3: teacher.backend: {NO_GPU}"]


def test_a_dry_run_does_not_time_the_embedded_model_on_a_gpu_at_its_cpu_speed():
    from synthkd.dry_run import EMBEDDED, speed_of

    assert speed_of(TeacherConfig(backend="transformers", model="embedded")) == EMBEDDED
    assert speed_of(TeacherConfig(backend="vllm", model="embedded")) is None  # unknown, not CPU speed
