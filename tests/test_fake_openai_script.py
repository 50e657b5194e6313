"""The fake server's rule `headers` and `times`, and its record of when each request arrived."""

from __future__ import annotations

import time

import openai
import pytest

from synthkd.testing.fake_openai import FakeOpenAIServer


@pytest.fixture(scope="module")
def server():
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NO_PROXY", "127.0.0.1,localhost")  # httpx must not send local requests to a proxy
        env.setenv("no_proxy", "127.0.0.1,localhost")
        with FakeOpenAIServer() as running:
            yield running


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as running:
        yield running


def ask(client: openai.OpenAI, text: str):
    return client.chat.completions.with_raw_response.create(
        model="fake-model", messages=[{"role": "user", "content": text}]
    )


def test_a_rule_with_times_answers_that_many_then_the_next_rule_does(server, client):
    server.reset()
    server.configure(
        script=[
            {"match": "^busy", "status": 429, "code": "rate_limit_exceeded", "headers": {"Retry-After": "2"},
             "times": 2},
            {"match": "^busy", "reply": "Done, {word}.", "headers": {"x-ratelimit-remaining-requests": "0"}},
        ]
    )  # fmt: skip
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, "busy now")
        assert caught.value.response.headers["retry-after"] == "2"
    answered = ask(client, "busy now")
    assert answered.headers["x-ratelimit-remaining-requests"] == "0"
    assert answered.parse().choices[0].message.content.startswith("Done, ")
    assert ask(client, "other").parse().choices[0].message.content == "Answer: other"
    server.reset()  # the count starts again
    with pytest.raises(openai.RateLimitError):
        ask(client, "busy again")


def test_arrivals_are_recorded_in_order_on_this_clock(server, client):
    server.configure(script=[])
    server.reset()
    before = time.monotonic()
    ask(client, "first")
    time.sleep(0.2)
    ask(client, "second " + "x" * 200)
    after = time.monotonic()
    (first, first_text), (second, second_text) = server.arrivals()
    assert before <= first < second <= after and second - first >= 0.2
    assert first_text == "first" and second_text == "second " + "x" * 73  # the first 80 characters
    server.reset()
    assert server.arrivals() == []
