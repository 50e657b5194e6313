"""`logits`: store the teacher's top-k token log-probabilities over each row's answer, for `kd`.

A teacher that can score a given text (a local model) scores the row's existing answer in one
forward pass. A chat API cannot, so a teacher that returns the log-probs of its own answers
answers the row's prompt again with `logprobs` on, and that answer replaces the row's; its
tokens are mapped to ids through the teacher's tokenizer (`tokenizer:`), and rows whose tokens
cannot be mapped keep their answer without distributions (counted; they train by cross-entropy
only). Columns added to every row:

- `kd_input_ids`: the conversation's token ids in the teacher's tokenizer (its chat template),
- `kd_prompt_length`: how many of those are the prompt,
- `kd_top_ids`, `kd_top_logprobs`: per answer token, the teacher's k likeliest tokens there,
- `kd_teacher`, `kd_vocab_sha256`, `kd_template_sha256`: which tokenizer the ids belong to, so
  training can refuse a student whose vocabulary differs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.chunking import check_tokenizer_installed
from synthkd.errors import RecipeError
from synthkd.extras import needs_extra
from synthkd.kd import topk
from synthkd.kd.api_tokens import api_top_k
from synthkd.kd.topk import TopK, tokenizer_fingerprint
from synthkd.messages import with_messages
from synthkd.steps.base import CheckContext, Columns, Failure, Row, StepContext, StepResult, TeacherStep
from synthkd.teachers.base import ChatRequest, ScoreRequest
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.embedded import resolve_model_source
from synthkd.teachers.registry import capabilities_of

API_MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs
# An API teacher's tokens become ids through a transformers tokenizer: the `local` extra.
TOKENIZER_PURPOSE = "mapping an API teacher's tokens to ids (a transformers tokenizer)"

# Named once, in kd.topk beside their storage types; a set here for `check`'s column arithmetic.
KD_COLUMNS = frozenset(topk.KD_COLUMNS)


class LogitsStep(TeacherStep):
    """Keep the teacher's top-k next-token distribution at every token of each row's answer."""

    step: Literal["logits"] = "logits"
    taxonomy: ClassVar[str] = "feature"  # the teacher's output distributions
    row_wise: ClassVar[bool] = True
    top_k: int = Field(20, ge=1, le=100, description="tokens kept per position (the rest is one tail bucket)")
    batch_size: int = Field(4, ge=1, description="conversations scored together")
    tokenizer: str | None = Field(
        None,
        description="API teachers: the teacher's tokenizer (a Hub id or folder) to map tokens to ids",
    )
    teacher: TeacherConfig | None = Field(
        None, description="the teacher whose distributions are stored; default: the recipe's"
    )

    _tokenizer: Any = PrivateAttr(None)  # the API teacher's tokenizer, once loaded

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        teacher = self.teacher_config
        capabilities = capabilities_of(teacher)
        if not capabilities.scores_text and not capabilities.top_logprobs:
            raise RecipeError(
                f"the {teacher.backend} backend can neither score a given answer nor return the "
                "log-probabilities of its own: logits needs a teacher that does one of them",
                where=ctx.teacher_at("backend"),
            )
        if not capabilities.scores_text:
            if not self.tokenizer:
                raise RecipeError(
                    f"with an API teacher ({teacher.backend}), logits needs `tokenizer:` naming the "
                    "teacher's tokenizer (a Hub id or a local folder) to turn its tokens into ids",
                    where=ctx.at("tokenizer"),
                )
            check_tokenizer_installed(self.tokenizer, ctx.at("tokenizer"), TOKENIZER_PURPOSE)
            if self.top_k > API_MAX_TOP_LOGPROBS:
                raise RecipeError(
                    f"APIs return at most {API_MAX_TOP_LOGPROBS} top_logprobs; got top_k {self.top_k}",
                    where=ctx.at("top_k"),
                )
        if columns is not None and "messages" not in columns and "response" not in columns:
            raise RecipeError(
                "logits scores each row's answer: it needs a `messages` or a `response` column, but the "
                f"rows at this step have only: {', '.join(sorted(columns)) or '(none)'}",
                where=ctx.at("step"),
            )
        return None if columns is None else columns | KD_COLUMNS | {"messages"}

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        rows = with_messages(rows)
        ctx.progress.set_total(len(rows))
        usable = [row for row in rows if _conversation(row)]
        if ctx.dispatcher.capabilities.scores_text:
            result = await self._score(usable, ctx)
            hashes = ctx.dispatcher.tokenizer_fingerprint()
        else:
            tokenizer = self._api_tokenizer()
            result = await self._ask_api(usable, tokenizer, ctx)
            hashes = tokenizer_fingerprint(tokenizer)
        fingerprint = {
            "kd_teacher": self.teacher_config.model,
            "kd_vocab_sha256": hashes["vocab_sha256"],
            "kd_template_sha256": hashes["template_sha256"],
        }
        result.rows = [{**row, **fingerprint} for row in result.rows]
        result.details.update(fingerprint, top_k=self.top_k)
        if len(usable) < len(rows):
            result.dropped["no_answer"] += len(rows) - len(usable)
            ctx.progress.advance(len(rows) - len(usable))
        return result

    def merge_details(self, so_far: dict[str, Any], chunk: dict[str, Any]) -> dict[str, Any]:
        unmappable = so_far.get("unmappable_rows", 0) + chunk.get("unmappable_rows", 0)
        return {**so_far, **chunk} | ({"unmappable_rows": unmappable} if "unmappable_rows" in chunk else {})

    def _api_tokenizer(self) -> Any:
        """The tokenizer that maps an API teacher's tokens to ids: loaded once, not per chunk."""
        if self._tokenizer is None:
            assert self.tokenizer is not None
            with needs_extra("local", TOKENIZER_PURPOSE):
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(self.tokenizer))
        return self._tokenizer

    async def _score(self, rows: list[Row], ctx: StepContext) -> StepResult:
        """A teacher that scores given text: its top-k over each row's own answer, through the
        dispatcher and so the cache, like every other teacher call."""
        requests = [ScoreRequest(tuple(_conversation(row) or ()), self.top_k) for row in rows]
        scored = await ctx.dispatcher.score(requests, self.batch_size, ctx.progress.advance)
        return StepResult([_with_top_k(row, top) for row, top in zip(rows, scored, strict=True)])

    async def _ask_api(self, rows: list[Row], tokenizer, ctx: StepContext) -> StepResult:  # noqa: ANN001
        # Not self.chat: the request asks for the log-probs too.
        params = {**self.teacher_config.params, "logprobs": True, "top_logprobs": self.top_k}
        prompts = [_conversation(row)[:-1] for row in rows]
        requests = [ChatRequest(tuple(prompt), params) for prompt in prompts]
        outcomes = await ctx.dispatcher.run(requests, lambda _, copies: ctx.progress.advance(copies))
        result = StepResult([], details={"unmappable_rows": 0})
        for row, prompt, outcome in zip(rows, prompts, outcomes, strict=True):
            if outcome.completion is None:
                result.failures.append(Failure.from_outcome(row, outcome))
                continue
            answer = outcome.completion.text
            answered = {
                **row,
                "response": answer,
                "finish_reason": outcome.completion.finish_reason,
                "messages": [*prompt, {"role": "assistant", "content": answer}],
            }
            top = api_top_k(tokenizer, prompt, answer, outcome.completion.logprobs, self.top_k)
            if top is None:
                result.details["unmappable_rows"] += 1
                top = TopK(input_ids=[], prompt_length=0, top_ids=[], top_logprobs=[])
            result.rows.append(_with_top_k(answered, top))
        return result


def _with_top_k(row: Row, top: TopK) -> Row:
    return {
        **row,
        "kd_input_ids": top.input_ids,
        "kd_prompt_length": top.prompt_length,
        "kd_top_ids": top.top_ids,
        "kd_top_logprobs": top.top_logprobs,
    }


def _conversation(row: Row) -> list[dict] | None:
    """The row's conversation if it ends with an answer to score."""
    messages = row.get("messages")
    if not messages or messages[-1].get("role") != "assistant" or not messages[-1].get("content"):
        return None
    return list(messages)
