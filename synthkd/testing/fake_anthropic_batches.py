"""Anthropic's Message Batches endpoints of the fake server (`fake_openai.py` mounts them):
`POST /v1/messages/batches`, `GET /v1/messages/batches[/{id}[/results]]` and
`POST /v1/messages/batches/{id}/cancel`, with Anthropic's headers (`anthropic-version` required;
`x-api-key` must be the server's `require_key` when it has one) and its error shape
({"type": "error", "error": {"type", "message"}}).

The clock, the faults and the counts are those of the OpenAI batches (fake_batches.py): with
`batch_seconds` = D a batch is `in_progress` from its creation, its items finish one by one in
request order over the first 3D/4, and it has `ended` at D. A cancelled one is `canceling` for D/4,
then `ended`, its unfinished items `canceled`. `batch_item_failure_rate` errors an item with an
`api_error`, drawn per (seed, custom_id, submissions of it before) as for OpenAI; `batch_expire`
ends the batch at its deadline with the first `batch_expire_fraction` of its items done, the rest
`expired`. `batch_fail_validation` is OpenAI's alone: Anthropic has no batch-wide validation.

An item is answered as the chat endpoint answers the same request (its system prompt first, its
messages, its max_tokens; script rules and their `times` included), in Anthropic's Message shape;
`stop_sequences` cut the answer. As Anthropic does, the shape of the batch is checked when it is
created (a 400) and each item's params while it runs: params Anthropic refuses (an unknown field,
no max_tokens, a system role among the messages) error the item with `invalid_request_error`.
The results list the items in a seeded shuffled order: a client must match them by `custom_id`.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from synthkd.testing.fake_batches import BatchConfig, BatchStats, ItemAnswerer, failure_draw, new_id

BATCHES = "/v1/messages/batches"
MAX_REQUESTS = 100_000
WINDOW_S = 24 * 3600
MAX_PAGE = 1000
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# The fields of a Messages request Anthropic knows (anything else: "Extra inputs are not permitted").
KNOWN_PARAMS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
        "metadata", "stream", "tools", "tool_choice", "thinking", "service_tier", "container",
        "mcp_servers", "output_format",
    }
)  # fmt: skip
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}
INJECTED_ERROR = ("api_error", "Internal server error (injected).")


def anthropic_error(status: int, message: str, kind: str | None = None) -> web.Response:
    kind = kind or ERROR_TYPES.get(status, "api_error")
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def error_result(kind: str, message: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}


def origin_of(request: web.Request) -> str:
    """Scheme, host and port of the server as the client reached it: where a results_url points."""
    return str(request.url.origin()).rstrip("/")


def rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Item:
    custom_id: str
    params: Any
    fails: bool  # drawn at creation: errored with an injected api_error
    done_at: float | None  # None: never (the batch expires first)
    result: dict[str, Any] | None = None


@dataclass
class Batch:
    id: str
    sequence: int  # seeds the shuffle of its results
    created: float
    ends: float
    expires: float
    expire: bool
    cancel_s: float
    items: list[Item]
    cancelling: float | None = None
    answered: int = 0  # items answered so far, in request order

    def ended_at(self) -> float:
        return self.ends if self.cancelling is None else min(self.ends, self.cancelling + self.cancel_s)

    def status_at(self, now: float) -> str:
        if now >= self.ended_at():
            return "ended"
        return "in_progress" if self.cancelling is None else "canceling"

    def horizon(self, now: float) -> float:
        """Items that finish after this moment are not answered (yet, or ever once cancelled)."""
        return now if self.cancelling is None else min(now, self.cancelling)

    def as_json(self, now: float, origin: str) -> dict[str, Any]:
        status = self.status_at(now)
        kinds = [item.result["type"] for item in self.items if item.result is not None]
        counts = {kind: kinds.count(kind) for kind in ("succeeded", "errored", "canceled", "expired")}
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {"processing": len(self.items) - len(kinds), **counts},
            "ended_at": rfc3339(self.ended_at()) if status == "ended" else None,
            "created_at": rfc3339(self.created),
            "expires_at": rfc3339(self.expires),
            "archived_at": None,
            "cancel_initiated_at": None if self.cancelling is None else rfc3339(self.cancelling),
            "results_url": f"{origin}{BATCHES}/{self.id}/results" if status == "ended" else None,
        }


def check_params(params: Any) -> str | None:
    """What Anthropic would refuse in one item's params, or None."""
    if not isinstance(params, dict):
        return "params: Input should be an object"
    extra = sorted(set(params) - KNOWN_PARAMS)
    if extra:
        return f"params.{extra[0]}: Extra inputs are not permitted"
    if not isinstance(params.get("model"), str):
        return "params.model: Field required"
    if not isinstance(params.get("max_tokens"), int) or params["max_tokens"] < 1:
        return "params.max_tokens: Field required (an integer of at least 1)"
    if params.get("stream"):
        return "params.stream: streaming is not supported in a batch"
    temperature = params.get("temperature", 0)
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1:
        return "params.temperature: Input should be less than or equal to 1"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return "params.messages: Field required (at least one message)"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"params.messages.{index}.role: Input should be 'user' or 'assistant'"
        if not text_of(message.get("content")).strip():
            return f"params.messages.{index}: text content blocks must be non-empty"
    return None


def text_of(content: Any) -> str:
    """The text of a content string or of a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n\n".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""


def chat_body(params: dict[str, Any]) -> dict[str, Any]:
    """The chat-endpoint request that asks what an Anthropic item asks."""
    system = text_of(params.get("system"))
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": m["role"], "content": text_of(m["content"])} for m in params["messages"]]
    return {"model": params["model"], "messages": messages, "max_tokens": params["max_tokens"]}


def message_of(params: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as Anthropic's Message, cut at the first stop sequence it contains."""
    choice = completion["choices"][0]
    text, stop_reason = (
        choice["message"]["content"] or "",
        STOP_REASONS.get(choice["finish_reason"], "end_turn"),
    )
    hits = [(text.find(stop), stop) for stop in params.get("stop_sequences") or [] if stop in text]
    stop_sequence = None
    if hits:
        cut, stop_sequence = min(hits)
        text, stop_reason = text[:cut], "stop_sequence"
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": completion["usage"]["prompt_tokens"], "output_tokens": len(text.split())},
    }


class AnthropicBatchEndpoints:
    """The Message Batches the server holds until reset, and the handlers that serve them."""

    def __init__(
        self,
        answer_item: ItemAnswerer,
        config: Callable[[], BatchConfig],
        require_key: Callable[[], str | None],
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.answer_item = answer_item
        self.config = config
        self.require_key = require_key
        self.seed = seed
        self.clock = clock
        self.sequence = 0  # never reset, so result shuffles differ between batches
        self.reset()

    def reset(self) -> None:
        self.batches: dict[str, Batch] = {}
        self.stats = BatchStats()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(BATCHES, self.create_batch)
        app.router.add_get(BATCHES, self.list_batches)
        app.router.add_get(BATCHES + "/{batch_id}", self.get_batch)
        app.router.add_get(BATCHES + "/{batch_id}/results", self.get_results)
        app.router.add_post(BATCHES + "/{batch_id}/cancel", self.cancel_batch)

    def refused(self, request: web.Request) -> web.Response | None:
        """The answer to a call without Anthropic's headers (or with the wrong key), or None."""
        key = self.require_key()
        if key is not None and request.headers.get("x-api-key") != key:
            return anthropic_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        return None

    async def create_batch(self, request: web.Request) -> web.Response:
        refused = self.refused(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return anthropic_error(400, "The body must be JSON.")
        requests = body.get("requests") if isinstance(body, dict) else None
        problem = check_requests(requests)
        if problem is not None:
            return anthropic_error(400, problem)
        assert isinstance(requests, list)
        batch = self.new_batch(requests)
        self.batches[batch.id] = batch
        self.stats.batches_created += 1
        return web.json_response(batch.as_json(self.clock(), origin_of(request)))

    def new_batch(self, requests: list[dict[str, Any]]) -> Batch:
        config = self.config()
        now, span = self.clock(), config.batch_seconds
        finishing = math.floor(config.batch_expire_fraction * len(requests)) if config.batch_expire else None
        items = []
        for index, request in enumerate(requests):
            custom_id = request["custom_id"]
            attempt = self.stats.submissions[custom_id]
            self.stats.submissions[custom_id] += 1
            fails = failure_draw(self.seed, custom_id, attempt) < config.batch_item_failure_rate
            never = finishing is not None and index >= finishing
            done_at = None if never else now + 0.75 * span * (index + 1) / len(requests)
            items.append(Item(custom_id, request["params"], fails, done_at))
        self.sequence += 1
        return Batch(
            id=new_id("msgbatch_"),
            sequence=self.sequence,
            created=now,
            ends=now + span,
            expires=now + (span if config.batch_expire else WINDOW_S),
            expire=config.batch_expire,
            cancel_s=span / 4,
            items=items,
        )

    def advance(self, batch: Batch) -> None:
        """Answer the items that have finished by now and, once the batch has ended, mark the
        rest canceled or expired."""
        now = self.clock()
        horizon = batch.horizon(now)
        while batch.answered < len(batch.items):
            item = batch.items[batch.answered]
            if item.done_at is None or item.done_at > horizon:
                break
            item.result = self.answer(item)
            batch.answered += 1
        if batch.status_at(now) == "ended":
            unrun = "canceled" if batch.cancelling is not None else "expired"
            for item in batch.items[batch.answered :]:
                item.result = item.result or {"type": unrun}

    def answer(self, item: Item) -> dict[str, Any]:
        problem = check_params(item.params)
        if problem is not None:
            return error_result("invalid_request_error", problem)
        if item.fails:
            return error_result(*INJECTED_ERROR)
        status, completion = self.answer_item(chat_body(item.params))
        if status != 200:
            message = str((completion.get("error") or {}).get("message") or "error")
            return error_result(ERROR_TYPES.get(status, "api_error"), message)
        return {"type": "succeeded", "message": message_of(item.params, completion)}

    def find_batch(self, request: web.Request) -> Batch | web.Response:
        """The batch a call names, brought up to now; or the answer refusing the call."""
        refused = self.refused(request)
        if refused is not None:
            return refused
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return anthropic_error(404, f"No batch found with id '{request.match_info['batch_id']}'.")
        self.advance(batch)
        return batch

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = self.find_batch(request)
        if isinstance(batch, web.Response):
            return batch
        return web.json_response(batch.as_json(self.clock(), origin_of(request)))

    async def get_results(self, request: web.Request) -> web.Response:
        batch = self.find_batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status_at(self.clock()) != "ended":
            return anthropic_error(400, f"Batch '{batch.id}' has not ended; its results are not ready.")
        lines = [{"custom_id": item.custom_id, "result": item.result} for item in batch.items]
        random.Random(f"{self.seed}:anthropic-order:{batch.sequence}").shuffle(lines)
        text = "".join(json.dumps(line) + "\n" for line in lines)
        return web.Response(text=text, content_type="application/x-jsonl")

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self.find_batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status_at(self.clock()) == "in_progress":
            batch.cancelling = self.clock()
        return web.json_response(batch.as_json(self.clock(), origin_of(request)))

    async def list_batches(self, request: web.Request) -> web.Response:
        refused = self.refused(request)
        if refused is not None:
            return refused
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            return anthropic_error(400, f"limit: Input should be between 1 and {MAX_PAGE}")
        newest_first = list(reversed(self.batches.values()))
        ids = [batch.id for batch in newest_first]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after is not None:
            start = ids.index(after) + 1 if after in ids else len(ids)
            chosen = newest_first[start : start + limit]
            more = start + limit < len(ids)
        elif before is not None:
            end = ids.index(before) if before in ids else 0
            chosen = newest_first[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            chosen, more = newest_first[:limit], limit < len(ids)
        origin = origin_of(request)
        data = []
        for batch in chosen:
            self.advance(batch)
            data.append(batch.as_json(self.clock(), origin))
        return web.json_response(
            {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )


def check_requests(requests: Any) -> str | None:
    """What makes Anthropic refuse a whole batch at creation, or None."""
    if not isinstance(requests, list) or not requests:
        return "requests: Field required (a list of at least one request)"
    if len(requests) > MAX_REQUESTS:
        return f"requests: List should have at most {MAX_REQUESTS} items"
    seen: set[str] = set()
    for index, request in enumerate(requests):
        if not isinstance(request, dict) or not isinstance(request.get("params"), dict):
            return f"requests.{index}.params: Field required"
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            return f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return f"requests.{index}.custom_id: Duplicate custom_id {custom_id!r}"
        seen.add(custom_id)
    return None
