"""What every step is: a recipe section (a pydantic model) that knows how to check and run itself."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import PrivateAttr

from synthkd.cache import ResponseCache, request_key
from synthkd.config_base import StrictModel
from synthkd.dispatch.dispatcher import Dispatcher, Outcome
from synthkd.teachers.base import ChatRequest
from synthkd.teachers.config import TeacherConfig
from synthkd.templates import PromptTemplate, load_template

Row = dict[str, Any]
Columns = set[str] | None  # None: not known before running (e.g. a Hub dataset at validate time)


@dataclass
class CheckContext:
    """What a step needs to check itself: where the recipe lives and how to name a key in errors."""

    recipe_dir: Path
    at: Callable[[str], str]  # at("prompt") -> "recipe.yaml:14: steps.1.prompt"
    # teacher_at("backend") -> the step's own teacher key if it sets it, else the recipe's.
    teacher_at: Callable[..., str] = lambda *key: ".".join(("teacher", *key))


class Progress:
    """Receives a step's progress; the CLI shows it, tests and the library may ignore it."""

    def set_total(self, total: int) -> None: ...

    def advance(self, rows: int = 1) -> None: ...


@dataclass
class StepContext:
    """What a running step may use."""

    recipe_dir: Path
    seed: int
    dispatcher: Dispatcher | None
    progress: Progress = field(default_factory=Progress)
    # A dispatcher for another teacher (e.g. a judge); the pipeline shares loaded models between them.
    dispatcher_for: Callable[[TeacherConfig], Dispatcher] | None = None


@dataclass
class Failure:
    """A row a step could not produce; written to failures.jsonl, never dropped silently."""

    id: str
    reason: str
    attempts: int = 0
    error: str | None = None
    row: Row | None = None
    raw: str | None = None  # the teacher's text when it could not be parsed

    @classmethod
    def from_outcome(cls, row: Row, outcome: Outcome) -> Failure:
        return cls(row["id"], outcome.reason or "request_failed", outcome.attempts, outcome.error, row)


@dataclass
class StepResult:
    rows: list[Row]
    failures: list[Failure] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # reason -> rows removed on purpose
    details: dict[str, Any] = field(default_factory=dict)  # step-specific facts for the manifest


@dataclass
class StepPlan:
    """A dry run's account of a step: what it would send, and what that may cost.

    `count` says how far to trust `requests`: "exact" (counted from the rows, as label does),
    "estimate" (a data-dependent step: the count assumes every answer parses and nothing is
    eliminated; `requests_max` bounds it where re-asks or more rounds can add requests), or
    "unknown" (a teacher step that cannot say; the dry run shows "not estimated").
    """

    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int = 0
    sample_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    count: str = "exact"
    requests_max: int | None = None


ASSUMED_MAX_TOKENS = 512  # for dry-run estimates when the recipe sets no max_tokens
SAMPLE_PROMPTS_SHOWN = 3


def estimate_plan(
    teacher: TeacherConfig,
    requests: int,
    known: list[ChatRequest],
    cache: ResponseCache | None,
    *,
    requests_max: int | None = None,
    shown: bool = True,
) -> StepPlan:
    """The plan of a data-dependent step: `requests` expected in all, of which `known` can be
    rendered now (looked up in the cache; their mean length stands for every request's)."""
    keys = [request_key(teacher, request) for request in known]
    cached = cache.get_many(set(keys)) if cache is not None and keys else {}
    lengths = [sum(len(m.get("content") or "") for m in r.messages) // 4 for r in known]
    budget = teacher.params.get("max_tokens") or teacher.params.get("max_new_tokens") or ASSUMED_MAX_TOKENS
    return StepPlan(
        requests=requests,
        cached=sum(1 for key in keys if key in cached),
        prompt_tokens=round(sum(lengths) / len(lengths) * requests) if lengths else 0,
        max_completion_tokens=requests * int(budget),
        sample_prompts=[list(r.messages) for r in known[:SAMPLE_PROMPTS_SHOWN]] if shown else [],
        count="estimate",
        requests_max=requests_max if requests_max != requests else None,
    )


class Step(StrictModel):
    """Base of every step. Subclasses set `step: Literal[...]` and implement check and run."""

    step: str
    uses_teacher: ClassVar[bool] = False
    _templates: dict[str, PromptTemplate] = PrivateAttr(default_factory=dict)  # by the key naming each

    def step_teacher(self) -> TeacherConfig | None:
        """The teacher this step talks to (its own override or the recipe's), if it needs one."""
        return getattr(self, "teacher", None)

    def teacher_fields(self) -> dict[str, TeacherConfig]:
        """Every teacher this step holds (`teacher`, `judge_teacher`, ...), by field name.

        Teacher sections may carry secrets (a base_url with user:password), so provenance and the
        manifest treat all of them alike, whatever the field is called.
        """
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name, None), TeacherConfig)
        }

    def used_teachers(self) -> list[TeacherConfig]:
        """Every teacher this step may send requests to: its own first, then any other (a judge)."""
        own = self.step_teacher()
        others = [config for config in self.teacher_fields().values() if config is not own]
        return ([own] if own is not None else []) + others

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        """Validate files, templates and needed columns; return the columns after this step."""
        return columns

    def load_templates(self, ctx: CheckContext, *keys: str) -> None:
        """Load the templates the step's keys name (recipe folder first, then the shipped ones)."""
        for key in keys:
            self._templates[key] = load_template(getattr(self, key), ctx.recipe_dir, ctx.at(key))

    def template_sources(self) -> dict[str, str]:
        """Prompt templates used, name -> source text (hashed into the manifest)."""
        return {getattr(self, key): template.source for key, template in self._templates.items()}

    def provenance(self) -> dict[str, str]:
        """What made a row: appended to the `provenance` list of every row this step produces."""
        teacher = self.step_teacher()
        sources = json.dumps(self.template_sources(), sort_keys=True)
        return {
            "step": self.step,
            "teacher": f"{teacher.backend}:{teacher.model}" if teacher else "",
            "generation_params": json.dumps(teacher.params if teacher else {}, sort_keys=True),
            "template_sha256": hashlib.sha256(sources.encode("utf-8")).hexdigest(),
            "step_params": json.dumps(
                self.model_dump(mode="json", by_alias=True, exclude=set(self.teacher_fields())),
                sort_keys=True,
            ),
        }

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        raise NotImplementedError

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """What a dry run reports, and rows standing for what the step would output. By default a
        step passes rows through; one with a teacher says its requests are not estimated."""
        return rows, StepPlan(count="unknown" if self.uses_teacher else "exact")


def require_columns(needed: set[str], columns: Columns, ctx: CheckContext, key: str, purpose: str) -> None:
    """Raise a RecipeError naming the columns a step needs but the data lacks."""
    if columns is None:
        return
    missing = sorted(needed - columns)
    if missing:
        from synthkd.errors import RecipeError

        raise RecipeError(
            f"{purpose} needs column(s) {', '.join(missing)}, but the rows at this step have only: "
            f"{', '.join(sorted(columns)) or '(none)'}",
            where=ctx.at(key),
        )
