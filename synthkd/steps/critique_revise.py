"""`critique_revise`: constitution-style critique and revision, giving DPO pairs (chosen = revised).

After Constitutional AI (Bai et al., 2022): the teacher critiques each row's response against the
recipe's `principles`, ending with `Needs revision: yes|no`, and where it says yes rewrites the
response to fix what the critique names. `rounds` > 1 critiques the latest revision again until
the teacher finds nothing left to fix. Rows come out in the conversational preference format of
the `preference` step (TRL's DPOTrainer): `prompt` (system and user messages), `chosen` (the
revision), `rejected` (the original), plus `critique`, `revision` and `revised`.

Rows whose first critique finds no problem are dropped (`no_problem_found`; `revision_unchanged`
when a problem was named but the rewrite changed nothing) or, with `keep_unchanged: true`, kept
with chosen = rejected = the original and `revised: false`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
from synthkd.steps.parsing import Parsed, ParseError, ask_parsed, failure_of, reask_prompt_field
from synthkd.teachers.base import ChatRequest

_VERDICT = re.compile(r"needs\s+revision\W*?[:：]\W*(yes|no)\b", re.IGNORECASE)
_PREAMBLE = re.compile(r"^\W*(?:revised|improved|rewritten)\s+response\W*?[:：]\**\s*", re.IGNORECASE)
FILLED = ("prompt", "response", "critique", "principles")


def parse_critique(text: str) -> tuple[str, bool]:
    """(critique, needs revision) from a critique ending in 'Needs revision: yes|no'."""
    matches = list(_VERDICT.finditer(text))
    if not matches:
        raise ParseError("no final line 'Needs revision: yes' or 'Needs revision: no'")
    needs = matches[-1].group(1).lower() == "yes"
    critique = text[: matches[-1].start()].strip()
    if needs and not critique:
        raise ParseError("say what is wrong, principle by principle, before 'Needs revision: yes'")
    return critique, needs


UNCHANGED = "the revision is the same as the response"


def parse_revision(text: str) -> str:
    """The revised response, without a 'Revised response:' preamble."""
    revision = _PREAMBLE.sub("", text.strip(), count=1).strip()
    if not revision:
        raise ParseError("the revised response is empty")
    return revision


def revision_parser(current: str, original: str) -> Callable[[str], str]:
    """parse_revision, refusing a revision that leaves `current` as it was or goes back to the
    `original` (a pair whose chosen equals its rejected teaches nothing); re-asked once."""
    unchanged = {" ".join(current.split()), " ".join(original.split())}

    def parse(text: str) -> str:
        revision = parse_revision(text)
        if " ".join(revision.split()) in unchanged:
            raise ParseError(f"{UNCHANGED}; change what the critique names")
        return revision

    return parse


class CritiqueReviseStep(TeacherStep):
    """Critique each response against principles, revise it, and pair revision with original."""

    step: Literal["critique_revise"] = "critique_revise"
    # Feedback, not self-knowledge: the teacher critiques and corrects answers in the data (the
    # teacher's own, as label wrote them), not a model refining what it wrote itself in training.
    taxonomy: ClassVar[str] = "feedback"
    citation: ClassVar[str] = """\
@article{bai2022constitutional,
  title = {Constitutional AI: Harmlessness from AI Feedback},
  author = {Bai, Yuntao and Kadavath, Saurav and Kundu, Sandipan and Askell, Amanda and Kernion, Jackson
    and others},
  journal = {arXiv preprint arXiv:2212.08073},
  year = {2022}
}
"""
    principles: list[str] = Field(min_length=1, description="what a good response does (the constitution)")
    prompt_column: str = Field("prompt", description="the user's request (as the `label` step writes it)")
    response_column: str = Field("response", description="the response to critique")
    rounds: int = Field(1, ge=1, description="critique-revision rounds at most")
    keep_unchanged: bool = Field(False, description="keep rows the critique found nothing wrong with")
    critique_prompt: str = Field(
        "prompts/critique_revise/critique.jinja",
        description="Jinja template asking for a critique against the principles, ending "
        "`Needs revision: yes/no`",
    )
    revise_prompt: str = Field(
        "prompts/critique_revise/revise.jinja", description="Jinja template asking for the answer rewritten"
    )
    reask_prompt: str = reask_prompt_field()

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        needed = {self.prompt_column, self.response_column}
        require_columns(needed, columns, ctx, "prompt_column", "critique_revise")
        for key in ("critique_prompt", "revise_prompt"):
            extra = set(self.template(key).variables) - set(FILLED)
            require_columns(extra, columns, ctx, key, f"template {getattr(self, key)}")
        added = {"prompt", "chosen", "rejected", "critique", "revision", "revised"}
        return None if columns is None else (columns - {"messages", "response", self.response_column}) | added

    def _ask(self, key: str, row: Row, **values: str) -> ChatRequest:
        content = self.template(key).render(
            {**row, "prompt": _text(row.get(self.prompt_column)), "principles": self.principles, **values}
        )
        return self.chat(content)

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """The first critiques are known; the estimate assumes each finds something to revise
        (a critique and a revision a row); at most, every round does both and each is re-asked."""
        pairs = [(row, _text(row.get(self.response_column))) for row in rows]
        known = [self._ask("critique_prompt", row, response=text) for row, text in pairs]
        plan = estimate_plan(
            self.teacher_config, 2 * len(rows), known, cache, requests_max=4 * self.rounds * len(rows)
        )
        return [self._pair(row, text, text, [], 1) for row, text in pairs], plan

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        result = StepResult([])
        reask = self.template("reask_prompt")
        current = {index: _text(row.get(self.response_column)) for index, row in enumerate(rows)}
        critiques: dict[int, list[str]] = {index: [] for index in current}
        revisions = dict.fromkeys(current, 0)
        active = list(current)
        failed: set[int] = set()
        unrevised: set[int] = set()
        # The bar counts requests: a critique and a revision a row each round, at most. A row
        # done early (nothing to fix, or failed) advances by the requests it will not need, so the
        # bar ends at its total, never past it. Re-asks are not counted.
        per_row = 2 * self.rounds
        ctx.progress.set_total(len(rows) * per_row)
        for round_ in range(self.rounds):
            round_active = active
            requests = [self._ask("critique_prompt", rows[i], response=current[i]) for i in active]
            verdicts = await ask_parsed(
                ctx.dispatcher, requests, parse_critique, reask, progress=ctx.progress
            )
            to_revise = []
            for index, verdict in zip(active, verdicts, strict=True):
                if not verdict.ok:
                    if not revisions[index]:  # a later round's failure keeps the revision so far
                        self._fail(result, rows[index], verdict, "unparseable_critique")
                        failed.add(index)
                    continue
                critique, needs = verdict.value
                if needs:
                    critiques[index].append(critique)
                    to_revise.append(index)
                elif not critiques[index]:
                    critiques[index].append(critique)  # the first critique found nothing to fix
            requests = [
                self._ask("revise_prompt", rows[i], response=current[i], critique=critiques[i][-1])
                for i in to_revise
            ]
            parsers = [
                revision_parser(current[i], _text(rows[i].get(self.response_column))) for i in to_revise
            ]
            answers = await ask_parsed(ctx.dispatcher, requests, parsers, reask, progress=ctx.progress)
            active = []
            for index, answer in zip(to_revise, answers, strict=True):
                if not answer.ok:
                    if revisions[index]:
                        # A later round's failure keeps the revision so far, and leaves out the
                        # critique no revision answered.
                        critiques[index].pop()
                        continue
                    if UNCHANGED in (answer.error or ""):
                        unrevised.add(index)  # a problem named, but the rewrite changed nothing
                    else:
                        self._fail(result, rows[index], answer, "unparseable_revision")
                        failed.add(index)
                    continue
                current[index] = answer.value
                revisions[index] += 1
                active.append(index)
            revised_now, going_on = set(to_revise), set(active)
            used = 2 * round_ + 1  # this row's requests so far, its revision this round aside
            unneeded = sum(
                per_row - used - (index in revised_now) for index in round_active if index not in going_on
            )
            if unneeded:
                ctx.progress.advance(unneeded)
            if not active:
                break
        unchanged_kept = 0
        for index, row in enumerate(rows):
            if index in failed:
                continue
            original = _text(row.get(self.response_column))
            if revisions[index] == 0:
                if not self.keep_unchanged:
                    result.dropped["revision_unchanged" if index in unrevised else "no_problem_found"] += 1
                    continue
                unchanged_kept += 1
            result.rows.append(self._pair(row, original, current[index], critiques[index], revisions[index]))
        result.details = {
            "revised": sum(1 for index in revisions if revisions[index] and index not in failed),
            "unchanged_kept": unchanged_kept,
            "revisions_per_round": [
                sum(1 for count in revisions.values() if count > round_) for round_ in range(self.rounds)
            ],
        }
        return result

    def _fail(self, result: StepResult, row: Row, parsed: Parsed, reason: str) -> None:
        result.failures.append(failure_of(row, parsed, reason=reason))

    def _pair(self, row: Row, original: str, final: str, critiques: list[str], revisions: int) -> Row:
        """The `preference` step's conversational format (see preference_rows.preference_row), plus the
        critique and revision."""
        system = _text(row.get("system"))
        prompt = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": _text(row.get(self.prompt_column))}
        ]
        dropped = {"messages", "response", self.response_column}
        return {
            **{key: value for key, value in row.items() if key not in dropped},
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": final}],
            "rejected": [{"role": "assistant", "content": original}],
            "critique": "\n\n".join(critiques),
            "revision": final if revisions else None,
            "revised": revisions > 0,
        }


def _text(value: object) -> str:
    return "" if value is None else str(value)
