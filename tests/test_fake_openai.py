"""The fake OpenAI server, driven by the real openai client."""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import openai
import pytest

from synthkd.testing.fake_openai import FakeOpenAI, FakeOpenAIServer, ServerConfig

SCRIPT = [
    {"match": r"^capital of France", "reply": "Paris."},
    {"match": r"capital", "reply": "I only know France.", "finish_reason": "stop"},
    {"match": r"^poem", "reply": "Roses are {word}, violets are {word}.", "finish_reason": "length"},
]
DEFAULTS = asdict(ServerConfig())


@pytest.fixture(scope="module")
def server():
    with pytest.MonkeyPatch.context() as env:
        # httpx honours proxy variables; a proxy must never see requests to the local server.
        env.setenv("NO_PROXY", "127.0.0.1,localhost")
        env.setenv("no_proxy", "127.0.0.1,localhost")
        with FakeOpenAIServer(script=SCRIPT) as running:
            yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.configure(**DEFAULTS)
    server.reset()


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as running:
        yield running


def ask(client: openai.OpenAI, text: str, **params):
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model="fake-model", messages=messages, **params)


def post(server, path: str, data: bytes) -> int:
    request = urllib.request.Request(server.base_url.removesuffix("/v1") + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_answers_with_the_last_user_message_and_counts_words(client):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "why is the sky blue"},
    ]
    response = client.chat.completions.create(model="my-model", messages=messages)
    assert response.object == "chat.completion" and response.model == "my-model"
    (choice,) = response.choices
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.logprobs is None
    assert choice.message.role == "assistant"
    assert choice.message.content == "Answer: why is the sky blue"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2 + 2 + 2 + 5, 6)
    assert response.usage.total_tokens == 17
    assert client.models.list().data[0].id == "fake-model"


def test_script_rules_first_match_wins(client):
    assert ask(client, "capital of France?").choices[0].message.content == "Paris."
    assert ask(client, "the capital of Peru").choices[0].message.content == "I only know France."
    poem = ask(client, "poem about spring").choices[0]
    assert poem.finish_reason == "length"
    assert poem.message.content.startswith("Roses are ") and "{word}" not in poem.message.content
    # Deterministic: the same body gives the same words, another body other ones.
    assert ask(client, "poem about spring").choices[0].message.content == poem.message.content
    assert ask(client, "poem about autumn").choices[0].message.content != poem.message.content
    assert ask(client, "no rule matches").choices[0].message.content == "Answer: no rule matches"


def test_script_can_be_replaced_at_runtime(server, client):
    server.configure(script=[{"match": "x", "reply": "new rules"}])
    try:
        assert ask(client, "x marks the spot").choices[0].message.content == "new rules"
    finally:
        server.configure(script=SCRIPT)


def test_n_gives_identical_choices(client):
    response = ask(client, "one two", n=3)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert {c.message.content for c in response.choices} == {"Answer: one two"}
    assert response.usage.completion_tokens == 3 * 3


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_words_and_reports_length(client, limit):
    cut = ask(client, "a b c d e f", **{limit: 4}).choices[0]
    assert (cut.message.content, cut.finish_reason) == ("Answer: a b c", "length")
    whole = ask(client, "a b", **{limit: 4}).choices[0]
    assert (whole.message.content, whole.finish_reason) == ("Answer: a b", "stop")


def test_fail_500(server, client):
    server.configure(fail_500=1.0)
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client, "hi")
    assert caught.value.status_code == 500
    assert caught.value.body == {
        "message": "Internal server error (injected)",
        "type": "server_error",
        "code": None,
    }


def test_fail_429_sends_retry_after(server, client):
    server.configure(fail_429=1.0, retry_after=0.25)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, "hi")
    # The SDK exposes the JSON's "error" object as .body and keeps headers on .response only.
    assert caught.value.code == "rate_limit_exceeded" and caught.value.type == "requests"
    assert caught.value.response.headers["retry-after"] == "0.25"


def test_quota_is_a_429_without_retry_after(server, client):
    server.configure(quota=1.0)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, "hi")
    assert caught.value.status_code == 429 and caught.value.code == "insufficient_quota"
    assert "retry-after" not in caught.value.response.headers


def test_content_filter(server, client):
    server.configure(content_filter=1.0)
    choice = ask(client, "hi").choices[0]
    assert (choice.message.content, choice.finish_reason) == ("", "content_filter")


def test_malformed_body_fails_in_the_client(server, client):
    server.configure(malformed=1.0)
    # openai 1.x-3.x lets the json.JSONDecodeError (a ValueError) through, not an openai.APIError.
    with pytest.raises((ValueError, openai.APIError)):
        ask(client, "hi")
    assert server.stats()["by_status"] == {"200": 1}


def test_hang_times_the_client_out(server):
    server.configure(hang=1.0, hang_seconds=2)
    hasty = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.5)
    clock = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(hasty, "hi")
    assert time.monotonic() - clock < 1.5
    assert server.stats()["by_fault"]["hang"] == 1


def test_require_key(server, client):
    server.configure(require_key="sk-right")
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(client, "hi")
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    right = openai.OpenAI(base_url=server.base_url, api_key="sk-right", max_retries=0)
    assert ask(right, "hi").choices[0].message.content == "Answer: hi"
    stats = server.stats()
    assert stats["by_status"] == {"401": 1, "200": 1} and stats["by_fault"]["auth"] == 1


def test_bad_bodies_get_400(server):
    assert post(server, "/v1/chat/completions", b"{not json") == 400
    assert post(server, "/v1/chat/completions", json.dumps({"model": "m"}).encode()) == 400
    assert server.stats()["by_status"] == {"400": 2}


def test_stats_duplicates_and_reset(server, client):
    ask(client, "same")
    ask(client, "same")
    ask(client, "same", max_tokens=5)  # another body
    server.configure(fail_500=1.0)
    with pytest.raises(openai.InternalServerError):
        ask(client, "same")
    stats = server.stats()
    assert stats["requests"] == 4 and stats["duplicates"] == 2
    assert stats["by_status"] == {"200": 3, "500": 1}
    assert stats["by_fault"] == {
        "fail_500": 1,
        "fail_429": 0,
        "quota": 0,
        "hang": 0,
        "malformed": 0,
        "content_filter": 0,
        "auth": 0,
    }
    assert stats["max_in_flight"] == 1
    server.reset()
    assert server.stats()["requests"] == 0
    server.configure(fail_500=0)
    ask(client, "same")
    assert server.stats()["duplicates"] == 0  # reset forgets the bodies seen


def test_latency_and_max_in_flight(server, client):
    server.configure(latency_ms=300)
    clock = time.monotonic()
    ask(client, "hi")
    assert time.monotonic() - clock >= 0.3
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ask(client, f"question {i}"), range(8)))
    assert server.stats()["max_in_flight"] == 8


def test_configure_validates_and_returns_the_config(server):
    config = server.configure(latency_dist="lognormal", latency_ms=50, p99_ms=500)
    assert config == {**DEFAULTS, "latency_dist": "lognormal", "latency_ms": 50, "p99_ms": 500}
    with pytest.raises(ValueError, match="unknown settings"):
        server.configure(fail_503=1.0)
    with pytest.raises(ValueError, match="p99_ms"):
        server.configure(p99_ms=10)  # below the median
    assert server.configure() == config  # a rejected change changes nothing


def test_lognormal_latency_has_the_asked_median_and_p99():
    config = ServerConfig(latency_ms=20, latency_dist="lognormal", p99_ms=200)
    fake = FakeOpenAI(config, [], seed=1)
    samples = sorted(fake.latency_s(config) for _ in range(20000))
    assert statistics.median(samples) == pytest.approx(0.020, rel=0.05)
    assert samples[int(0.99 * len(samples))] == pytest.approx(0.200, rel=0.15)


def test_fault_draws_repeat_with_the_seed():
    config = ServerConfig(fail_500=0.3, fail_429=0.3, content_filter=0.3)

    def draws(seed: int) -> list[str | None]:
        fake = FakeOpenAI(config, [], seed=seed)
        return [fake.draw_fault(config) for _ in range(50)]

    assert draws(7) == draws(7) != draws(8)
    assert set(draws(7)) == {"fail_500", "fail_429", "content_filter", None}


def test_a_server_that_cannot_start_reports_its_stderr_and_leaves_nothing():
    failing = FakeOpenAIServer(script=[{"match": "(", "reply": "x"}])
    with pytest.raises(RuntimeError, match="did not start(.|\n)*unterminated subpattern"), failing:
        pass
    assert failing._process is not None and failing._process.poll() is not None
    with pytest.raises(TypeError, match="unknown server settings"):
        FakeOpenAIServer(fail_503=1.0)


def test_close_stops_the_process():
    with FakeOpenAIServer(latency_ms=5) as running:
        process = running._process
        assert process is not None and process.poll() is None
    assert process.poll() is not None
