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

import math
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache, score_key
from synthkd.chunking import check_tokenizer_installed
from synthkd.errors import RecipeError
from synthkd.extras import needs_extra
from synthkd.kd import topk
from synthkd.kd.api_tokens import api_top_k
from synthkd.kd.topk import TopK, tokenizer_fingerprint, vocabulary_sha256
from synthkd.messages import with_messages
from synthkd.model_source import local_or_hub
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
from synthkd.teachers.base import ChatRequest, ScoreRequest, max_completion_tokens
from synthkd.teachers.config import EMBEDDED_MODEL, TeacherConfig
from synthkd.teachers.embedded import embedded_tokenizer, resolve_model_source
from synthkd.teachers.registry import capabilities_of

API_MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs
# An API teacher's tokens become ids through a transformers tokenizer: the `local` extra.
TOKENIZER_PURPOSE = "mapping an API teacher's tokens to ids (a transformers tokenizer)"

# Named once, in kd.topk beside their storage types; a set here for `check`'s column arithmetic.
KD_COLUMNS = frozenset(topk.KD_COLUMNS)
# A dry run's stand-in for an answer an earlier step has not written yet, in the prompts it shows.
UNWRITTEN_ANSWER = "[the answer, written by an earlier step]"
SCORE_LOOKUP_CHUNK = 256  # cached scores read back at a time by a dry run (each holds every position's top-k)


class LogitsStep(TeacherStep):
    """Keep the teacher's top-k next-token distribution at every token of each row's answer."""

    step: Literal["logits"] = "logits"
    taxonomy: ClassVar[str] = "feature"  # the teacher's output distributions
    citation: ClassVar[str] = """\
@article{hinton2015distilling,
  title = {Distilling the Knowledge in a Neural Network},
  author = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
  journal = {arXiv preprint arXiv:1503.02531},
  year = {2015}
}
"""
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
        merged = {**so_far, **chunk}  # the teacher's fingerprint and top_k are the same in every chunk
        if "unmappable_rows" in chunk:  # a count of rows: added up (only the API path counts them)
            merged["unmappable_rows"] = so_far.get("unmappable_rows", 0) + chunk["unmappable_rows"]
        return merged

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

    def _api_request(self, prompt: list[dict]) -> ChatRequest:
        """The request that answers `prompt` again, as the run sends it and the plan looks it up.
        Not self.chat: it asks for the log-probs too."""
        params = {**self.teacher_config.params, "logprobs": True, "top_logprobs": self.top_k}
        return ChatRequest(tuple(prompt), params)

    async def _ask_api(self, rows: list[Row], tokenizer, ctx: StepContext) -> StepResult:  # noqa: ANN001
        prompts = [_conversation(row)[:-1] for row in rows]
        requests = [self._api_request(prompt) for prompt in prompts]
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

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """Every row with an answer is scored: rows already answered as the run reads them, and
        rows standing for an answer an earlier step has not written yet (a dry run's placeholder:
        an empty answer, or an empty conversation), assumed to get one. Rows without an answer
        are dropped (`no_answer`). A teacher that scores text is planned by `_plan_scoring`, one
        asked for log-probs by `_plan_api`."""
        rows = [row for row in with_messages(rows) if _conversation(row) or _unwritten(row)]
        if capabilities_of(self.teacher_config).scores_text:
            return self._plan_scoring(rows, cache)
        return self._plan_api(rows, cache)

    def _plan_api(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """One chat request per row, asking its prompt again with log-probs on: known exactly
        wherever the prompt is, and looked up in the cache. A conversation not written yet (an
        empty one) has no prompt to render: it is counted, its prompt as this teacher's
        max_tokens (of unknown length; as code_check counts code not written yet), and the count
        becomes an estimate. Cached answers stand in for themselves, as label's do."""
        prompts = [_prompt(row) for row in rows]
        requests = [self._api_request(prompt) for prompt in prompts if prompt is not None]
        plan, answers = exact_plan(self.teacher_config, requests, cache)
        found = iter(answers)
        stand_ins = []
        for row, prompt in zip(rows, prompts, strict=True):
            answer = next(found) if prompt is not None else None
            text = answer.text if answer is not None else ""
            messages = [] if prompt is None else [*prompt, {"role": "assistant", "content": text}]
            finish = answer.finish_reason if answer is not None else None
            stand_ins.append(self._planned_row({**row, "response": text, "finish_reason": finish}, messages))
        unknown = len(rows) - len(requests)
        if unknown:
            max_tokens = max_completion_tokens(self.teacher_config.params)
            plan = replace(
                plan,
                requests=len(rows),
                prompt_tokens=plan.prompt_tokens + unknown * max_tokens,
                max_completion_tokens=len(rows) * max_tokens,
                count="estimate",
            )
        return stand_ins, plan

    def _plan_scoring(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """One forward pass per conversation, run in batches one after another: they are the
        plan's rounds, so the dry run times each as a batch of the model's, and the tokens read
        (every conversation whole, its prompt tokens; none generated) at its reading speed.
        A local model costs nothing. Conversations already written are looked up in the cache
        where the score key can be had without loading the model (`_scoring_vocabulary`); one not
        written yet counts its answer as this teacher's max_tokens."""
        teacher = self.teacher_config
        written = [_conversation(row) for row in rows]
        requests = [ScoreRequest(tuple(messages), self.top_k) for messages in written if messages]
        cached = self._cached_scores(requests, cache)
        max_tokens = max_completion_tokens(teacher.params)
        shown = [messages or _with_unwritten_answer(row) for row, messages in zip(rows, written, strict=True)]
        tokens = sum(prompt_tokens(ChatRequest(tuple(messages))) for messages in shown)
        to_score = len(rows) - cached
        batches = forward_batches(to_score, self.batch_size, teacher.batch_size)
        size = min(self.batch_size, teacher.batch_size)
        note = (
            f"{to_score} conversation(s) scored in {batches} forward pass(es) of up to {size} (the "
            "step's batch_size, capped by the teacher's), each a batch that reads its conversations "
            "whole and generates no token."
        )
        read = tokens + (len(rows) - len(requests)) * max_tokens
        plan = StepPlan(
            requests=len(rows),
            cached=cached,
            prompt_tokens=read,
            sample_prompts=shown[:SAMPLE_PROMPTS_SHOWN],
            rounds=max(batches, 1),
            read_tokens=read,
            time_note=note if batches else "",
        )
        return [self._planned_row(row, row.get("messages") or []) for row in rows], plan

    def _cached_scores(self, requests: list[ScoreRequest], cache: ResponseCache | None) -> int:
        """How many of `requests` the cache holds scores for; 0 when their keys cannot be had
        without loading the model. Read back a chunk at a time: a cached score holds every
        answer position's top-k, and a dry run needs only the count."""
        if cache is None or not requests:
            return 0
        vocabulary = _scoring_vocabulary(self.teacher_config.model)
        if vocabulary is None:
            return 0
        keys = [score_key(self.teacher_config, request, vocabulary) for request in requests]
        unique, found = list(dict.fromkeys(keys)), set()
        for start in range(0, len(unique), SCORE_LOOKUP_CHUNK):
            found.update(cache.get_scores(unique[start : start + SCORE_LOOKUP_CHUNK]))
        return sum(1 for key in keys if key in found)

    def _planned_row(self, row: Row, messages: list[dict]) -> Row:
        """A row standing for one this step outputs: its conversation, the kd columns empty."""
        empty = _with_top_k({**row, "messages": messages}, TopK([], 0, [], []))
        return {
            **empty,
            "kd_teacher": self.teacher_config.model,
            "kd_vocab_sha256": "",
            "kd_template_sha256": "",
        }


def forward_batches(conversations: int, step_batch: int, teacher_batch: int) -> int:
    """The forward passes scoring `conversations` takes: the dispatcher hands the teacher
    `step_batch` of them at a time, and the teacher runs those `teacher_batch` at a time."""
    full, rest = divmod(conversations, step_batch)
    return full * math.ceil(step_batch / teacher_batch) + math.ceil(rest / teacher_batch)


def _scoring_vocabulary(model: str) -> str | None:
    """The hash of the scoring teacher's vocabulary, which its score keys name, from its tokenizer
    alone; None where that cannot be had here without the network.

    A dry run promises to load no model and to send nothing. A tokenizer is not the model: a few
    small files, read in well under a second (doc_qa's plan already loads one to chunk), and its
    vocabulary is all the key needs, so loading it keeps the promise and makes the cached count
    exact. What it must not do is download: a Hub tokenizer is read from the local Hub cache only.
    `embedded` is read as the embedded teacher reads it (the converted folder), or from the GGUF
    file when the model was never converted here, which never converts it. Where the tokenizer
    cannot be read, no score of this teacher can have been cached on this machine either (a run
    reads the same files), bar a Hub cache cleared since: the plan then counts nothing as cached,
    which errs towards a longer run, not a shorter one."""
    try:
        if model == EMBEDDED_MODEL:
            tokenizer = embedded_tokenizer()
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(local_or_hub(model), local_files_only=True)
    except (ImportError, OSError, ValueError, RecipeError):
        return None
    return vocabulary_sha256(tokenizer)


def _unwritten(row: Row) -> bool:
    """Whether the row stands, in a dry run, for an answer an earlier step has not written yet:
    its conversation is empty (dialogue's placeholder) or ends with an empty answer (label's)."""
    messages = row.get("messages")
    if messages is None:
        return False
    return not messages or (messages[-1].get("role") == "assistant" and not messages[-1].get("content"))


def _prompt(row: Row) -> list[dict] | None:
    """What an API teacher is asked again: the row's conversation up to its answer; None when
    the conversation is not written yet."""
    messages = row.get("messages") or []
    return list(messages[:-1]) if messages else None


def _with_unwritten_answer(row: Row) -> list[dict]:
    """The conversation a dry run shows for a row whose answer is not written yet."""
    prompt = _prompt(row) or []
    return [*prompt, {"role": "assistant", "content": UNWRITTEN_ANSWER}]


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
