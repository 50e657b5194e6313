"""`rationale`: answers with their reasoning, kept only when the final answer checks out.

Distilling step-by-step (Hsieh et al., 2023) trains a student on the teacher's rationale as well as
its answer; Orca-style system prompts ask for explanations at a chosen level of detail. The teacher
reasons, then writes `Final answer: ...`. The answer is checked against a gold column when the data
has one, else by self-consistency (Wang et al., 2022): the majority answer over `n` samples must
reach `min_agreement`. Rows that fail the check are dropped and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
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
from synthkd.steps.parsing import ParseError, ask_parsed, failure_of, reask_prompt_field
from synthkd.teachers.base import ChatRequest

_FINAL = re.compile(r"final answer\s*(?:is)?\s*[:：]?\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"^[-+]?[$€£]?\d[\d,]*(?:\.\d+)?%?$")


class RationaleStep(TeacherStep):
    """Reasoning plus a final answer, checked against gold or by majority vote."""

    step: Literal["rationale"] = "rationale"
    taxonomy: ClassVar[str] = "labeling"  # chain-of-thought labels (distilling step-by-step, Orca)
    citation: ClassVar[str] = """\
@inproceedings{hsieh2023distilling,
  title = {Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and
    Smaller Model Sizes},
  author = {Hsieh, Cheng-Yu and Li, Chun-Liang and Yeh, Chih-Kuan and Nakhost, Hootan and Fujii,
    Yasuhisa and Ratner, Alexander and Krishna, Ranjay and Lee, Chen-Yu and Pfister, Tomas},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  year = {2023}
}
"""
    prompt: str = Field(
        "prompts/rationale/answer.jinja", description="asks for reasoning, then 'Final answer:'"
    )
    system: str | None = Field(None, description="e.g. an Orca-style 'explain like I'm five' system prompt")
    gold_column: str | None = Field(
        None, description="column with the correct answer; null: self-consistency"
    )
    n: int = Field(5, ge=1, description="samples per row (self-consistency votes; with gold, tries)")
    min_agreement: float = Field(0.5, gt=0, le=1, description="share of samples the majority answer needs")
    reask_prompt: str = reask_prompt_field()

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        needed = set(self.template("prompt").variables) - {"input"}
        require_columns(needed, columns, ctx, "prompt", f"template {self.prompt}")
        if self.gold_column:
            require_columns({self.gold_column}, columns, ctx, "gold_column", "the answer check")
        added = {"prompt", "rationale", "answer", "response", "finish_reason", "agreement"}
        return None if columns is None else columns | added | ({"system"} if self.system else set())

    def _gold(self, row: Row) -> str | None:
        if not self.gold_column or row.get(self.gold_column) in (None, ""):
            return None
        return str(row[self.gold_column])

    def _requests(self, rows: list[Row]) -> tuple[list[str], list[ChatRequest]]:
        prompts = [self.template("prompt").render({"input": "", **row}) for row in rows]
        requests = [
            self.chat(prompt, system=self.system, sample=sample)
            for prompt in prompts
            for sample in range(self.n)
        ]
        return prompts, requests

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """Every sample's request is known; each may be re-asked once. Rows stand for themselves
        as if every one were kept."""
        prompts, requests = self._requests(rows)
        plan = estimate_plan(
            self.teacher_config, len(requests), requests, cache, requests_max=2 * len(requests)
        )
        kept = [
            {**row, "prompt": prompt, "rationale": "", "answer": "", "response": "", "agreement": 1.0}
            for row, prompt in zip(rows, prompts, strict=True)
        ]
        return kept, plan

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        prompts, requests = self._requests(rows)
        ctx.progress.set_total(len(requests))
        answers = await ask_parsed(
            ctx.dispatcher,
            requests,
            parse_final_answer,
            self.template("reask_prompt"),
            progress=ctx.progress,
        )
        result = StepResult([])
        for index, (row, prompt) in enumerate(zip(rows, prompts, strict=True)):
            samples = answers[index * self.n : (index + 1) * self.n]
            parsed = [sample for sample in samples if sample.ok]
            if not parsed:
                result.failures.append(failure_of(row, samples[-1]))
                continue
            # A row without a gold answer is checked by self-consistency.
            answers_given = [sample.value[1] for sample in parsed]
            target, reason, agreement = check_answers(
                answers_given, self.n, self._gold(row), self.min_agreement
            )
            if target is None:
                result.dropped[reason] += 1
                continue
            chosen = next(sample for sample in parsed if normalise_answer(sample.value[1]) == target)
            rationale, answer = chosen.value
            completion = chosen.outcome.completion
            assert completion is not None
            out = {**row, "prompt": prompt, "rationale": rationale, "answer": answer}
            if self.system:
                out["system"] = self.system
            out |= {
                "response": completion.text,
                "finish_reason": completion.finish_reason,
                "agreement": agreement,
            }
            result.rows.append(out)
        return result


def check_answers(
    answers: list[str], n: int, gold: str | None, min_agreement: float
) -> tuple[str | None, str | None, float]:
    """The normalised answer to keep, or None with the reason to drop; and the share that agreed.

    With a gold answer, a row is kept when any sample reached it. Without, the majority answer
    must be given by at least `min_agreement` of the `n` samples (unparsed samples count against).
    """
    votes = Counter(normalise_answer(answer) for answer in answers)
    if gold is not None:
        target = normalise_answer(gold)
        if target not in votes:
            return None, "wrong_answer", 0.0
        return target, None, votes[target] / n
    target, count = votes.most_common(1)[0]
    if count / n < min_agreement:
        return None, "no_consensus", count / n
    return target, None, count / n


def parse_final_answer(text: str) -> tuple[str, str]:
    """(rationale, final answer) from a response ending in 'Final answer: ...'."""
    matches = list(_FINAL.finditer(text))
    if not matches or not matches[-1].group(1).strip(" *"):
        raise ParseError("no 'Final answer: <answer>' line found at the end")
    last = matches[-1]
    answer = last.group(1).strip().strip("*").strip()
    rationale = text[: last.start()].strip()
    return rationale, answer


def normalise_answer(answer: str) -> str:
    """Compare answers up to case, spacing, final punctuation and number formatting."""
    text = " ".join(answer.lower().split()).strip(" .!*\"'")
    if _NUMBER.match(text):
        number = text.replace(",", "").lstrip("+$€£").rstrip("%")
        try:
            value = float(number)
        except ValueError:
            return text
        return str(int(value)) if value.is_integer() else repr(value)
    return text
