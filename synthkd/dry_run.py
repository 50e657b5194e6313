"""What a dry run reports per step and in total: requests to send, tokens, cost and time, from the
steps' plans (`pipeline.plan`).

The time of a step is the larger of two estimates: the least its teacher's rpm/tpm limits allow,
and the time from concurrency (an API teacher: an assumed latency per request, `concurrency`
requests in flight; the embedded local model: an assumed time per batch of `batch_size`, and per
token of a text it scores without answering, `StepPlan.read_tokens`), which assumes every answer
uses max_tokens, as the cost does, and counts a round trip for each round a step waits for
(`StepPlan.rounds`, where its plan counts them). Neither knows of re-asks or retries, so a real
run may take longer. A step's own local work besides its teacher's answers (code_check's
sandboxed runs: `StepPlan.local_seconds_max`) is added at the most it may take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synthkd.pricing import price_for
from synthkd.steps.base import Step, StepPlan
from synthkd.teachers.config import EMBEDDED_MODEL, TeacherConfig
from synthkd.teachers.registry import capabilities_of

# An API request's latency: a time to the first token, then the answer at a steady speed. Public
# benchmarks of hosted chat models (provider dashboards, artificialanalysis.ai) put small models'
# time to first token at ~0.3-1 s and their output at ~50-150 tokens/s a request, large ones
# slower; these sit at the slow end, as a dry run should not promise too short a run.
API_FIRST_TOKEN_S = 0.8
API_TOKENS_PER_S = 50.0
# The embedded model (SmolLM2-135M-Instruct) on CPU, one generate() call per batch: measured once
# on 2 shared CPU cores with a batch of 8 (~20 s for 160 new tokens a row, ~1 s for the first
# ones), so rough. A GPU is much faster; other local models' speed depends on their size and
# hardware, which a dry run, loading no model, does not know.
EMBEDDED_BATCH_START_S = 1.0
EMBEDDED_SECONDS_PER_TOKEN = 0.12
# Reading a given text in a forward pass (logits' scoring) costs by the token of every row, not by
# the batch as generating does: measured on the same 2 cores, batches of 4 and 8 conversations of
# 223 tokens took 2.1-2.9 s and 4.3-5.8 s (~0.003 s a token); the same runs generated at 0.12-0.14 s
# a step for a batch of 8, as above, so the two are comparable.
EMBEDDED_SECONDS_PER_READ_TOKEN = 0.003
LOCAL_TIME_UNKNOWN = "a local model's speed depends on its size and hardware"
BATCH_TIME_UNKNOWN = "batch jobs answer within 24 hours, at the provider's pace"
API, EMBEDDED = "api", "embedded"  # the assumed speeds


@dataclass
class StepEstimate:
    """One step's line. `cost_usd` is None where the price is unknown; `minutes` is None where the
    step has no teacher or no plan, or where its time cannot be estimated (`time_unknown` says why).
    `speed` names what the time from concurrency assumed ("api", "embedded"), None if nothing."""

    label: str
    plan: StepPlan
    to_send: int
    cost_usd: float | None
    minutes: float | None
    has_teacher: bool
    speed: str | None = None
    time_unknown: str | None = None

    @property
    def estimated(self) -> bool:
        return self.plan.count != "unknown"

    @property
    def approximate(self) -> bool:
        return self.plan.count == "estimate"


@dataclass
class DryRunTotals:
    to_send: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: some step's price is unknown
    minutes: float | None  # None: no step's time is estimated
    approximate: bool  # a data-dependent step's estimate is in the sum
    not_estimated: list[str]  # steps left out of every sum
    untimed: dict[str, str]  # step -> why its time is not estimated (left out of the total time)


def estimate_steps(plans: list[tuple[Step, StepPlan]]) -> list[StepEstimate]:
    return [_estimate(f"{index}:{step.step}", step, plan) for index, (step, plan) in enumerate(plans)]


def _estimate(label: str, step: Step, plan: StepPlan) -> StepEstimate:
    teacher = step.step_teacher()
    to_send = plan.requests - plan.cached
    if plan.count == "unknown":
        return StepEstimate(label, plan, to_send, 0.0, None, teacher is not None)
    local = plan.local_seconds_max / 60
    if teacher is None:  # only local work, if any
        return StepEstimate(label, plan, to_send, 0.0, local if plan.local_seconds_max else None, False)
    price = price_for(teacher)
    share = to_send / plan.requests if plan.requests else 0
    cost = None if price is None else share * price.cost(plan.prompt_tokens, plan.max_completion_tokens)
    asking, speed, unknown = teacher_minutes(plan, to_send, share, teacher)
    minutes = None if asking is None else asking + local
    return StepEstimate(label, plan, to_send, cost, minutes, True, speed, unknown)


def teacher_minutes(
    plan: StepPlan, to_send: int, share: float, teacher: TeacherConfig
) -> tuple[float | None, str | None, str | None]:
    """The time the step waits for its teacher's answers to the `to_send` requests (`share` of
    the plan's): (minutes or None, the speed assumed, why it is unknown). Nothing to send takes
    no time, whatever the teacher."""
    if not to_send:
        return 0.0, None, None
    if teacher.batch:
        return None, None, BATCH_TIME_UNKNOWN
    least = least_minutes(to_send, share * (plan.prompt_tokens + plan.max_completion_tokens), teacher)
    speed = speed_of(teacher)
    answer_tokens = plan.max_completion_tokens / plan.requests if plan.requests else 0
    read_tokens = plan.read_tokens / plan.requests if plan.requests else 0
    concurrent = (
        None
        if speed is None
        else concurrency_minutes(to_send, answer_tokens, teacher, speed, plan.rounds, read_tokens)
    )
    bounds = [bound for bound in (least, concurrent) if bound is not None]
    if not bounds:
        return None, speed, LOCAL_TIME_UNKNOWN
    return max(bounds), speed, None


def least_minutes(requests: int, tokens: float, teacher: TeacherConfig) -> float | None:
    """The time the teacher's own limits need for this much at the least (requests per minute,
    tokens per minute); None when it has neither."""
    bounds = [requests / teacher.rpm if teacher.rpm else None, tokens / teacher.tpm if teacher.tpm else None]
    known = [bound for bound in bounds if bound is not None]
    return max(known) if known else None


def speed_of(teacher: TeacherConfig) -> str | None:
    """Which assumed speed applies: "api", "embedded" (the embedded model as measured on a CPU),
    or None for another local model, or one on a GPU, whose speed a dry run (which loads no
    model) cannot know."""
    capabilities = capabilities_of(teacher)
    if not capabilities.local:
        return API
    return EMBEDDED if teacher.model == EMBEDDED_MODEL and not capabilities.needs_gpu else None


def concurrency_minutes(
    requests: int,
    answer_tokens: float,
    teacher: TeacherConfig,
    speed: str,
    rounds: int = 1,
    read_tokens: float = 0.0,
) -> float:
    """The time `requests` answers of `answer_tokens` each take at the assumed `speed`: API
    requests `concurrency` at a time, the embedded model's `batch_size` at a time, and at least
    one round trip for each of the step's `rounds` (each waits for the one before). The embedded
    model also reads `read_tokens` a request without answering (scoring), by the token."""
    if not requests:
        return 0.0
    if speed == API:
        waves = max(math.ceil(requests / teacher.concurrency), rounds)
        return waves * (API_FIRST_TOKEN_S + answer_tokens / API_TOKENS_PER_S) / 60
    batches = max(math.ceil(requests / teacher.batch_size), rounds)
    reading = requests * read_tokens * EMBEDDED_SECONDS_PER_READ_TOKEN
    return (batches * (EMBEDDED_BATCH_START_S + answer_tokens * EMBEDDED_SECONDS_PER_TOKEN) + reading) / 60


def time_assumptions(estimates: list[StepEstimate]) -> str:
    """The footnote saying what the time column assumes, naming the speeds this recipe used and
    what each timed step's own plan assumed (`StepPlan.time_note`)."""
    timed = [estimate for estimate in estimates if estimate.minutes is not None]
    speeds = {estimate.speed for estimate in timed}
    parts = []
    if API in speeds:
        parts.append(
            f"an API request takes ~{API_FIRST_TOKEN_S:g} s to its first token, then "
            f"~{API_TOKENS_PER_S:g} tokens/s, `concurrency` requests at a time"
        )
    if EMBEDDED in speeds:
        reads = any(e.plan.read_tokens for e in timed if e.speed == EMBEDDED)
        reading = (
            f", and ~{EMBEDDED_SECONDS_PER_READ_TOKEN:g} s a token of every text it scores" if reads else ""
        )
        parts.append(
            f"the embedded model takes ~{EMBEDDED_BATCH_START_S:g} s plus ~{EMBEDDED_SECONDS_PER_TOKEN:g} s "
            f"a token per batch of `batch_size`{reading} (measured on 2 CPU cores; a GPU is faster)"
        )
    assumed = f" It assumes {'; '.join(parts)}." if parts else ""
    local = any(estimate.plan.local_seconds_max for estimate in timed)
    local_work = ", plus the most a step's own local work may take" if local else ""
    steps = "".join(f" {e.label}: {e.plan.time_note}" for e in timed if e.plan.time_note)
    return (
        "Time (min, an estimate): the larger of the least the teacher's rpm/tpm limits allow and the "
        f"time from concurrency, with every answer using max_tokens and a round trip for each round a "
        f"step waits for{local_work}.{assumed}{steps} Re-asks, retries, slower answers and rounds a "
        "step's plan does not count add to it."
    )


def totals(estimates: list[StepEstimate]) -> DryRunTotals:
    counted = [estimate for estimate in estimates if estimate.estimated]
    costs = [estimate.cost_usd for estimate in counted]
    # The steps that take time: those sending requests, and those with local work of their own.
    sending = [
        estimate
        for estimate in counted
        if (estimate.has_teacher and estimate.to_send) or estimate.plan.local_seconds_max
    ]
    minutes = [estimate.minutes for estimate in sending if estimate.minutes is not None]
    return DryRunTotals(
        to_send=sum(estimate.to_send for estimate in counted if estimate.has_teacher),
        prompt_tokens=sum(estimate.plan.prompt_tokens for estimate in counted),
        completion_tokens=sum(estimate.plan.max_completion_tokens for estimate in counted),
        cost_usd=None if None in costs else sum(cost for cost in costs if cost is not None),
        minutes=sum(minutes) if minutes else None,
        approximate=any(estimate.approximate for estimate in counted),
        not_estimated=[estimate.label for estimate in estimates if not estimate.estimated],
        untimed={e.label: e.time_unknown for e in sending if e.minutes is None and e.time_unknown},
    )
