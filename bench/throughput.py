"""Throughput of synthkd's dispatcher against a local OpenAI-compatible server, beside a naive baseline.

    python bench/throughput.py [--requests 2000] [--concurrency 64]

For each latency profile it prints achieved requests/s, the limit min(C/L, RPM/60) (L is the mean
latency), their ratio, and client CPU ms per request, for synthkd and for the naive baseline: the
openai client with asyncio.gather over batches of C, run in the same process. A bare aiohttp
loop (no SDK, no cache) shows the ceiling of the harness itself: the server shares the machine's
2 cores and adds its own overhead to every request.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import openai  # noqa: E402

from synthkd.cache import ResponseCache  # noqa: E402
from synthkd.dispatch.dispatcher import Dispatcher  # noqa: E402
from synthkd.teachers.base import ChatRequest  # noqa: E402
from synthkd.teachers.config import TeacherConfig  # noqa: E402
from synthkd.teachers.openai_backend import OpenAITeacher  # noqa: E402
from synthkd.testing.fake_openai import FakeOpenAIServer  # noqa: E402

Z99 = 2.3263  # the 99th percentile of a standard normal


@dataclass
class Measurement:
    seconds: float
    cpu_seconds: float
    requests: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def requests_for(count: int, tag: str) -> list[ChatRequest]:
    return [
        ChatRequest(({"role": "user", "content": f"{tag} request {i}"},), {"max_tokens": 16})
        for i in range(count)
    ]


async def run_synthkd(
    base_url: str, count: int, concurrency: int, rpm: float | None, cache_dir: Path
) -> Measurement:
    config = TeacherConfig(
        backend="openai",
        model="fake-model",
        base_url=base_url,
        api_key_env=None,
        concurrency=concurrency,
        rpm=rpm,
    )
    teacher = OpenAITeacher(config)
    cache = ResponseCache(cache_dir / f"bench-{time.time_ns()}.sqlite")  # real runs write every answer
    dispatcher = Dispatcher(teacher, config, cache, price=None)
    batch = requests_for(count, f"synthkd-{time.time_ns()}")
    wall, cpu = time.perf_counter(), time.process_time()
    outcomes = await dispatcher.run(batch)
    measurement = Measurement(time.perf_counter() - wall, time.process_time() - cpu, count)
    assert all(outcome.completion is not None for outcome in outcomes)
    await teacher.aclose()
    cache.close()
    return measurement


async def run_naive(base_url: str, count: int, concurrency: int) -> Measurement:
    """What many scripts do: gather a batch of C requests, wait for all of them, repeat."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    batch = requests_for(count, f"naive-{time.time_ns()}")
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, count, concurrency):
        await asyncio.gather(
            *(
                client.chat.completions.create(model="fake-model", messages=list(r.messages), **r.params)
                for r in batch[start : start + concurrency]
            )
        )
    measurement = Measurement(time.perf_counter() - wall, time.process_time() - cpu, count)
    await client.close()
    return measurement


async def run_bare_aiohttp(base_url: str, count: int, concurrency: int) -> Measurement:
    """The harness's own ceiling: a bare aiohttp loop with no SDK, no cache, no accounting."""
    import aiohttp

    batch = requests_for(count, f"bare-{time.time_ns()}")
    queue = list(reversed(batch))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                request = queue.pop()
                body = {"model": "fake-model", "messages": list(request.messages), **request.params}
                async with session.post(f"{base_url}/chat/completions", json=body) as response:
                    await response.json()

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Measurement(time.perf_counter() - wall, time.process_time() - cpu, count)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    profiles = [
        ("fixed 100 ms", {"latency_ms": 100}, None, 0.100),
        ("fixed 100 ms, RPM 12000", {"latency_ms": 100}, 12000.0, 0.100),
        (
            "lognormal median 100 ms, p99 1 s",
            {"latency_ms": 100, "latency_dist": "lognormal", "p99_ms": 1000},
            None,
            0.100 * math.exp((math.log(10) / Z99) ** 2 / 2),
        ),
    ]
    header = (
        "| latency | client | requests/s | limit min(C/L, RPM/60) | ratio | client CPU ms/request |\n"
        "|---|---|---:|---:|---:|---:|"
    )
    print(
        f"{args.requests} requests, concurrency {args.concurrency}, Python {sys.version.split()[0]}, "
        f"openai {openai.__version__}\n"
    )
    print(header)
    with tempfile.TemporaryDirectory() as scratch:
        for label, server_settings, rpm, mean_latency in profiles:
            limit = args.concurrency / mean_latency
            if rpm is not None:
                limit = min(limit, rpm / 60)
            with FakeOpenAIServer(**server_settings) as server:
                ours = asyncio.run(
                    run_synthkd(server.base_url, args.requests, args.concurrency, rpm, Path(scratch))
                )
                rows = [("synthkd", ours)]
                if rpm is None:
                    rows.append(
                        (
                            "naive gather",
                            asyncio.run(run_naive(server.base_url, args.requests, args.concurrency)),
                        )
                    )
                    rows.append(
                        (
                            "bare aiohttp (harness ceiling)",
                            asyncio.run(run_bare_aiohttp(server.base_url, args.requests, args.concurrency)),
                        )
                    )
            for client, measured in rows:
                cpu_ms = measured.cpu_seconds / measured.requests * 1000
                ratio = measured.rate / limit
                rate = measured.rate
                print(f"| {label} | {client} | {rate:.0f} | {limit:.0f} | {ratio:.1%} | {cpu_ms:.2f} |")


if __name__ == "__main__":
    main()
