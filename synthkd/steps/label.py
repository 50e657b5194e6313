"""`label`: the teacher answers each row's prompt (by default `instruction` + optional `input`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache
from synthkd.errors import RecipeError
from synthkd.gc_pause import cycle_collection_paused
from synthkd.shipped import not_found
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Failure,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    exact_plan,
    require_columns,
)
from synthkd.steps.parsing import (
    PARSERS,
    Parsed,
    ParseError,
    as_parse_error,
    ask_parsed,
    failure_of,
    strip_code_fence,
)
from synthkd.teachers.base import ChatRequest

# Columns the default template reads only if present; rows without them render as if empty.
OPTIONAL_COLUMNS = {"input": ""}


class LabelStep(TeacherStep):
    """Ask the teacher to answer every row; `n` samples each, optionally as validated JSON."""

    step: Literal["label"] = "label"
    taxonomy: ClassVar[str] = "labeling"  # the teacher answers given inputs
    row_wise: ClassVar[bool] = True
    prompt: str = Field("prompts/label.jinja", description="Jinja template of the user message")
    system: str | None = Field(None, description="system prompt sent with every request")
    systems: list[str] | None = Field(
        None, min_length=1, description="Orca-style: one of these system prompts per row, picked by its id"
    )
    n: int = Field(1, ge=1, description="samples per prompt")
    response_column: str = Field(
        "response",
        description="where the answer goes: another column (e.g. student_response) keeps the row's "
        "response, so a second model's answer can sit beside the teacher's",
    )
    output_schema: dict[str, Any] | str | None = Field(
        None, alias="schema", description="JSON schema (inline or a .json file) the response must match"
    )
    parser: str | None = Field(
        None,
        description="a parser registered with synthkd.register_parser (or a `synthkd.parsers` entry "
        "point): its value goes to `parsed`; an answer it rejects is asked again",
    )
    reask: int = Field(1, ge=0, description="times an answer that fails the schema or parser is asked again")
    reask_prompt: str = Field("prompts/reask.jinja", description="re-ask after the parser rejected an answer")

    _schema: dict[str, Any] | None = PrivateAttr(None)

    def template_sources(self) -> dict[str, str]:
        # A schema read from a file shapes every request as a template does.
        if isinstance(self.output_schema, str) and self._schema is not None:
            return super().template_sources() | {self.output_schema: json.dumps(self._schema, sort_keys=True)}
        return super().template_sources()

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        needed = set(self.template("prompt").variables) - set(OPTIONAL_COLUMNS)
        require_columns(needed, columns, ctx, "prompt", f"template {self.prompt}")
        if self.system and self.systems:
            raise RecipeError("set either system or systems, not both", where=ctx.at("systems"))
        if self.output_schema is not None:
            self._schema = _load_schema(self.output_schema, ctx, self.local_file)
            self.load_template_file("json_reask", "prompts/json_reask.jinja", ctx, ctx.at("schema"))
        if self.parser is not None and self.parser not in PARSERS:
            known = ", ".join(sorted(PARSERS)) or "none is registered"
            raise RecipeError(
                f"no parser named {self.parser!r} (registered: {known}); register one with "
                "synthkd.register_parser(name, function) before the recipe runs",
                where=ctx.at("parser"),
            )
        added = {"prompt", self.response_column, "finish_reason"} | (
            {"system"} if self.system or self.systems else set()
        )
        added |= {"parsed"} if self.parser is not None else set()
        return None if columns is None else columns | added | ({"sample"} if self.n > 1 else set())

    def _requests(self, rows: list[Row]) -> tuple[list[tuple[Row, int, str]], list[ChatRequest]]:
        response_format = (
            {"type": "json_schema", "json_schema": {"name": "response", "schema": self._schema}}
            if self._schema is not None
            else None
        )
        slots, requests = [], []
        template = self.template("prompt")
        with cycle_collection_paused():
            for row in rows:
                prompt = template.render({**OPTIONAL_COLUMNS, **row})
                for sample in range(self.n):
                    slots.append((row, sample, prompt))
                    requests.append(
                        self.chat(
                            prompt,
                            system=self.system_for(row),
                            sample=sample,
                            response_format=response_format,
                        )
                    )
        return slots, requests

    def _row_id(self, row: Row, sample: int) -> str:
        return row.get("id") if self.n == 1 else f"{row.get('id')}-{sample}"

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        slots, requests = self._requests(rows)
        ctx.progress.set_total(len(requests))
        if self._schema is None and self.parser is None:
            outcomes = await ctx.dispatcher.run(requests, lambda _, copies: ctx.progress.advance(copies))
            answers = [Parsed(o.completion.text if o.completion else None, o, o.error) for o in outcomes]
        else:
            answers = await ask_parsed(
                ctx.dispatcher,
                requests,
                self._parse,
                self.template("json_reask" if self._schema is not None else "reask_prompt"),
                reask=self.reask,
                progress=ctx.progress,
                extra={"schema": json.dumps(self._schema)} if self._schema is not None else None,
            )
        with cycle_collection_paused():
            return self._result(slots, answers)

    def _result(self, slots: list[tuple[Row, int, str]], answers: list[Parsed]) -> StepResult:
        """A row for every answer (a failure for every request that got none)."""
        result = StepResult([])
        for (row, sample, prompt), answer in zip(slots, answers, strict=True):
            out_id = self._row_id(row, sample)
            completion = answer.outcome.completion
            if not answer.ok or completion is None:
                # A schema's failure is invalid_json; a parser's, unparseable.
                reason = "invalid_json" if self._schema is not None else None
                result.failures.append(failure_of(row, answer, row_id=out_id, reason=reason))
                continue
            if completion.finish_reason == "content_filter" and not completion.text.strip():
                withheld = "the provider's content filter withheld the answer"
                result.failures.append(
                    Failure(out_id, "content_filter", answer.outcome.attempts, withheld, row)
                )
                continue
            labelled = {**row, "id": out_id, "prompt": prompt}
            if system := self.system_for(row):
                labelled["system"] = system
            if self.n > 1:
                labelled["sample"] = sample
            labelled[self.response_column] = completion.text
            labelled["finish_reason"] = completion.finish_reason
            if self.parser is not None:
                labelled["parsed"] = answer.value
            result.rows.append(labelled)
        return result

    def system_for(self, row: Row) -> str | None:
        """`system`, or one of `systems` chosen by a hash of the row's id (the same on every run)."""
        if not self.systems:
            return self.system
        digest = hashlib.sha256(str(row.get("id")).encode("utf-8")).digest()
        return self.systems[int.from_bytes(digest[:8], "big") % len(self.systems)]

    def _parse(self, text: str) -> Any:
        """The schema's check, then the named parser's value (the text itself without one)."""
        if self._schema is not None:
            self._check_schema(text)
        if self.parser is None:
            return text
        return as_parse_error(PARSERS[self.parser])(strip_code_fence(text) if self._schema else text)

    def template_keys(self) -> list[str]:
        # The re-ask after a parser's rejection is sent only when there is a parser.
        return [key for key in super().template_keys() if key != "reask_prompt" or self.parser is not None]

    def _check_schema(self, text: str) -> str:
        """The answer itself if it is JSON matching the schema; else a ParseError saying why."""
        import jsonschema  # only recipes with a schema need it; a run's start is faster without

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
        slots, requests = self._requests(rows)
        plan, answers = exact_plan(self.teacher_config, requests, cache)
        # Cached answers stand in for themselves, so later steps' requests (a judge of these
        # answers) can be found in the cache too.
        placeholder = []
        for (row, sample, prompt), answer in zip(slots, answers, strict=True):
            placeholder.append(
                {
                    **row,
                    "id": self._row_id(row, sample),
                    "prompt": prompt,
                    self.response_column: answer.text if answer is not None else "",
                    "finish_reason": answer.finish_reason if answer is not None else None,
                }
            )
        return placeholder, plan


def _load_schema(
    value: dict[str, Any] | str, ctx: CheckContext, find: Callable[[str, CheckContext, str], Path | None]
) -> dict[str, Any]:
    if isinstance(value, str):
        # Like every recipe path: relative to the recipe's folder (then the shipped files), ~ expanded.
        path = find(value, ctx, "schema")
        if path is None:
            raise RecipeError(not_found("JSON schema file", value, ctx.recipe_dir), where=ctx.at("schema"))
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecipeError(f"cannot read the JSON schema {path}: {exc}", where=ctx.at("schema")) from None
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        raise RecipeError(f"not a valid JSON schema: {exc.message}", where=ctx.at("schema")) from None
    return value
