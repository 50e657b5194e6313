"""A scriptable OpenAI-compatible chat server with settable latency and injected faults.

    python -m synthkd.testing.fake_openai --port 0 --latency-ms 100 --fail-500 0.05 --fail-429 0.02

It answers `POST /v1/chat/completions` deterministically: "Answer: <last user message>", or the
reply of the first `--script` rule whose regex matches the last user message (a `{word}` in a
scripted reply becomes a word derived from the request body, so one rule can give different but
reproducible answers). A rule with a `status` answers with that HTTP error instead (`code`, `type`,
`message`), e.g. 400 context_length_exceeded for the prompts it matches; a rule's `headers` go with
its answer (Retry-After, x-ratelimit-*), and a rule with `times` answers only the first that many
requests it matches, later ones going on to the next rules. At the given rates it
injects faults: 500, 429 with Retry-After, 429 insufficient_quota, a hang, a truncated body, a
content-filtered answer. `GET /stats` counts what it saw, `GET /arrivals` lists when each chat
request arrived; `POST /reset` and `POST /config` let a test steer it at runtime. It binds
127.0.0.1 only and prints `LISTENING http://127.0.0.1:PORT/v1`
once it accepts connections.

It also serves OpenAI's Files and Batches endpoints (`/v1/files`, `/v1/batches`; see
fake_batches.py): a batch's items get the same answers as the chat endpoint gives, on a timeline of
`--batch-seconds`, with their own faults (`--batch-item-failure-rate`, `--batch-expire`,
`--batch-fail-validation`, `--batch-fail-validation-times`). `GET /batch_submissions` counts how
often each custom_id was submitted.
And it serves Anthropic's Message Batches endpoints (`/v1/messages/batches`; see
fake_anthropic_batches.py) on the same clock and faults, answering their items the same way.

Tests and benchmarks start it in a subprocess through `FakeOpenAIServer`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from synthkd.testing.fake_anthropic_batches import AnthropicBatchEndpoints
from synthkd.testing.fake_batches import MAX_UPLOAD_BYTES, BatchEndpoints

Z99 = 2.3263  # the 99th percentile of a standard normal: p99 = median * exp(Z99 * sigma)
LATENCY_DISTS = ("fixed", "lognormal")
# Checked in this order; at most one fault hits a request. "auth" is not drawn, only counted.
DRAWN_FAULTS = ("fail_500", "fail_429", "quota", "hang", "malformed", "content_filter")
ALL_FAULTS = (*DRAWN_FAULTS, "auth")
TRUNCATED_BODY = '{"id": "chatcmpl-x", "choices": ['
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
MAX_ARRIVALS = 100_000  # arrivals kept per reset, so a long benchmark's memory stays bounded
ARRIVAL_TEXT_CHARS = 80


@dataclass(frozen=True)
class ServerConfig:
    """The settings `POST /config` may change; frozen, so a request reads one consistent snapshot."""

    fail_500: float = 0.0
    fail_429: float = 0.0
    retry_after: float = 0.05  # seconds, sent as the Retry-After header of injected 429s
    quota: float = 0.0
    hang: float = 0.0
    hang_seconds: float = 30.0
    malformed: float = 0.0
    content_filter: float = 0.0
    latency_ms: float = 0.0  # the fixed latency, or the median of the lognormal one
    latency_dist: str = "fixed"
    p99_ms: float | None = None  # needed by the lognormal distribution
    require_key: str | None = None
    # Batches (fake_batches.py): how long one takes from validating to completed, and its faults.
    batch_seconds: float = 0.5
    batch_item_failure_rate: float = 0.0  # fraction of items answered with a 500 in the error file
    batch_expire: bool = False  # batches expire at their deadline with part of their items done
    batch_expire_fraction: float = 0.5  # the part done before an expiry
    batch_fail_validation: bool = False  # batches fail at validation (token_limit_exceeded)
    batch_fail_validation_times: int = 0  # ... only the first that many since the reset (0: all)

    def updated(self, changes: dict[str, Any]) -> ServerConfig:
        """A copy with `changes` applied; raises ValueError on unknown keys or bad values."""
        unknown = set(changes) - SETTING_NAMES
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        new = replace(self, **{name: _coerce(name, value) for name, value in changes.items()})
        new.validate()
        return new

    def validate(self) -> None:
        for name in (
            *DRAWN_FAULTS,
            "retry_after",
            "hang_seconds",
            "latency_ms",
            "batch_seconds",
            "batch_fail_validation_times",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("batch_item_failure_rate", "batch_expire_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.latency_dist not in LATENCY_DISTS:
            raise ValueError(f"latency_dist must be one of {LATENCY_DISTS}")
        if self.latency_dist == "lognormal" and (self.p99_ms is None or self.p99_ms < self.latency_ms):
            raise ValueError("latency_dist lognormal needs p99_ms >= latency_ms")


SETTING_NAMES = frozenset(f.name for f in fields(ServerConfig))
_TEXT_SETTINGS = frozenset({"latency_dist", "require_key"})
_OPTIONAL_SETTINGS = frozenset({"p99_ms", "require_key"})
_SWITCH_SETTINGS = frozenset({"batch_expire", "batch_fail_validation"})
_COUNT_SETTINGS = frozenset({"batch_fail_validation_times"})
_TRUE, _FALSE = frozenset({"true", "1", "1.0", "yes", "on"}), frozenset({"false", "0", "0.0", "no", "off"})


def _coerce(name: str, value: Any) -> Any:
    """JSON and the command line give numbers as int, float or str; store them as the field's type."""
    if value is None and name in _OPTIONAL_SETTINGS:
        return None
    if name in _SWITCH_SETTINGS:
        return _switch(name, value)
    if name in _COUNT_SETTINGS:
        return int(float(value))
    return str(value) if name in _TEXT_SETTINGS else float(value)


def _switch(name: str, value: Any) -> bool:
    """A bool from JSON's true/false, a number, or the command line's text ("True" from str(True))."""
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{name} must be true or false, not {value!r}")


@dataclass
class Stats:
    """What the server saw since the last reset.

    A request keeps the Stats it started with, so one still running across a reset (say, a hang)
    counts in the discarded object and never in the next test's numbers.
    """

    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    # Digests, not the bodies, so a long benchmark does not hold every prompt in memory.
    seen: set[bytes] = field(default_factory=set)
    # When each chat request arrived (seconds on the machine's monotonic clock) and the start of
    # its last user message, for the first MAX_ARRIVALS requests.
    arrivals: list[tuple[float, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "by_fault": {name: self.by_fault[name] for name in ALL_FAULTS},
            "duplicates": self.duplicates,
            "max_in_flight": self.max_in_flight,
        }


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    reply: str
    finish_reason: str = "stop"
    # An error answer instead of a reply: HTTP status, OpenAI error `code`, `type` and message
    # (e.g. 400 context_length_exceeded for one over-long prompt).
    status: int | None = None
    code: str | None = None
    kind: str = "invalid_request_error"
    message: str = "The request was rejected (scripted)"
    headers: tuple[tuple[str, str], ...] = ()  # response headers sent with the answer or the error
    times: int | None = None  # answer only the first `times` matching requests; None: every one


def compile_rules(script: list[dict[str, Any]]) -> list[Rule]:
    """Rules from `{match, reply, finish_reason}` or, for an error answer,
    `{match, status, code, type, message}` dicts; either may add `headers` and `times`."""
    return [
        Rule(
            re.compile(r["match"]),
            r.get("reply", ""),
            r.get("finish_reason", "stop"),
            None if r.get("status") is None else int(r["status"]),
            r.get("code"),
            r.get("type", Rule.kind),
            r.get("message", Rule.message),
            tuple((str(k), str(v)) for k, v in (r.get("headers") or {}).items()),
            None if r.get("times") is None else int(r["times"]),
        )
        for r in script
    ]


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class ChatCall:
    """The parts of a chat request the answer depends on."""

    model: str
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    canonical: str  # json.dumps(body, sort_keys=True): identifies duplicates, seeds `{word}`s
    top_logprobs: int | None = None  # None: logprobs not asked for


def parse_chat(raw: bytes | dict[str, Any]) -> ChatCall:
    """A chat request from its bytes, or from its body already read (a batch file's line)."""
    try:
        body = json.loads(raw) if isinstance(raw, bytes) else raw
        messages = body["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("`messages` must be a list of objects")
        n = int(body.get("n") or 1)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        max_tokens = None if limit is None else int(limit)
        canonical = json.dumps(body, sort_keys=True)
        top_logprobs = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    except BadRequest:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise BadRequest(f"the body must be JSON with `messages` ({error})") from None
    if n < 1:
        raise BadRequest("n must be >= 1")
    return ChatCall(str(body.get("model", "fake-model")), messages, n, max_tokens, canonical, top_logprobs)


def message_text(message: dict[str, Any]) -> str:
    """The text of a message, whether its content is a string or a list of content parts."""
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if isinstance(p, dict))


_WORDS = ("amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
          "kelp", "lumen", "maple", "nectar", "onyx", "pepper", "quartz", "raven", "saffron", "tundra",
          "umber", "velvet", "willow", "xenon", "yarrow", "zephyr")  # fmt: skip


def fill_words(reply: str, canonical: str) -> str:
    """Replace each `{word}` by a word derived from the request, so that different requests get
    different (but reproducible) answers from one rule."""
    if "{word}" not in reply:
        return reply
    digest = hashlib.sha256(canonical.encode()).digest()
    head, *rest = reply.split("{word}")
    out = [head]
    for index, part in enumerate(rest):
        word = _WORDS[digest[index % len(digest)] % len(_WORDS)] + str(digest[(index + 7) % len(digest)])
        out += [word, part]
    return "".join(out)


def last_user_text(call: ChatCall) -> str:
    return next((message_text(m) for m in reversed(call.messages) if m.get("role") == "user"), "")


def rule_for(rules: list[Rule], call: ChatCall) -> Rule | None:
    """The first rule whose regex matches the last user message."""
    last_user = last_user_text(call)
    return next((rule for rule in rules if rule.pattern.search(last_user)), None)


def reply_for(rules: list[Rule], call: ChatCall) -> tuple[str, str]:
    """(content, finish_reason) before any fault or max_tokens cut."""
    return reply_of(rule_for(rules, call), call)


def reply_of(rule: Rule | None, call: ChatCall) -> tuple[str, str]:
    """(content, finish_reason) of `rule`'s answer, or the default one when no rule answers."""
    if rule is not None:
        return fill_words(rule.reply, call.canonical), rule.finish_reason
    return f"Answer: {last_user_text(call)}", "stop"


def truncate(reply: str, finish_reason: str, max_tokens: int | None) -> tuple[str, str]:
    """Words stand in for tokens: cut to `max_tokens` words, as a real model stops at the limit."""
    words = reply.split()
    if max_tokens is not None and len(words) > max_tokens:
        return " ".join(words[:max_tokens]), "length"
    return reply, finish_reason


def error_body(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


def error_response(
    status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(message, kind, code), status=status, headers=headers)


# Stand-in tokens: words, numbers and punctuation runs, each with the space before it (as BPE
# tokenizers split text), so a real byte-level tokenizer's vocabulary can map most of them.
_TOKEN = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")


def token_logprobs(reply: str, top: int) -> list[dict[str, Any]]:
    """OpenAI-shaped logprobs for a reply: each token is its own likeliest alternative; the other
    alternatives are the reply's other distinct tokens, less likely in turn."""
    tokens = _TOKEN.findall(reply)
    distinct = list(dict.fromkeys(tokens))
    entries = []
    for index, token in enumerate(tokens):
        chosen = -0.05 * (1 + index % 3)
        others = [other for other in distinct if other != token][: max(0, top - 1)]
        alternatives = [(token, chosen)] + [(other, -2.0 - rank) for rank, other in enumerate(others)]
        entries.append(
            {
                "token": token,
                "logprob": chosen,
                "bytes": list(token.encode("utf-8")),
                "top_logprobs": [
                    {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}
                    for text, value in alternatives[:top]
                ],
            }
        )
    return entries


def completion(call: ChatCall, reply: str, finish_reason: str, response_id: str) -> dict[str, Any]:
    prompt_tokens = sum(len(message_text(m).split()) for m in call.messages)
    completion_tokens = len(reply.split()) * call.n
    choice = {"role": "assistant", "content": reply}
    logprobs = None if call.top_logprobs is None else {"content": token_logprobs(reply, call.top_logprobs)}
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [
            {"index": i, "message": choice, "finish_reason": finish_reason, "logprobs": logprobs}
            for i in range(call.n)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeOpenAI:
    """The server's state and handlers. Everything runs on one event loop, so no locks."""

    def __init__(self, config: ServerConfig, rules: list[Rule], seed: int = 0) -> None:
        config.validate()
        self.config = config
        self.rules = rules
        self.stats = Stats()
        self.fault_rng = random.Random(seed)
        # Latency has its own generator, so switching to lognormal latency does not change which
        # requests get faults.
        self.latency_rng = random.Random(f"latency-{seed}")
        self.ids = itertools.count(1)
        self.rule_uses: Counter[int] = Counter()  # requests answered by each rule with `times`
        self.batches = BatchEndpoints(self.answer_batch_item, lambda: self.config, seed=seed)
        self.anthropic_batches = AnthropicBatchEndpoints(
            self.answer_batch_item, lambda: self.config, lambda: self.config.require_key, seed=seed
        )

    def pick_rule(self, call: ChatCall) -> Rule | None:
        """The first matching rule that has not used up its `times`; counts the use."""
        last_user = last_user_text(call)
        for index, rule in enumerate(self.rules):
            if not rule.pattern.search(last_user):
                continue
            if rule.times is not None:
                if self.rule_uses[index] >= rule.times:
                    continue
                self.rule_uses[index] += 1
            return rule
        return None

    def draw_fault(self, config: ServerConfig) -> str | None:
        # One draw per fault and request, hit or not, so request k's fault depends only on k.
        rolls = [self.fault_rng.random() for _ in DRAWN_FAULTS]
        return next(
            (name for name, roll in zip(DRAWN_FAULTS, rolls, strict=True) if roll < getattr(config, name)),
            None,
        )

    def latency_s(self, config: ServerConfig) -> float:
        median = config.latency_ms / 1000
        if config.latency_dist == "lognormal" and median > 0 and config.p99_ms:
            sigma = math.log(config.p99_ms / config.latency_ms) / Z99
            return median * math.exp(self.latency_rng.gauss(0.0, sigma))
        return median

    async def chat(self, request: web.Request) -> web.Response:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self.answer(request, stats)
        finally:  # also when the client gave up and aiohttp cancelled the handler
            stats.in_flight -= 1
        stats.by_status[str(response.status)] += 1
        return response

    async def answer(self, request: web.Request, stats: Stats) -> web.Response:
        arrived = time.monotonic()
        config = self.config
        raw = await request.read()
        if config.require_key and request.headers.get("Authorization") != f"Bearer {config.require_key}":
            stats.by_fault["auth"] += 1
            return error_response(
                401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"
            )
        try:
            call = parse_chat(raw)
        except BadRequest as error:
            return error_response(400, str(error), "invalid_request_error", None)
        if len(stats.arrivals) < MAX_ARRIVALS:
            stats.arrivals.append((arrived, last_user_text(call)[:ARRIVAL_TEXT_CHARS]))
        digest = hashlib.blake2b(call.canonical.encode(), digest_size=16).digest()
        if digest in stats.seen:
            stats.duplicates += 1
        stats.seen.add(digest)

        fault = self.draw_fault(config)
        latency = self.latency_s(config)
        if latency > 0:
            await asyncio.sleep(latency)
        rule = self.pick_rule(call)
        headers = dict(rule.headers) if rule is not None else {}
        if rule is not None and rule.status is not None:  # a scripted error beats any drawn fault
            return error_response(rule.status, rule.message, rule.kind, rule.code, headers or None)
        if fault is not None:
            stats.by_fault[fault] += 1
        if fault == "fail_500":
            return error_response(500, "Internal server error (injected)", "server_error", None)
        if fault == "fail_429":
            retry_after = {"Retry-After": f"{config.retry_after:g}"}
            return error_response(
                429, "Rate limit reached (injected)", "requests", "rate_limit_exceeded", retry_after
            )
        if fault == "quota":
            message = "You exceeded your current quota (injected)"
            return error_response(429, message, "insufficient_quota", "insufficient_quota")
        if fault == "hang":
            await asyncio.sleep(config.hang_seconds)
        if fault == "malformed":
            return web.Response(text=TRUNCATED_BODY, content_type="application/json")

        body = self.scripted_completion(call, rule, content_filtered=fault == "content_filter")
        return web.json_response(body, headers=headers or None)

    def scripted_completion(
        self, call: ChatCall, rule: Rule | None, content_filtered: bool = False
    ) -> dict[str, Any]:
        """The chat.completion body for `rule`'s answer (or the default one), cut at max_tokens."""
        reply, finish_reason = reply_of(rule, call)
        if content_filtered:
            reply, finish_reason = "", "content_filter"
        reply, finish_reason = truncate(reply, finish_reason, call.max_tokens)
        return completion(call, reply, finish_reason, f"chatcmpl-{next(self.ids)}")

    def answer_batch_item(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) the chat endpoint would answer `body` with, rules and their
        `times` included. The online faults, latency, key check and stats do not apply: a batch
        has faults of its own."""
        try:
            call = parse_chat(body)
        except BadRequest as error:
            return 400, error_body(str(error), "invalid_request_error", None)
        rule = self.pick_rule(call)
        if rule is not None and rule.status is not None:
            return rule.status, error_body(rule.message, rule.kind, rule.code)
        return 200, self.scripted_completion(call, rule)

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.stats.as_json(),
                "batches": self.batches.stats.as_json(),
                "anthropic_batches": self.anthropic_batches.stats.as_json(),
            }
        )

    async def get_batch_submissions(self, _request: web.Request) -> web.Response:
        return web.json_response({"submissions": self.batches.submissions_json()})

    async def get_arrivals(self, _request: web.Request) -> web.Response:
        return web.json_response({"arrivals": self.stats.arrivals})

    async def reset(self, _request: web.Request) -> web.Response:
        self.stats = Stats()
        self.rule_uses.clear()
        self.batches.reset()
        self.anthropic_batches.reset()
        return web.json_response({"ok": True})

    async def configure(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            rules = compile_rules(changes.pop("script")) if "script" in changes else self.rules
            config = self.config.updated(changes)
        except (ValueError, TypeError, KeyError, re.error) as error:
            return error_response(400, str(error), "invalid_request_error", None)
        if rules is not self.rules:
            self.rule_uses.clear()
        self.config, self.rules = config, rules
        return web.json_response(asdict(config))

    def app(self) -> web.Application:
        # aiohttp refuses bodies over 1 MiB by default; a batch input file may be far larger.
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        self.batches.add_routes(app)
        self.anthropic_batches.add_routes(app)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_get("/batch_submissions", self.get_batch_submissions)
        app.router.add_get("/arrivals", self.get_arrivals)
        app.router.add_post("/reset", self.reset)
        app.router.add_post("/config", self.configure)
        return app


async def serve(server: FakeOpenAI, port: int) -> None:
    # No access log: formatting a line per request would cost more than answering it. Handler
    # cancellation stops a hung request once its client gives up, so in-flight counts stay true.
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"LISTENING http://127.0.0.1:{bound}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def exit_when_stdin_closes() -> None:
    """Exit once the parent closes our stdin, which includes the parent dying: a test run killed
    with SIGKILL then leaves no server behind."""

    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fault (and latency) draws")
    parser.add_argument(
        "--script", type=Path, help="JSON list of {match, reply, finish_reason, headers, times} rules"
    )
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when stdin closes")
    for item in fields(ServerConfig):
        flag = f"--{item.name.replace('_', '-')}"
        if item.name == "latency_dist":
            parser.add_argument(flag, choices=LATENCY_DISTS, default=item.default)
        else:
            parser.add_argument(flag, type=lambda v, name=item.name: _coerce(name, v), default=item.default)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = ServerConfig(**{name: getattr(args, name) for name in SETTING_NAMES})
    try:
        config.validate()
    except ValueError as error:
        sys.exit(f"fake_openai: {error}")
    rules = compile_rules(json.loads(args.script.read_text())) if args.script else []
    if args.exit_with_parent:
        exit_when_stdin_closes()
    server = FakeOpenAI(config, rules, seed=args.seed)
    try:
        import uvloop  # a faster event loop keeps the server's own overhead out of benchmarks
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C in a terminal: exit without a traceback
        run(serve(server, args.port))


# The client side: start the server in a subprocess and talk to its control endpoints.

# The server is on 127.0.0.1: an HTTP(S)_PROXY in the environment must not reroute the control calls.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class FakeOpenAIServer:
    """Run the fake server in a subprocess for the duration of a `with` block.

        with FakeOpenAIServer(latency_ms=100, fail_500=0.05, script=[{"match": "hi", "reply": "Hello"}]) as s:
            client = openai.OpenAI(base_url=s.base_url, api_key="k")
            ...
            s.stats()["requests"]

    Keyword settings are those of `ServerConfig` (see `POST /config`); `script` is a list of
    `{"match", "reply", "finish_reason"}` rules (or `{"match", "status", "code", ...}` for an error),
    each optionally with `headers` (a dict) and `times` (answer only the first that many matches).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        script: list[dict[str, Any]] | None = None,
        port: int = 0,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        **settings: Any,
    ) -> None:
        unknown = set(settings) - SETTING_NAMES
        if unknown:
            raise TypeError(f"unknown server settings: {sorted(unknown)}")
        ServerConfig().updated({k: v for k, v in settings.items() if v is not None})  # fail here, not later
        self._args = ["--port", str(port), "--seed", str(seed), "--exit-with-parent"]
        for name, value in settings.items():
            if value is not None:
                self._args += [f"--{name.replace('_', '-')}", str(value)]
        self._script = script
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._script_file: Path | None = None
        self._stderr: IO[bytes] | None = None
        self.base_url = ""

    def __enter__(self) -> FakeOpenAIServer:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        args = list(self._args)
        if self._script is not None:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                self._script_file = Path(handle.name)
                json.dump(self._script, handle)
            args += ["--script", str(self._script_file)]
        # stderr goes to a file, not a pipe: nobody reads it while the server runs, and a full pipe
        # would block a server that logs a lot.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._process = subprocess.Popen(
            [sys.executable, "-m", "synthkd.testing.fake_openai", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_child_env(),
        )
        # Close the server with this object, or at the latest when the interpreter exits.
        weakref.finalize(self, _stop, self._process)
        line = self._read_first_line()
        if not line.startswith("LISTENING "):
            _stop(self._process)
            raise RuntimeError(
                f"the fake OpenAI server did not start (exit code {self._process.returncode}); "
                f"stdout: {line!r}; stderr:\n{self._stderr_text()}"
            )
        self.base_url = line.split()[1]

    def _read_first_line(self) -> str:
        """The server's first stdout line, or "" if it exits or stays silent past the timeout."""
        assert self._process is not None and self._process.stdout is not None
        lines: list[str] = []
        stdout = self._process.stdout
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._startup_timeout)
        if reader.is_alive():  # stopping the process closes its stdout, which ends the reader
            _stop(self._process)
            reader.join()
            raise RuntimeError(
                f"the fake OpenAI server printed nothing in {self._startup_timeout:g} s; "
                f"stderr:\n{self._stderr_text()}"
            )
        return lines[0] if lines else ""

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        if not self.base_url:
            raise RuntimeError("the fake OpenAI server is not running; use it in a `with` block")
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.base_url.removesuffix("/v1") + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with _NO_PROXY.open(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ValueError(f"{method} {path}: HTTP {error.code}: {error.read().decode()}") from None

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset: requests, by_status, by_fault, duplicates, max_in_flight
        of the chat endpoint (batch items are not chat requests and count in none of them), and
        `batches`: files_uploaded, batches_created, items_submitted (the items of batches that passed
        validation), items_resubmitted (submissions of a custom_id already submitted before) and
        custom_ids_resubmitted (custom_ids submitted more than once); `anthropic_batches`: the same
        counts for Anthropic's Message Batches (files_uploaded stays 0: Anthropic has no files)."""
        return self._call("GET", "/stats")

    def batch_submissions(self) -> dict[str, int]:
        """How many times each custom_id was submitted in a batch that passed validation, since
        the last reset."""
        return self._call("GET", "/batch_submissions")["submissions"]

    def arrivals(self) -> list[tuple[float, str]]:
        """(when, text) for each chat request since the last reset, in arrival order: when it
        arrived, in seconds on the machine's monotonic clock (`time.monotonic()` here too), and the
        first 80 characters of its last user message. Requests refused for their key or their body
        are left out, and so are batch items: they never arrive at the chat endpoint."""
        return [(when, text) for when, text in self._call("GET", "/arrivals")["arrivals"]]

    def reset(self) -> None:
        """Zero the counters, forget the bodies seen (for `duplicates`) and the arrival times,
        restart the count of each rule's `times`, and drop every file and batch."""
        self._call("POST", "/reset", {})

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings at runtime (`None` clears p99_ms or require_key); returns the new config."""
        return self._call("POST", "/config", settings)

    def close(self) -> None:
        """Stop the server (terminate, then kill after 5 s) and remove its files. Idempotent."""
        if self._process is not None:
            _stop(self._process)
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._script_file is not None:
            self._script_file.unlink(missing_ok=True)
            self._script_file = None
        self.base_url = ""


def _child_env() -> dict[str, str]:
    """The environment with this package's root on PYTHONPATH, so `-m synthkd...` resolves to
    this copy from any working directory, installed or not."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else os.pathsep.join([root, path])}


if __name__ == "__main__":
    main()
