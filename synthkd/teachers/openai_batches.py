"""OpenAI's batch API for the openai backend: the requests go up as one JSONL file, a batch job
answers them within 24 hours at half the price, and the answers come back as files.

Through the official SDK (imported only here, when a recipe sets `teacher.batch: true`): these
are a handful of calls per run, so its import time and per-call CPU do not matter, and it knows
the multipart upload and the file and batch objects. Its own retries are on for these calls
(they are not billed); the answers' failures are classified like online ones.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import openai

from synthkd.teachers.base import BatchState, ChatRequest, Completion, TeacherError
from synthkd.teachers.http_errors import classify_status_error, connection_error, is_connection_failure
from synthkd.teachers.openai_backend import (
    MALFORMED,
    HTTPStatusFailure,
    completion_from,
    malformed,
    request_body,
)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"  # the only window OpenAI offers
# How far back `find` looks for a batch started on a file: a crashed run's batch is among the
# newest, since it was started moments before the crash.
FIND_LOOKS_AT = 1000
# Item errors without an HTTP answer: the job ended before the item ran. Another batch may run it.
UNRUN_CODES = {"batch_expired", "batch_cancelled"}


class OpenAIBatchJobs:
    """`BatchJobs` (see `teachers.base`) over OpenAI's /files and /batches endpoints."""

    # OpenAI's limits on one batch: 50,000 requests and a 200 MB input file (kept under, with room).
    max_requests = 50_000
    max_bytes = 180 * 1024 * 1024
    keeps_uploads = True  # the input file stays on OpenAI's side: a batch can be started from it later

    def __init__(self, model: str, base_url: str | None, api_key: str, timeout: float | None) -> None:
        self.model = model
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=3)

    async def upload(self, requests: dict[str, ChatRequest]) -> str:
        lines = "".join(
            json.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": request_body(self.model, request),
                },
                ensure_ascii=False,
            )
            + "\n"
            for custom_id, request in requests.items()
        )
        # OpenAI takes a batch file only under a .jsonl name.
        uploaded = await _answer(
            self._client.files.create(file=("synthkd-batch.jsonl", lines.encode()), purpose="batch")
        )
        return uploaded.id

    async def create(self, file_id: str) -> str:
        batch = await _answer(
            self._client.batches.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata={"created_by": "synthkd"},
            )
        )
        return batch.id

    async def find(self, file_id: str, recorded: Collection[str] = ()) -> str | None:
        # A batch names its input file, so `recorded` is not needed to tell batches apart.
        try:
            seen = 0
            async for batch in self._client.batches.list(limit=100):
                if batch.input_file_id == file_id:
                    return batch.id
                seen += 1
                if seen >= FIND_LOOKS_AT:
                    break
        except openai.APIError as exc:
            raise _teacher_error(exc) from exc
        return None

    async def state(self, batch_id: str) -> BatchState:
        batch = await _answer(self._client.batches.retrieve(batch_id))
        failures = batch.errors.data if batch.errors and batch.errors.data else []
        counts = batch.request_counts
        return BatchState(
            status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            errors=tuple((error.code or "", error.message or "") for error in failures),
            done=(counts.completed + counts.failed) if counts else 0,
            total=counts.total if counts else 0,
        )

    async def results(self, state: BatchState) -> dict[str, Completion | TeacherError]:
        found: dict[str, Completion | TeacherError] = {}
        # The error file first: should an item be in both, its answer wins.
        for file_id in (state.error_file_id, state.output_file_id):
            if not file_id:
                continue
            content = await _answer(self._client.files.content(file_id))
            for line in content.text.splitlines():
                if line.strip():
                    custom_id, outcome = result_of(json.loads(line))
                    found[custom_id] = outcome
        return found

    async def aclose(self) -> None:
        await self._client.close()


def result_of(line: dict[str, Any]) -> tuple[str, Completion | TeacherError]:
    """One line of a batch's output or error file: its custom id, and its answer or its error."""
    custom_id = str(line["custom_id"])
    response = line.get("response")
    if not response:
        error = line.get("error") or {}
        code = str(error.get("code") or "batch_item_error")
        message = str(error.get("message") or code)
        return custom_id, TeacherError(
            message, retryable=code in UNRUN_CODES or code == "batch_item_error", reason=code
        )
    status = int(response.get("status_code") or 0)
    body = response.get("body")
    if status != 200:
        failure = HTTPStatusFailure(status, {}, json.dumps(body))
        return custom_id, classify_status_error(failure, status, None)
    try:
        return custom_id, completion_from(body)
    except MALFORMED as exc:
        return custom_id, malformed(exc)


async def _answer(call: Any) -> Any:
    """Await an SDK call, its failures as TeacherError."""
    try:
        return await call
    except openai.APIError as exc:
        raise _teacher_error(exc) from exc


def _teacher_error(exc: openai.APIError) -> TeacherError:
    if isinstance(exc, openai.APIStatusError):
        return classify_status_error(exc, exc.status_code, exc.response.headers)
    if is_connection_failure(exc):
        return connection_error(exc)
    return TeacherError(f"the batch API failed: {exc}", retryable=True, reason="connection")
