"""synthkd from Python: load or build a recipe, run it on a Dataset or a file, get a Dataset back.

    import synthkd

    ds = synthkd.run("recipes/quickstart.yaml", overrides=["steps.0.limit=8"], train=False)
    ds = synthkd.run({"name": "qa", "teacher": {...}, "steps": [{"step": "label"}]}, dataset=my_dataset)
    answered = synthkd.run_step({"step": "label", "system": "Be brief."}, my_dataset, teacher={...})

A run here is the run `synthkd run` makes: the same request cache (so a rerun resumes), the
same run folder (dataset/, data.jsonl, failures.jsonl, manifest.json, the card and the report),
the same progress bars. It works inside a running event loop (Jupyter), and `run_async` is
there to be awaited. The command line is a thin layer over the functions below.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from synthkd.engines import engine_for
from synthkd.errors import RecipeError, RunIncompleteError
from synthkd.pipeline import (
    ProgressFactory,
    RunResult,
    check,
    execute,
    hold_output,
    preflight,
)
from synthkd.recipe import LoadedRecipe, Recipe, recipe_from_data, recipe_teachers
from synthkd.recipe import load_recipe as load_recipe_file
from synthkd.reporter import Reporter
from synthkd.steps.base import Failure, Row, Step
from synthkd.steps.load import assign_ids, flatten_self_instruct
from synthkd.teachers.config import TeacherConfig

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from synthkd.loop.run import LoopResult
    from synthkd.publish.push import PushResult
    from synthkd.training.run import TrainResult

RecipeSource = str | Path | Mapping[str, Any] | Recipe | LoadedRecipe
# Rows to start from: a datasets.Dataset, a list of dicts, a pandas DataFrame, or a data file or
# save_to_disk folder (.jsonl, .json, .csv, .parquet) read like the `load` step reads it.
DataSource = Any

T = TypeVar("T")


def load_recipe(
    recipe: RecipeSource, *, overrides: list[str] | None = None, base_dir: str | Path | None = None
) -> LoadedRecipe:
    """A validated recipe from a YAML path (or a shipped one: `recipes/quickstart.yaml`), a
    mapping of the YAML's keys, or a `Recipe`; `overrides` are the command line's `--set`
    (`"steps.0.limit=8"`). A recipe given in Python resolves relative paths from `base_dir`
    (default: the working directory). Bad input raises `RecipeError` naming the key."""
    if isinstance(recipe, LoadedRecipe):
        if overrides:
            raise RecipeError(
                "overrides apply when a recipe is loaded; pass the recipe's path or mapping",
                where="overrides=",
            )
        return recipe
    if isinstance(recipe, (str, Path)):
        return load_recipe_file(recipe, overrides)
    if isinstance(recipe, (Mapping, Recipe)):
        return recipe_from_data(recipe if isinstance(recipe, Recipe) else dict(recipe), base_dir, overrides)
    raise RecipeError(
        f"a recipe is a YAML path, a mapping or a synthkd.Recipe, not {type(recipe).__name__}",
        where="synthkd.load_recipe",
    )


def rows_of(dataset: DataSource) -> list[Row]:
    """The rows a run starts from, each with a stable `id` (its own, else a hash of its content)."""
    if isinstance(dataset, (str, Path)):
        from synthkd.data_files import read_rows

        path = Path(dataset).expanduser()
        if not path.exists():
            raise RecipeError("no such file or folder", where=f"dataset={str(dataset)!r}")
        rows = flatten_self_instruct(read_rows(path, "train"))
    elif type(dataset).__name__ == "DatasetDict":
        raise RecipeError(
            f"a DatasetDict holds several splits ({', '.join(dataset)}); pass one, e.g. dataset['train']",
            where="dataset=",
        )
    elif hasattr(dataset, "to_dict") and hasattr(dataset, "columns"):  # a pandas DataFrame
        rows = dataset.to_dict(orient="records")
    elif isinstance(dataset, list) or hasattr(dataset, "features"):  # a list of dicts or a Dataset
        rows = []
        for index, row in enumerate(dataset):
            if not isinstance(row, Mapping):
                raise RecipeError(
                    f"row {index} is a {type(row).__name__}; every row must be a mapping of column: value",
                    where="dataset=",
                )
            rows.append(dict(row))
    else:
        raise RecipeError(
            f"expected a datasets.Dataset, a list of dicts, a DataFrame or a data file, not "
            f"{type(dataset).__name__}",
            where="dataset=",
        )
    if not rows:
        raise RecipeError("the dataset has no rows: nothing to run on", where="dataset=")
    return assign_ids(rows)


@dataclass
class RunOutcome:
    """Everything a run made: the rows and the run folder, the published files, the student."""

    result: RunResult
    written: list[Path] = field(default_factory=list)
    pushed: PushResult | None = None
    trained: TrainResult | LoopResult | None = None


@dataclass(frozen=True)
class RunSettings:
    """How a run is made beyond its recipe and rows: what the command line's flags set."""

    out_dir: Path | None = None  # default: the recipe's output.dir
    use_cache: bool = True
    progress: ProgressFactory | None = None
    publish: bool = True  # the card, the report, the push
    train: bool = True  # the recipe's train: section, if it has one
    reporter: Reporter = field(default_factory=Reporter)


def run_loaded(
    loaded: LoadedRecipe, rows: list[Row] | None = None, settings: RunSettings | None = None
) -> RunOutcome:
    """Run a checked and preflighted recipe: its steps (from `rows`, if given), then the card,
    report and push, then the student (see `RunSettings`). The run folder is held against other
    runs from the first request to the student."""
    settings = settings or RunSettings()
    with hold_output(loaded, settings.out_dir):
        result = in_own_event_loop(lambda: _generate(loaded, rows, settings))
        return _after_generating(loaded, result, settings)


async def run_loaded_async(
    loaded: LoadedRecipe, rows: list[Row] | None = None, settings: RunSettings | None = None
) -> RunOutcome:
    """`run_loaded` in the caller's event loop: the requests are sent from it (cancelling the
    awaiting task stops them); the card, report and student, which do not wait on the network,
    are made in a worker thread."""
    settings = settings or RunSettings()
    with hold_output(loaded, settings.out_dir):
        result = await _generate(loaded, rows, settings)
        return await asyncio.to_thread(_after_generating, loaded, result, settings)


async def _generate(loaded: LoadedRecipe, rows: list[Row] | None, settings: RunSettings) -> RunResult:
    engine = engine_for(loaded.recipe.engine, use_cache=settings.use_cache)
    try:
        result = await execute(
            loaded,
            use_cache=settings.use_cache,
            progress=settings.progress,
            out_dir=settings.out_dir,
            rows=rows,
            engine=engine,
        )
    except RunIncompleteError as incomplete:
        settings.reporter.generated(incomplete.result)
        raise
    finally:
        if engine is not None:
            engine.close()
    settings.reporter.generated(result)
    return result


def _after_generating(loaded: LoadedRecipe, result: RunResult, settings: RunSettings) -> RunOutcome:
    reporter = settings.reporter
    outcome = RunOutcome(result)
    if settings.publish:
        from synthkd.publish.finish import finishing_words

        output = loaded.recipe.output
        with reporter.publishing(finishing_words(output.report, output.hub)):
            outcome.written, outcome.pushed = publish_run(loaded, result.out_dir, reporter.warn)
        reporter.published(outcome.written, outcome.pushed)
    if settings.train and loaded.recipe.train is not None:
        reporter.training(loaded, result.out_dir / "dataset")
        outcome.trained = train_run(loaded, result.out_dir, reporter)
        reporter.trained(outcome.trained)
    return outcome


def publish_run(
    loaded: LoadedRecipe, run_dir: Path, warn: Callable[[str], None] | None = None
) -> tuple[list[Path], PushResult | None]:
    """What follows a written dataset: recipe.yaml, the card, the report, and the push when the
    recipe has `output.hub`. Returns (files written, the push)."""
    from synthkd.publish.finish import finish_run, url_passwords

    templates = loaded.recipe.template_sources()
    passwords = url_passwords(use.config for use in recipe_teachers(loaded.recipe))
    output = loaded.recipe.output
    return finish_run(
        run_dir,
        templates,
        output.hub,
        passwords,
        warn or Reporter().warn,
        output.report,
        data_files=loaded.recipe.data_files(),
        map_encoder=output.report_encoder,
    )


def train_run(
    loaded: LoadedRecipe, run_dir: Path, reporter: Reporter | None = None
) -> TrainResult | LoopResult:
    """Train the recipe's student on a finished run's dataset (the recipe's `train:` section), or,
    with a `loop:` section, run its rounds (each one's line goes to `reporter.round_finished`)."""
    from synthkd.training.run import train_student

    if loaded.recipe.train is None:
        raise RecipeError("the recipe has no train: section", where=loaded.origin)
    recipe = loaded.recipe
    if recipe.loop is not None:
        from synthkd.loop.run import run_loop

        reporter = reporter or Reporter()
        return run_loop(loaded, run_dir, reporter.round_finished, reporter.training_bar)
    with (reporter or Reporter()).training_bar() as bar:
        return train_student(
            recipe.train,
            run_dir / "dataset",
            run_dir,
            recipe.seed,
            recipe.name,
            loaded.base_dir,
            progress=bar,
        )


def in_own_event_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from synchronous code: here with `asyncio.run`, or, where this
    thread already runs an event loop (Jupyter, an async web app), in a thread of its own, so the
    caller's loop is not re-entered. Interrupting the wait (Ctrl-C, a kernel interrupt) cancels
    the run itself, so no request is sent after it; the answers so far are cached."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    loop = asyncio.new_event_loop()
    task: asyncio.Task[T] = loop.create_task(make())  # runs once the loop does
    outcome: dict[str, Any] = {}

    def run_there() -> None:
        try:
            outcome["value"] = loop.run_until_complete(task)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # The caller's context goes along: the run folder it holds is this run's (see output_lock).
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run_there,), name="synthkd-run")
    worker.start()
    try:
        worker.join()
    except BaseException:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run ended anyway
            loop.call_soon_threadsafe(task.cancel)
        worker.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def run(
    recipe: RecipeSource,
    dataset: DataSource = None,
    *,
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    publish: bool = True,
    train: bool = False,
    held_out: float | None = None,
    base_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> Dataset | DatasetDict:
    """Run a recipe and return the dataset it wrote (`<output_dir>/dataset`, by default the
    recipe's `output.dir` or runs/<name>), loaded into memory: the run folder can be rerun or
    removed without touching it.

    `dataset` gives rows the first step starts from (before any rows the recipe's own `load`
    step adds). `held_out` (a share, e.g. 0.05) returns a DatasetDict with `train` and `test`
    splits, split as `train:` splits with `eval_split` (seeded by the recipe's seed). `train=True`
    also trains the recipe's student. `reporter` hears of each stage (see `Reporter`).
    Raises `RecipeError` for bad input (before any request), `RunIncompleteError` when too many
    requests failed (the previous outputs stay as they were)."""
    loaded, rows = _prepared(recipe, dataset, overrides, base_dir, train, held_out)
    with _progress(progress) as factory:
        settings = _settings(output_dir, use_cache, factory, publish, train, reporter)
        outcome = run_loaded(loaded, rows, settings)
    return _dataset_of(outcome.result.out_dir, held_out, loaded.recipe.seed)


async def run_async(
    recipe: RecipeSource,
    dataset: DataSource = None,
    *,
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    publish: bool = True,
    train: bool = False,
    held_out: float | None = None,
    base_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> Dataset | DatasetDict:
    """`run` for async code: the requests are sent from the caller's event loop, and cancelling
    the awaiting task stops them (the answers so far are cached)."""
    loaded, rows = _prepared(recipe, dataset, overrides, base_dir, train, held_out)
    with _progress(progress) as factory:
        settings = _settings(output_dir, use_cache, factory, publish, train, reporter)
        outcome = await run_loaded_async(loaded, rows, settings)
    return await asyncio.to_thread(_dataset_of, outcome.result.out_dir, held_out, loaded.recipe.seed)


def run_step(
    step: Step | Mapping[str, Any],
    dataset: DataSource,
    *,
    teacher: Mapping[str, Any] | TeacherConfig | None = None,
    use_cache: bool = True,
    progress: bool = True,
    base_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> Dataset:
    """Run one step on a dataset and return its rows as a `datasets.Dataset`: a step object
    (`LabelStep(system="Be brief.")`) or the mapping a recipe would hold (`{"step": "label"}`),
    sent to `teacher` (a teacher mapping or TeacherConfig; default the embedded model). Answers
    are cached like a recipe's; the run folder is a temporary one, gone when this returns.
    Rows the step could not make are left out, and the reporter is warned how many and why."""
    data: dict[str, Any] = {"name": f"{_step_name(step)}-step", "steps": [step], "output": {"format": "flat"}}
    if teacher is not None:
        data["teacher"] = teacher
    loaded, rows = _prepared(data, dataset, None, base_dir, False, None)
    reporter = reporter or Reporter()
    from synthkd.output import to_dataset

    with tempfile.TemporaryDirectory(prefix="synthkd-step-") as folder, _progress(progress) as factory:
        try:
            settings = _settings(Path(folder) / "run", use_cache, factory, False, False, reporter)
            outcome = run_loaded(loaded, rows, settings)
        except RunIncompleteError as incomplete:  # its folder is about to go: say why here
            failures = incomplete.result.failures
            raise RunIncompleteError(
                f"{incomplete.result.manifest.get('incomplete')}; {_reasons(failures)}. Answers received "
                "are cached: running it again sends only what is missing",
                incomplete.result,
            ) from None
        failures = outcome.result.failures
        if failures:
            reporter.warn(
                f"{_step_name(step)}: {len(failures)} of {len(rows)} rows failed ({_reasons(failures)})"
            )
        return to_dataset(outcome.result.rows)


def train(
    recipe: RecipeSource, run_dir: str | Path | None = None, *, overrides: list[str] | None = None
) -> TrainResult:
    """Train the recipe's student on its finished run (`run_dir`, default the recipe's output
    folder), as `synthkd train` does. Returns the student's folder and before/after metrics."""
    loaded = load_recipe(recipe, overrides=overrides)
    if loaded.recipe.train is None:
        raise RecipeError("the recipe has no train: section", where=loaded.origin)
    preflight(loaded, data=False)
    folder = Path(run_dir) if run_dir is not None else None
    with hold_output(loaded, folder):
        return train_run(loaded, folder or loaded.recipe.output_dir())


def _prepared(
    recipe: RecipeSource,
    dataset: DataSource,
    overrides: list[str] | None,
    base_dir: str | Path | None,
    train: bool,
    held_out: float | None,
) -> tuple[LoadedRecipe, list[Row] | None]:
    """Everything checked before the first request: the recipe, the rows, the teachers."""
    if held_out is not None and not 0 < held_out < 1:
        raise RecipeError(f"a share between 0 and 1 (exclusive), not {held_out!r}", where="held_out=")
    loaded = load_recipe(recipe, overrides=overrides, base_dir=base_dir)
    rows = rows_of(dataset) if dataset is not None else None
    check(loaded, _columns(rows))
    preflight(loaded, training=train)
    return loaded, rows


def _settings(
    output_dir: str | Path | None,
    use_cache: bool,
    progress: ProgressFactory | None,
    publish: bool,
    train: bool,
    reporter: Reporter | None,
) -> RunSettings:
    folder = Path(output_dir) if output_dir is not None else None
    return RunSettings(folder, use_cache, progress, publish, train, reporter or Reporter())


def _step_name(step: Step | Mapping[str, Any]) -> str:
    name = step.step if isinstance(step, Step) else step.get("step") if isinstance(step, Mapping) else None
    if not isinstance(name, str):
        raise RecipeError("a step is a Step object or a mapping with a `step:` key", where="run_step")
    return name


def _reasons(failures: list[tuple[str, Failure]]) -> str:
    counts = Counter(failure.reason for _, failure in failures)
    return ", ".join(f"{reason} {count}" for reason, count in counts.most_common(3)) or "no failures"


def _columns(rows: list[Row] | None) -> set[str]:
    return set().union(*(row.keys() for row in rows)) if rows else set()


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[ProgressFactory | None]:
    """Step bars on stderr, as the command line draws them; off, nothing is drawn (and the
    libraries' own bars are left as the caller set them)."""
    if not show:
        yield None
        return
    from rich.console import Console

    from synthkd.progress import RichProgressFactory, quiet_library_progress_bars

    quiet_library_progress_bars()
    with RichProgressFactory(Console(stderr=True)) as factory:
        yield factory


def _dataset_of(run_dir: Path, held_out: float | None, seed: int) -> Dataset | DatasetDict:
    from datasets import load_from_disk

    # In memory: a later run replaces the folder, and `.map()` would write cache files into it.
    dataset = load_from_disk(str(run_dir / "dataset"), keep_in_memory=True)
    if held_out is None:
        return dataset
    return dataset.train_test_split(test_size=held_out, seed=seed)
