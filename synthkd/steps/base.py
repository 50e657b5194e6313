"""What every step is: a recipe section (a pydantic model) that knows how to check and run itself."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_args

from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache, request_key
from synthkd.config_base import StrictModel
from synthkd.curate.embeddings import Encoder
from synthkd.dispatch.dispatcher import Dispatcher, Outcome
from synthkd.errors import RecipeError
from synthkd.shipped import leaves_its_folder, resolve_path
from synthkd.teachers.base import ChatRequest, Completion, estimate_prompt_tokens, max_completion_tokens
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import teacher_label
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
    # A recipe downloaded from the Hub (`synthkd run hf://...`): what it names must stay in its
    # own repository's folder (or the shipped files), so a pushed recipe cannot read `~/.ssh` or
    # `/etc` and send it to a teacher. Paths the user gave with --set (`given`) are theirs.
    confined: bool = False
    given: frozenset[str] = frozenset()

    def find_file(self, named: str, key: str | None = None) -> Path | None:
        """The file or folder a recipe path names (recipe folder first, then the shipped ones),
        None if absent; a RecipeError if a recipe from the Hub names one outside its repository."""
        self.check_confined(named, self.at(key) if key else None)
        return resolve_path(named, self.recipe_dir)

    def check_confined(self, named: str, where: str | None) -> None:
        if self.confined and named not in self.given and leaves_its_folder(named):
            raise RecipeError(
                f"{named!r}: a recipe from the Hub may name only files in its own repository "
                "(no absolute, ~ or .. paths); to use a file of yours, give it with --set",
                where=where,
            )


class Progress:
    """Receives a step's progress; the CLI shows it, tests and the library may ignore it."""

    def set_total(self, total: int) -> None: ...

    def advance(self, rows: int = 1) -> None: ...


@dataclass
class StepContext:
    """What a running step may use."""

    recipe_dir: Path
    seed: int
    step_dispatcher: Dispatcher | None  # to the step's own teacher; None for a step without one
    progress: Progress = field(default_factory=Progress)
    # A dispatcher for another teacher (e.g. a judge); the pipeline shares loaded models between them.
    dispatcher_for: Callable[[TeacherConfig], Dispatcher] | None = None
    # Where sentence embeddings are encoded (`curate.embeddings.Encoder`); None: in this process.
    encode: Encoder | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        """The step's own teacher, behind the cache and the recipe's limits."""
        if self.step_dispatcher is None:
            raise RuntimeError("this step was run without a teacher: run teacher steps through the pipeline")
        return self.step_dispatcher

    def dispatcher_of(self, config: TeacherConfig | None) -> Dispatcher:
        """The dispatcher of another teacher the step holds (a judge), or its own when None."""
        if config is None or self.dispatcher_for is None:
            return self.dispatcher
        return self.dispatcher_for(config)


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
    def from_outcome(cls, row: Row | None, outcome: Outcome, *, row_id: str | None = None) -> Failure:
        """A request that got no answer (after its retries, or refused). A request made for no
        input row (Magpie's) passes `row=None` and its `row_id`."""
        reason = outcome.reason or "request_failed"
        failed_id = row_id if row_id is not None else row["id"] if row is not None else ""
        return cls(failed_id, reason, outcome.attempts, outcome.error, row)


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
    "unknown" (a teacher step that cannot say; the dry run shows "not estimated"). `rounds`: the
    sets of requests the step sends one after another, each waiting for the answers to the one
    before (a topic tree's levels, then its leaves); the dry run's time counts a round trip each.
    `read_tokens`: tokens a local teacher reads in forward passes that generate nothing (logits'
    scoring reads every conversation whole; they are its prompt tokens too), timed at the
    model's reading speed. `local_seconds_max`: the most seconds of work the step does
    itself, besides waiting for its teacher (code_check's sandboxed runs); the dry run adds it to
    the step's time. `time_note`: what the step's time assumes beyond the dry run's general
    assumptions, printed with them.
    """

    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int = 0
    sample_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    count: str = "exact"
    requests_max: int | None = None
    rounds: int = 1
    read_tokens: int = 0
    local_seconds_max: float = 0.0
    time_note: str = ""


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
    lengths = [prompt_tokens(request) for request in known]
    return StepPlan(
        requests=requests,
        cached=sum(1 for key in keys if key in cached),
        prompt_tokens=round(sum(lengths) / len(lengths) * requests) if lengths else 0,
        max_completion_tokens=requests * max_completion_tokens(teacher.params),
        sample_prompts=[list(r.messages) for r in known[:SAMPLE_PROMPTS_SHOWN]] if shown else [],
        count="estimate",
        requests_max=requests_max if requests_max != requests else None,
    )


def exact_plan(
    teacher: TeacherConfig, requests: list[ChatRequest], cache: ResponseCache | None
) -> tuple[StepPlan, list[Completion | None]]:
    """The plan of a step that knows every request in advance (label, classify), and each
    request's cached answer (None where there is none), in request order: they can stand in for
    themselves in the rows passed on."""
    keys = [request_key(teacher, request) for request in requests]
    cached = cache.get_many(set(keys)) if cache is not None and keys else {}
    answers = [cached.get(key) for key in keys]
    plan = StepPlan(
        requests=len(requests),
        cached=sum(1 for answer in answers if answer is not None),
        prompt_tokens=sum(prompt_tokens(request) for request in requests),
        max_completion_tokens=len(requests) * max_completion_tokens(teacher.params),
        sample_prompts=[list(r.messages) for r in requests[:SAMPLE_PROMPTS_SHOWN]],
    )
    return plan, answers


def prompt_tokens(request: ChatRequest) -> int:
    """A dry run's whole-token estimate of a prompt."""
    return int(estimate_prompt_tokens(request))


class Step(StrictModel):
    """Base of every step. Subclasses set `step: Literal[...]` and implement check and run."""

    step: str
    uses_teacher: ClassVar[bool] = False
    # Where the step sits in the survey's elicitation taxonomy (Xu et al., 2024): labeling,
    # expansion, curation, feature, feedback or self-knowledge; None for plumbing (load).
    taxonomy: ClassVar[str | None] = None
    # BibTeX of the method the step implements, cited by the dataset card of a run that used it;
    # None for a step that is plumbing or synthkd's own.
    citation: ClassVar[str | None] = None
    # Whether the step handles each row on its own: what it makes of a row depends on that row
    # alone, never on the others or their order. The run's last such steps take the rows a chunk
    # at a time, and each chunk is written as it is done (`synthkd.streaming`).
    row_wise: ClassVar[bool] = False

    @classmethod
    def type_name(cls) -> str:
        """The `step:` value that selects this class in a recipe."""
        return get_args(cls.model_fields["step"].annotation)[0]

    _given_teachers: dict[str, Any] | None = PrivateAttr(None)
    _templates: dict[str, PromptTemplate] = PrivateAttr(default_factory=dict)  # by the key naming each
    _template_files: dict[str, str] = PrivateAttr(default_factory=dict)  # key -> the file as named
    _data_files: dict[str, Path] = PrivateAttr(default_factory=dict)  # file as named -> where found

    @property
    def given_teachers(self) -> dict[str, Any] | None:
        """The teacher keys the step was given itself, before a recipe merged its teacher in (set
        by the Recipe that validated it; None for a step never in one)."""
        return self._given_teachers

    @given_teachers.setter
    def given_teachers(self, given: dict[str, Any]) -> None:
        self._given_teachers = given

    def step_teacher(self) -> TeacherConfig | None:
        """The teacher this step talks to (its own override or the recipe's), if it needs one."""
        return getattr(self, "teacher", None)

    @classmethod
    def teacher_keys(cls) -> list[str]:
        """This step's keys that hold a teacher section: `teacher` first, then any other
        (`judge_teacher`). The recipe loader merges each over the recipe's teacher."""
        keys = [
            name
            for name, info in cls.model_fields.items()
            if info.annotation is TeacherConfig or TeacherConfig in get_args(info.annotation)
        ]
        return sorted(keys, key=lambda key: key != "teacher")

    def teacher_fields(self) -> dict[str, TeacherConfig]:
        """Every teacher this step holds (`teacher`, `judge_teacher`, ...), by key, its own first.

        Teacher sections may carry secrets (a base_url with user:password), so provenance and the
        manifest treat all of them alike, whatever the key is called.
        """
        return {
            key: value
            for key in self.teacher_keys()
            if isinstance(value := getattr(self, key, None), TeacherConfig)
        }

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        """Validate files, templates and needed columns; return the columns after this step."""
        return columns

    def load_templates(self, ctx: CheckContext, *keys: str) -> None:
        """Load the templates the step's keys name (recipe folder first, then the shipped ones)."""
        for key in keys:
            self.load_template_file(key, getattr(self, key), ctx, ctx.at(key))

    def load_template_file(self, key: str, path: str, ctx: CheckContext, where: str) -> None:
        """Load a template no key names (a fixed prompt the step adds, like label's JSON re-ask)."""
        ctx.check_confined(path, where)
        self._templates[key] = load_template(path, ctx.recipe_dir, where)
        self._template_files[key] = path

    def template_sources(self) -> dict[str, str]:
        """Prompt templates used, file as named -> source text (hashed into the manifest and the
        provenance), with the templates they include, import or extend."""
        sources = {}
        for key, template in self._templates.items():
            sources.update(template.included_sources)
            sources[self._template_files[key]] = template.source
        return sources

    def local_file(self, named: str, ctx: CheckContext, key: str | None = None) -> Path | None:
        """The file or folder `key` names (`ctx.find_file`), remembered as data the recipe needs
        to rerun (a push uploads it beside the recipe); None if absent. A file that must not be
        published (an evaluation set) is found with `ctx.find_file` instead."""
        found = ctx.find_file(named, key)
        if found is not None and found.is_dir() and ctx.recipe_dir.resolve().is_relative_to(found.resolve()):
            # The run keeps what its steps read, and a push uploads it: not the recipe's own
            # folder, which holds the runs (and maybe .env) beside it.
            raise RecipeError(
                f"{named!r} is the folder holding the recipe; put the data in a folder of its own",
                where=ctx.at(key) if key else None,
            )
        if found is not None:
            self._data_files[named] = found
        return found

    def data_files(self) -> dict[str, Path]:
        """The data files and folders the step read (found by `local_file`), file as named -> path."""
        return dict(self._data_files)

    def provenance(self) -> dict[str, str]:
        """What made a row: appended to the `provenance` list of every row this step produces."""
        teacher = self.step_teacher()
        sources = json.dumps(self.template_sources(), sort_keys=True)
        return {
            "step": self.step,
            "teacher": teacher_label(teacher) if teacher else "",
            "generation_params": json.dumps(teacher.params if teacher else {}, sort_keys=True),
            "template_sha256": hashlib.sha256(sources.encode("utf-8")).hexdigest(),
            "step_params": json.dumps(
                self.model_dump(mode="json", by_alias=True, exclude=set(self.teacher_fields())),
                sort_keys=True,
            ),
        }

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        raise NotImplementedError

    def merge_details(self, so_far: dict[str, Any], chunk: dict[str, Any]) -> dict[str, Any]:
        """A row-wise step's manifest details over two chunks of rows. By default the later
        chunk's stand (details that describe the step, not its rows); a step whose details count
        rows adds them up."""
        return {**so_far, **chunk}

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """What a dry run reports, and rows standing for what the step would output. By default a
        step passes rows through; one with a teacher says its requests are not estimated."""
        return rows, StepPlan(count="unknown" if self.uses_teacher else "exact")


def is_template_key(name: str) -> bool:
    """Step keys that name a prompt template file: `prompt` and every `*_prompt`."""
    return name == "prompt" or name.endswith("_prompt")


class TeacherStep(Step):
    """Base of every step that sends requests to a teacher.

    It owns what they all share: the `teacher` key (merged over the recipe's by the loader), the
    loading of every template key (`prompt`, `*_prompt`) before the step's own checks, and the
    chat requests they send. A subclass writes `check_step` (its columns, files, options), `run`,
    and, where it can count its requests in advance, `plan`.
    """

    teacher: TeacherConfig | None = Field(None, description="overrides the recipe's teacher for this step")

    uses_teacher: ClassVar[bool] = True

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        self.load_templates(ctx, *self.template_keys())
        return self.check_step(columns, ctx)

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        """The step's own checks, with its templates loaded; return the columns after it."""
        return columns

    def template_keys(self) -> list[str]:
        """The keys whose templates this step renders; by default every template key it has."""
        # `None` means the step does without that template; an empty name is an error of its own
        # (loading it says "template not found"), not a template to skip.
        return [
            name
            for name in type(self).model_fields
            if is_template_key(name) and getattr(self, name) is not None
        ]

    def template(self, key: str) -> PromptTemplate:
        """A template the step loaded in `check`, by the key naming it."""
        try:
            return self._templates[key]
        except KeyError:
            raise RuntimeError(f"{self.step}: template {key!r} not loaded; check() the step first") from None

    @property
    def teacher_config(self) -> TeacherConfig:
        """The step's teacher, its own keys merged over the recipe's (set when the recipe loads)."""
        if self.teacher is None:
            raise RuntimeError(f"{self.step} has no teacher: load the step through its recipe")
        return self.teacher

    def chat(
        self,
        user: str,
        *,
        system: str | None = None,
        sample: int = 0,
        response_format: dict[str, Any] | None = None,
    ) -> ChatRequest:
        """One request to the step's teacher: an optional system prompt, then the user's message,
        with the teacher's params."""
        messages = ({"role": "system", "content": system},) if system else ()
        return ChatRequest(
            (*messages, {"role": "user", "content": user}),
            dict(self.teacher_config.params),
            sample,
            response_format,
        )


def require_columns(needed: set[str], columns: Columns, ctx: CheckContext, key: str, purpose: str) -> None:
    """Raise a RecipeError naming the columns a step needs but the data lacks."""
    if columns is None:
        return
    missing = sorted(needed - columns)
    if missing:
        raise RecipeError(
            f"{purpose} needs column(s) {', '.join(missing)}, but the rows at this step have only: "
            f"{', '.join(sorted(columns)) or '(none)'}",
            where=ctx.at(key),
        )
