"""`magpie`: instructions written by the teacher itself (Xu et al., 2024, "Magpie").

An aligned chat model, given only its chat template's prefix up to the user's turn, writes a
plausible user instruction; asked that instruction, it then writes the answer. No seeds and no
prompt engineering: the data comes from the model's own idea of what users ask. An optional
`system` prompt in the prefix steers the domain. The prefix is raw text, which an API cannot be
sent, so this step needs a local `transformers` teacher.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
from synthkd.errors import RecipeError
from synthkd.steps.base import (
    SAMPLE_PROMPTS_SHOWN,
    CheckContext,
    Columns,
    Failure,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    exact_plan,
    prompt_tokens,
)
from synthkd.teachers.base import ChatRequest, Completion, max_completion_tokens
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import capabilities_of


class MagpieStep(TeacherStep):
    """Let a local chat model write user instructions from its template's pre-query prefix."""

    step: Literal["magpie"] = "magpie"
    taxonomy: ClassVar[str] = "curation"  # instructions drawn from the model itself, no seeds
    citation: ClassVar[str] = """\
@article{xu2024magpie,
  title = {Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with Nothing},
  author = {Xu, Zhangchen and Jiang, Fengqing and Niu, Luyao and Deng, Yuntian and Poovendran, Radha and
    Choi, Yejin and Lin, Bill Yuchen},
  journal = {arXiv preprint arXiv:2406.08464},
  year = {2024}
}
"""
    num_rows: int = Field(100, ge=1, description="instructions to sample (before dropping)")
    system: str | None = Field(None, description="system prompt placed in the prefix to steer the domain")
    respond: bool = Field(True, description="also have the teacher answer each instruction")
    min_words: int = Field(3, ge=1, description="drop instructions shorter than this")
    teacher: TeacherConfig | None = Field(None, description="a local transformers teacher")

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        teacher = self.teacher_config
        if not capabilities_of(teacher).continues_prefix:
            raise RecipeError(
                f"magpie needs a local teacher (backend: transformers), not {teacher.backend}: it sends "
                "the chat template's bare pre-query prefix, which an API cannot be given",
                where=ctx.teacher_at("backend"),
            )
        added = {"id", "instruction", "response", "finish_reason"} | ({"system"} if self.system else set())
        return None if columns is None else columns | added

    def template_sources(self) -> dict[str, str]:
        # The system prompt is part of the prefix the model continues, though no file holds it.
        return {"magpie.system": self.system} if self.system else {}

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """`num_rows` instruction requests, known and looked up in the cache; then, with `respond`,
        an answer to each instruction kept. A cached instruction is screened as the run would
        (too short, duplicate) and its answer's request looked up too; the others are assumed
        kept. The count is so exact once every instruction is cached, and before that an estimate
        that is also the most (magpie re-asks nothing)."""
        teacher = self.teacher_config
        requests = self._instruction_requests()
        plan, written = exact_plan(teacher, requests, cache)
        instructions = self._planned_instructions(written)
        all_written = plan.cached == plan.requests
        if not self.respond:
            plan.count = "exact" if all_written else "estimate"
            return list(rows) + [row for row, _ in instructions], plan
        answers = [self.chat(row["instruction"], system=self.system) for row, _ in instructions]
        known = [
            request for (_, written_yet), request in zip(instructions, answers, strict=True) if written_yet
        ]
        answer_plan, known_answers = exact_plan(teacher, known, cache)
        # An instruction not written yet may be max_tokens long, and its answer's prompt holds it.
        unwritten = len(answers) - len(known)
        unwritten_tokens = unwritten * (
            prompt_tokens(self.chat("", system=self.system)) + max_completion_tokens(teacher.params)
        )
        total = len(requests) + len(answers)
        combined = StepPlan(
            requests=total,
            cached=plan.cached + answer_plan.cached,
            prompt_tokens=plan.prompt_tokens + answer_plan.prompt_tokens + unwritten_tokens,
            max_completion_tokens=total * max_completion_tokens(teacher.params),
            sample_prompts=(plan.sample_prompts + answer_plan.sample_prompts)[:SAMPLE_PROMPTS_SHOWN],
            count="exact" if all_written else "estimate",
            rounds=2,  # the answers wait for the instructions
        )
        answered = iter(known_answers)  # in the order of the instructions written yet
        planned = [
            self._answered_row(row, next(answered) if written_yet else None)
            for row, written_yet in instructions
        ]
        return list(rows) + planned, combined

    def _instruction_requests(self) -> list[ChatRequest]:
        # The pre-query prefix ends in an open, empty user turn that the model continues rather
        # than answers, so these requests are built here, not by `chat`.
        params = dict(self.teacher_config.params)
        system = ({"role": "system", "content": self.system},) if self.system else ()
        open_user_turn = ({"role": "user", "content": ""},)
        return [
            ChatRequest((*system, *open_user_turn), params, sample=index, continue_final=True)
            for index in range(self.num_rows)
        ]

    def _planned_instructions(self, written: list[Completion | None]) -> list[tuple[Row, bool]]:
        """The instructions a run would keep, each with whether it is written yet: the cached ones
        screened as the run screens them, the others assumed kept (a placeholder text)."""
        seen: set[str] = set()
        kept = []
        for index, answer in enumerate(written):
            row_id = f"magpie-{index:05d}"
            if answer is None:
                kept.append(
                    ({"id": row_id, "instruction": f"[instruction {row_id} written by magpie]"}, False)
                )
                continue
            instruction = answer.text.strip()
            if self._drop_reason(instruction, seen) is None:
                seen.add(instruction.lower())
                kept.append(({"id": row_id, "instruction": instruction}, True))
        return kept

    def _drop_reason(self, instruction: str, seen: set[str]) -> str | None:
        """Why an instruction is not kept (too short, or a repeat of one kept), or None."""
        if len(instruction.split()) < self.min_words:
            return "too_short"
        if instruction.lower() in seen:
            return "duplicate"
        return None

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        requests = self._instruction_requests()
        ctx.progress.set_total(self.num_rows * (2 if self.respond else 1))
        outcomes = await ctx.dispatcher.run(requests, lambda _, copies: ctx.progress.advance(copies))
        result = StepResult([])
        seen: set[str] = set()
        instructions = []
        for index, outcome in enumerate(outcomes):
            row_id = f"magpie-{index:05d}"
            if outcome.completion is None:
                result.failures.append(Failure.from_outcome(None, outcome, row_id=row_id))
                continue
            instruction = outcome.completion.text.strip()
            reason = self._drop_reason(instruction, seen)
            if reason is not None:
                result.dropped[reason] += 1
            else:
                seen.add(instruction.lower())
                instructions.append((row_id, instruction))
        new_rows = [{"id": row_id, "instruction": text} for row_id, text in instructions]
        if self.respond:
            new_rows = await self._respond(new_rows, ctx, result)
        result.rows = list(rows) + new_rows
        return result

    async def _respond(self, rows: list[Row], ctx: StepContext, result: StepResult) -> list[Row]:
        requests = [self.chat(row["instruction"], system=self.system) for row in rows]
        outcomes = await ctx.dispatcher.run(requests, lambda _, copies: ctx.progress.advance(copies))
        answered = []
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.completion is None:
                result.failures.append(Failure.from_outcome(row, outcome))
                continue
            answered.append(self._answered_row(row, outcome.completion))
        return answered

    def _answered_row(self, row: Row, completion: Completion | None) -> Row:
        """An instruction's row with its answer (a placeholder in a dry run without one)."""
        system = {"system": self.system} if self.system else {}
        if completion is None:
            return {**row, **system, "response": "", "finish_reason": None}
        return {**row, **system, "response": completion.text, "finish_reason": completion.finish_reason}
