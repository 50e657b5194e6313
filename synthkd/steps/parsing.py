"""Ask a teacher for something parseable; re-ask with the error shown; never crash on bad output."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import Field

from synthkd.dispatch.dispatcher import Dispatcher, Outcome
from synthkd.steps.base import Failure, Progress, Row
from synthkd.teachers.base import ChatRequest
from synthkd.templates import PromptTemplate


def reask_prompt_field() -> Any:
    """The `reask_prompt:` key of a step that re-asks through `ask_parsed`, documented once."""
    return Field(
        "prompts/reask.jinja",
        description="Jinja template of the re-ask after an answer that could not be parsed (shows the error)",
    )


class ParseError(ValueError):
    """The teacher's text is not what the step asked for; the message is shown in the re-ask."""


@dataclass
class Parsed:
    """The parsed value of one request, or why there is none (with the raw text, for failures.jsonl)."""

    value: Any
    outcome: Outcome
    error: str | None = None
    raw: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> str:
        if self.outcome.completion is None:
            return self.outcome.reason or "request_failed"
        return "unparseable"


async def ask_parsed(
    dispatcher: Dispatcher,
    requests: Sequence[ChatRequest],
    parse: Callable[[str], Any] | Sequence[Callable[[str], Any]],
    reask_template: PromptTemplate,
    *,
    reask: int = 1,
    progress: Progress | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Parsed]:
    """Send `requests`, parse each answer, and re-ask up to `reask` times where parsing failed.

    A re-ask continues the conversation: the teacher's answer, then `reask_template` rendered with
    `error` (the ParseError message) and `extra`. Answers are cached like any other request, so a
    resumed run takes the same path. `parse` may be a sequence, one parser per request.
    """
    parsers = list(parse) if isinstance(parse, Sequence) else [parse] * len(requests)
    on_result = (lambda _, copies: progress.advance(copies)) if progress is not None else None
    outcomes = await dispatcher.run(requests, on_result)
    results = [_parse(outcome, parser) for outcome, parser in zip(outcomes, parsers, strict=True)]
    conversations = [list(request.messages) for request in requests]
    for _ in range(reask):
        retry = [index for index, result in enumerate(results) if result.outcome.completion and not result.ok]
        if not retry:
            break
        follow_ups = []
        for index in retry:
            conversations[index] += [
                {"role": "assistant", "content": results[index].raw or ""},
                {
                    "role": "user",
                    "content": reask_template.render({"error": results[index].error, **(extra or {})}),
                },
            ]
            original = requests[index]
            follow_ups.append(
                ChatRequest(
                    tuple(conversations[index]), original.params, original.sample, original.response_format
                )
            )
        for index, outcome in zip(retry, await dispatcher.run(follow_ups), strict=True):
            # A copy: identical requests share one Outcome, and each row counts its own asks.
            asked = replace(outcome, attempts=outcome.attempts + results[index].outcome.attempts)
            results[index] = _parse(asked, parsers[index])
    return results


def failure_of(
    row: Row | None, answer: Parsed, *, row_id: str | None = None, reason: str | None = None
) -> Failure:
    """The failure of a row whose answer never parsed (or never came), with the teacher's last
    text for failures.jsonl. `reason` names a step's own cause (invalid_json) over `unparseable`.
    A request made for no input row (a generated task, a topic) passes `row=None` and its `row_id`."""
    cause = reason if reason is not None and answer.outcome.completion is not None else answer.reason
    failed_id = row_id if row_id is not None else row["id"] if row is not None else ""
    return Failure(failed_id, cause, answer.outcome.attempts, answer.error, row, raw=answer.raw)


def _parse(outcome: Outcome, parse: Callable[[str], Any]) -> Parsed:
    if outcome.completion is None:
        return Parsed(None, outcome, error=outcome.error or "request failed")
    text = outcome.completion.text
    try:
        return Parsed(parse(text), outcome, raw=text)
    except ParseError as exc:
        return Parsed(None, outcome, error=str(exc), raw=text)


def strip_code_fence(text: str) -> str:
    """Models often wrap structured answers in ``` fences even when told not to; accept that."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped.strip()


_NUMBERED = re.compile(r"^\W*(?:task\s*)?\d+\s*[:.)]\s*(?:\*\*)?\s*(.+?)\s*$", re.IGNORECASE)


def parse_numbered_list(text: str, what: str = "items") -> list[str]:
    """The items of a numbered list ("1. ...", "Task 9: ...", "**2)** ..."); a ParseError if none."""
    items = []
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match:
            item = match.group(1).strip().strip("*").strip()
            if item:
                items.append(item)
    if not items:
        raise ParseError(f"no numbered {what} found; write one per line, numbered")
    return items


def parse_yes_no(text: str) -> bool:
    """True for an answer that starts with Yes, False for No; a ParseError for anything else."""
    first = re.sub(r"[^a-z]", " ", text.strip().lower()).split()
    if first and first[0] in ("yes", "no"):
        return first[0] == "yes"
    raise ParseError("the answer must start with Yes or No")


# Parsers a recipe can name (label's `parser:` key): registered from Python with
# `synthkd.register_parser`, or by a package's `synthkd.parsers` entry point.
PARSERS: dict[str, Callable[[str], Any]] = {}


def register_parser(name: str, parse: Callable[[str], Any] | None = None) -> Any:
    """Let recipes name `parse`: it takes the teacher's answer and returns what goes into the row's
    `parsed` column (values of one JSON type, or mappings and lists), or raises ValueError
    (ParseError) saying what is wrong, which is shown to the teacher in a re-ask. Without `parse`,
    a decorator: `@register_parser("yes_no")`."""
    if not name or not isinstance(name, str):
        raise ValueError("a parser needs a non-empty name")
    if parse is None:
        return lambda function: register_parser(name, function)
    if not callable(parse):
        raise TypeError(f"parser {name!r}: {parse!r} is not callable")
    PARSERS[name] = parse
    return parse


def as_parse_error(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` with any ValueError it raises turned into a ParseError (so the teacher is re-asked);
    what else it raises is a bug in the parser and propagates."""

    def parse_or_explain(text: str) -> Any:
        try:
            return parse(text)
        except ParseError:
            raise
        except ValueError as exc:
            raise ParseError(str(exc) or type(exc).__name__) from None

    return parse_or_explain
