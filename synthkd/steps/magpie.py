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

from synthkd.errors import RecipeError
from synthkd.steps.base import CheckContext, Columns, Failure, Row, StepContext, StepResult, TeacherStep
from synthkd.teachers.base import ChatRequest
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import capabilities_of


class MagpieStep(TeacherStep):
    """Let a local chat model write user instructions from its template's pre-query prefix."""

    step: Literal["magpie"] = "magpie"
    taxonomy: ClassVar[str] = "curation"  # instructions drawn from the model itself, no seeds
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

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        # The pre-query prefix ends in an open, empty user turn that the model continues rather
        # than answers, so these requests are built here, not by `chat`.
        params = dict(self.teacher_config.params)
        system = ({"role": "system", "content": self.system},) if self.system else ()
        open_user_turn = ({"role": "user", "content": ""},)
        requests = [
            ChatRequest((*system, *open_user_turn), params, sample=index, continue_final=True)
            for index in range(self.num_rows)
        ]
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
            if len(instruction.split()) < self.min_words:
                result.dropped["too_short"] += 1
            elif instruction.lower() in seen:
                result.dropped["duplicate"] += 1
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
            system = {"system": self.system} if self.system else {}
            completion = outcome.completion
            answered.append(
                {**row, **system, "response": completion.text, "finish_reason": completion.finish_reason}
            )
        return answered
