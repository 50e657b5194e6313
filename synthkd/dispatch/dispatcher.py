"""Streaming concurrency: keep `concurrency` requests in flight and start one as soon as one ends.

A batch-and-gather loop waits for the slowest request of every batch, which caps throughput at
about B / E[max latency of B]; with a heavy latency tail that is a fraction of the real limit.
Here a fixed pool of workers pulls from one queue, so a slow request holds up only its own slot.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from synthkd.cache import ResponseCache, request_key, score_key
from synthkd.dispatch.batch_runner import BatchRunner
from synthkd.dispatch.batch_store import BatchStore
from synthkd.dispatch.budget import Budget, OverBudget, worst_case_cost
from synthkd.dispatch.outcome import DispatchStats, Outcome
from synthkd.dispatch.ratelimit import requests_bucket, tokens_bucket
from synthkd.errors import TeacherFatalError
from synthkd.kd.topk import TopK
from synthkd.pricing import Price
from synthkd.redaction import redact, secret_values
from synthkd.teachers.base import (
    BatchJobs,
    ChatRequest,
    Completion,
    ScoreRequest,
    Teacher,
    TeacherError,
    estimate_prompt_tokens,
    max_completion_tokens,
)
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import capabilities_of, teacher_label

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
# While connections fail, every worker waits together, longer as the outage goes on (a quarter of
# its length so far, within these bounds), so a server coming back is not met by a stampede.
OUTAGE_PAUSE_SECONDS = (0.5, 10.0)
# A teacher that has never answered in this run and only fails to connect is most likely the
# wrong address, not an outage: it gets this long (at most outage_seconds) before the run stops.
FIRST_CONTACT_SECONDS = 15.0
RAMP_UP_SECONDS = 0.1
# How often a run looks again for requests another run sharing the cache is asking.
CLAIM_POLL_SECONDS = 0.2
# Beside the request cache: the batch jobs started and not yet collected (`batch_store`).
BATCH_STORE_NAME = "batches.sqlite"
# Refused requests (HTTP 400 ...) fail their rows; this many refusals before any answer stop the run.
REJECTIONS_BEFORE_STOP = 10


class Dispatcher:
    """Sends requests to one teacher with a cache in front and the recipe's limits around it."""

    def __init__(
        self,
        teacher: Teacher,
        config: TeacherConfig,
        cache: ResponseCache | None,
        price: Price | None,
        budgets: Sequence[Budget] = (),
    ) -> None:
        """`budgets`: the spending caps this teacher's requests count against (see `budget`);
        they need a known `price`."""
        self.teacher = teacher
        self.config = config
        self.cache = cache
        self.price = price
        self.stats = DispatchStats()
        self.budgets = tuple(budgets) if price is not None else ()
        self.over_budget: Budget | None = None  # the cap that stopped this dispatcher's requests
        # The provider's batch API when the recipe asks for it (preflight checks the backend has one).
        self.batch_jobs: BatchJobs | None = getattr(teacher, "batches", None) if config.batch else None
        self._rpm = requests_bucket(config.rpm)
        self._tpm = tokens_bucket(config.tpm)
        self._paused_until = 0.0  # set by a 429's Retry-After or exhausted x-ratelimit headers
        self._accepted = 0  # answers the teacher gave, now or in a cached earlier run
        self._rejections = 0  # requests it refused with a bare HTTP 400, 413 or 422
        self._outage_since: float | None = None  # first failed connection since the last answer
        # Read once: the recipe's key variables are registered before any dispatcher is made.
        self._secrets = secret_values()
        # How long another run sharing the cache waits on a request this one claimed: long enough
        # for every attempt; the claim of a process that died is void before that.
        self._claim_seconds = (config.timeout + 5.0) * config.max_attempts + config.outage_seconds
        self.capabilities = capabilities_of(config)
        # A local model has no network timeout to trust (a long generation is not a hung
        # connection); an API call is bounded here as well as in the SDK, so a hung connection can
        # never stall a worker forever.
        self._deadline = None if self.capabilities.local else config.timeout + 5.0
        if price is None:
            self.stats.cost_usd = self.stats.cost_usd_with_cache = None

    def key(self, request: ChatRequest) -> str:
        return request_key(self.config, request)

    async def run(
        self,
        requests: Sequence[ChatRequest],
        on_result: Callable[[Outcome, int], None] | None = None,
    ) -> list[Outcome]:
        """Answer every request; the result list is in request order, whatever the finish order.

        `on_result(outcome, copies)` is called as each answer arrives; `copies` counts the
        identical requests it answers, which are sent once.
        """
        keys = [self.key(request) for request in requests]
        copies = Counter(keys)
        unique: dict[str, int] = {}
        for index, key in enumerate(keys):
            unique.setdefault(key, index)
        hits = self.cache.get_many(unique) if self.cache is not None else {}
        by_key: dict[str, Outcome] = {}

        def finish(key: str, outcome: Outcome) -> None:
            by_key[key] = outcome
            if outcome.completion is not None:
                self._account(outcome)
            if on_result is not None:
                on_result(outcome, copies[key])

        self._accepted += len(hits)
        for key, completion in hits.items():
            self.stats.cache_hits += 1
            finish(key, Outcome(completion, cached=True))
        queue = deque(key for key in unique if key not in hits)

        if self.batch_jobs is not None and queue:
            await self._answer_in_batches({key: requests[unique[key]] for key in queue}, finish)
        else:
            await self._answer_online(queue, lambda key: requests[unique[key]], finish)
        if self.over_budget is not None:
            raise self.over_budget.exceeded(teacher_label(self.config))
        return [by_key[key] for key in keys]

    async def _answer_online(
        self,
        queue: deque[str],
        request_of: Callable[[str], ChatRequest],
        finish: Callable[[str, Outcome], None],
    ) -> None:
        """Keep `concurrency` requests of `queue` (cache keys) in flight until all are answered."""
        # Requests another running process is asking now: answered from the cache when it is done.
        elsewhere: deque[str] = deque()

        async def worker(start_delay: float) -> None:
            await asyncio.sleep(start_delay)
            while (queue or elsewhere) and self.over_budget is None:
                if not queue:  # only requests asked elsewhere are left: look again in a moment
                    await asyncio.sleep(CLAIM_POLL_SECONDS)
                    queue.extend(elsewhere)
                    elsewhere.clear()
                    continue
                key = queue.popleft()
                answered, mine = self._claim(key)
                if answered is not None:  # another run sharing the cache paid for it meanwhile
                    self.stats.cache_hits += 1
                    self._accepted += 1
                    finish(key, Outcome(answered, cached=True))
                elif not mine:
                    elsewhere.append(key)
                else:
                    try:
                        outcome = await self._send(request_of(key), key)
                    except OverBudget as over:
                        # Requests in flight finish and are cached; no new one starts.
                        self.over_budget = self.over_budget or over.budget
                        return
                    finally:
                        self._release(key)
                    finish(key, outcome)

        count = min(self.config.concurrency, len(queue))
        # Starting every worker at the same instant makes the answers return in one wave that the
        # event loop then works through while the other slots wait; a short staggered start
        # spreads them out, and is gentler on providers' burst limits too. A local model wants
        # the opposite: every request at once, so its first batch is full.
        ramp = RAMP_UP_SECONDS if self.capabilities.ramp_up else 0.0
        workers = [asyncio.create_task(worker(ramp * i / count)) for i in range(count)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()

    async def _answer_in_batches(
        self, wanted: dict[str, ChatRequest], finish: Callable[[str, Outcome], None]
    ) -> None:
        """Send the requests (by cache key) as provider batch jobs (`teacher.batch`)."""
        store_path = self.cache.path.parent / BATCH_STORE_NAME if self.cache is not None else None
        store = BatchStore(store_path, teacher_label(self.config) + " " + (self.config.base_url or ""))
        try:
            await BatchRunner(self, self.batch_jobs, store).run(wanted, finish)
        except TeacherError as exc:
            # A call to the batch API itself failed (the SDK has retried it): the jobs started are
            # recorded, so the same command resumes by polling them.
            message = f"{teacher_label(self.config)}: the batch API failed ({exc}); jobs already started are "
            raise TeacherFatalError(
                redact(message + "collected when the same command runs again", self._secrets)
            ) from exc
        finally:
            store.close()

    def _claim(self, key: str) -> tuple[Completion | None, bool]:
        """(an answer another run sharing the cache got meanwhile; whether this process may ask
        `key` now: not while another run is asking it). See `ResponseCache.claim`. A local model
        costs nothing per request: it asks."""
        if self.cache is None or self.capabilities.local:
            return None, True
        return self.cache.claim(key, self._claim_seconds)

    def _release(self, key: str) -> None:
        if self.cache is not None and not self.capabilities.local:
            self.cache.release(key)

    async def score(
        self,
        requests: Sequence[ScoreRequest],
        batch_size: int,
        on_scored: Callable[[int], None] | None = None,
    ) -> list[TopK]:
        """The teacher's top-k log-probs over each request's answer, cache first, `batch_size`
        conversations per call to the teacher. Only a teacher that `scores_text` can be asked."""
        if not self.capabilities.scores_text:
            raise TeacherFatalError(f"{teacher_label(self.config)} cannot score a given text")
        # The ids only mean something in the teacher's tokenizer, so the key names it: a model
        # folder replaced by one with another vocabulary does not replay the old scores.
        vocabulary = self.tokenizer_fingerprint()["vocab_sha256"]
        keys = [score_key(self.config, request, vocabulary) for request in requests]
        copies = Counter(keys)
        by_key = dict(zip(keys, requests, strict=True))  # identical requests are scored once
        found = self.cache.get_scores(by_key) if self.cache is not None else {}
        self.stats.cache_hits += len(found)
        if on_scored is not None and found:
            on_scored(sum(copies[key] for key in found))
        missing = [key for key in by_key if key not in found]
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            self.stats.requests_sent += len(batch)
            scored = await self.teacher.score([by_key[key] for key in batch])  # type: ignore[attr-defined]
            for key, top in zip(batch, scored, strict=True):
                found[key] = top
                if self.cache is not None:
                    self.cache.put_score(key, top)
            if on_scored is not None:
                on_scored(sum(copies[key] for key in batch))
        return [found[key] for key in keys]

    def tokenizer_fingerprint(self) -> dict[str, str]:
        """The scoring teacher's tokenizer hashes (see `Teacher.tokenizer_fingerprint`)."""
        return self.teacher.tokenizer_fingerprint()  # type: ignore[attr-defined]

    def _account(self, outcome: Outcome) -> None:
        completion = outcome.completion
        assert completion is not None
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        if self.price is not None:
            cost = self.price.cost(completion.prompt_tokens, completion.completion_tokens)
            self.stats.cost_usd_with_cache += cost
            if not outcome.cached:
                self.stats.cost_usd += cost

    async def _send(self, request: ChatRequest, key: str) -> Outcome:
        error: TeacherError | None = None
        attempt = 0
        first_connection_failure: float | None = None  # this request's, while its connections fail
        while attempt < self.config.max_attempts:
            try:
                completion, hint, estimate = await self._attempt(request)
            except TeacherError as exc:
                if exc.fatal:
                    raise self.fatal(exc) from exc
                if not exc.retryable:  # this request cannot succeed (too long, refused): its row fails
                    return self._rejected(exc, attempt + 1)
                error = exc
                if exc.reason == "connection":
                    # An outage does not use up the request's attempts: it is retried until the
                    # teacher answers again or the outage outlasts `outage_seconds`.
                    now = time.monotonic()
                    first_connection_failure = first_connection_failure or now
                    if now - first_connection_failure <= self._outage_limit():
                        self.stats.retries[exc.reason] += 1
                        await self._ride_out_outage(exc)
                        continue
                attempt += 1
                if exc.retry_after is not None:
                    self._paused_until = max(self._paused_until, time.monotonic() + exc.retry_after)
                if attempt < self.config.max_attempts:
                    self.stats.retries[exc.reason] += 1
                    await asyncio.sleep(_backoff(attempt, exc.retry_after))
                continue
            if self._tpm is not None:
                used = completion.prompt_tokens + completion.completion_tokens
                self._tpm.give_back(estimate - used)
            pause = hint.pause_seconds() if hint is not None else None
            if pause:
                self._paused_until = max(self._paused_until, time.monotonic() + pause)
            return Outcome(self.keep_answer(key, completion))
        assert error is not None
        return self.failed(error, attempt)

    def keep_answer(self, key: str, completion: Completion) -> Completion:
        """Cache an answer the teacher gave and count it. An answer that echoes a key is kept,
        cached and written without it."""
        text = redact(completion.text, self._secrets)
        if text != completion.text:
            completion = replace(completion, text=text)
        if self.cache is not None:
            self.cache.put(key, completion)
        self._accepted += 1
        self._outage_since = None
        return completion

    def fatal(self, error: TeacherError) -> TeacherFatalError:
        """The error that stops the run for a teacher error no request can get past (a bad key),
        naming the teacher, with every secret redacted."""
        return TeacherFatalError(
            redact(f"{self.config.backend} teacher {self.config.model!r}: {error}", self._secrets)
        )

    def failed(self, error: TeacherError, attempts: int) -> Outcome:
        """The outcome of a request that got no answer after `attempts`, counted."""
        self.stats.failed += 1
        return Outcome(None, attempts=attempts, error=redact(str(error), self._secrets), reason=error.reason)

    async def _attempt(self, request: ChatRequest) -> tuple[Completion, object, float]:
        """One attempt: its worst case reserved under every budget, the rate limits waited out,
        the request sent; the reservation settled at what the answer cost (nothing for an error).
        Returns the answer, its rate-limit hint and the tokens reserved against the TPM limit."""
        reserved = self.reserve(request)
        completion = None
        try:
            estimate = await self._wait_for_capacity(request)
            self.stats.requests_sent += 1
            completion, hint = await self._complete(request)
            return completion, hint, estimate
        finally:
            self.settle(reserved, completion)

    def settle(self, reserved: float, completion: Completion | None) -> None:
        """An attempt that reserved `reserved` under every budget ended: with `completion` it
        cost that answer's tokens, without one nothing (providers bill no refused request)."""
        if not self.budgets:
            return
        assert self.price is not None
        cost = (
            0.0
            if completion is None
            else self.price.cost(completion.prompt_tokens, completion.completion_tokens)
        )
        for budget in self.budgets:
            budget.settle(reserved, cost)

    def reserve(self, request: ChatRequest) -> float:
        """Reserve the request's worst-case cost under every budget, or raise `OverBudget` (and
        reserve nothing) when it does not fit under one of them."""
        if not self.budgets:
            return 0.0
        assert self.price is not None
        amount = worst_case_cost(request, self.price)
        for index, budget in enumerate(self.budgets):
            if not budget.try_reserve(amount):
                for earlier in self.budgets[:index]:
                    earlier.settle(amount, 0.0)
                raise OverBudget(budget)
        return amount

    def _outage_limit(self) -> float:
        """How long failed connections are retried: `outage_seconds`, or less for a teacher that
        has not answered once (see FIRST_CONTACT_SECONDS)."""
        limit = self.config.outage_seconds
        return limit if self._accepted else min(limit, FIRST_CONTACT_SECONDS)

    async def _ride_out_outage(self, exc: TeacherError) -> None:
        """Pause every worker while connections fail; stop the run once the outage has lasted
        longer than the limit, since every row would fail the same way."""
        now = time.monotonic()
        self._outage_since = self._outage_since or now
        lasted = now - self._outage_since
        if lasted > self._outage_limit():
            where = f" at {self.config.base_url}" if self.config.base_url else ""
            raise TeacherFatalError(
                f"{teacher_label(self.config)}: no connection to the teacher{where} for {lasted:.0f} s "
                f"({exc}). Is the server running? Answers received so far are cached: run the same "
                "command again to resume (teacher.outage_seconds sets how long an outage is waited out)"
            ) from exc
        low, high = OUTAGE_PAUSE_SECONDS
        pause = min(high, max(low, lasted / 4)) * random.uniform(0.8, 1.2)
        self._paused_until = max(self._paused_until, now + pause)

    def _rejected(self, exc: TeacherError, attempt: int) -> Outcome:
        """A request the teacher refused for what it contains. When every request so far was
        refused for no named reason (not context_length_exceeded, not a content policy), the cause
        is rather the recipe (a param the model rejects): stop the run."""
        if exc.reason.startswith("http_"):
            self._rejections += 1
        if self._accepted == 0 and self._rejections >= REJECTIONS_BEFORE_STOP:
            raise TeacherFatalError(
                redact(
                    f"{self.teacher.backend} teacher {self.teacher.model!r} rejected the first "
                    f"{self._rejections} requests and accepted none; check teacher.params and the "
                    f"model name ({exc})",
                    self._secrets,
                )
            ) from exc
        return self.failed(exc, attempt)

    async def _complete(self, request: ChatRequest) -> tuple[Completion, object]:
        if self._deadline is None:
            return await self.teacher.complete(request)
        try:
            return await asyncio.wait_for(self.teacher.complete(request), self._deadline)
        except asyncio.TimeoutError:
            raise TeacherError("the request timed out", retryable=True, reason="timeout") from None

    async def _wait_for_capacity(self, request: ChatRequest) -> float:
        """Wait out pauses and rate limits; return the tokens reserved against the TPM budget."""
        delay = self._paused_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._rpm is not None:
            await self._rpm.take(1)
        if self._tpm is None:
            return 0.0
        estimate = estimate_tokens(request)
        await self._tpm.take(estimate)
        return estimate


def estimate_tokens(request: ChatRequest) -> float:
    """A cheap upper-ish estimate of what a request spends: its prompt plus its completion budget."""
    return estimate_prompt_tokens(request) + float(max_completion_tokens(request.params))


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Full-jitter exponential backoff; never sooner than the server's Retry-After."""
    jitter = random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))
    if retry_after is not None:
        return retry_after + jitter * 0.1
    return jitter
