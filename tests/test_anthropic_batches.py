"""`teacher.batch: true` on the litellm backend with an `anthropic/` model: the requests go as
Anthropic Message Batches to the fake server's /v1/messages/batches, through the real
`synthkd run`, and come back into the same cache and dataset. Also the fake's endpoints, driven
over plain HTTP, and the request and answer mapping."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from typing import Any

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.cache import request_key
from synthkd.cli import main
from synthkd.dispatch.batch_store import BatchStore
from synthkd.dispatch.dispatcher import BATCH_STORE_NAME
from synthkd.pricing import batch_price_of, price_for, price_of
from synthkd.recipe import load_recipe
from synthkd.teachers.anthropic_batches import AnthropicBatchJobs, api_root, result_of
from synthkd.teachers.anthropic_params import message_params, refused_request
from synthkd.teachers.base import ASSUMED_MAX_TOKENS, ChatRequest, Completion, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import batch_refusal, capabilities_of
from synthkd.testing.fake_openai import FakeOpenAIServer, ServerConfig

ROWS = 12
MODEL = "anthropic/claude-haiku-4-5"  # in litellm's price map, so a cap needs no `price:`
KEY_VARIABLE = "SYNTHKD_TEST_ANTHROPIC_KEY"
FAST = {**asdict(ServerConfig()), "batch_seconds": 0.3}
SCRIPT = [
    {"match": r"^too long", "status": 400, "message": "prompt is too long: 300000 tokens > 200000 maximum"},
    {"match": r"^locked out", "status": 401, "message": "invalid x-api-key"},
]
# The fake server is on 127.0.0.1: a proxy in the environment must not reroute these calls.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(script=SCRIPT) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server, monkeypatch):
    server.configure(**FAST)
    server.reset()
    monkeypatch.setenv(KEY_VARIABLE, "sk-ant-test")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def instructions(count: int = ROWS) -> list[str]:
    return [f"Describe animal {i}." for i in range(count)]


def recipe(tmp_path, server, name="batched", *, rows=None, step=None, **teacher):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": text} for text in rows or instructions()])
    return write_recipe(
        tmp_path / f"{name}.yaml",
        {
            "name": name,
            "teacher": {
                "backend": "litellm",
                "model": MODEL,
                "base_url": server.base_url,
                "api_key_env": KEY_VARIABLE,
                "batch": True,
                "batch_poll_seconds": 0.1,
                "params": {"max_tokens": 32},
                **teacher,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label", **(step or {})}],
            "output": {"dir": str(tmp_path / "out"), "report": "none", "max_failure_ratio": 0.5},
        },
    )


def answers(tmp_path) -> dict[str, str]:
    return {row["instruction"]: row["response"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")}


def anthropic_stats(server) -> dict[str, Any]:
    return server.stats()["anthropic_batches"]


def label_requests(path) -> tuple[TeacherConfig, dict[str, ChatRequest]]:
    """The label step's teacher and its requests by cache key: each instruction alone, with the
    recipe's params."""
    teacher = load_recipe(path).recipe.steps[1].step_teacher()
    requests = (
        ChatRequest(({"role": "user", "content": text},), {"max_tokens": 32}) for text in instructions()
    )
    return teacher, {request_key(teacher, request): request for request in requests}


def store_for(private_cache, server) -> BatchStore:
    return BatchStore(private_cache / BATCH_STORE_NAME, f"litellm:{MODEL} {server.base_url}")


# Runs through `synthkd run`


def test_a_batch_run_answers_every_row_with_no_online_request(tmp_path, server):
    assert main(["run", str(recipe(tmp_path, server))]) == 0
    assert answers(tmp_path) == {text: f"Answer: {text}" for text in instructions()}
    assert server.stats()["requests"] == 0  # not one online request
    assert server.stats()["batches"]["batches_created"] == 0  # nor an OpenAI batch
    stats = anthropic_stats(server)
    assert stats["batches_created"] == 1 and stats["items_submitted"] == ROWS
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert f'"{MODEL}"' in manifest


def test_the_chunks_follow_the_limits_of_the_jobs_object(tmp_path, server, monkeypatch):
    monkeypatch.setattr(AnthropicBatchJobs, "max_requests", 5)
    assert main(["run", str(recipe(tmp_path, server))]) == 0
    assert anthropic_stats(server)["batches_created"] == 3  # 5 + 5 + 2
    assert len(answers(tmp_path)) == ROWS


def test_a_run_killed_while_its_batch_is_pending_resumes_by_polling(tmp_path, server, private_cache):
    server.configure(batch_seconds=4.0)
    path = recipe(tmp_path, server)
    child = subprocess.Popen(
        [sys.executable, "-m", "synthkd.cli", "run", str(path)],
        env={**os.environ, "SYNTHKD_CACHE_DIR": str(private_cache)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while anthropic_stats(server)["batches_created"] == 0:
        assert child.poll() is None and time.monotonic() < deadline, "the batch was never created"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "out").exists()
    assert main(["run", str(path)]) == 0
    assert anthropic_stats(server)["batches_created"] == 1  # polled, never submitted again
    assert anthropic_stats(server)["items_resubmitted"] == 0
    assert answers(tmp_path) == {text: f"Answer: {text}" for text in instructions()}
    assert main(["run", str(path)]) == 0  # and the answers are cached: nothing more is sent
    assert anthropic_stats(server)["batches_created"] == 1


def test_a_batch_whose_id_a_crash_left_unrecorded_is_found_not_sent_again(tmp_path, server, private_cache):
    """Anthropic batches carry no metadata: `find` knows the batch by when it was created and how
    many requests it holds."""
    path = recipe(tmp_path, server)
    teacher, requests = label_requests(path)
    store = store_for(private_cache, server)

    async def crash_after_creating() -> None:
        jobs = AnthropicBatchJobs(MODEL, server.base_url, "k", 30)
        local_id = await jobs.upload(requests)
        store.uploaded(local_id, list(requests))
        await jobs.create(local_id)  # ... and the process dies before recording the batch id
        await jobs.aclose()

    asyncio.run(crash_after_creating())
    store.close()
    assert main(["run", str(path)]) == 0
    assert anthropic_stats(server)["batches_created"] == 1
    assert anthropic_stats(server)["items_resubmitted"] == 0
    assert len(answers(tmp_path)) == ROWS


def test_find_passes_over_an_equal_batch_recorded_for_another_upload(tmp_path, server, private_cache):
    """Two chunks of one size started a moment apart: the first one's batch, recorded, is not taken
    for the second one's, whose id the crash left unrecorded."""
    path = recipe(tmp_path, server)
    _, requests = label_requests(path)
    store = store_for(private_cache, server)
    keys = list(requests)

    async def crash_after_the_second_create() -> None:
        jobs = AnthropicBatchJobs(MODEL, server.base_url, "k", 30)
        first = await jobs.upload({key: requests[key] for key in keys[: ROWS // 2]})
        store.uploaded(first, keys[: ROWS // 2])
        store.started(first, await jobs.create(first))
        second = await jobs.upload({key: requests[key] for key in keys[ROWS // 2 :]})
        store.uploaded(second, keys[ROWS // 2 :])
        # A slow create: the first batch is now nearer the second upload's moment than its own.
        await asyncio.sleep(0.5)
        await jobs.create(second)  # ... and the process dies before recording the batch id
        await jobs.aclose()

    asyncio.run(crash_after_the_second_create())
    store.close()
    assert main(["run", str(path)]) == 0
    stats = anthropic_stats(server)
    assert stats["batches_created"] == 2 and stats["items_resubmitted"] == 0
    assert answers(tmp_path) == {text: f"Answer: {text}" for text in instructions()}


def test_requests_made_ready_but_never_sent_are_sent_once(tmp_path, server, private_cache):
    """A run killed between recording its local id and the create call sent nothing: the requests
    lived in that process, so they go in a new batch (and no batch of another size is taken)."""
    path = recipe(tmp_path, server)
    _, requests = label_requests(path)
    store = store_for(private_cache, server)

    async def crash_before_creating() -> None:
        jobs = AnthropicBatchJobs(MODEL, server.base_url, "k", 30)
        first = dict(list(requests.items())[:1])
        store.uploaded(await jobs.upload(first), list(first))
        await jobs.aclose()

    asyncio.run(crash_before_creating())
    store.close()
    assert main(["run", str(path)]) == 0
    stats = anthropic_stats(server)
    assert stats["batches_created"] == 1 and stats["items_submitted"] == ROWS
    assert stats["items_resubmitted"] == 0
    assert not store_for(private_cache, server).pending()  # the stale record is gone


def test_failed_items_are_retried_in_a_later_batch(tmp_path, server):
    # An item fails each submission with probability 0.6, drawn from its key, which holds the
    # server's port, so the draws change from run to run. With 40 attempts the chance that one of
    # 12 items fails them all is ~2e-8, and that the first batch has no failure 0.4**12 = 2e-5.
    server.configure(batch_item_failure_rate=0.6)
    assert main(["run", str(recipe(tmp_path, server, max_attempts=40))]) == 0
    stats = anthropic_stats(server)
    assert stats["batches_created"] >= 2 and stats["items_resubmitted"] > 0
    assert stats["items_submitted"] == ROWS + stats["items_resubmitted"]
    assert len(answers(tmp_path)) == ROWS
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert '"http_500"' in manifest  # api_error is a 500: the retries are counted under it


def test_items_an_expiring_batch_never_ran_are_sent_again_until_max_attempts(tmp_path, server):
    # Each batch runs half its items (rounded down) before it expires: 12 -> 6 -> 3 -> 2 -> 1 -> 1
    # left after five batches; the last item never runs and fails after max_attempts = 5.
    server.configure(batch_expire=True, batch_expire_fraction=0.5)
    assert main(["run", str(recipe(tmp_path, server, max_attempts=5))]) == 0
    assert anthropic_stats(server)["batches_created"] == 5
    assert len(answers(tmp_path)) == ROWS - 1
    (failure,) = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["reason"] == "batch_expired" and failure["attempts"] == 5


def test_an_item_refused_as_invalid_fails_its_row_and_the_run_goes_on(tmp_path, server):
    rows = [*instructions(ROWS - 1), "too long: a prompt"]
    assert main(["run", str(recipe(tmp_path, server, rows=rows))]) == 0
    assert anthropic_stats(server)["batches_created"] == 1  # not sent again
    assert len(answers(tmp_path)) == ROWS - 1
    (failure,) = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["attempts"] == 1 and "prompt is too long" in json.dumps(failure)


def test_a_refused_key_stops_the_run_before_any_batch(tmp_path, server, capsys):
    server.configure(require_key="sk-ant-right")
    assert main(["run", str(recipe(tmp_path, server))]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "HTTP 401" in err and "api_key_env" in err
    assert anthropic_stats(server)["batches_created"] == 0


def test_an_item_refused_for_its_key_stops_the_run(tmp_path, server, capsys):
    rows = [*instructions(ROWS - 1), "locked out: a prompt"]
    assert main(["run", str(recipe(tmp_path, server, rows=rows))]) == 1
    assert "HTTP 401" in " ".join(capsys.readouterr().err.split())
    assert anthropic_stats(server)["batches_created"] == 1  # no second batch after it


def test_a_spending_cap_holds_in_batch_mode(tmp_path, server, capsys):
    price = {"input_per_million": 0.0, "output_per_million": 1_000_000.0}
    # 32 USD worst case per item: a 100 USD cap lets 3 items go in the batch.
    assert main(["run", str(recipe(tmp_path, server, price=price, max_cost_usd=100))]) == 4
    assert anthropic_stats(server)["items_submitted"] == 3
    assert f"max_cost_usd of teacher litellm:{MODEL}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {}}}},
            "response_format",
        ),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 3}, "seed"),
        ({"temperature": 1.5}, "temperature"),
    ],
)
def test_params_an_anthropic_batch_cannot_carry_are_refused_before_any_request(
    tmp_path, server, capsys, params, key
):
    path = recipe(tmp_path, server, params={"max_tokens": 32, **params})
    assert main(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "batched.yaml" in err and f"teacher.params.{key}" in err
    assert f"Anthropic's Message Batches API cannot carry param '{key}'" in err
    assert server.stats()["requests"] == 0 and anthropic_stats(server)["batches_created"] == 0


def test_a_schema_a_step_asks_for_is_refused_before_any_request(tmp_path, server, capsys):
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    assert main(["run", str(recipe(tmp_path, server, step={"schema": schema}))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "teacher.batch" in err and "json_schema response_format" in err and "batch: false" in err
    assert server.stats()["requests"] == 0 and anthropic_stats(server)["batches_created"] == 0


def test_batch_is_refused_for_a_litellm_model_anthropic_does_not_serve(tmp_path, server, capsys):
    assert main(["run", str(recipe(tmp_path, server, model="gemini/gemini-2.0-flash"))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "teacher.batch" in err and "has no batch jobs for model 'gemini/gemini-2.0-flash'" in err
    assert "litellm with an anthropic/ model (Anthropic's Message Batches API)" in err


def test_system_stop_and_max_tokens_reach_the_batch_items(tmp_path, server):
    """The fake refuses a system role among an item's messages and cuts at stop_sequences, as
    Anthropic does: the system prompt went as `system`, the stop as `stop_sequences`."""
    path = recipe(
        tmp_path, server, params={"max_tokens": 32, "stop": ["animal"]}, step={"system": "Be brief."}
    )
    assert main(["run", str(path)]) == 0
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert {row["response"] for row in rows} == {"Answer: Describe "}
    assert {row["finish_reason"] for row in rows} == {"stop"} and {row["system"] for row in rows} == {
        "Be brief."
    }

    (tmp_path / "out").rename(tmp_path / "first")
    assert main(["run", str(recipe(tmp_path, server, params={"max_tokens": 2}))]) == 0
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert {row["response"] for row in rows} == {"Answer: Describe"}
    assert {row["finish_reason"] for row in rows} == {"length"}


# The mapping, the capability and the price


def test_a_chat_request_maps_to_anthropic_params():
    request = ChatRequest(
        (
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Name a bird"},
        ),
        {"max_completion_tokens": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop": "END"},
    )
    assert message_params(MODEL, request) == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Name a bird"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "stop_sequences": ["END"],
    }
    two_systems = ChatRequest(
        (
            {"role": "system", "content": "A"},
            {"role": "developer", "content": "B"},
            {"role": "user", "content": "Q"},
        )
    )
    params = message_params(MODEL, two_systems)
    assert params["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert params["max_tokens"] == ASSUMED_MAX_TOKENS  # the budget the spending caps assume
    assert "stop_sequences" not in params and "temperature" not in params


def test_requests_an_anthropic_item_cannot_carry_are_named():
    user = ({"role": "user", "content": "Q"},)
    assert refused_request(ChatRequest(user, response_format={"type": "json_object"})) is None
    schema = {"type": "json_schema", "json_schema": {"name": "r", "schema": {}}}
    assert "json_schema" in refused_request(ChatRequest(user, response_format=schema))
    assert "'tools'" in refused_request(ChatRequest(user, {"tools": []}))
    assert "role 'tool'" in refused_request(ChatRequest(({"role": "tool", "content": "x"},)))
    assert "magpie" in refused_request(ChatRequest(user, continue_final=True))


def test_results_map_to_completions_and_errors_classified_as_online():
    def outcome(result: dict[str, Any]) -> Completion | TeacherError:
        return result_of({"custom_id": "k", "result": result})[1]

    def errored(kind: str) -> TeacherError:
        error = outcome(
            {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": "m"}}}
        )
        assert isinstance(error, TeacherError)
        return error

    message = {
        "content": [
            {"type": "text", "text": "Hel"},
            {"type": "tool_use", "id": "t"},
            {"type": "text", "text": "lo"},
        ],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }
    assert outcome({"type": "succeeded", "message": message}) == Completion("Hello", "length", 7, 3)
    for stop_reason in ("end_turn", "stop_sequence"):
        answer = outcome({"type": "succeeded", "message": {**message, "stop_reason": stop_reason}})
        assert isinstance(answer, Completion) and answer.finish_reason == "stop"
    invalid = errored("invalid_request_error")
    assert not invalid.retryable and not invalid.fatal  # the row fails, the run goes on
    for kind in ("api_error", "overloaded_error"):
        assert errored(kind).retryable
    for kind in ("authentication_error", "permission_error"):
        assert errored(kind).fatal
    for kind, reason in (("canceled", "batch_cancelled"), ("expired", "batch_expired")):
        unrun = outcome({"type": kind})
        assert isinstance(unrun, TeacherError) and unrun.retryable and unrun.reason == reason
    assert outcome({"type": "succeeded", "message": {"content": None}}).reason == "malformed"


def test_the_api_root_takes_a_base_url_with_or_without_v1():
    for base in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/messages/"):
        assert api_root(base) == "http://h:1"
    assert api_root(None) == "https://api.anthropic.com"


def test_only_anthropic_models_of_the_litellm_backend_can_batch():
    anthropic = TeacherConfig(backend="litellm", model=MODEL, batch=True)
    assert batch_refusal(anthropic) is None and capabilities_of(anthropic).batch_submission
    # Its batch items carry neither log-probabilities nor a schema (the logits step refuses it).
    assert not capabilities_of(anthropic).top_logprobs and not capabilities_of(anthropic).structured_output
    online = TeacherConfig(backend="litellm", model=MODEL)
    assert capabilities_of(online).top_logprobs  # online, litellm's capabilities as before
    other = TeacherConfig(backend="litellm", model="openai/gpt-4o-mini", batch=True)
    assert not capabilities_of(other).batch_submission
    refusal = batch_refusal(other)
    assert refusal is not None and refusal.key == ("batch",) and "has no batch jobs" in refusal.message
    assert batch_refusal(TeacherConfig(backend="openai", model="gpt-4o-mini", batch=True)) is None


def test_anthropic_batch_jobs_are_priced_at_half_the_online_rate():
    online, batched = price_of("litellm", MODEL), batch_price_of("litellm", MODEL)
    assert online is not None and batched is not None and online.input_per_token > 0
    assert batched.input_per_token == pytest.approx(online.input_per_token / 2)
    assert batched.output_per_token == pytest.approx(online.output_per_token / 2)
    assert price_for(TeacherConfig(backend="litellm", model=MODEL, batch=True)) == batched


# The fake's endpoints over plain HTTP


def call(server, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    """(status, parsed body) of one call to the fake with Anthropic's headers (overridable)."""
    sent = {
        "anthropic-version": "2023-06-01",
        "x-api-key": "k",
        "content-type": "application/json",
        **headers,
    }
    url = path if path.startswith("http") else server.base_url.removesuffix("/v1") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={k: v for k, v in sent.items() if v}
    )
    try:
        with NO_PROXY.open(request, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    if status == 200 and url.endswith("/results"):  # JSONL: one result a line
        return status, [json.loads(line) for line in text.splitlines()]
    return status, json.loads(text)


def item(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-x",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


def wait_ended(server, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        status, batch = call(server, "GET", f"/v1/messages/batches/{batch_id}")
        assert status == 200
        if batch["processing_status"] == "ended":
            return batch
        assert time.monotonic() < deadline
        time.sleep(0.03)


def test_the_fake_serves_anthropics_batch_lifecycle_over_http(server):
    requests = [
        item("a", "Name a bird", system="Be brief."),
        item("b", "Say roses are red", stop_sequences=["red"]),
        item("c", "x", messages=[{"role": "system", "content": "no"}]),  # Anthropic refuses a system role
        item("d", "y", seed=3),  # ... and a field it does not know
        item("e", "too long: z"),  # a script rule answers 400
    ]
    status, batch = call(server, "POST", "/v1/messages/batches", {"requests": requests})
    assert status == 200 and batch["type"] == "message_batch" and batch["processing_status"] == "in_progress"
    assert batch["id"].startswith("msgbatch_") and batch["results_url"] is None
    assert batch["request_counts"] == {
        "processing": 5,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    status, early = call(server, "GET", f"/v1/messages/batches/{batch['id']}/results")
    assert status == 400 and early["type"] == "error"

    ended = wait_ended(server, batch["id"])
    assert ended["request_counts"] == {
        "processing": 0,
        "succeeded": 2,
        "errored": 3,
        "canceled": 0,
        "expired": 0,
    }
    assert ended["ended_at"] and ended["results_url"].endswith(f"/v1/messages/batches/{batch['id']}/results")
    status, lines = call(server, "GET", ended["results_url"])
    results = {line["custom_id"]: line["result"] for line in lines}
    assert status == 200 and set(results) == {"a", "b", "c", "d", "e"}
    message = results["a"]["message"]
    assert message["content"] == [{"type": "text", "text": "Answer: Name a bird"}]
    assert message["stop_reason"] == "end_turn" and message["usage"]["input_tokens"] == 5  # system counted
    assert results["b"]["message"]["content"][0]["text"] == "Answer: Say roses are "
    assert results["b"]["message"]["stop_reason"] == "stop_sequence"
    for custom_id in ("c", "d", "e"):
        error = results[custom_id]["error"]
        assert results[custom_id]["type"] == "errored" and error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
    assert "Extra inputs" in results["d"]["error"]["error"]["message"]


def test_the_fake_refuses_calls_and_batches_as_anthropic_does(server):
    assert (
        call(
            server,
            "POST",
            "/v1/messages/batches",
            {"requests": [item("a", "q")]},
            **{"anthropic-version": ""},
        )[0]
        == 400
    )
    assert call(server, "POST", "/v1/messages/batches", {"requests": []})[0] == 400
    assert (
        call(server, "POST", "/v1/messages/batches", {"requests": [item("a b", "q")]})[0] == 400
    )  # bad custom_id
    assert (
        call(server, "POST", "/v1/messages/batches", {"requests": [item("a", "q"), item("a", "r")]})[0] == 400
    )
    assert call(server, "GET", "/v1/messages/batches/msgbatch_nope")[0] == 404
    server.configure(require_key="sk-right")
    status, body = call(server, "POST", "/v1/messages/batches", {"requests": [item("a", "q")]})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert call(server, "GET", "/v1/messages/batches", **{"x-api-key": "sk-right"})[0] == 200
    assert anthropic_stats(server)["batches_created"] == 0


def test_the_fake_lists_newest_first_and_cancels(server):
    server.configure(batch_seconds=2.0)
    ids = [
        call(server, "POST", "/v1/messages/batches", {"requests": [item(f"i{n}", "q")]})[1]["id"]
        for n in range(3)
    ]
    status, page = call(server, "GET", "/v1/messages/batches?limit=2")
    assert status == 200 and [b["id"] for b in page["data"]] == ids[:0:-1] and page["has_more"]
    status, rest = call(server, "GET", f"/v1/messages/batches?limit=2&after_id={page['last_id']}")
    assert [b["id"] for b in rest["data"]] == [ids[0]] and not rest["has_more"]

    status, cancelled = call(server, "POST", f"/v1/messages/batches/{ids[1]}/cancel")
    assert (
        status == 200 and cancelled["processing_status"] == "canceling" and cancelled["cancel_initiated_at"]
    )
    ended = wait_ended(server, ids[1])
    assert ended["request_counts"]["canceled"] == 1
    assert call(server, "GET", ended["results_url"])[1] == [
        {"custom_id": "i1", "result": {"type": "canceled"}}
    ]
    assert anthropic_stats(server)["batches_created"] == 3 and anthropic_stats(server)["items_submitted"] == 3
