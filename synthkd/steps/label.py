"""`label`: the teacher answers each row's prompt (by default `instruction` + optional `input`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

import jsonschema
from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache, request_key
from synthkd.errors import RecipeError
from synthkd.shipped import candidate_paths, resolve_path
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Failure,
    Row,
    Step,
    StepContext,
    StepPlan,
    StepResult,
    require_columns,
)
from synthkd.steps.parsing import Parsed, ParseError, ask_parsed, strip_code_fence
from synthkd.teachers.base import ChatRequest
from synthkd.teachers.config import TeacherConfig
from synthkd.templates import PromptTemplate, load_template

# Columns the default template reads only if present; rows without them render as if empty.
OPTIONAL_COLUMNS = {"input": ""}
ASSUMED_MAX_TOKENS = 512  # for dry-run estimates when the recipe sets no max_tokens
SAMPLE_PROMPTS_SHOWN = 3


class LabelStep(Step):
    """Ask the teacher to answer every row; `n` samples each, optionally as validated JSON."""

    step: Literal["label"]
    prompt: str = Field("prompts/label.jinja", description="Jinja template of the user message")
    system: str | None = Field(None, description="system prompt sent with every request")
    systems: list[str] | None = Field(
        None, min_length=1, description="Orca-style: one of these system prompts per row, picked by its id"
    )
    n: int = Field(1, ge=1, description="samples per prompt")
    output_schema: dict[str, Any] | str | None = Field(
        None, alias="schema", description="JSON schema (inline or a .json file) the response must match"
    )
    reask: int = Field(1, ge=0, description="times an answer that fails the schema is asked again")
    teacher: TeacherConfig | None = Field(None, description="overrides the recipe's teacher for this step")

    uses_teacher: ClassVar[bool] = True
    _template: PromptTemplate | None = PrivateAttr(None)
    _schema: dict[str, Any] | None = PrivateAttr(None)
    _reask_template: PromptTemplate | None = PrivateAttr(None)

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        self._template = load_template(self.prompt, ctx.recipe_dir, ctx.at("prompt"))
        require_columns(
            set(self._template.variables) - set(OPTIONAL_COLUMNS),
            columns,
            ctx,
            "prompt",
            f"template {self.prompt}",
        )
        if self.system and self.systems:
            raise RecipeError("set either system or systems, not both", where=ctx.at("systems"))
        if self.output_schema is not None:
            self._schema = _load_schema(self.output_schema, ctx)
            self._reask_template = load_template("prompts/json_reask.jinja", ctx.recipe_dir, ctx.at("schema"))
        added = {"prompt", "response", "finish_reason"} | (
            {"system"} if self.system or self.systems else set()
        )
        return None if columns is None else columns | added | ({"sample"} if self.n > 1 else set())

    def template_sources(self) -> dict[str, str]:
        assert self._template is not None
        sources = {self.prompt: self._template.source}
        if self._reask_template is not None:
            sources["prompts/json_reask.jinja"] = self._reask_template.source
        return sources

    def _requests(self, rows: list[Row]) -> tuple[list[tuple[Row, int, str]], list[ChatRequest]]:
        assert self._template is not None and self.teacher is not None
        response_format = (
            {"type": "json_schema", "json_schema": {"name": "response", "schema": self._schema}}
            if self._schema is not None
            else None
        )
        slots, requests = [], []
        for row in rows:
            prompt = self._template.render({**OPTIONAL_COLUMNS, **row})
            system = self.system_for(row)
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            for sample in range(self.n):
                slots.append((row, sample, prompt))
                requests.append(
                    ChatRequest(tuple(messages), dict(self.teacher.params), sample, response_format)
                )
        return slots, requests

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        assert ctx.dispatcher is not None
        slots, requests = self._requests(rows)
        ctx.progress.set_total(len(requests))
        if self._schema is None:
            outcomes = await ctx.dispatcher.run(requests, lambda _, copies: ctx.progress.advance(copies))
            answers = [Parsed(o.completion.text if o.completion else None, o, o.error) for o in outcomes]
        else:
            assert self._reask_template is not None
            answers = await ask_parsed(
                ctx.dispatcher,
                requests,
                self._check_schema,
                self._reask_template,
                reask=self.reask,
                progress=ctx.progress,
                extra={"schema": json.dumps(self._schema)},
            )
        result = StepResult([])
        for (row, sample, prompt), answer in zip(slots, answers, strict=True):
            out_id = row["id"] if self.n == 1 else f"{row['id']}-{sample}"
            completion = answer.outcome.completion
            if not answer.ok:
                reason = "invalid_json" if completion is not None else answer.reason
                result.failures.append(
                    Failure(out_id, reason, answer.outcome.attempts, answer.error, row, raw=answer.raw)
                )
                continue
            assert completion is not None
            if completion.finish_reason == "content_filter" and not completion.text.strip():
                result.failures.append(
                    Failure(
                        out_id,
                        "content_filter",
                        answer.outcome.attempts,
                        "the provider's content filter withheld the answer",
                        row,
                    )
                )
                continue
            labelled = {**row, "id": out_id, "prompt": prompt}
            if system := self.system_for(row):
                labelled["system"] = system
            if self.n > 1:
                labelled["sample"] = sample
            labelled["response"] = completion.text
            labelled["finish_reason"] = completion.finish_reason
            result.rows.append(labelled)
        return result

    def system_for(self, row: Row) -> str | None:
        """`system`, or one of `systems` chosen by a hash of the row's id (the same on every run)."""
        if not self.systems:
            return self.system
        digest = hashlib.sha256(str(row.get("id")).encode("utf-8")).digest()
        return self.systems[int.from_bytes(digest[:8], "big") % len(self.systems)]

    def _check_schema(self, text: str) -> str:
        """The answer itself if it is JSON matching the schema; else a ParseError saying why."""
        try:
            value = json.loads(strip_code_fence(text))
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON ({exc.msg})") from None
        try:
            jsonschema.validate(value, self._schema)
        except jsonschema.ValidationError as exc:
            raise ParseError(f"does not match the schema: {exc.message}") from None
        return text

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        assert self.teacher is not None
        slots, requests = self._requests(rows)
        keys = [request_key(self.teacher, r) for r in requests]
        cached = cache.get_many(set(keys)) if cache else {}
        budget = self.teacher.params.get("max_tokens") or self.teacher.params.get("max_new_tokens")
        plan = StepPlan(
            requests=len(requests),
            cached=sum(1 for key in keys if key in cached),
            prompt_tokens=sum(sum(len(m["content"]) for m in r.messages) // 4 for r in requests),
            max_completion_tokens=len(requests) * int(budget or ASSUMED_MAX_TOKENS),
            sample_prompts=[list(r.messages) for r in requests[:SAMPLE_PROMPTS_SHOWN]],
        )
        # Cached answers stand in for themselves, so later steps' requests (a judge of these
        # answers) can be found in the cache too.
        placeholder = []
        for (row, sample, prompt), key in zip(slots, keys, strict=True):
            answer = cached.get(key)
            placeholder.append(
                {
                    **row,
                    "id": row.get("id") if self.n == 1 else f"{row.get('id')}-{sample}",
                    "prompt": prompt,
                    "response": answer.text if answer is not None else "",
                    "finish_reason": answer.finish_reason if answer is not None else None,
                }
            )
        return placeholder, plan


def _load_schema(value: dict[str, Any] | str, ctx: CheckContext) -> dict[str, Any]:
    if isinstance(value, str):
        # Like every recipe path: relative to the recipe's folder (then the shipped files), ~ expanded.
        path = resolve_path(value, ctx.recipe_dir)
        if path is None:
            tried = ", ".join(str(p) for p in candidate_paths(value, ctx.recipe_dir))
            raise RecipeError(f"JSON schema file not found (tried {tried})", where=ctx.at("schema"))
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecipeError(f"cannot read the JSON schema {path}: {exc}", where=ctx.at("schema")) from None
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        raise RecipeError(f"not a valid JSON schema: {exc.message}", where=ctx.at("schema")) from None
    return value
