"""The one protocol every teacher backend speaks, and the values that cross it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to ask for. `sample` tells apart the n answers to the same prompt."""

    messages: tuple[dict[str, str], ...]
    params: dict[str, Any] = field(default_factory=dict)
    sample: int = 0
    response_format: dict[str, Any] | None = None
    # Continue the last message instead of answering it: with an empty user message last, the
    # model writes the user's turn (Magpie). Only a local model can be sent such a prefix.
    continue_final: bool = False


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Per answer token, when the request asked for them (`logprobs: true`): OpenAI's entries as
    # sent, {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}, ...]}.
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class RateLimitHint:
    """What a response's headers say about the limits left (x-ratelimit-*)."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    # Each limit resets on its own clock (OpenAI: requests in about a second, tokens in minutes).
    reset_requests_seconds: float | None = None
    reset_tokens_seconds: float | None = None

    def pause_seconds(self) -> float | None:
        """How long to wait before the next request: until the exhausted limit resets."""
        waits = []
        if self.remaining_requests == 0 and self.reset_requests_seconds:
            waits.append(self.reset_requests_seconds)
        if self.remaining_tokens == 0 and self.reset_tokens_seconds:
            waits.append(self.reset_tokens_seconds)
        return max(waits) if waits else None


class TeacherError(Exception):
    """A failed request, classified so the dispatcher knows what to do:

    - `retryable`: try the same request again (429, 5xx, timeouts, malformed bodies);
    - `fatal`: no request can succeed (bad key, no quota, unknown model): stop the run;
    - neither: this request cannot succeed (400 context length exceeded, content policy): its row
      fails, with `reason`, and the run goes on.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        reason: str,
        status: int | None = None,
        retry_after: float | None = None,
        fatal: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        # Unless told otherwise, an error that retrying cannot fix stops the run.
        self.fatal = (not retryable) if fatal is None else fatal


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Code outside `synthkd.teachers` asks these, never a backend's name,
    so a new backend is a new entry in `teachers.registry` and nothing else.
    """

    local: bool  # runs in this process: no key, no endpoint, no price, no network timeout
    scores_text: bool = False  # can return its top-k log-probs over a GIVEN answer (`Teacher.score`)
    top_logprobs: bool = False  # returns top-k log-probs of the answers it generates (`logprobs: true`)
    # Honours `response_format` (JSON schema) natively. Steps send it either way and parse the
    # answer either way; this says whether a re-ask is likely to be needed.
    structured_output: bool = False
    continues_prefix: bool = False  # can continue a raw, open last message (`continue_final`, Magpie)
    # Accepts provider batch jobs (cheaper, slower): its teacher has `batches`, a `BatchJobs`. A
    # backend's spec says whether it has any; `registry.capabilities_of(config)`, whether for the
    # config's model (litellm: only anthropic/ models).
    batch_submission: bool = False
    needs_gpu: bool = False  # cannot run on a CPU-only machine: preflight refuses it there
    # Requests of this backend all start at once (a local model batches them) rather than ramping up.
    ramp_up: bool = True


# Estimates (dry-run plans, the TPM budget) assume an answer uses this many tokens when the
# params set no limit.
ASSUMED_MAX_TOKENS = 512


def estimate_prompt_tokens(request: ChatRequest) -> float:
    """A prompt's length in tokens without a tokenizer: four characters a token."""
    return sum(len(message.get("content") or "") for message in request.messages) / 4


def max_completion_tokens(params: dict[str, Any]) -> int:
    """The completion budget a request's params set, under any backend's name for it."""
    for name in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        if params.get(name):
            return int(params[name])
    return ASSUMED_MAX_TOKENS


@dataclass(frozen=True)
class ScoreRequest:
    """Score a conversation whose last message is the answer: the teacher's top-k next-token
    log-probabilities at every answer token (for offline logit distillation)."""

    messages: tuple[dict[str, str], ...]
    top_k: int


# A batch that ends in one of these statuses will not change again: OpenAI's four, and Anthropic's
# one ("ended", whatever became of its items).
BATCH_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", "ended"})


@dataclass(frozen=True)
class BatchState:
    """Where a provider batch job stands. `errors` are the reasons a batch failed as a whole
    (validation): their codes and messages."""

    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[tuple[str, str], ...] = ()
    done: int = 0  # items finished so far (answered or failed), of `total`
    total: int = 0
    # Where the answers of an API without result files are read (Anthropic's `results_url`).
    results_url: str | None = None

    @property
    def over(self) -> bool:
        return self.status in BATCH_TERMINAL


class BatchJobs(Protocol):
    """A provider's batch API: requests go up as one job, the answers come back hours later at a
    lower price. Calls raise TeacherError like `complete`.

    `upload` then `create` start a job, and the runner records the id `upload` returns before it
    calls `create`, so a run killed between the two can look the job up (`find`). OpenAI uploads a
    file that outlives the run and that `create` and `find` name; Anthropic takes the requests
    with the job itself, so its `upload` only builds them and returns a local id, which lives as
    long as the process (`keeps_uploads` False).
    """

    # The most requests, and bytes of requests, one job may hold (the provider's limits, with room).
    max_requests: int
    max_bytes: int
    # Whether an upload outlives the process: a job whose start a killed run cannot find is then
    # started from it; otherwise its requests never reached the provider and go into a new job.
    keeps_uploads: bool

    async def upload(self, requests: dict[str, ChatRequest]) -> str:
        """Make the requests (by custom id) ready as one job; return the id `create` takes (the
        provider's file id, or a local one)."""
        ...

    async def create(self, file_id: str) -> str:
        """Start a batch job on what `upload` made ready; return the batch's id."""
        ...

    async def find(self, file_id: str, recorded: Collection[str] = ()) -> str | None:
        """The id of a batch already started on this upload, if any (a crash between `create` and
        recording its id must not start a second, paid one). `recorded`: the ids of batches known
        to belong to other uploads, which an API that cannot name a batch's upload must pass over."""
        ...

    async def state(self, batch_id: str) -> BatchState: ...

    async def results(self, state: BatchState) -> dict[str, Completion | TeacherError]:
        """The answers of a finished batch by custom id, and the error of each item that failed;
        items with neither (not run) are absent."""
        ...


class Teacher(Protocol):
    """A model that answers chat requests. Implementations must not retry on their own.

    A teacher whose capabilities say `scores_text` also implements `score(requests) -> list[TopK]`
    and `tokenizer_fingerprint() -> {"vocab_sha256": ..., "template_sha256": ...}`.
    """

    backend: str
    model: str
    base_url: str | None

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        """Answer one request or raise TeacherError."""
        ...

    async def aclose(self) -> None: ...
