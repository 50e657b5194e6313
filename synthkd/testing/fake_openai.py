"""A scriptable OpenAI-compatible chat server with settable latency and injected faults.

    python -m synthkd.testing.fake_openai --port 0 --latency-ms 100 --fail-500 0.05 --fail-429 0.02

It answers `POST /v1/chat/completions` deterministically ("Answer: <last user message>" or a
scripted reply, whose `{word}` placeholders become words derived from the request), and injects
faults at the given rates: 500, 429 with Retry-After, 429 insufficient_quota, a hang, a truncated
body, a content-filtered answer. `GET /stats` counts
what it saw; `POST /reset` and `POST /config` let a test steer it. It binds 127.0.0.1 only.
Tests and benchmarks start it in a subprocess through `FakeOpenAIServer`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

Z99 = 2.3263  # the 99th percentile of a standard normal


@dataclass
class ServerConfig:
    fail_500: float = 0.0
    fail_429: float = 0.0
    retry_after: float = 0.05
    quota: float = 0.0
    hang: float = 0.0
    hang_seconds: float = 30.0
    malformed: float = 0.0
    content_filter: float = 0.0
    latency_ms: float = 0.0
    latency_dist: str = "fixed"  # fixed | lognormal
    p99_ms: float | None = None
    require_key: str | None = None


@dataclass
class ServerState:
    config: ServerConfig
    rules: list[tuple[re.Pattern, str, str]]
    rng: random.Random
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_fault: Counter = field(default_factory=Counter)
    seen_bodies: set = field(default_factory=set)
    duplicates: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    # Bumped by reset; a request that began before a reset (say, one still hanging) is not
    # counted in the new stats, so a test never sees the previous test's stragglers.
    epoch: int = 0

    def count(self, counter: Counter, name: str, epoch: int) -> None:
        if epoch == self.epoch:
            counter[name] += 1

    def reset(self) -> None:
        self.epoch += 1
        self.requests = self.duplicates = self.max_in_flight = 0
        self.by_status.clear()
        self.by_fault.clear()
        self.seen_bodies.clear()


def _error(status: int, message: str, kind: str, code: str | None, headers: dict | None = None):
    from aiohttp import web

    body = {"error": {"message": message, "type": kind, "code": code}}
    return web.json_response(body, status=status, headers=headers)


_WORDS = ("amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
          "kelp", "lumen", "maple", "nectar", "onyx", "pepper", "quartz", "raven", "saffron", "tundra",
          "umber", "velvet", "willow", "xenon", "yarrow", "zephyr")  # fmt: skip


def _fill_words(reply: str, body: str) -> str:
    """Replace each `{word}` in a scripted reply by a word derived from the request, so that
    different requests get different (but reproducible) answers from one rule."""
    if "{word}" not in reply:
        return reply
    digest = hashlib.sha256(body.encode()).digest()
    parts = reply.split("{word}")
    out = [parts[0]]
    for index, part in enumerate(parts[1:]):
        out.append(_WORDS[digest[index % len(digest)] % len(_WORDS)] + str(digest[(index + 7) % len(digest)]))
        out.append(part)
    return "".join(out)


def _reply_for(state: ServerState, messages: list[dict]) -> tuple[str, str]:
    last_user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    if not isinstance(last_user, str):  # content parts: join the text ones
        last_user = " ".join(part.get("text", "") for part in last_user if isinstance(part, dict))
    for pattern, reply, finish_reason in state.rules:
        if pattern.search(last_user):
            return reply, finish_reason
    return f"Answer: {last_user}", "stop"


def _latency_seconds(config: ServerConfig, rng: random.Random) -> float:
    median = config.latency_ms / 1000
    if config.latency_dist == "lognormal" and median > 0 and config.p99_ms:
        sigma = math.log(config.p99_ms / config.latency_ms) / Z99
        return median * math.exp(rng.gauss(0.0, sigma))
    return median


async def _chat(request, state: ServerState):
    epoch = state.epoch
    state.requests += 1
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        response = await _answer(request, state, state.config, epoch)
    finally:
        state.in_flight -= 1
    state.count(state.by_status, str(response.status), epoch)
    return response


async def _answer(request, state: ServerState, config: ServerConfig, epoch: int):
    from aiohttp import web

    raw = await request.read()
    if config.require_key and request.headers.get("Authorization") != f"Bearer {config.require_key}":
        state.count(state.by_fault, "auth", epoch)
        return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    try:
        body = json.loads(raw)
        messages = body["messages"]
    except (ValueError, KeyError, TypeError):
        return _error(400, "body must be JSON with `messages`", "invalid_request_error", None)
    canonical = json.dumps(body, sort_keys=True)
    if canonical in state.seen_bodies:
        state.duplicates += 1
    state.seen_bodies.add(canonical)

    rng = state.rng
    await asyncio.sleep(_latency_seconds(config, rng))
    if rng.random() < config.fail_500:
        state.count(state.by_fault, "fail_500", epoch)
        return _error(500, "Internal server error (injected)", "server_error", None)
    if rng.random() < config.fail_429:
        state.count(state.by_fault, "fail_429", epoch)
        return _error(
            429,
            "Rate limit reached (injected)",
            "requests",
            "rate_limit_exceeded",
            headers={"Retry-After": f"{config.retry_after:g}"},
        )
    if rng.random() < config.quota:
        state.count(state.by_fault, "quota", epoch)
        return _error(
            429, "You exceeded your current quota (injected)", "insufficient_quota", "insufficient_quota"
        )
    if rng.random() < config.hang:
        state.count(state.by_fault, "hang", epoch)
        await asyncio.sleep(config.hang_seconds)
    if rng.random() < config.malformed:
        state.count(state.by_fault, "malformed", epoch)
        return web.Response(text='{"id": "chatcmpl-x", "choices": [', content_type="application/json")

    reply, finish_reason = _reply_for(state, messages)
    reply = _fill_words(reply, canonical)
    if rng.random() < config.content_filter:
        state.count(state.by_fault, "content_filter", epoch)
        reply, finish_reason = "", "content_filter"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words = reply.split()
    if limit is not None and len(words) > int(limit):
        reply, finish_reason = " ".join(words[: int(limit)]), "length"
    n = int(body.get("n") or 1)
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
    completion_tokens = len(reply.split()) * n
    return web.json_response(
        {
            "id": f"chatcmpl-{state.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def make_app(state: ServerState):
    from aiohttp import web

    async def models(_request):
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def stats(_request):
        return web.json_response(
            {
                "requests": state.requests,
                "by_status": dict(state.by_status),
                "by_fault": {
                    name: state.by_fault.get(name, 0)
                    for name in (
                        "fail_500",
                        "fail_429",
                        "quota",
                        "hang",
                        "malformed",
                        "content_filter",
                        "auth",
                    )
                },
                "duplicates": state.duplicates,
                "max_in_flight": state.max_in_flight,
            }
        )

    async def reset(_request):
        state.reset()
        return web.json_response({"ok": True})

    async def configure(request):
        changes = await request.json()
        known = {f.name for f in fields(ServerConfig)}
        unknown = set(changes) - known - {"script"}
        if unknown:
            return _error(400, f"unknown settings: {sorted(unknown)}", "invalid_request_error", None)
        for name, value in changes.items():
            if name == "script":
                state.rules = compile_rules(value or [])
            else:
                setattr(state.config, name, value)
        return web.json_response(asdict(state.config))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", lambda request: _chat(request, state))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/config", configure)
    return app


def compile_rules(script: list[dict[str, str]]) -> list[tuple[re.Pattern, str, str]]:
    return [(re.compile(rule["match"]), rule["reply"], rule.get("finish_reason", "stop")) for rule in script]


async def serve(port: int, state: ServerState) -> None:
    from aiohttp import web

    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print(f"LISTENING http://127.0.0.1:{bound}/v1", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--script", type=Path, help="JSON list of {match, reply, finish_reason} rules")
    for item in fields(ServerConfig):
        kind = str if item.name in ("latency_dist", "require_key") else float
        parser.add_argument(f"--{item.name.replace('_', '-')}", type=kind, default=item.default)
    args = parser.parse_args(argv)
    config = ServerConfig(**{item.name: getattr(args, item.name) for item in fields(ServerConfig)})
    rules = compile_rules(json.loads(args.script.read_text())) if args.script else []
    state = ServerState(config, rules, random.Random(args.seed))
    try:
        try:
            import uvloop  # a faster event loop keeps the server's own overhead out of benchmarks
        except ImportError:
            asyncio.run(serve(args.port, state))
        else:
            uvloop.run(serve(args.port, state))
    except KeyboardInterrupt:
        pass


class FakeOpenAIServer:
    """Start the server in a subprocess: `with FakeOpenAIServer(latency_ms=100) as server: ...`."""

    def __init__(self, *, seed: int = 0, script: list[dict[str, str]] | None = None, **settings: Any) -> None:
        unknown = set(settings) - {f.name for f in fields(ServerConfig)}
        if unknown:
            raise TypeError(f"unknown server settings: {sorted(unknown)}")
        self._args = ["--seed", str(seed)]
        for name, value in settings.items():
            if value is not None:
                self._args += [f"--{name.replace('_', '-')}", str(value)]
        self._script_file: Path | None = None
        if script is not None:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(script, handle)
            self._script_file = Path(handle.name)
            self._args += ["--script", handle.name]
        self._process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> FakeOpenAIServer:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "synthkd.testing.fake_openai", *self._args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = self._process.stdout.readline()  # the first line is LISTENING <url>, or nothing if it died
            if not line.startswith("LISTENING "):
                self._process.wait(timeout=30)
                raise RuntimeError(f"fake OpenAI server failed to start: {self._process.stderr.read()}")
            self.base_url = line.split()[1]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        root = self.base_url.removesuffix("/v1")
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def configure(self, **settings: Any) -> dict:
        return self._call("POST", "/config", settings)

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None:
            for stream in (self._process.stdout, self._process.stderr):
                if stream:
                    stream.close()
        if self._script_file is not None:
            self._script_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
