"""`classify`: the teacher labels unlabelled text with a fixed label set (NLP task specialisation).

The recipe gives the labels (a list, or a mapping label -> description), the column holding the
text and, optionally, `rationale: true` for a short explanation before the label. The teacher ends
its answer with `Label: <label>`; the label must be one of the set (compared case-insensitively,
ignoring quotes, markdown emphasis and a final full stop) and is stored as spelled in the recipe.
An answer without a valid label is re-asked with the error shown, then recorded as a failure.

Each row gets `label` (and `rationale`), plus a student-facing `prompt` and `response` (the label,
or the rationale then `Label: <label>`) that become the SFT `messages`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import Field, field_validator

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
    exact_plan,
    require_columns,
)
from synthkd.steps.parsing import ParseError, ask_parsed, failure_of, reask_prompt_field
from synthkd.teachers.base import ChatRequest

_LABEL_LINE = re.compile(
    r"^[\W_]*(?:final\s+)?label[\W_]*?\s*[:：]\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE
)
_DECORATION = " \t\"'`*_[](){}<>."
NOT_IN_SET = "is not one of the labels"
FILLED = ("text", "labels", "task", "rationale")  # template variables the step itself provides


def normalise_label(text: str) -> str:
    """Case and decoration (quotes, emphasis, brackets, final full stop) do not count."""
    return " ".join(text.strip(_DECORATION).split()).casefold()


def label_parser(labels: list[str], rationale: bool) -> Callable[[str], tuple[str, str]]:
    """Parse 'reasoning... Label: x' into (label as spelled in the set, reasoning); ParseError if not."""
    canonical = {normalise_label(label): label for label in labels}
    listed = ", ".join(labels)

    def parse(text: str) -> tuple[str, str]:
        matches = list(_LABEL_LINE.finditer(text))
        stripped = text.strip()
        if matches:
            given, reasoning = matches[-1].group(1), text[: matches[-1].start()].strip()
        elif not rationale and stripped and "\n" not in stripped:
            given, reasoning = stripped, ""  # a bare label is fine when no reasoning was asked for
        else:
            raise ParseError(f"no 'Label: <label>' line at the end; the labels are: {listed}")
        label = canonical.get(normalise_label(given))
        if label is None:
            raise ParseError(f"{given.strip()!r} {NOT_IN_SET}; answer with one of: {listed}")
        if rationale and not reasoning:
            raise ParseError("no reasoning before the 'Label:' line")
        return label, reasoning

    return parse


class ClassifyStep(TeacherStep):
    """Label each row's text with one of a fixed set of labels."""

    step: Literal["classify"] = "classify"
    taxonomy: ClassVar[str] = "labeling"  # the teacher labels given texts with a fixed label set
    labels: list[str] | dict[str, str] = Field(
        description="the label set: a list, or a mapping label -> what it means"
    )
    text_column: str = Field("text", description="the column holding the text to classify")
    task: str | None = Field(None, description="what is classified, e.g. 'the sentiment of the review'")
    rationale: bool = Field(False, description="ask for a short explanation before the label")
    system: str | None = Field(None, description="system prompt sent to the teacher")
    gold_column: str | None = Field(None, description="known labels: the teacher's accuracy goes to details")
    reask: int = Field(1, ge=0, description="times an answer without a valid label is asked again")
    prompt: str = Field("prompts/classify/label.jinja", description="the teacher's prompt")
    student_prompt: str = Field("prompts/classify/student.jinja", description="the prompt in the SFT data")
    reask_prompt: str = reask_prompt_field()

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        names = list(value)
        if len(names) < 2:
            raise ValueError("give at least two labels")
        seen: dict[str, str] = {}
        for name in names:
            key = normalise_label(str(name))
            if not key:
                raise ValueError(f"label {name!r} is empty")
            if key in seen:
                raise ValueError(f"labels {seen[key]!r} and {name!r} are the same up to case")
            seen[key] = name
        return value

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def _pairs(self) -> list[tuple[str, str]]:
        if isinstance(self.labels, dict):
            return [(name, description or "") for name, description in self.labels.items()]
        return [(name, "") for name in self.labels]

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({self.text_column}, columns, ctx, "text_column", "classify")
        for key in ("prompt", "student_prompt"):
            needed = set(self.template(key).variables) - set(FILLED)
            require_columns(needed, columns, ctx, key, f"template {getattr(self, key)}")
        if self.gold_column:
            require_columns({self.gold_column}, columns, ctx, "gold_column", "the accuracy check")
            if self.gold_column == "label":
                raise RecipeError(
                    "the step writes `label`; rename the gold column (load's `rename`)",
                    where=ctx.at("gold_column"),
                )
        added = {"label", "prompt", "response", "finish_reason"} | (
            {"rationale"} if self.rationale else set()
        )
        return None if columns is None else columns | added

    def _values(self, row: Row) -> dict[str, object]:
        return {
            **row,
            "text": str(row.get(self.text_column) or ""),
            "labels": self._pairs(),
            "task": self.task,
            "rationale": self.rationale,
        }

    def _requests(self, rows: list[Row]) -> list[ChatRequest]:
        prompt = self.template("prompt")
        return [self.chat(prompt.render(self._values(row)), system=self.system) for row in rows]

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        requests = self._requests(rows)
        ctx.progress.set_total(len(requests))
        answers = await ask_parsed(
            ctx.dispatcher,
            requests,
            label_parser(self.label_names, self.rationale),
            self.template("reask_prompt"),
            reask=self.reask,
            progress=ctx.progress,
        )
        result = StepResult([])
        counts: Counter[str] = Counter()
        graded = correct = gold_failed = 0
        for row, answer in zip(rows, answers, strict=True):
            completion = answer.outcome.completion
            gold = row.get(self.gold_column) if self.gold_column else None
            if not answer.ok or completion is None:
                gold_failed += gold not in (None, "")
                reason = "invalid_label" if NOT_IN_SET in (answer.error or "") else "no_label"
                result.failures.append(failure_of(row, answer, reason=reason))
                continue
            label, reasoning = answer.value
            counts[label] += 1
            out = {**row, "label": label}
            if self.rationale:
                out["rationale"] = reasoning
            out |= {
                "prompt": self.template("student_prompt").render(self._values(row)),
                "response": f"{reasoning}\n\nLabel: {label}" if self.rationale else label,
                "finish_reason": completion.finish_reason,
            }
            result.rows.append(out)
            if gold not in (None, ""):
                graded += 1
                correct += normalise_label(str(gold)) == normalise_label(label)
        result.details = {"label_counts": {name: counts[name] for name in self.label_names}}
        if self.gold_column:
            # A gold row the teacher could not label counts as wrong: leaving it out would make a
            # teacher that fails on the hard texts look more accurate.
            gold_rows = graded + gold_failed
            result.details["gold_rows"] = gold_rows
            result.details["gold_rows_failed"] = gold_failed
            result.details["teacher_accuracy"] = round(correct / gold_rows, 4) if gold_rows else None
        return result

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        plan, _ = exact_plan(self.teacher_config, self._requests(rows), cache)
        placeholder = [
            {**row, "label": "", "prompt": "", "response": "", "finish_reason": None} for row in rows
        ]
        return placeholder, plan
