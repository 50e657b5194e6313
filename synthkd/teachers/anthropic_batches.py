"""Anthropic's Message Batches API for the litellm backend's `anthropic/` models
(`teacher.batch: true`): up to 100,000 Messages requests go up as one batch, answered within
24 hours at half the price; the answers are read as JSONL from the batch's `results_url`.

Spoken over aiohttp (a core dependency): litellm has no batch path for Anthropic, and the SDK
would be a dependency for five calls. Items are built by `anthropic_params`; their answers and
errors are classified like online ones (`http_errors`).

Anthropic has no file upload, so `upload` only builds the items and returns a local id, and
`create` sends them. Durability rests on the runner recording that id before `create` and the
batch's id right after it, as for OpenAI. What it cannot rest on is `find`: an Anthropic batch
carries no metadata and no input file, so a batch whose id a killed run did not record (it died
in the moment between the create call and recording its id) can be told only by when it was
created and how many requests it holds, both of which the local id keeps. `find` picks the batch
of that size created nearest that moment (within `FIND_WINDOW_SECONDS`), passing over the batches
recorded for other uploads (an equal chunk started just before). A wrong pick costs a wait, not
money: the picked batch's results have no line for this run's custom ids, so they are sent again
in a later batch. A miss (the batch list unreadable, a clock off by more than the window) sends
them again while the lost batch is paid too.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import aiohttp

from synthkd.errors import RecipeError
from synthkd.teachers.anthropic_params import message_params, refused_request
from synthkd.teachers.base import BatchState, ChatRequest, Completion, TeacherError
from synthkd.teachers.http_errors import classify_status_error, connection_error, is_connection_failure
from synthkd.teachers.openai_backend import MALFORMED, HTTPStatusFailure, malformed

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
BATCHES_PATH = "/v1/messages/batches"
# How far from the moment a local id was made a batch `find` picks may have been created: the
# create call follows within seconds; the rest is room for a skewed clock.
FIND_WINDOW_SECONDS = 600.0
FIND_LOOKS_AT = 1000  # batches, newest first: a crashed run's batch is among the newest
LIST_PAGE = 100
# The batch API's own calls are retried (they are not billed), as the SDKs do: statuses a later
# attempt may get past, and failed connections of calls that change nothing.
CALL_ATTEMPTS = 4
CALL_BACKOFF_SECONDS = (1.0, 4.0, 16.0)
# Anthropic's error types by the HTTP status it sends them with, to classify an item's error as
# the same error would be online.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Items a batch ended without running; another batch may run them.
UNRUN_REASONS = {"canceled": "batch_cancelled", "expired": "batch_expired"}
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_LOCAL_ID = re.compile(r"^local-(\d+)-(\d+)-[0-9a-f]+$")


class AnthropicBatchJobs:
    """`BatchJobs` (see `teachers.base`) over Anthropic's /v1/messages/batches endpoints."""

    # Anthropic's limits on one batch: 100,000 requests and 256 MB (kept under, with room).
    max_requests = 100_000
    max_bytes = 230 * 1024 * 1024
    keeps_uploads = False  # nothing goes up before `create`: see the module docstring

    def __init__(self, model: str, base_url: str | None, api_key: str | None, timeout: float) -> None:
        self.model = model
        self._root = api_root(base_url)
        self._headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if api_key:
            self._headers["x-api-key"] = api_key
        # A batch of 230 MB takes minutes to send and its results as long to read: bound the
        # wait for each read instead of the whole transfer.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._ready: dict[str, bytes] = {}  # local id -> the create call's body
        self._session: aiohttp.ClientSession | None = None

    async def upload(self, requests: dict[str, ChatRequest]) -> str:
        items = []
        for custom_id, request in requests.items():
            refused = refused_request(request)
            if refused is not None:
                # A step shaped a request the batch cannot carry (what the recipe's own params
                # ask was refused before the run). Nothing has been sent to Anthropic yet.
                raise RecipeError(
                    f"teacher.batch: Anthropic's Message Batches API cannot carry {refused}; set batch: "
                    "false for this teacher to send its requests online"
                )
            items.append({"custom_id": custom_id, "params": message_params(self.model, request)})
        local_id = f"local-{int(time.time() * 1000)}-{len(items)}-{uuid.uuid4().hex[:12]}"
        self._ready[local_id] = json.dumps({"requests": items}, ensure_ascii=False).encode()
        return local_id

    async def create(self, file_id: str) -> str:
        body = self._ready.pop(file_id, None)
        if body is None:
            # The runner never asks this (`keeps_uploads` is False); a guard, not a path.
            raise TeacherError(
                f"{file_id}: its requests were made ready in another process", retryable=False, reason="batch"
            )
        # Retried only on an HTTP answer: a connection lost after sending may have started it.
        batch = await self._call("POST", self._root + BATCHES_PATH, body=body, idempotent=False)
        return str(batch["id"])

    async def find(self, file_id: str, recorded: Collection[str] = ()) -> str | None:
        made = _LOCAL_ID.match(file_id)
        if made is None:
            return None
        moment, count = int(made.group(1)) / 1000, int(made.group(2))
        best: tuple[float, str] | None = None
        after: str | None = None
        for _ in range(FIND_LOOKS_AT // LIST_PAGE):
            query = f"?limit={LIST_PAGE}" + (f"&after_id={after}" if after else "")
            page = await self._call("GET", self._root + BATCHES_PATH + query)
            for batch in page.get("data") or []:
                created = parse_time(batch.get("created_at"))
                if created is None:
                    continue
                if created < moment - FIND_WINDOW_SECONDS:
                    return best[1] if best else None  # newest first: the rest are older still
                distance = abs(created - moment)
                fits = distance <= FIND_WINDOW_SECONDS and _request_total(batch) == count
                fits = fits and batch.get("id") not in recorded  # another upload's batch
                if fits and (best is None or distance < best[0]):
                    best = (distance, str(batch["id"]))
            after = page.get("last_id")
            if not page.get("has_more") or not after:
                break
        return best[1] if best else None

    async def state(self, batch_id: str) -> BatchState:
        batch = await self._call("GET", f"{self._root}{BATCHES_PATH}/{batch_id}")
        counts = batch.get("request_counts") or {}
        processing = int(counts.get("processing") or 0)
        return BatchState(
            status=str(batch["processing_status"]),  # in_progress, canceling or ended (terminal)
            done=_request_total(batch) - processing,
            total=_request_total(batch),
            results_url=batch.get("results_url"),
        )

    async def results(self, state: BatchState) -> dict[str, Completion | TeacherError]:
        if not state.results_url:
            return {}  # every item counts as not run, and is sent again
        text = await self._call("GET", state.results_url, as_text=True)
        found: dict[str, Completion | TeacherError] = {}
        for line in text.splitlines():
            if line.strip():
                custom_id, outcome = result_of(json.loads(line))
                found[custom_id] = outcome
        return found

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        idempotent: bool = True,
        as_text: bool = False,
    ) -> Any:
        """One call to the batch API, retried as `CALL_ATTEMPTS` says; its failure as TeacherError."""
        for attempt in range(CALL_ATTEMPTS):
            try:
                return await self._send(method, url, body, as_text)
            except TeacherError as error:
                answered = error.status is not None
                if not error.retryable or not (answered or idempotent) or attempt == CALL_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(error.retry_after or CALL_BACKOFF_SECONDS[attempt])
        raise AssertionError("unreachable")

    async def _send(self, method: str, url: str, body: bytes | None, as_text: bool) -> Any:
        if self._session is None or self._session.closed:
            # Made in the event loop that uses it; trust_env: the proxy variables, as the SDKs read them.
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, trust_env=True
            )
        try:
            async with self._session.request(method, url, data=body) as response:
                raw = await response.read()
                if response.status >= 300:
                    failure = HTTPStatusFailure(
                        response.status, response.headers, raw.decode("utf-8", "replace")
                    )
                    raise classify_status_error(failure, response.status, response.headers) from failure
            text = raw.decode("utf-8")
            return text if as_text else json.loads(text)
        except TeacherError:
            raise
        except TimeoutError as exc:
            raise TeacherError("the batch API timed out", retryable=True, reason="timeout") from exc
        except aiohttp.ClientError as exc:
            if is_connection_failure(exc):
                raise connection_error(exc) from exc
            raise TeacherError(f"connection failed: {exc}", retryable=True, reason="connection") from exc
        except ValueError as exc:  # not JSON: a proxy's error page
            raise malformed(exc) from exc


def api_root(base_url: str | None) -> str:
    """The API's root from a teacher's base_url, which may be written with /v1 or /v1/messages (as
    litellm takes it online) or without."""
    root = (base_url or DEFAULT_BASE_URL).rstrip("/")
    for suffix in ("/v1/messages", "/v1"):
        root = root.removesuffix(suffix)
    return root


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 time ("2024-09-24T18:37:24.100435Z"), or None."""
    if not isinstance(value, str):
        return None
    # Python 3.10's fromisoformat takes neither "Z" nor more than six digits of a second.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _request_total(batch: Mapping[str, Any]) -> int:
    counts = batch.get("request_counts") or {}
    return sum(
        int(counts.get(name) or 0) for name in ("processing", "succeeded", "errored", "canceled", "expired")
    )


def result_of(line: dict[str, Any]) -> tuple[str, Completion | TeacherError]:
    """One line of a batch's results: its custom id, and its answer or its error."""
    custom_id = str(line["custom_id"])
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        try:
            return custom_id, completion_from(result["message"])
        except MALFORMED as exc:
            return custom_id, malformed(exc)
    if kind in UNRUN_REASONS:
        message = f"the batch ended ({kind}) before running this request"
        return custom_id, TeacherError(message, retryable=True, reason=UNRUN_REASONS[kind])
    if kind == "errored":
        return custom_id, item_error(result.get("error") or {})
    return custom_id, TeacherError(f"an unknown result type {kind!r}", retryable=True, reason="malformed")


def item_error(body: dict[str, Any]) -> TeacherError:
    """An errored item's error body ({"type": "error", "error": {"type", "message"}}), classified
    as the same error answered online: invalid_request_error fails the row, api_error and
    overloaded_error are sent again, authentication and permission errors stop the run."""
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    status = ERROR_STATUS.get(str(inner.get("type")), 500)  # an unknown type: the provider's trouble
    failure = HTTPStatusFailure(status, {}, json.dumps(body))
    return classify_status_error(failure, status, None)


def completion_from(message: dict[str, Any]) -> Completion:
    """An Anthropic Message as a Completion; raises one of MALFORMED if it is not one."""
    text = "".join(block["text"] for block in message["content"] if block.get("type") == "text")
    usage = message.get("usage") or {}
    stop_reason = message.get("stop_reason")
    return Completion(
        text=text,
        finish_reason=FINISH_REASONS.get(stop_reason, stop_reason),
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
    )
