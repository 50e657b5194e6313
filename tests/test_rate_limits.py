"""Token buckets and the parsing of rate-limit headers."""

from __future__ import annotations

import asyncio
import time

from synthkd.dispatch.ratelimit import TokenBucket, requests_bucket
from synthkd.teachers.http_errors import parse_duration, rate_limit_hint, retry_after_seconds


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
    assert hint.remaining_requests == 0 and hint.reset_seconds == 360
    assert rate_limit_hint({"content-type": "application/json"}) is None
