"""Batch mode (`teacher.batch: true`): a dispatcher's uncached requests go to the provider as
batch jobs at the batch price, and their answers come back into the same request cache.

1. Jobs a killed run left for this teacher (`BatchStore`) are collected first, never submitted
   again; a job whose id was not recorded is looked up by its upload (`BatchJobs.find`).
2. The rest is uploaded in chunks within the provider's limits (`BatchJobs.max_requests`,
   `max_bytes`); each chunk's upload id and keys are recorded before its job starts, its job id as
   soon as it exists.
3. Every `batch_poll_seconds` each job is asked where it stands. A finished job's answers are
   cached and handed on as they would be online; items that failed for a passing reason (a 5xx,
   the job expired or was cancelled before running them, no line at all) go into a later job
   until `max_attempts`; items refused for what they contain fail their rows; an item error that
   no request could get past (a bad key) stops the run, as online.
4. A job the provider refused because its queue was full (`QUEUE_FULL_CODES`) is no fault of its
   items: it is started again from the same upload, using up none of their `max_attempts`, after
   a wait that doubles from `batch_poll_seconds` up to `QUEUE_FULL_MAX_WAIT_SECONDS` and starts
   over once a job is accepted; the progress bar says so meanwhile (see `QueueWait`).
A spending cap reserves each item's worst case when it is submitted, as online.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from synthkd.dispatch.batch_store import BatchRecord, BatchStore
from synthkd.dispatch.budget import Budget, OverBudget
from synthkd.dispatch.outcome import DispatchStats, Outcome
from synthkd.errors import TeacherFatalError
from synthkd.teachers.base import BatchJobs, BatchState, ChatRequest, Completion, TeacherError
from synthkd.teachers.config import TeacherConfig

# A batch that failed validation for one of these will pass later: the provider's queue was full.
QUEUE_FULL_CODES = {"token_limit_exceeded", "request_limit_exceeded"}
# The longest wait between two starts of a job refused for a full queue: the queue frees as other
# jobs finish, which takes minutes to hours; asking more often than this buys nothing.
QUEUE_FULL_MAX_WAIT_SECONDS = 600.0
# Job states past the provider's validation: the job was accepted into the queue.
NOT_ACCEPTED = frozenset({"validating", "failed"})


class BatchHost(Protocol):
    """What a runner needs of the dispatcher it works for."""

    config: TeacherConfig
    stats: DispatchStats
    over_budget: Budget | None

    def reserve(self, request: ChatRequest) -> float:
        """Reserve the request's worst case under every budget, or raise OverBudget."""
        ...

    def settle(self, reserved: float, completion: Completion | None) -> None:
        """Settle a reservation at what the answer cost (nothing without one)."""
        ...

    def fatal(self, error: TeacherError) -> TeacherFatalError:
        """The run-stopping error for a teacher error no request can get past, secrets redacted."""
        ...

    def keep_answer(self, key: str, completion: Completion) -> Completion:
        """Cache an answer (redacted) and count it; return it as kept."""
        ...

    def failed(self, error: TeacherError, attempts: int) -> Outcome:
        """The outcome of a request that got no answer, counted."""
        ...


@dataclass
class QueueWait:
    """Jobs the provider refused because its queue was full, waiting to be started again.

    The wait between two starts doubles from `first` up to `QUEUE_FULL_MAX_WAIT_SECONDS`, and
    starts over once a job is accepted (the queue has room again). A queue that never frees must
    not keep the run waiting forever, but one that this run's own jobs fill frees as they finish
    (within the provider's 24 hours): so the time waited counts only from the first refusal after
    the last poll that found a job of this run accepted, and once it reaches `limit`
    (`teacher.batch_queue_wait_seconds`) the run stops (`BatchRunner._back_off`). No start is put
    off past that moment."""

    first: float
    limit: float
    held: list[BatchRecord] = field(default_factory=list)
    reasons: str = ""  # the provider's words for the last refusal
    wait: float = 0.0  # the last wait between starts; 0: none since a job was accepted
    next_start: float = 0.0  # time.monotonic() of the next start of the held jobs
    since: float | None = None  # the first refusal since a job of this run was last seen accepted

    def accepted(self, new: bool) -> None:
        """A poll found a job of this run past validation, `new`ly so or still running."""
        self.since = None
        if new:
            self.wait = 0.0

    def refused(self, now: float) -> float:
        """Jobs were refused at `now`: set when they start again; returns how long the queue has
        been full so far (see the class)."""
        self.since = now if self.since is None else self.since
        waited = now - self.since
        self.wait = min(QUEUE_FULL_MAX_WAIT_SECONDS, self.wait * 2 or self.first)
        self.next_start = now + min(self.wait, max(0.0, self.limit - waited))
        return waited

    def due(self, now: float) -> list[BatchRecord]:
        """The held jobs, taken, once their wait is over."""
        if not self.held or now < self.next_start:
            return []
        due, self.held = self.held, []
        return due

    def describe(self, now: float) -> str:
        """For the progress bar, while the queue is full: "waiting for the provider's batch queue to
        free: 12 requests, next try in 40 s", or, while a refused job is tried again, that it is."""
        if not self.held:
            return "" if self.since is None else "the provider's batch queue was full: trying again"
        requests = sum(len(record.keys) for record in self.held)
        return (
            f"waiting for the provider's batch queue to free: {requests} requests, "
            f"next try in {_duration(self.next_start - now)}"
        )


class BatchRunner:
    """Answers one dispatcher's requests through provider batch jobs (see the module docstring)."""

    def __init__(self, dispatcher: BatchHost, jobs: BatchJobs, store: BatchStore) -> None:
        self.dispatcher = dispatcher
        self.jobs = jobs
        self.store = store
        self.config = dispatcher.config
        self.attempts: Counter[str] = Counter()  # jobs each key was sent in
        self.reserved: dict[str, float] = {}  # budget reserved per key submitted in this run
        self.active: dict[str, BatchRecord] = {}  # by file id
        self.queue = QueueWait(self.config.batch_poll_seconds, self.config.batch_queue_wait_seconds)
        self.accepted_ids: set[str] = set()  # of the jobs seen past validation

    async def run(self, wanted: dict[str, ChatRequest], finish: Callable[[str, Outcome], None]) -> None:
        """Answer every request in `wanted` (by cache key), calling `finish` for each."""
        self.wanted = wanted
        self.finish = finish
        self.open = set(wanted)  # keys whose outcome is not known yet
        await self._resume()
        covered = {key for record in self.active.values() for key in record.keys}
        await self._submit([key for key in wanted if key not in covered])
        try:
            while self.active or self.queue.held:
                await asyncio.sleep(self.config.batch_poll_seconds)
                states = await self._poll()
                for record in self.queue.due(time.monotonic()):
                    await self._restart(record)
                self.dispatcher.stats.waiting_on = self._waiting_on(states)
        finally:
            self.dispatcher.stats.waiting_on = ""

    async def _poll(self) -> list[BatchState]:
        """Ask each job where it stands; collect those that are over and hold those refused for a
        full queue. Returns the states of the jobs the provider accepted."""
        states, refused = [], False
        for record in list(self.active.values()):
            assert record.batch_id is not None
            state = await self.jobs.state(record.batch_id)
            if state.status == "failed":
                self.check_failure(state, self.config)  # unless the queue was full, the run stops
                self._hold(record, state)
                refused = True
                continue
            if state.status not in NOT_ACCEPTED:
                self.queue.accepted(new=record.batch_id not in self.accepted_ids)
                self.accepted_ids.add(record.batch_id)
            states.append(state)
            if state.over:
                await self._collect(record, state)
        if refused:
            self._back_off()
        return states

    def _hold(self, record: BatchRecord, state: BatchState) -> None:
        """A job refused for a full queue waits to be started again from its upload. Only OpenAI
        refuses jobs so, and its uploads outlive them (`BatchJobs.keeps_uploads`). Its items keep
        their attempts and their reservations under the spending caps: they are still to be sent."""
        self.store.refused(record.file_id)
        del self.active[record.file_id]
        self.queue.held.append(record)
        self.queue.reasons = _reasons(state)

    def _back_off(self) -> None:
        """Jobs were refused for a full queue: set their next start, or stop the run once the queue
        has been full for `batch_queue_wait_seconds` (see `QueueWait`) rather than wait without end.
        Answers are cached and the held jobs recorded, so the same command resumes."""
        waited = self.queue.refused(time.monotonic())
        if waited < self.queue.limit:
            return
        message = (
            f"the provider's batch queue has been full for {_duration(waited)} ({self.queue.reasons}); "
            "answers received so far are cached and the jobs started are recorded, so the same command "
            "resumes (teacher.batch_queue_wait_seconds sets how long a full queue is waited out; a job "
            "never accepted may be larger than the organization's limit for this model)"
        )
        raise self.dispatcher.fatal(TeacherError(message, retryable=False, reason="batch_queue_full"))

    async def _restart(self, record: BatchRecord) -> None:
        """Start a job refused for a full queue again, from the same upload."""
        self.dispatcher.stats.retries["batch_queue_full"] += len(record.keys)
        batch_id = await self.jobs.create(record.file_id)
        self.store.started(record.file_id, batch_id)
        self.active[record.file_id] = replace(record, batch_id=batch_id)

    def _waiting_on(self, states: list[BatchState]) -> str:
        """What the requests wait on, for the progress bar (`DispatchStats.waiting_on`)."""
        parts = [_waiting_on(states)] if states and self.active else []
        parts.append(self.queue.describe(time.monotonic()))
        return "; ".join(part for part in parts if part)

    async def _resume(self) -> None:
        """Take over the jobs a killed run left for this teacher."""
        pending = self.store.pending()
        recorded = {record.batch_id for record in pending if record.batch_id is not None}
        for record in pending:
            if record.batch_id is None:
                batch_id = await self.jobs.find(record.file_id, recorded)
                if batch_id is None and not self.jobs.keeps_uploads:
                    # Its requests lived in the killed process and never reached the provider:
                    # they go into a new job with the rest (`_submit`).
                    self.store.collected(record.file_id)
                    continue
                batch_id = batch_id or await self.jobs.create(record.file_id)
                self.store.started(record.file_id, batch_id)
                record = replace(record, batch_id=batch_id)
            self.active[record.file_id] = record
            self.attempts.update(record.keys)

    async def _submit(self, keys: list[str]) -> None:
        """Upload and start jobs for `keys`, as many as the spending caps allow."""
        fitting = []
        for key in keys:
            try:
                self.reserved[key] = self.dispatcher.reserve(self.wanted[key])
            except OverBudget as over:
                self.dispatcher.over_budget = self.dispatcher.over_budget or over.budget
                break
            fitting.append(key)
        for chunk in _chunks(fitting, self.wanted, self.jobs.max_requests, self.jobs.max_bytes):
            file_id = await self.jobs.upload({key: self.wanted[key] for key in chunk})
            self.store.uploaded(file_id, chunk)
            batch_id = await self.jobs.create(file_id)
            self.store.started(file_id, batch_id)
            self.active[file_id] = BatchRecord(file_id, batch_id, tuple(chunk))
            self.attempts.update(chunk)
            self.dispatcher.stats.requests_sent += len(chunk)

    async def _collect(self, record: BatchRecord, state: BatchState) -> None:
        """A job is over: cache its answers, settle its items, and send again what may pass later."""
        results = await self.jobs.results(state)
        again = []
        for key in record.keys:
            outcome = results.get(key)
            # An item of a job a killed run started reserved nothing in this run; it counts all the same.
            self.dispatcher.settle(
                self.reserved.pop(key, 0.0), outcome if isinstance(outcome, Completion) else None
            )
            if isinstance(outcome, Completion):
                completion = self.dispatcher.keep_answer(key, outcome)
                if key in self.open:
                    self.open.discard(key)
                    self.finish(key, Outcome(completion))
                continue
            if key not in self.open:
                continue  # another run's request, left by a killed run: that run asks again itself
            error = outcome if isinstance(outcome, TeacherError) else _not_run(state)
            if error.fatal:
                raise self.dispatcher.fatal(error) from error
            if error.retryable and self.attempts[key] < self.config.max_attempts:
                self.dispatcher.stats.retries[error.reason] += 1
                again.append(key)
            else:
                self.open.discard(key)
                self.finish(key, self.dispatcher.failed(error, self.attempts[key]))
        self.store.collected(record.file_id)
        del self.active[record.file_id]
        if again and self.dispatcher.over_budget is None:
            await self._submit(again)
        elif again:
            for key in again:
                self.open.discard(key)

    @staticmethod
    def check_failure(state: BatchState, config: TeacherConfig | None) -> None:
        """A job that failed as a whole: its items are sent again later if the provider's queue
        was full, else the run stops with the provider's reasons (a bad file is this program's
        fault or the recipe's, and would fail again). `config` names the teacher in the message."""
        if _queue_was_full(state):
            return
        reasons = _reasons(state)
        teacher = f"{config.backend} teacher {config.model!r}" if config else "teacher"
        raise TeacherFatalError(f"{teacher}: a batch job failed validation ({reasons})")


def _queue_was_full(state: BatchState) -> bool:
    """Whether a failed job was refused only because the provider's queue was full."""
    codes = {code for code, _ in state.errors}
    return bool(codes) and codes <= QUEUE_FULL_CODES


def _reasons(state: BatchState) -> str:
    """Why a job failed as a whole, in the provider's words."""
    return "; ".join(f"{code}: {message}" for code, message in state.errors[:5]) or "no reason given"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _waiting_on(states: list[BatchState]) -> str:
    """The jobs' standing in words, for the progress bar: "batch jobs: 2 in_progress, 340/1000 done"."""
    by_status = Counter(state.status for state in states)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
    done, total = sum(state.done for state in states), sum(state.total for state in states)
    return f"batch jobs: {statuses}" + (f", {done}/{total} done" if total else "")


def _not_run(state: BatchState) -> TeacherError:
    """The error of an item a finished job has no line for."""
    message = f"the batch job ended {state.status} without running this request"
    return TeacherError(message, retryable=True, reason=f"batch_{state.status}")


def _chunks(
    keys: list[str], requests: dict[str, ChatRequest], max_requests: int, max_bytes: int
) -> Iterator[list[str]]:
    """`keys` in runs that fit one batch of the provider's (`BatchJobs.max_requests`, `max_bytes`)."""
    chunk: list[str] = []
    size = 0
    for key in keys:
        line = len(json.dumps(list(requests[key].messages), ensure_ascii=False).encode()) + 512
        if chunk and (len(chunk) >= max_requests or size + line > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(key)
        size += line
    if chunk:
        yield chunk
