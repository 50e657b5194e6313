"""The OpenAI Files and Batches endpoints of the fake server (`fake_openai.py` mounts them).

A batch's timeline is fixed when it is created and worked out whenever it is read, so no
background task runs. With `batch_seconds` = D it is `validating` for D/4, `in_progress` for D/2
(its items finishing one by one in file order), `finalizing` for D/4, then `completed`. A cancelled
batch is `cancelling` for D/4, then `cancelled`. The input file is validated when the batch is
created (the result shows once validating is over), and the batch keeps the settings in force then;
an item is answered at the first read after it finishes, with the script rules in force at that
read (a rule's `times` counts batch items too).

Faults (settings of the server's config):
- `batch_item_failure_rate`: the fraction of items answered with a 500 in the error file. An item
  is drawn per (seed, custom_id, how often that custom_id was submitted before), so a failed item
  resubmitted in a later batch gets a fresh draw.
- `batch_expire`: the batch expires at its deadline (D after creation; `expires_at` says so) with
  only the first `batch_expire_fraction` of its items done; the rest go to the error file with
  `batch_expired`, as OpenAI writes them.
- `batch_fail_validation`: the batch fails at validation with OpenAI's `token_limit_exceeded` (the
  organization's queue of enqueued tokens is full); with `batch_fail_validation_times` N > 0 only
  the first N batches since the reset do, as a queue that frees after a while. A malformed input
  file fails at validation by itself, with the line numbers.

The output and error files list their lines in a seeded shuffled order, as OpenAI does not keep
the input order either: a client must match lines by `custom_id`.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
COMPLETION_WINDOW_S = 24 * 3600
MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file
MAX_BATCH_REQUESTS = 50_000
MAX_METADATA_KEYS = 16
MAX_PAGE = 100
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})
UNFINISHED_ERRORS = {
    # OpenAI's words for items an expired batch never ran.
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    # OpenAI does not document this one; the fake mirrors the expired case.
    "cancelled": ("batch_cancelled", "This request was cancelled before it could be executed."),
}
INJECTED_500 = {
    "message": "The server had an error while processing your request (injected).",
    "type": "server_error",
    "param": None,
    "code": None,
}


class BatchConfig(Protocol):
    """The server settings a batch reads (fake_openai.ServerConfig has them)."""

    batch_seconds: float
    batch_item_failure_rate: float
    batch_expire: bool
    batch_expire_fraction: float
    batch_fail_validation: bool
    batch_fail_validation_times: int


# Answers one request body as the online chat endpoint would: (HTTP status, JSON body).
ItemAnswerer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def failure_draw(seed: int, custom_id: str, attempt: int) -> float:
    """The draw that decides whether an item fails (below the failure rate): fixed per submission
    of a custom_id, fresh for its next one. Anthropic's fake batches draw the same way."""
    return random.Random(f"{seed}:{custom_id}:{attempt}").random()


def error_body(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    return web.json_response(error_body(message, param, code), status=status)


def not_found(message: str, param: str | None = None) -> web.HTTPNotFound:
    """A 404 in OpenAI's error shape, to raise from a handler."""
    return web.HTTPNotFound(text=json.dumps(error_body(message, param)), content_type="application/json")


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass
class Item:
    """One request of a batch and, once it has finished, its answer."""

    custom_id: str
    body: dict[str, Any]
    fails: bool  # drawn at creation: answered with an injected 500
    done_at: float | None  # when it finishes; None: never (the batch expires first)
    status_code: int | None = None
    answer: dict[str, Any] | None = None
    request_id: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code == 200


@dataclass
class Batch:
    id: str
    sequence: int  # seeds the shuffle of its result files
    input_file_id: str
    metadata: dict[str, str] | None
    model: str | None
    created: float
    validated: float  # the end of validation
    finalizing: float
    ends: float  # completed or expired
    expires: float
    expire: bool
    items: list[Item]
    errors: list[dict[str, Any]]  # validation errors: the batch fails
    cancel_s: float
    cancelling: float | None = None
    answered: int = 0  # items answered so far; they finish in file order
    output_file_id: str | None = None
    error_file_id: str | None = None
    closed: bool = False  # its result files are written

    def status_at(self, now: float) -> str:
        if self.cancelling is not None:
            return "cancelling" if now < self.cancelling + self.cancel_s else "cancelled"
        if now < self.validated:
            return "validating"
        if self.errors:
            return "failed"
        if self.expire:
            return "in_progress" if now < self.ends else "expired"
        if now < self.finalizing:
            return "in_progress"
        return "finalizing" if now < self.ends else "completed"

    def horizon(self, now: float) -> float:
        """Items that finish after this moment are not answered (yet, or ever once cancelled)."""
        return now if self.cancelling is None else min(now, self.cancelling)

    def started(self, now: float) -> bool:
        """Whether it got past validation into processing."""
        began = now >= self.validated and not self.errors
        return began and (self.cancelling is None or self.cancelling >= self.validated)

    def as_json(self, now: float) -> dict[str, Any]:
        status = self.status_at(now)
        done = self.items[: self.answered]
        succeeded = sum(item.succeeded for item in done)
        total = len(self.items) if self.started(now) else 0
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": CHAT_ENDPOINT,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if status == "failed" else None,
            "input_file_id": self.input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            **self.timestamps(status, now),
            "request_counts": {"total": total, "completed": succeeded, "failed": len(done) - succeeded},
            "usage": batch_usage(done),
            "metadata": self.metadata,
        }

    def timestamps(self, status: str, now: float) -> dict[str, int | None]:
        def at(moment: float | None, reached: bool) -> int | None:
            return int(moment) if moment is not None and reached else None

        cancelled_at = None if self.cancelling is None else self.cancelling + self.cancel_s
        return {
            "created_at": int(self.created),
            "in_progress_at": at(self.validated, self.started(now)),
            "expires_at": math.ceil(self.expires),
            "finalizing_at": at(self.finalizing, status in ("finalizing", "completed")),
            "completed_at": at(self.ends, status == "completed"),
            "failed_at": at(self.validated, status == "failed"),
            "expired_at": at(self.ends, status == "expired"),
            "cancelling_at": at(self.cancelling, self.cancelling is not None),
            "cancelled_at": at(cancelled_at, status == "cancelled"),
        }


def batch_usage(done: list[Item]) -> dict[str, Any]:
    """Token counts summed over the answered items, in the batch object's shape."""
    usages = [item.answer["usage"] for item in done if item.succeeded and item.answer]
    prompt = sum(usage["prompt_tokens"] for usage in usages)
    output = sum(usage["completion_tokens"] for usage in usages)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }


# Validation of an input file, as OpenAI reports it in the failed batch's `errors.data`.


@dataclass(frozen=True)
class Request:
    line: int
    custom_id: str
    body: dict[str, Any]


def line_error(line: int | None, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def check_line(line: int, text: str, model: str | None) -> Request | dict[str, Any]:
    """The request on one line, or the error that makes the batch fail."""
    try:
        request = json.loads(text)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return line_error(line, "invalid_json_line", "This line is not parseable as valid JSON.")
    for name in ("custom_id", "method", "url", "body"):
        if name not in request:
            return line_error(
                line, "missing_required_parameter", f"Missing required parameter: '{name}'.", name
            )
    custom_id, body = request["custom_id"], request["body"]
    if not isinstance(custom_id, str) or not custom_id:
        return line_error(line, "invalid_type", "custom_id must be a non-empty string.", "custom_id")
    if request["method"] != "POST":
        return line_error(line, "invalid_value", "Only the POST method is supported.", "method")
    if request["url"] != CHAT_ENDPOINT:
        message = "The URL provided for this request does not match the batch endpoint."
        return line_error(line, "url_mismatch", message, "url")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return line_error(
            line, "missing_required_parameter", "Missing required parameter: 'model'.", "body.model"
        )
    if model is not None and body["model"] != model:
        message = "The provided model does not match the model of the other requests in this file."
        return line_error(line, "model_mismatch", message, "body.model")
    return Request(line, custom_id, body)


def validate_input(content: bytes) -> tuple[list[Request], list[dict[str, Any]]]:
    """The requests of a batch input file and every error found in it (line numbers from 1)."""
    requests: list[Request] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, text in enumerate(content.decode("utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        checked = check_line(number, text, model)
        if isinstance(checked, dict):
            errors.append(checked)
            continue
        if checked.custom_id in seen:
            message = "The custom_id for this request is a duplicate of another request in this file."
            errors.append(line_error(number, "duplicate_custom_id", message, "custom_id"))
            continue
        seen.add(checked.custom_id)
        model = model or checked.body["model"]
        requests.append(checked)
    if not requests and not errors:
        errors.append(line_error(None, "empty_file", "The batch input file is empty."))
    if len(requests) > MAX_BATCH_REQUESTS:
        message = f"The batch input file has more than {MAX_BATCH_REQUESTS} requests."
        errors.append(line_error(None, "too_many_tasks", message))
    return requests, errors


def token_limit_error(model: str | None) -> dict[str, Any]:
    message = (
        f"Enqueued token limit reached for {model} in organization org-fake. Limit: 0 enqueued tokens. "
        "Please try again once some in_progress batches have been completed. (injected)"
    )
    return line_error(None, "token_limit_exceeded", message)


def result_line(item: Item, unfinished: tuple[str, str] | None) -> dict[str, Any]:
    """A line of the output or error file: the item's answer, or why it never ran."""
    if unfinished is not None and item.status_code is None:
        code, message = unfinished
        error = {"code": code, "message": message}
        return {"id": new_id("batch_req_"), "custom_id": item.custom_id, "response": None, "error": error}
    response = {"status_code": item.status_code, "request_id": item.request_id, "body": item.answer}
    return {"id": new_id("batch_req_"), "custom_id": item.custom_id, "response": response, "error": None}


def page(objects: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """One page of a cursor-paginated list; an unknown `after` gives an empty last page."""
    ids = [entry["id"] for entry in objects]
    if after is None:
        start = 0
    elif after in ids:
        start = ids.index(after) + 1
    else:
        start = len(objects)
    chunk = objects[start : start + limit]
    return {
        "object": "list",
        "data": chunk,
        "first_id": chunk[0]["id"] if chunk else None,
        "last_id": chunk[-1]["id"] if chunk else None,
        "has_more": start + limit < len(objects),
    }


def page_limit(request: web.Request) -> int:
    limit = int(request.query.get("limit", "20"))
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    return limit


@dataclass
class BatchStats:
    files_uploaded: int = 0
    batches_created: int = 0
    batches_refused: int = 0  # failed at validation by `batch_fail_validation`
    # How many times each custom_id was submitted in a batch that passed validation.
    submissions: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "batches_refused": self.batches_refused,
            "items_submitted": sum(self.submissions.values()),
            "items_resubmitted": sum(count - 1 for count in self.submissions.values()),
            "custom_ids_resubmitted": sum(count > 1 for count in self.submissions.values()),
        }


class BatchEndpoints:
    """The files and batches the server holds until reset, and the handlers that serve them.
    Everything runs on the server's one event loop, so no locks."""

    def __init__(
        self,
        answer_item: ItemAnswerer,
        config: Callable[[], BatchConfig],
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.answer_item = answer_item
        self.config = config
        self.seed = seed
        self.clock = clock
        self.sequence = 0  # never reset, so result-file shuffles differ between batches
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self.stats = BatchStats()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload_file)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{file_id}", self.get_file)
        app.router.add_delete("/v1/files/{file_id}", self.delete_file)
        app.router.add_get("/v1/files/{file_id}/content", self.get_file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self.get_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel_batch)

    # Files

    def store_file(self, filename: str, purpose: str, content: bytes, created_at: int) -> StoredFile:
        stored = StoredFile(new_id("file-"), filename, purpose, content, created_at)
        self.files[stored.id] = stored
        return stored

    async def upload_file(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except ValueError as error:
            return openai_error(400, f"the body must be multipart/form-data ({error})")
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(upload, web.FileField):
            return openai_error(400, "Missing required parameter: 'file'.", param="file")
        if purpose not in FILE_PURPOSES:
            return openai_error(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose")
        filename = upload.filename or "upload"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return openai_error(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
        stored = self.store_file(filename, str(purpose), upload.file.read(), int(self.clock()))
        self.stats.files_uploaded += 1
        return web.json_response(stored.as_json())

    def find_file(self, request: web.Request) -> StoredFile:
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            raise not_found(f"No such File object: {file_id}", param="id")
        return self.files[file_id]

    async def get_file(self, request: web.Request) -> web.Response:
        return web.json_response(self.find_file(request).as_json())

    async def get_file_content(self, request: web.Request) -> web.Response:
        return web.Response(body=self.find_file(request).content, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        stored = self.find_file(request)
        del self.files[stored.id]
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    async def list_files(self, request: web.Request) -> web.Response:
        try:
            limit = page_limit(request)
        except ValueError as error:
            return openai_error(400, str(error), param="limit")
        purpose = request.query.get("purpose")
        listed = [f.as_json() for f in reversed(self.files.values()) if purpose in (None, f.purpose)]
        return web.json_response(page(listed, request.query.get("after"), limit))

    # Batches

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
        except ValueError:
            return openai_error(400, "The body must be JSON.")
        problem = check_batch_params(params)
        if problem is not None:
            return problem
        stored = self.files.get(params["input_file_id"])
        if stored is None:
            message = f"No such File object: {params['input_file_id']}"
            return openai_error(404, message, param="input_file_id")
        if stored.purpose != "batch":
            message = "The input file must be uploaded with purpose 'batch'."
            return openai_error(400, message, param="input_file_id")
        batch = self.new_batch(stored, params.get("metadata"))
        self.batches[batch.id] = batch
        self.stats.batches_created += 1
        return web.json_response(batch.as_json(self.clock()))

    def new_batch(self, stored: StoredFile, metadata: dict[str, str] | None) -> Batch:
        config = self.config()
        now, span = self.clock(), config.batch_seconds
        requests, errors = validate_input(stored.content)
        model = requests[0].body["model"] if requests else None
        if not errors and self.queue_full(config):
            errors = [token_limit_error(model)]
            self.stats.batches_refused += 1
        validated, finalizing, ends = now + span / 4, now + 3 * span / 4, now + span
        items = [] if errors else self.new_items(requests, config, validated, finalizing - validated)
        self.sequence += 1
        return Batch(
            id=new_id("batch_"),
            sequence=self.sequence,
            input_file_id=stored.id,
            metadata=metadata,
            model=model,
            created=now,
            validated=validated,
            finalizing=finalizing,
            ends=ends,
            expires=ends if config.batch_expire else now + COMPLETION_WINDOW_S,
            expire=config.batch_expire,
            items=items,
            errors=errors,
            cancel_s=span / 4,
        )

    def queue_full(self, config: BatchConfig) -> bool:
        """Whether `batch_fail_validation` refuses the batch being created: every one, or only the
        first `batch_fail_validation_times` since the reset."""
        times = config.batch_fail_validation_times
        return config.batch_fail_validation and (times == 0 or self.stats.batches_refused < times)

    def new_items(
        self, requests: list[Request], config: BatchConfig, start: float, span: float
    ) -> list[Item]:
        """The items of a validated batch: each one's injected failure and when it finishes. Counts
        the submissions, which is what makes a resubmitted item's failure draw a fresh one."""
        finishing = math.floor(config.batch_expire_fraction * len(requests)) if config.batch_expire else None
        items = []
        for index, request in enumerate(requests):
            attempt = self.stats.submissions[request.custom_id]
            self.stats.submissions[request.custom_id] += 1
            draw = failure_draw(self.seed, request.custom_id, attempt)
            never = finishing is not None and index >= finishing
            done_at = None if never else start + span * (index + 1) / len(requests)
            items.append(
                Item(request.custom_id, request.body, draw < config.batch_item_failure_rate, done_at)
            )
        return items

    def advance(self, batch: Batch) -> dict[str, Any]:
        """Answer the items that have finished by now and, once the batch is over, write its result
        files; returns the batch object as of now."""
        now = self.clock()
        horizon = batch.horizon(now)
        while batch.answered < len(batch.items):
            item = batch.items[batch.answered]
            if item.done_at is None or item.done_at > horizon:
                break
            self.answer(item)
            batch.answered += 1
        status = batch.status_at(now)
        if status in TERMINAL and not batch.closed:
            self.write_results(batch, status, int(now))
        return batch.as_json(now)

    def answer(self, item: Item) -> None:
        if item.fails:
            item.status_code, item.answer = 500, {"error": dict(INJECTED_500)}
        else:
            item.status_code, item.answer = self.answer_item(item.body)
        item.request_id = new_id("req_")

    def write_results(self, batch: Batch, status: str, now: int) -> None:
        unfinished = UNFINISHED_ERRORS.get(status)
        outputs, errors = [], []
        for item in batch.items:
            if item.succeeded:
                outputs.append(result_line(item, None))
            elif item.status_code is not None or unfinished is not None:
                errors.append(result_line(item, unfinished))
        shuffle = random.Random(f"{self.seed}:order:{batch.sequence}").shuffle
        shuffle(outputs)
        shuffle(errors)
        batch.output_file_id = self.result_file(f"{batch.id}_output.jsonl", outputs, now)
        batch.error_file_id = self.result_file(f"{batch.id}_error.jsonl", errors, now)
        batch.closed = True

    def result_file(self, filename: str, lines: list[dict[str, Any]], now: int) -> str | None:
        """The id of a new `batch_output` file with these lines; None when there are none, as
        OpenAI leaves `output_file_id` or `error_file_id` null."""
        if not lines:
            return None
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return self.store_file(filename, "batch_output", content, now).id

    def find_batch(self, request: web.Request) -> Batch:
        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            raise not_found(f"No batch found with id '{batch_id}'.")
        return self.batches[batch_id]

    async def get_batch(self, request: web.Request) -> web.Response:
        return web.json_response(self.advance(self.find_batch(request)))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self.find_batch(request)
        self.advance(batch)  # answer what finished before the cancel
        status = batch.status_at(self.clock())
        if status in CANCELLABLE:
            batch.cancelling = self.clock()
        elif status not in ("cancelling", "cancelled"):  # cancelling twice is harmless
            return openai_error(409, f"Cannot cancel a batch with status '{status}'.")
        return web.json_response(self.advance(batch))

    async def list_batches(self, request: web.Request) -> web.Response:
        try:
            limit = page_limit(request)
        except ValueError as error:
            return openai_error(400, str(error), param="limit")
        listed = [self.advance(batch) for batch in reversed(self.batches.values())]  # newest first
        return web.json_response(page(listed, request.query.get("after"), limit))

    def submissions_json(self) -> dict[str, int]:
        return dict(self.stats.submissions)


def check_batch_params(params: Any) -> web.Response | None:
    """The 400 answer to a malformed `POST /v1/batches` body, or None."""
    if not isinstance(params, dict):
        return openai_error(400, "The body must be a JSON object.")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(params.get(name), str):
            return openai_error(400, f"Missing required parameter: '{name}'.", param=name)
    if params["endpoint"] != CHAT_ENDPOINT:
        message = f"The fake server batches only {CHAT_ENDPOINT}, not {params['endpoint']!r}."
        return openai_error(400, message, param="endpoint")
    if params["completion_window"] != COMPLETION_WINDOW:
        message = f"Invalid value for 'completion_window': only {COMPLETION_WINDOW!r} is supported."
        return openai_error(400, message, param="completion_window")
    metadata = params.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= MAX_METADATA_KEYS
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        message = f"metadata must map at most {MAX_METADATA_KEYS} strings to strings."
        return openai_error(400, message, param="metadata")
    return None
