"""`dialogue`: multi-turn conversations in which the teacher plays both the user and the assistant.

Each row's opening message (its `instruction`) starts a conversation. Turn by turn, the teacher
answers as the assistant, then, prompted with the conversation so far and an optional persona,
writes the user's next message (or `<end>`). Each turn is sent for all conversations together, so
turns are batched and cached like any other requests. The output rows carry the whole exchange
in the `messages` format.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
from synthkd.dispatch.dispatcher import Outcome
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Failure,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    estimate_plan,
    require_columns,
)
from synthkd.teachers.base import ChatRequest

END_MARK = "<end>"
_LABEL = re.compile(r"^\s*(?:\*\*)?user(?:\*\*)?\s*:\s*", re.IGNORECASE)


class DialogueStep(TeacherStep):
    """Conversations of up to `turns` exchanges, the teacher playing user and assistant."""

    step: Literal["dialogue"] = "dialogue"
    taxonomy: ClassVar[str] = "labeling"  # the teacher continues given openings, playing both sides
    turns: int = Field(3, ge=1, description="user-assistant exchanges per conversation, the opening included")
    opening_column: str = Field("instruction", description="column holding the first user message")
    persona_column: str | None = Field(None, description="column describing the simulated user, if any")
    system: str | None = Field(None, description="the assistant's system prompt")
    user_prompt: str = Field("prompts/dialogue/user.jinja", description="template for the simulated user")

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({self.opening_column}, columns, ctx, "opening_column", "dialogue")
        if self.persona_column:
            require_columns({self.persona_column}, columns, ctx, "persona_column", "dialogue")
        return None if columns is None else columns | {"messages", "turns", "response"}

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """The openings are known; the count assumes every conversation runs all its turns (an
        assistant answer each turn, a simulated user message between turns): an upper bound."""
        openings = [self.chat(str(row.get(self.opening_column, "")), system=self.system) for row in rows]
        plan = estimate_plan(self.teacher_config, len(rows) * (2 * self.turns - 1), openings, cache)
        return [{**row, "messages": [], "turns": 0, "response": ""} for row in rows], plan

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        params = dict(self.teacher_config.params)
        user_template = self.template("user_prompt")
        system = [{"role": "system", "content": self.system}] if self.system else []
        conversations = {
            row["id"]: [*system, {"role": "user", "content": str(row[self.opening_column])}] for row in rows
        }
        active = list(conversations)
        failed: dict[str, Failure] = {}
        ctx.progress.set_total(len(rows) * self.turns)
        for turn in range(self.turns):
            replies = await ctx.dispatcher.run([ChatRequest(tuple(conversations[i]), params) for i in active])
            answered = []
            for row_id, outcome in zip(active, replies, strict=True):
                if outcome.completion is None or not outcome.completion.text.strip():
                    failed[row_id] = _failure(row_id, outcome, conversations[row_id], "assistant")
                    continue
                conversations[row_id].append(
                    {"role": "assistant", "content": outcome.completion.text.strip()}
                )
                answered.append(row_id)
            ctx.progress.advance(len(active))
            if turn == self.turns - 1:
                break
            personas = {
                row["id"]: row.get(self.persona_column) if self.persona_column else None for row in rows
            }
            asks = [
                self.chat(
                    user_template.render(
                        {
                            "conversation": [m for m in conversations[i] if m["role"] != "system"],
                            "persona": personas[i],
                        }
                    )
                )
                for i in answered
            ]
            follow_ups = await ctx.dispatcher.run(asks)
            active = []
            for row_id, outcome in zip(answered, follow_ups, strict=True):
                if outcome.completion is None:
                    failed[row_id] = _failure(row_id, outcome, conversations[row_id], "user")
                    continue
                message = _LABEL.sub("", outcome.completion.text.strip(), count=1).strip()
                if not message or END_MARK in message:
                    continue  # the simulated user is done: the conversation ends here
                conversations[row_id].append({"role": "user", "content": message})
                active.append(row_id)
        result = StepResult([])
        result.failures = list(failed.values())
        for row in rows:
            if row["id"] in failed:
                continue
            messages = conversations[row["id"]]
            turns = sum(1 for m in messages if m["role"] == "assistant")
            result.rows.append(
                {**row, "messages": messages, "turns": turns, "response": messages[-1]["content"]}
            )
        return result


def _failure(row_id: str, outcome: Outcome, conversation: list, role: str) -> Failure:
    reason = outcome.reason or ("empty_answer" if outcome.completion is not None else "request_failed")
    return Failure(
        row_id,
        reason,
        outcome.attempts,
        outcome.error or f"no {role} message",
        {"messages": list(conversation)},
    )
