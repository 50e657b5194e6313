"""What a dry run reports per step and in total: requests to send, tokens, cost and the least time
the teacher's rate limits allow, from the steps' plans (`pipeline.plan`)."""

from __future__ import annotations

from dataclasses import dataclass

from synthkd.pricing import price_of
from synthkd.steps.base import Step, StepPlan
from synthkd.teachers.config import TeacherConfig


@dataclass
class StepEstimate:
    """One step's line. `cost_usd` is None where the price is unknown; `minutes` is None where the
    teacher has no rpm/tpm limit to bound the time by."""

    label: str
    plan: StepPlan
    to_send: int
    cost_usd: float | None
    minutes: float | None
    has_teacher: bool

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
    minutes: float | None  # None: no step's time is bounded
    approximate: bool  # a data-dependent step's estimate is in the sum
    not_estimated: list[str]  # steps left out of every sum
    unbounded: list[str]  # steps sending requests whose time no limit bounds


def estimate_steps(plans: list[tuple[Step, StepPlan]]) -> list[StepEstimate]:
    estimates = []
    for index, (step, plan) in enumerate(plans):
        teacher = step.step_teacher()
        to_send = plan.requests - plan.cached
        cost: float | None = 0.0
        minutes = None
        if teacher is not None and plan.count != "unknown":
            price = price_of(teacher.backend, teacher.model)
            share = to_send / plan.requests if plan.requests else 0
            cost = (
                None if price is None else share * price.cost(plan.prompt_tokens, plan.max_completion_tokens)
            )
            minutes = _least_minutes(
                to_send, share * (plan.prompt_tokens + plan.max_completion_tokens), teacher
            )
        estimates.append(
            StepEstimate(f"{index}:{step.step}", plan, to_send, cost, minutes, teacher is not None)
        )
    return estimates


def _least_minutes(requests: int, tokens: float, teacher: TeacherConfig) -> float | None:
    """The time the teacher's own limits need for this much at the least (requests per minute,
    tokens per minute); None when it has neither. Latency and concurrency only add to it."""
    bounds = [requests / teacher.rpm if teacher.rpm else None, tokens / teacher.tpm if teacher.tpm else None]
    known = [bound for bound in bounds if bound is not None]
    return max(known) if known else None


def totals(estimates: list[StepEstimate]) -> DryRunTotals:
    counted = [estimate for estimate in estimates if estimate.estimated]
    costs = [estimate.cost_usd for estimate in counted]
    sending = [estimate for estimate in counted if estimate.has_teacher and estimate.to_send]
    minutes = [estimate.minutes for estimate in sending if estimate.minutes is not None]
    return DryRunTotals(
        to_send=sum(estimate.to_send for estimate in counted if estimate.has_teacher),
        prompt_tokens=sum(estimate.plan.prompt_tokens for estimate in counted),
        completion_tokens=sum(estimate.plan.max_completion_tokens for estimate in counted),
        cost_usd=None if None in costs else sum(cost for cost in costs if cost is not None),
        minutes=sum(minutes) if minutes else None,
        approximate=any(estimate.approximate for estimate in counted),
        not_estimated=[estimate.label for estimate in estimates if not estimate.estimated],
        unbounded=[estimate.label for estimate in sending if estimate.minutes is None],
    )
