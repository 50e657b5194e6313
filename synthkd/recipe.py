"""The recipe: a YAML file validated into pydantic models, with errors that point at a line."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, model_validator

from synthkd.config_base import StrictModel
from synthkd.errors import RecipeError
from synthkd.experiment.config import ExperimentConfig
from synthkd.loop.config import LoopConfig
from synthkd.overrides import apply_overrides
from synthkd.publish.config import HubConfig, HubLicense, HubTask
from synthkd.publish.hub_recipe import download_recipe, is_hub_recipe
from synthkd.shipped import find_recipe_file
from synthkd.steps import STEP_TYPES, AnyStep, Step, add_step_class
from synthkd.steps.parsing import register_parser
from synthkd.teachers.config import TeacherConfig, default_teacher
from synthkd.teachers.registry import BACKENDS
from synthkd.training.config import TrainConfig
from synthkd.yaml_source import KeyPath, format_path, line_of, load_yaml_with_lines

MAX_ERRORS_SHOWN = 5
# The name a recipe built in Python goes by in error messages (and the file its paths are relative to).
PYTHON_RECIPE = "<recipe>"


class OutputConfig(StrictModel):
    """Where the run's outputs go, in which format, and the dataset card's metadata."""

    dir: str | None = Field(
        None, description="run folder, relative to the working directory; default runs/<name>"
    )
    max_failure_ratio: float = Field(
        0.1,
        ge=0,
        le=1,
        description="the run fails (exit code 3, previous outputs kept) when a step loses a larger share "
        "of its rows to failed requests; a run with 0 rows out always fails",
    )
    report: Literal["basic", "full", "none"] = Field(
        "basic",
        description="report.html after the run: basic (seconds), full (adds the instruction map, which "
        "embeds every instruction: tens of seconds), none",
    )
    report_encoder: Literal["transformer", "static"] = Field(
        "transformer",
        description="the instruction map's encoder (report: full): transformer, the embedded MiniLM; "
        "static, the static encoder distilled from it (faster, finds fewer paraphrases: see dedup)",
    )
    format: Literal["messages", "flat"] = Field(
        "messages", description="messages: add a TRL conversational `messages` column; flat: columns only"
    )
    # Dataset card metadata (synthkd.publish.card); the license is never guessed.
    license: HubLicense | None = Field(
        None, description="the dataset's license, a Hub license id (apache-2.0, ...)"
    )
    language: list[str] | None = Field(None, description="ISO 639-1 codes of the rows' language, e.g. [en]")
    task_categories: list[HubTask] | None = Field(None, description="Hub task categories; default inferred")
    hub: HubConfig | None = Field(
        None, description="push the finished run to this Hub dataset repository (needs `license`)"
    )

    @model_validator(mode="after")
    def _hub_needs_license(self) -> OutputConfig:
        # Checked when the recipe is loaded: found at the push, it would fail a finished (paid) run.
        if self.hub is not None and self.license is None:
            raise ValueError(
                "output.hub is set but output.license is not: a dataset pushed without a license grants "
                "no rights to reuse it, so the push would be refused. Add output.license: a Hub "
                "license id (apache-2.0, mit, cc-by-4.0, cc-by-sa-4.0, cc-by-nc-4.0, ..., see "
                "huggingface.co/docs/hub/repositories-licenses) or `other`"
            )
        return self


class EngineConfig(StrictModel):
    """What runs the row-wise steps (label, filter, judge, logits): this process, or a Ray cluster
    (see `synthkd.engines.ray_engine`). `engine: ray` is short for `engine: {name: ray}`."""

    name: Literal["local", "ray"] = Field("local", description="local: this process; ray: a Ray cluster")
    address: str | None = Field(
        None, description="ray: a running cluster (auto, ray://host:10001); default: start a local one"
    )
    workers: int | None = Field(
        None, ge=1, description="ray: actors per run of row-wise steps; default: the cluster's CPUs (GPUs)"
    )
    shard_rows: int = Field(1000, ge=1, description="ray: rows per shard (the unit of retry and resume)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class Recipe(StrictModel):
    """A recipe: the teacher, the steps run in order, and what is done with their rows."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="names the run and its folder")
    seed: int = Field(42, description="seeds sampling wherever synthkd samples")
    teacher: TeacherConfig = Field(
        description="default teacher of every step (default: the embedded SmolLM2)"
    )
    steps: list[AnyStep] = Field(min_length=1, description="run in order")
    output: OutputConfig = Field(default_factory=OutputConfig, description="the run folder and the card")
    train: TrainConfig | None = Field(None, description="train a student on the run's dataset (TRL)")
    max_cost_usd: float | None = Field(
        None,
        gt=0,
        description="stop sending before the run's spend on its steps' teachers could pass this many USD",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="what runs the row-wise steps")
    loop: LoopConfig | None = Field(
        None,
        description="rounds of: the student answers, the teacher gives feedback, the student trains "
        "(with the train: section) on what that makes; run by synthkd run in place of one training",
    )
    experiment: ExperimentConfig | None = Field(
        None, description="synthkd experiment: train a student several ways on the run's rows and compare"
    )

    # Around validation: a recipe built from a dict or from objects gets its steps' teachers like
    # one read from YAML, and each step remembers the teacher keys it was given itself, so a step
    # taken into another recipe (or this one overridden) is merged with that recipe's teacher.
    @model_validator(mode="wrap")
    @classmethod
    def _merge_teachers(cls, data: Any, handler: Any) -> Any:
        recipe = handler(merge_step_teachers(data))
        given = data.get("steps") if isinstance(data, dict) else None
        if isinstance(given, list) and len(given) == len(recipe.steps):
            for step, as_given in zip(recipe.steps, given, strict=True):
                step.given_teachers = _own_teachers(as_given)
        return recipe

    def output_dir(self) -> Path:
        return Path(self.output.dir or f"runs/{self.name}")

    def template_sources(self) -> dict[str, str]:
        """Every prompt template the steps use, as named -> its text (the card shows them)."""
        templates: dict[str, str] = {}
        for step in self.steps:
            templates.update(step.template_sources())
        return templates

    def data_files(self) -> dict[str, Path]:
        """Every data file or folder the steps read (after `pipeline.check`), as named -> where
        found: with the templates, what a pushed recipe needs beside it to rerun."""
        files: dict[str, Path] = {}
        for step in self.steps:
            files.update(step.data_files())
        return files


@dataclass
class LoadedRecipe:
    """A validated recipe plus what is needed to point at its lines in error messages."""

    recipe: Recipe
    path: Path
    data: dict[str, Any]  # the raw mapping after --set overrides, before defaults
    lines: dict[KeyPath, int] = field(default_factory=dict)
    overridden: set[KeyPath] = field(default_factory=set)
    extras: set[str] = field(default_factory=set)  # pip extras its checks found it needs (the card says)
    from_hub: bool = False  # downloaded from hf://: the files it names must stay in its repository

    def given_values(self) -> frozenset[str]:
        """The strings given with --set (paths the user names, which a Hub recipe may not)."""
        found: set[str] = set()

        def collect(value: Any) -> None:
            if isinstance(value, str):
                found.add(value)
            elif isinstance(value, dict):
                for item in value.values():
                    collect(item)
            elif isinstance(value, list):
                for item in value:
                    collect(item)

        for key_path in self.overridden:
            value: Any = self.data
            for part in key_path:
                if isinstance(value, dict):
                    value = value.get(part)
                elif isinstance(value, list) and isinstance(part, int) and -len(value) <= part < len(value):
                    value = value[part]
                else:
                    value = None
            collect(value)
        return frozenset(found)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def origin(self) -> str:
        """The recipe as error messages name it: its file, or `<recipe>` for one built in Python."""
        return PYTHON_RECIPE if self.path.name == PYTHON_RECIPE else str(self.path)

    def at(self, *path: str | int) -> str:
        """Where a key is: 'recipe.yaml:12: steps.1.prompt', or '--set steps.1.prompt: steps.1.prompt'."""
        return f"{_where(self.path, self.lines, self.overridden, tuple(path))}: {format_path(tuple(path))}"

    def sha256(self) -> str:
        canonical = json.dumps(self.recipe.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TeacherUse:
    """One teacher section of a recipe, with the key that configures it: ("steps", 2, "teacher"),
    ("steps", 3, "judge_teacher"), ("train", "teacher") or ("train", "judge")."""

    key: KeyPath
    config: TeacherConfig

    @property
    def step_index(self) -> int | None:
        return self.key[1] if self.key[0] == "steps" else None  # type: ignore[return-value]


def recipe_teachers(recipe: Recipe, *, training: bool = True) -> list[TeacherUse]:
    """Every teacher a recipe may send requests to, in recipe order: each step's own, then its
    others (a judge), then (with `training`) `train.teacher` and `train.judge`.

    The one answer to "which teachers does this recipe use": validation, preflight, provenance,
    the manifest and the card all ask here, so none can miss a teacher another one checks.
    """
    uses = [
        TeacherUse(("steps", index, key), config)
        for index, step in enumerate(recipe.steps)
        for key, config in step.teacher_fields().items()
    ]
    if training and recipe.train is not None:
        for key in ("teacher", "judge"):
            config = getattr(recipe.train, key)
            if config is not None:
                uses.append(TeacherUse(("train", key), config))
        reward = recipe.train.reward
        if reward is not None and reward.judge is not None:
            uses.append(TeacherUse(("train", "reward", "judge"), reward.judge))
    if training and recipe.experiment is not None and recipe.experiment.judge is not None:
        uses.append(TeacherUse(("experiment", "judge"), recipe.experiment.judge))
    return uses


def find_recipe(path: str | Path) -> Path:
    """A recipe on the Hub (`hf://datasets/<repo>/recipe.yaml`, downloaded with the files beside
    it), else a recipe file's path as given, else a shipped recipe's name (`shipped.find_recipe_file`)."""
    if is_hub_recipe(path):
        return download_recipe(str(path))
    return find_recipe_file(path)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> LoadedRecipe:
    """Read, override and validate a recipe. Raises RecipeError with file, line and key."""
    recipe_path = find_recipe(path)
    data, lines = load_yaml_with_lines(recipe_path)
    if not isinstance(data, dict):
        raise RecipeError(
            "a recipe must be a mapping with name, teacher, steps and output", where=str(recipe_path)
        )
    loaded = _validated(data, recipe_path, lines, overrides or [])
    loaded.from_hub = is_hub_recipe(path)
    return loaded


def recipe_from_data(
    data: dict[str, Any] | Recipe, base_dir: str | Path | None = None, overrides: list[str] | None = None
) -> LoadedRecipe:
    """A recipe built in Python, as a mapping of the YAML's keys (steps and teachers may be
    objects: `LabelStep(...)`, `TeacherConfig(...)`) or a `Recipe`, validated like a file. A step
    object of a class recipes cannot name yet is registered. Relative paths in it (data files,
    templates) are taken from `base_dir`, by default the working directory; errors name the key,
    prefixed with `<recipe>`."""
    if isinstance(data, Recipe):
        data = {key: getattr(data, key) for key in data.model_fields_set}
    if not isinstance(data, dict):
        raise RecipeError(
            f"a recipe is a mapping with name, teacher, steps and output, not {type(data).__name__}",
            where=PYTHON_RECIPE,
        )
    steps = data.get("steps")
    for index, step in enumerate(steps if isinstance(steps, list) else []):
        known = STEP_TYPES.get(step.step) if isinstance(step, Step) else None
        if isinstance(step, Step) and known is None:
            register_step(type(step))
        elif isinstance(step, Step) and known is not type(step):
            raise RecipeError(
                f"this {type(step).__name__} object was made from another class than the step "
                f"{step.step!r} recipes use now ({known.__module__}.{known.__qualname__}; a notebook "
                "cell defining it ran again?): make the object again",
                where=f"{PYTHON_RECIPE}: steps.{index}",
            )
    plain = {key: _as_mapping(value) for key, value in data.items()}
    if isinstance(steps, list):
        plain["steps"] = [_as_mapping(step) for step in steps]
    path = Path(base_dir or Path.cwd()).resolve() / PYTHON_RECIPE
    return _validated(copy.deepcopy(plain), path, {}, overrides or [])


def _validated(data: dict[str, Any], path: Path, lines: dict, overrides: list[str]) -> LoadedRecipe:
    load_plugins()
    apply_overrides(data, overrides)
    overridden = {tuple(_parse_key(o.partition("=")[0])) for o in overrides}
    prepared = _prepare(copy.deepcopy(data), path, lines, overridden)
    try:
        recipe = Recipe.model_validate(prepared)
    except ValidationError as exc:
        raise RecipeError(_describe(exc, prepared, path, lines, overridden)) from None
    return LoadedRecipe(recipe, path, data, lines, overridden)


def register_step(step_class: type[Step]) -> type[Step]:
    """Let recipes name a step class defined outside synthkd (by its `step: Literal[...]` value).
    Usable as a class decorator; a package can do the same through a `synthkd.steps` entry point."""
    add_step_class(step_class)
    Recipe.model_rebuild(force=True)
    return step_class


ENTRY_POINT_GROUPS = {"synthkd.steps": "step", "synthkd.parsers": "parser"}
_plugins_loaded = False


def load_plugins() -> None:
    """Register the steps and parsers that installed packages offer through the `synthkd.steps`
    and `synthkd.parsers` entry point groups; once per process, before the first recipe loads.
    A step's entry point names its class; a parser's a function, registered under the entry
    point's name. A plugin that cannot be loaded stops every recipe with one line naming it and
    its package (a recipe could silently miss the step it meant to use otherwise)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    from importlib.metadata import entry_points

    try:
        for group in ENTRY_POINT_GROUPS:
            for entry in entry_points(group=group):
                where = f"entry point {group}: {entry.name}"
                package = entry.dist.name if entry.dist else "?"
                try:
                    loaded = entry.load()
                except Exception as exc:
                    raise RecipeError(
                        f"cannot load {entry.value} ({type(exc).__name__}: {exc}); fix or uninstall the "
                        f"package {package} that declares it",
                        where=where,
                    ) from None
                try:
                    if group == "synthkd.steps":
                        add_step_class(loaded)
                    else:
                        register_parser(entry.name, loaded)
                except (RecipeError, TypeError, ValueError) as exc:
                    raise RecipeError(f"{exc} (package {package})", where=where) from None
        _plugins_loaded = True
    finally:
        Recipe.model_rebuild(force=True)  # with whatever was added, also when a later one failed


def _parse_key(key: str) -> list[str | int]:
    return [int(part) if part.lstrip("-").isdigit() else part for part in key.strip().split(".")]


def _prepare(data: dict[str, Any], path: Path, lines: dict, overridden: set) -> dict[str, Any]:
    """Check that every step names a known step, pointing at its line (pydantic's own message for
    an unknown tag would not list the valid ones)."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        return data  # pydantic reports the missing or mistyped list
    for index, step in enumerate(steps):
        where = f"{_where(path, lines, overridden, ('steps', index))}: steps.{index}"
        if not isinstance(step, dict) or "step" not in step:
            raise RecipeError(
                f"each step is a mapping with a `step:` key naming one of: {', '.join(STEP_TYPES)}",
                where=where,
            )
        name = step["step"]
        if not isinstance(name, str) or name not in STEP_TYPES:
            raise RecipeError(
                f"unknown step {name!r}{_did_you_mean(str(name), STEP_TYPES)}; "
                f"valid steps: {', '.join(STEP_TYPES)}",
                where=f"{_where(path, lines, overridden, ('steps', index, 'step'))}: steps.{index}.step",
            )
    return data


def merge_step_teachers(data: Any) -> Any:
    """The recipe's mapping with every teacher step's teacher (and judge) merged over the recipe's
    `teacher:` key by key (params one level deeper), and the embedded teacher where the recipe
    names none. Steps and teachers built in Python are taken as the keys they set."""
    if not isinstance(data, dict):
        return data  # pydantic reports what a recipe should be
    data = dict(data)
    teacher = _as_mapping(data.get("teacher"))
    if teacher is None:
        teacher = default_teacher()
    data["teacher"] = teacher
    steps = data.get("steps")
    if not isinstance(steps, list) or not isinstance(teacher, dict):
        return data
    merged_steps = []
    for step in steps:
        step = _as_mapping(step)
        step_class = STEP_TYPES.get(step.get("step")) if isinstance(step, dict) else None
        if step_class is not None and step_class.uses_teacher:
            step = dict(step)
            for key in step_class.teacher_keys():
                if key != "teacher" and not step.get(key):
                    continue  # another teacher (a judge) left out: the step uses its own
                own = _as_mapping(step.get(key)) or {}
                if isinstance(own, dict):
                    step[key] = _merged_teacher(teacher, own, data.get("seed"))
        merged_steps.append(step)
    data["steps"] = merged_steps
    return data


def _merged_teacher(teacher: dict[str, Any], own: dict[str, Any], seed: Any) -> dict[str, Any]:
    base_params, own_params = teacher.get("params") or {}, own.get("params") or {}
    if not isinstance(base_params, dict) or not isinstance(own_params, dict):
        return {**teacher, **own}  # params that are not a mapping: pydantic says so
    params = {**base_params, **own_params}
    merged = {**teacher, **own, "params": params}
    spec = BACKENDS.get(str(merged.get("backend", "")))
    if spec is not None and spec.seeded_from_recipe and "seed" not in params:
        # A local model samples from the recipe's seed; as a param it is in every cache key, so
        # a run with another seed does not replay this one's answers.
        params["seed"] = seed if seed is not None else Recipe.model_fields["seed"].default
    return merged


def _own_teachers(step: Any) -> dict[str, Any]:
    """The teacher keys a step was given itself, before the recipe's teacher was merged in."""
    if isinstance(step, Step):
        if step.given_teachers is not None:
            return step.given_teachers
        step = step.model_dump(mode="python", by_alias=True, exclude_unset=True)
    if not isinstance(step, dict):
        return {}
    step_class = STEP_TYPES.get(step.get("step"))
    keys = step_class.teacher_keys() if step_class is not None else []
    return {key: _as_mapping(step[key]) for key in keys if step.get(key) is not None}


def _as_mapping(value: Any) -> Any:
    """A model built in Python as the mapping of the keys it was given (its `step:` always; a
    step's teachers as it was given them, not as merged into an earlier recipe)."""
    if isinstance(value, Step):
        given = value.model_dump(mode="python", by_alias=True, exclude_unset=True)
        for key in value.teacher_keys():
            given.pop(key, None)
        return {"step": value.step, **given, **_own_teachers(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python", by_alias=True, exclude_unset=True)
    return value


def _describe(exc: ValidationError, data: dict, path: Path, lines: dict, overridden: set) -> str:
    messages = []
    for error in exc.errors()[:MAX_ERRORS_SHOWN]:
        loc = _strip_union_tags(error["loc"], data)
        key = str(loc[-1]) if loc else ""
        if error["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1], data)
            text = f"unknown key {key!r}{_did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
        elif error["type"] == "missing":
            text = "required key is missing"
        elif error["type"] == "value_error":
            # Our own validators' messages say what is wrong without echoing the value, which
            # may hold a secret (a password in a URL).
            text = error["msg"].removeprefix("Value error, ")
        elif error["type"] in ("dict_type", "model_type"):  # YAML calls a dict a mapping
            text = f"expected a mapping of key: value pairs (got {error.get('input')!r})"
        else:
            text = f"{error['msg']} (got {error.get('input')!r})"
        message = f"{_where(path, lines, overridden, loc)}: {format_path(loc)}: {text}"
        # A step's teacher is merged from the recipe's: a bad recipe key shows up in both; once is enough.
        if loc and "teacher" in loc and any(m.endswith(f"teacher.{key}: {text}") for m in messages):
            continue
        messages.append(message)
    more = len(exc.errors()) - MAX_ERRORS_SHOWN
    if more > 0:
        messages.append(f"... and {more} more")
    return "\n".join(messages)


def _strip_union_tags(loc: tuple, data: dict) -> KeyPath:
    """pydantic puts the discriminator value in error paths (steps.1.label.prompt); drop it."""
    parts = list(loc)
    if len(parts) >= 3 and parts[0] == "steps" and isinstance(parts[1], int) and parts[2] in STEP_TYPES:
        del parts[2]
    return tuple(parts)


def _valid_keys(loc: KeyPath, data: dict) -> list[str]:
    model = _model_at(loc, data)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(loc: KeyPath, data: dict) -> type[BaseModel] | None:
    """The pydantic model of the mapping at `loc` (a step's class by its `step:` value), found by
    following field types from the Recipe, so every section (a `judge_teacher:`, `train.judge:`,
    `output.hub:`) is known without a list of them."""
    model: type[BaseModel] = Recipe
    index = 0
    while index < len(loc):
        part = loc[index]
        if model is Recipe and part == "steps":
            steps = data.get("steps")
            position = loc[index + 1] if index + 1 < len(loc) else None
            if not isinstance(steps, list) or not isinstance(position, int) or position >= len(steps):
                return None
            step = steps[position]
            found = STEP_TYPES.get(step.get("step")) if isinstance(step, dict) else None
            index += 2
        else:
            fields = {info.alias or name: info for name, info in model.model_fields.items()}
            info = fields.get(str(part))
            found = _model_class(info.annotation) if info is not None else None
            index += 1
        if found is None:
            return None
        model = found
    return model


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The model class in a field's type (`TeacherConfig | None` -> TeacherConfig), if any."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _did_you_mean(word: str, candidates: Any) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _where(path: Path, lines: dict, overridden: set, loc: KeyPath) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in overridden:
            return f"--set {format_path(loc[:end])}"
    if path.name == PYTHON_RECIPE:
        return PYTHON_RECIPE
    line = line_of(lines, loc)
    return f"{path}:{line}" if line else str(path)
