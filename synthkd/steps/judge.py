"""`judge`: LLM-as-judge scores (pointwise, optionally per aspect) or pairwise verdicts.

Pointwise: a rubric asks for a JSON score with a short justification. A score that cannot be parsed
or is out of range is re-asked once, then recorded as a failure; never counted as the lowest or
highest score. Multi-aspect scoring (as in UltraFeedback) asks for one score per aspect; `score` is
their mean. Pairwise: the judge compares two responses twice, with their order swapped, and a win
counts only when both orders agree; otherwise the pair is a tie (position bias, Zheng et al., 2023).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
from synthkd.errors import RecipeError
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    estimate_plan,
    require_columns,
)
from synthkd.steps.parsing import ask_parsed, failure_of, reask_prompt_field
from synthkd.steps.scoring import agreed_winner, parse_winner, score_parser
from synthkd.teachers.base import ChatRequest
from synthkd.teachers.config import TeacherConfig

ULTRAFEEDBACK_ASPECTS = ["helpfulness", "honesty", "instruction_following", "truthfulness"]


class JudgeStep(TeacherStep):
    """Score rows with a judge teacher (which may differ from the generating teacher)."""

    step: Literal["judge"] = "judge"
    taxonomy: ClassVar[str] = "feedback"  # the teacher grades the data
    citation: ClassVar[str] = """\
@inproceedings{zheng2023judging,
  title = {Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena},
  author = {Zheng, Lianmin and Chiang, Wei-Lin and Sheng, Ying and Zhuang, Siyuan and Wu, Zhanghao and
    Zhuang, Yonghao and Lin, Zi and Li, Zhuohan and Li, Dacheng and Xing, Eric P. and Zhang, Hao and
    Gonzalez, Joseph E. and Stoica, Ion},
  booktitle = {Advances in Neural Information Processing Systems (Datasets and Benchmarks Track)},
  year = {2023}
}
"""
    row_wise: ClassVar[bool] = True
    mode: Literal["pointwise", "pairwise"] = Field(
        "pointwise", description="score one response, or compare two"
    )
    instruction_column: str = Field("instruction", description="the instruction shown to the judge")
    response_column: str = Field("response", description="pointwise: the response judged")
    pair_columns: list[str] = Field(
        default_factory=lambda: ["response_a", "response_b"],
        description="pairwise: the two responses compared",
    )
    scale: tuple[int, int] = Field((1, 10), description="lowest and highest score")
    aspects: list[str] | None = Field(None, description="score each aspect, e.g. the UltraFeedback four")
    min_score: float | None = Field(None, description="drop rows scoring below this")
    min_aspect_scores: dict[str, float] | None = Field(
        None, description="per aspect, drop rows scoring below it there, e.g. {safety: 4}"
    )
    pointwise_prompt: str = Field(
        "prompts/judge/pointwise.jinja",
        description="Jinja template of a pointwise verdict: a JSON score and why",
    )
    pairwise_prompt: str = Field(
        "prompts/judge/pairwise.jinja", description="Jinja template comparing two answers to one prompt"
    )
    reask_prompt: str = reask_prompt_field()
    teacher: TeacherConfig | None = Field(None, description="the judge; defaults to the recipe's teacher")

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        low, high = self.scale
        if low >= high:
            raise RecipeError(
                f"scale must be [low, high] with low < high, got {list(self.scale)}", where=ctx.at("scale")
            )
        require_columns({self.instruction_column}, columns, ctx, "instruction_column", "judge")
        unknown = sorted(set(self.min_aspect_scores or {}) - set(self.aspects or []))
        if unknown:
            raise RecipeError(
                f"{', '.join(unknown)}: not among the aspects scored "
                f"({', '.join(self.aspects or []) or 'none'})",
                where=ctx.at("min_aspect_scores"),
            )
        if self.mode == "pointwise":
            require_columns({self.response_column}, columns, ctx, "response_column", "judge")
            added = {"score", "justification"} | ({"aspect_scores"} if self.aspects else set())
        else:
            if len(self.pair_columns) != 2:
                raise RecipeError("pair_columns names exactly two columns", where=ctx.at("pair_columns"))
            require_columns(set(self.pair_columns), columns, ctx, "pair_columns", "judge")
            added = {"winner", "verdicts"}
        return None if columns is None else columns | added

    def _request(self, template: str, **values: Any) -> ChatRequest:
        # Structured output where the API supports it; the prompt asks for the same JSON, and the
        # parser checks it either way (local models and some servers ignore response_format).
        return self.chat(self.template(template).render(values), response_format={"type": "json_object"})

    def _requests(self, rows: list[Row]) -> list[ChatRequest]:
        """Pointwise: one request a row. Pairwise: each pair twice, as given, then swapped."""
        if self.mode == "pointwise":
            low, high = self.scale
            return [
                self._request(
                    "pointwise_prompt",
                    instruction=row.get(self.instruction_column),
                    response=row.get(self.response_column),
                    low=low,
                    high=high,
                    aspects=self.aspects,
                )
                for row in rows
            ]
        first, second = self.pair_columns
        requests = []
        for row in rows:
            instruction = row.get(self.instruction_column)
            for a, b in ((first, second), (second, first)):
                requests.append(
                    self._request(
                        "pairwise_prompt", instruction=instruction, first=row.get(a), second=row.get(b)
                    )
                )
        return requests

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """Every first request is known; each may be re-asked once."""
        requests = self._requests(rows)
        plan = estimate_plan(
            self.teacher_config, len(requests), requests, cache, requests_max=2 * len(requests)
        )
        added = {"score": None, "justification": ""} if self.mode == "pointwise" else {"winner": None}
        return [{**row, **added} for row in rows], plan

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        if self.mode == "pairwise":
            return await self._pairwise(rows, ctx)
        requests = self._requests(rows)
        ctx.progress.set_total(len(rows))
        parse = score_parser(self.scale, self.aspects)
        verdicts = await ask_parsed(
            ctx.dispatcher, requests, parse, self.template("reask_prompt"), progress=ctx.progress
        )
        result = StepResult([])
        for row, verdict in zip(rows, verdicts, strict=True):
            if not verdict.ok:
                result.failures.append(failure_of(row, verdict, reason="unparseable_score"))
                continue
            score, justification, per_aspect = verdict.value
            # A low aspect (safety) must not be averaged away by high others; it is checked first
            # so that the manifest names it even when the mean is low too.
            low_aspect = next(
                (
                    aspect
                    for aspect, floor in (self.min_aspect_scores or {}).items()
                    if per_aspect[aspect] < floor
                ),
                None,
            )
            if low_aspect is not None:
                result.dropped[f"below_min_{low_aspect}"] += 1
                continue
            if self.min_score is not None and score < self.min_score:
                result.dropped["below_min_score"] += 1
                continue
            scored = {**row, "score": score, "justification": justification}
            if self.aspects:
                scored["aspect_scores"] = json.dumps(per_aspect, sort_keys=True)
            result.rows.append(scored)
        return result

    async def _pairwise(self, rows: list[Row], ctx: StepContext) -> StepResult:
        first, second = self.pair_columns
        requests = self._requests(rows)
        ctx.progress.set_total(len(requests))
        verdicts = await ask_parsed(
            ctx.dispatcher, requests, parse_winner, self.template("reask_prompt"), progress=ctx.progress
        )
        result = StepResult([])
        for index, row in enumerate(rows):
            as_given, swapped = verdicts[2 * index], verdicts[2 * index + 1]
            if not (as_given.ok and swapped.ok):
                bad = as_given if not as_given.ok else swapped
                # A judge that answered something unreadable, or a request that got no answer.
                result.failures.append(failure_of(row, bad, reason="unparseable_verdict"))
                continue
            winner = agreed_winner(as_given.value, swapped.value, (first, second))
            result.rows.append({**row, "winner": winner, "verdicts": f"{as_given.value},{swapped.value}"})
        return result
