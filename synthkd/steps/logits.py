"""`logits`: store the teacher's top-k token log-probabilities over each row's answer, for `kd`.

A local (transformers) teacher scores the row's existing answer in one forward pass. Columns
added to every row (all `kd_*`):

- `kd_input_ids`: the conversation's token ids in the teacher's tokenizer (its chat template),
- `kd_prompt_length`: how many of those are the prompt,
- `kd_top_ids`, `kd_top_logprobs`: per answer token, the teacher's k likeliest tokens there,
- `kd_teacher`, `kd_vocab_sha256`, `kd_template_sha256`: which tokenizer the ids belong to, so
  training can refuse a student whose vocabulary differs.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from pydantic import Field

from synthkd.errors import RecipeError
from synthkd.kd.topk import teacher_top_k, template_sha256, vocabulary_sha256
from synthkd.output import with_messages
from synthkd.steps.base import CheckContext, Columns, Row, Step, StepContext, StepResult
from synthkd.teachers.config import TeacherConfig

KD_COLUMNS = {
    "kd_input_ids",
    "kd_prompt_length",
    "kd_top_ids",
    "kd_top_logprobs",
    "kd_teacher",
    "kd_vocab_sha256",
    "kd_template_sha256",
}


class LogitsStep(Step):
    """Keep the teacher's top-k next-token distribution at every token of each row's answer."""

    step: Literal["logits"]
    top_k: int = Field(20, ge=1, le=100, description="tokens kept per position (the rest is one tail bucket)")
    batch_size: int = Field(4, ge=1, description="conversations scored together")
    teacher: TeacherConfig | None = Field(
        None, description="the teacher whose distributions are stored; default: the recipe's"
    )

    uses_teacher: ClassVar[bool] = True

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        assert self.teacher is not None
        if self.teacher.backend != "transformers":
            raise RecipeError(
                f"logits needs a local teacher (backend: transformers) to score the answers; "
                f"got backend {self.teacher.backend!r}",
                where=ctx.teacher_at("backend"),
            )
        if columns is not None and "messages" not in columns and "response" not in columns:
            raise RecipeError(
                "logits scores each row's answer: it needs a `messages` or a `response` column, but the "
                f"rows at this step have only: {', '.join(sorted(columns)) or '(none)'}",
                where=ctx.at("step"),
            )
        return None if columns is None else columns | KD_COLUMNS | {"messages"}

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        assert ctx.dispatcher is not None and self.teacher is not None
        teacher = ctx.dispatcher.teacher
        model, tokenizer = teacher.hf_model, teacher.hf_tokenizer  # a TransformersTeacher (see check)
        rows = with_messages(rows)
        ctx.progress.set_total(len(rows))
        fingerprint = {
            "kd_teacher": self.teacher.model,
            "kd_vocab_sha256": vocabulary_sha256(tokenizer),
            "kd_template_sha256": template_sha256(tokenizer),
        }
        result = StepResult([], details={**fingerprint, "top_k": self.top_k})
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            usable = [row for row in batch if _conversation(row)]
            result.dropped["no_answer"] += len(batch) - len(usable)
            scored = await asyncio.to_thread(
                teacher_top_k, model, tokenizer, [_conversation(row) for row in usable], self.top_k
            )
            for row, top in zip(usable, scored, strict=True):
                result.rows.append(
                    {
                        **row,
                        "kd_input_ids": top.input_ids,
                        "kd_prompt_length": top.prompt_length,
                        "kd_top_ids": top.top_ids,
                        "kd_top_logprobs": top.top_logprobs,
                        **fingerprint,
                    }
                )
            ctx.progress.advance(len(batch))
        if not result.dropped["no_answer"]:
            del result.dropped["no_answer"]
        return result


def _conversation(row: Row) -> list[dict] | None:
    """The row's conversation if it ends with an answer to score."""
    messages = row.get("messages")
    if not messages or messages[-1].get("role") != "assistant" or not messages[-1].get("content"):
        return None
    return list(messages)
