"""Token buckets, the parsing of rate-limit headers, and rpm/tpm limits, Retry-After and
x-ratelimit pauses end to end: the fake server records when each request arrives."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.dispatch.ratelimit import TokenBucket, requests_bucket
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.teachers.http_errors import parse_duration, rate_limit_hint, retry_after_seconds
from synthkd.testing.fake_openai import FakeOpenAIServer


def test_bucket_paces_to_its_rate():
    async def take_many() -> float:
        bucket = TokenBucket(rate_per_second=50, capacity=1)
        start = time.monotonic()
        await asyncio.gather(*(bucket.take() for _ in range(26)))
        return time.monotonic() - start

    elapsed = asyncio.run(take_many())
    assert 0.45 <= elapsed < 1.5  # 25 refills at 50/s after the first token


def test_requests_bucket_starts_paced_and_banks_one_second():
    bucket = requests_bucket(600)  # 10/s
    assert bucket.capacity == 10 and bucket.rate == 10 and bucket._tokens == 1


def test_durations():
    assert parse_duration("6m0s") == 360
    assert parse_duration("1s") == 1
    assert parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None


def test_retry_after_forms():
    assert retry_after_seconds({"Retry-After": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0  # in the past
    assert retry_after_seconds({}) is None


def test_rate_limit_hint():
    hint = rate_limit_hint(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
            "content-type": "application/json",
        }
    )
    # Requests are exhausted and reset in 1 s; the tokens' 6 minutes are not what ran out (it once
    # paused every worker for the larger of the two).
    assert hint.remaining_requests == 0 and hint.pause_seconds() == 1
    tokens_out = rate_limit_hint(
        {
            "x-ratelimit-remaining-requests": "99",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "2.5s",
        }
    )
    assert tokens_out.pause_seconds() == 2.5  # exhausted tokens pause too (they were ignored)
    plenty = rate_limit_hint({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"})
    assert plenty.pause_seconds() is None
    assert rate_limit_hint({"content-type": "application/json"}) is None


# End to end: a recipe's teacher against the fake server, which records when each request arrived.


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_server(request):
    if "server" in request.fixturenames:
        running = request.getfixturevalue("server")
        running.reset()
        running.configure(script=[], latency_ms=0)
    yield


def run_label(tmp_path: Path, server, name: str, prompts: list[str], **teacher) -> list[dict]:
    """A load + label recipe over `prompts` with the given teacher settings; its data.jsonl rows."""
    write_jsonl(
        tmp_path / f"{name}.jsonl", [{"id": f"{name}-{i}", "instruction": p} for i, p in enumerate(prompts)]
    )
    path = write_recipe(
        tmp_path / f"{name}.yaml",
        {
            "name": name,
            "teacher": {"backend": "openai", "model": "fake-model", "base_url": server.base_url,
                        "api_key_env": None, "timeout": 10, **teacher},
            "steps": [{"step": "load", "path": f"{name}.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / name)},
        },
    )  # fmt: skip
    run_recipe(load_recipe(path))
    return read_jsonl(tmp_path / name / "data.jsonl")


def arrival_times(server, prefix: str) -> list[float]:
    """When the requests whose prompt starts with `prefix` arrived, in order."""
    return [when for when, text in server.arrivals() if text.startswith(prefix)]


def test_rpm_spaces_requests_at_the_rate_and_nothing_waits_without_it(tmp_path: Path, server):
    count = 21
    rows = run_label(
        tmp_path, server, "free", [f"Free {i}: name a colour." for i in range(count)], concurrency=16
    )
    free = arrival_times(server, "Free ")
    assert len(rows) == len(free) == count
    assert free[-1] - free[0] < 0.6  # without a limit 16 workers send them at once

    rows = run_label(
        tmp_path,
        server,
        "paced",
        [f"Paced {i}: name a colour." for i in range(count)],
        concurrency=16,
        rpm=1200,
    )
    paced = arrival_times(server, "Paced ")
    assert len(rows) == len(paced) == count
    # 1200 rpm is one request every 50 ms from the first one (the bucket starts with one token):
    # request k arrives no sooner than k * 50 ms after the first, whatever the 16 workers do.
    for k, when in enumerate(paced):
        assert when - paced[0] >= k / 20 - 0.03, (k, when - paced[0])
    assert paced[-1] - paced[0] < (count - 1) / 20 + 1.0  # and not much slower than the rate


def test_tpm_holds_tokens_per_minute_after_the_first_minutes_burst(tmp_path: Path, server):
    # Every answer is exactly 100 words, the fake server's tokens; prompts are 6 words.
    server.configure(script=[{"match": "^Tokens ", "reply": " ".join(["word"] * 100)}])
    per_request = 6 + 100
    burst, extra = 100, 4  # a minute's budget covers 100 requests; 4 more must wait for the refill
    tpm = burst * per_request
    rate = tpm / 60  # tokens per second, 0.6 s of refill per request
    prompts = [f"Tokens {i:03d}: say it in words." for i in range(burst + extra)]
    assert all(len(p.split()) == 6 for p in prompts)

    rows = run_label(tmp_path, server, "tpm", prompts, concurrency=64, tpm=tpm, params={"max_tokens": 100})
    times = arrival_times(server, "Tokens ")
    assert len(rows) == len(times) == burst + extra
    # Token bucket: by the time a request arrives, what was sent so far (itself included) fits in
    # the minute's budget plus the refill since the first request (one request of slack).
    for k, when in enumerate(times):
        assert (k + 1) * per_request <= tpm + rate * (when - times[0]) + per_request, (k, when - times[0])
    needed = extra * per_request / rate  # the refill the requests beyond the burst waited for: 2.4 s
    assert needed - 0.3 <= times[-1] - times[0] < needed + 2.0

    server.reset()
    rows = run_label(
        tmp_path, server, "untimed", [p.replace("Tokens", "Tokens free") for p in prompts], concurrency=64,
        params={"max_tokens": 100},
    )  # fmt: skip
    free = arrival_times(server, "Tokens free")
    assert len(free) == burst + extra and free[-1] - free[0] < needed - 0.5  # without tpm nothing waits


def test_a_429_is_retried_no_sooner_than_retry_after_and_pauses_every_worker(tmp_path: Path, server):
    server.configure(
        script=[
            {"match": "^First", "status": 429, "code": "rate_limit_exceeded", "type": "requests",
             "headers": {"Retry-After": "1"}, "times": 1},
        ]
    )  # fmt: skip
    prompts = ["First: name a river.", "Second: name a lake.", "Third: name a sea."]
    rows = run_label(tmp_path, server, "retry", prompts, concurrency=2)
    assert sorted(row["response"] for row in rows) == sorted(f"Answer: {p}" for p in prompts)
    first = arrival_times(server, "First")
    assert len(first) == 2  # the 429, then the retry that was answered
    assert first[1] - first[0] >= 1.0  # not before the Retry-After delay (backoff alone is < 0.5 s)
    # The other worker went on to the third prompt after the second: it waited for the pause too.
    (third,) = arrival_times(server, "Third")
    assert third - first[0] >= 1.0


def test_exhausted_x_ratelimit_headers_pause_the_next_requests(tmp_path: Path, server):
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s",
               "x-ratelimit-limit-requests": "3"}  # fmt: skip
    server.configure(script=[{"match": "^One", "reply": "The first answer.", "headers": headers}])
    prompts = ["One: name a tree.", "Two: name a bird.", "Three: name a fish."]
    rows = run_label(tmp_path, server, "hint", prompts, concurrency=1)
    assert len(rows) == 3
    (one,) = arrival_times(server, "One")
    (two,) = arrival_times(server, "Two")
    (three,) = arrival_times(server, "Three")
    assert two - one >= 1.0  # the answer said no requests are left for 1 s
    assert three - two < 0.5  # the next answer had no such headers: no pause
