"""Run a recipe: check it, run its steps in order through their teachers, write the outputs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from synthkd.cache import ResponseCache
from synthkd.curate.embeddings import Encoder
from synthkd.dispatch.dispatcher import Dispatcher, DispatchStats
from synthkd.dispatch.pool import TeacherPool, teacher_id
from synthkd.errors import RecipeError, RunIncompleteError
from synthkd.extras import check_installed, recording_extras
from synthkd.messages import for_trl, with_messages
from synthkd.output import RunWriter, import_writer_in_background
from synthkd.output_folder import check_output_folder, incomplete_folder, output_lock
from synthkd.preflight import check_teacher_environment, redact_url
from synthkd.pricing import price_for
from synthkd.recipe import LoadedRecipe, TeacherUse, recipe_teachers
from synthkd.redaction import register_secret_variables
from synthkd.steps.base import CheckContext, Columns, Failure, Progress, Row, Step, StepContext, StepPlan
from synthkd.streaming import (
    CHUNK_ROWS,
    ChunkedProgress,
    RowsOnDisk,
    chunks_of,
    row_wise_run_end,
    streamed_tail,
)
from synthkd.teachers import TeacherConfig
from synthkd.teachers.http_errors import is_transient_reason
from synthkd.teachers.registry import backend_spec, batch_refusal
from synthkd.version import __version__
from synthkd.yaml_source import KeyPath


def check(loaded: LoadedRecipe, columns: Columns | frozenset[str] = frozenset()) -> list[Columns]:
    """Validate every step against the columns the steps before it produce (the first against
    `columns`: those of the rows the run starts from), and the params of every teacher the
    recipe uses (training's included). Sends nothing."""
    with recording_extras() as needed:  # the same checks say which pip extras the card names
        flow = _check_steps(loaded, set(columns) if columns is not None else None)
    loaded.extras |= needed
    return flow


def _check_steps(loaded: LoadedRecipe, columns: Columns) -> list[Columns]:
    flow = []
    given = loaded.given_values() if loaded.from_hub else frozenset()
    for index, step in enumerate(loaded.recipe.steps):
        ctx = CheckContext(
            loaded.base_dir,
            lambda key, i=index: loaded.at("steps", i, key),
            lambda *key, i=index: teacher_where(loaded, ("steps", i, "teacher"), *key),
            confined=loaded.from_hub,
            given=given,
        )
        columns = step.check(columns, ctx)
        flow.append(columns)
    for use in recipe_teachers(loaded.recipe):
        _check_params(use.config, lambda *key, u=use: teacher_where(loaded, u.key, "params", *key))
    return flow


# Params synthkd itself decides: samples are separate cached requests, answers are read whole.
RESERVED_PARAMS = {"n": "use the step's `n:` (each sample is cached on its own)", "stream": "not supported"}


def _check_params(teacher: TeacherConfig, where: Callable[..., str]) -> None:
    for name, hint in RESERVED_PARAMS.items():
        if name in teacher.params:
            raise RecipeError(f"cannot be a teacher param: {hint}", where=where(name))
    backend_spec(teacher.backend).check_params(teacher, where)


def preflight(
    loaded: LoadedRecipe, *, network: bool = True, training: bool = True, data: bool = True
) -> None:
    """Before a run: keys present and (with `network`) endpoints reachable for every teacher used:
    the steps' (unless `data` is off: `synthkd train` on a finished run) and the `train:`
    section's (unless `training` is off: `--no-train`). A judge whose key is missing must stop
    the run before the data is generated, not after. Also the packages they need: a local
    backend's or training's pip extra missing is one line naming it (`MissingExtraError`)."""
    with recording_extras() as needed:
        if training and loaded.recipe.train is not None:
            loaded.recipe.train.check_installed(lambda *key: loaded.at("train", *key))
        seen = set()
        for use in recipe_teachers(loaded.recipe, training=training):
            if (use.step_index is not None and not data) or teacher_id(use.config) in seen:
                continue
            seen.add(teacher_id(use.config))
            check_teacher_environment(
                use.config, lambda key, u=use: teacher_where(loaded, u.key, key), network=network
            )
            _check_price_for_cap(loaded, use)
            _check_batch_support(loaded, use)
        if loaded.recipe.engine.name == "ray" and data:
            _check_ray_engine(loaded)
    loaded.extras |= needed


def _check_ray_engine(loaded: LoadedRecipe) -> None:
    """What `engine: ray` needs: its extra, and row-wise steps whose teachers keep no state that
    must span the actors: a spending cap counts the spend in one process, and batch jobs are
    already run by the provider."""
    where = loaded.at("engine", "name")
    check_installed(("ray",), "ray", "engine: ray", where)
    if loaded.recipe.max_cost_usd is not None:
        raise RecipeError(
            "engine: ray cannot hold a spending cap (max_cost_usd is counted in one process): remove "
            "max_cost_usd, or run with engine: local",
            where=loaded.at("max_cost_usd"),
        )
    for use in recipe_teachers(loaded.recipe, training=False):
        if not loaded.recipe.steps[use.step_index].row_wise:
            continue
        for key, why in (("max_cost_usd", "is counted in one process"), ("batch", "runs as provider jobs")):
            if getattr(use.config, key):
                raise RecipeError(
                    f"engine: ray cannot run this teacher ({key} {why}): remove {key}, or run with "
                    "engine: local",
                    where=teacher_where(loaded, use.key, key),
                )


def _check_batch_support(loaded: LoadedRecipe, use: TeacherUse) -> None:
    if use.config.batch and (refusal := batch_refusal(use.config)) is not None:
        raise RecipeError(refusal.message, where=teacher_where(loaded, use.key, *refusal.key))


def _check_price_for_cap(loaded: LoadedRecipe, use: TeacherUse) -> None:
    """A spending cap needs a price: a teacher under one whose model litellm's price map does not
    list must say its price, or the cap could not hold."""
    capped = use.config.max_cost_usd is not None or (
        use.step_index is not None and loaded.recipe.max_cost_usd is not None
    )
    if capped and price_for(use.config) is None:
        raise RecipeError(
            f"max_cost_usd needs this teacher's price and litellm's price map does not list model "
            f"{use.config.model!r}: set price: {{input_per_million: <USD>, output_per_million: <USD>}} "
            "in this teacher section",
            where=teacher_where(loaded, use.key, "model"),
        )


def register_recipe_secrets(loaded: LoadedRecipe) -> None:
    """Every key variable the recipe names, whatever it is called: their values are redacted from
    everything printed and written (see `synthkd.redaction`)."""
    names = [use.config.api_key_env for use in recipe_teachers(loaded.recipe)]
    hub = loaded.recipe.output.hub
    register_secret_variables([*names, hub.token_env if hub else None])


def teacher_where(loaded: LoadedRecipe, section: KeyPath, *key: str | int) -> str:
    """Where an error about a key of a teacher section should point. A step's section is merged
    over the recipe's `teacher:`, so it points at the step's own key if the step sets it, else
    at the recipe's; `train.teacher`/`train.judge` stand alone."""
    if section[0] != "steps":
        return loaded.at(*section, *key)
    index, field = section[1], section[2]
    step = loaded.data["steps"][index]
    own = step.get(field) if isinstance(step, dict) else None
    if isinstance(own, dict):
        if key:
            node: Any = own
            for part in key:  # the whole path must be the step's own: params.top_p, not just params
                if not isinstance(node, dict) or part not in node:
                    break
                node = node[part]
            else:
                return loaded.at("steps", index, field, *key)
        elif any(k in own for k in ("backend", "model")):
            return loaded.at("steps", index, field)
    return loaded.at("teacher", *key)


@dataclass
class StepReport:
    """One step's line in the manifest: the funnel and what it cost."""

    index: int
    step: str
    rows_in: int = 0
    rows_out: int = 0
    rows_failed: int = 0
    rows_dropped: dict[str, int] = field(default_factory=dict)
    requests_sent: int = 0
    cache_hits: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    cost_usd_with_cache: float | None = 0.0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def absorb(self, stats: DispatchStats | StepReport) -> None:
        """Add a teacher's spend (or the spend in another report) to this report's."""
        self.requests_sent += stats.requests_sent
        self.cache_hits += stats.cache_hits
        self.retries = dict(Counter(self.retries) + Counter(stats.retries))
        self.prompt_tokens += stats.prompt_tokens
        self.completion_tokens += stats.completion_tokens
        # An unknown price anywhere makes the step's cost unknown.
        for name in ("cost_usd", "cost_usd_with_cache"):
            mine, theirs = getattr(self, name), getattr(stats, name)
            setattr(self, name, None if mine is None or theirs is None else mine + theirs)

    def add(self, other: StepReport, merge_details: Callable[[dict, dict], dict]) -> None:
        """Add the report of the same step over other rows (a shard): counts, spend, time, and
        details as the step merges them (`Step.merge_details`)."""
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rows_failed += other.rows_failed
        self.rows_dropped = dict(Counter(self.rows_dropped) + Counter(other.rows_dropped))
        self.absorb(other)
        self.seconds += other.seconds
        self.details = merge_details(self.details, other.details) if self.details else other.details


@dataclass
class RunResult:
    # Not in its repr: asyncio's runner reprs a finished task's result (its SIGINT handler's
    # message on exit, on Python 3.11), and every row of a 200,000-row run took 2.5 s.
    out_dir: Path
    # A run that streamed its rows (see `synthkd.streaming`) holds them on disk: a RowsOnDisk.
    rows: Sequence[Row] = field(repr=False)
    failures: list[tuple[str, Failure]] = field(repr=False)
    reports: list[StepReport] = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)


class StepsEngine(Protocol):
    """Runs a run of consecutive row-wise steps somewhere other than this process (a Ray cluster),
    adding each step's report and failures to `run` as running it here would."""

    async def run_steps(self, run: RunState, start: int, stop: int, rows: list[Row]) -> list[Row]:
        """Steps start..stop-1 on `rows`; the rows they make, in order."""
        ...

    def encoder_for(self, run: RunState) -> Encoder | None:
        """Where the steps that run here encode sentence embeddings (dedup, decontaminate), or
        None for this process."""
        ...

    def close(self) -> None:
        """The run is over: let go of what the engine started."""
        ...


class ProgressFactory:
    """Makes the progress sink for each step; the CLI's shows rich bars, the default shows nothing."""

    def step(self, label: str, stats: DispatchStats | None) -> Progress:
        return Progress()


async def execute(
    loaded: LoadedRecipe,
    *,
    use_cache: bool = True,
    progress: ProgressFactory | None = None,
    out_dir: Path | None = None,
    rows: list[Row] | None = None,
    engine: StepsEngine | None = None,
) -> RunResult:
    """Run every step and write the outputs: here, or the runs of row-wise steps on `engine`
    (the recipe's `engine:`; see `synthkd.engines`). The recipe must have passed `check` (given the
    columns of `rows`, the rows the first step gets; none by default) and `preflight`.

    Raises `RunIncompleteError` (outputs left in place, what the run got beside them) when a step
    loses more rows to failures than `output.max_failure_ratio` allows or no row comes out."""
    target = out_dir or loaded.recipe.output_dir()
    register_recipe_secrets(loaded)
    with hold_output(loaded, out_dir):
        return await _execute_steps(
            loaded, target, use_cache, progress or ProgressFactory(), rows or [], engine
        )


@contextlib.contextmanager
def hold_output(loaded: LoadedRecipe, out_dir: Path | None = None) -> Iterator[None]:
    """Check that the run folder (`out_dir`, else the recipe's) can be written, then hold it
    against other runs (see `output_lock`). Before the first request, so nothing is paid for in
    vain."""
    target = out_dir or loaded.recipe.output_dir()
    if out_dir is not None:
        where = "--output"
    elif loaded.recipe.output.dir is not None:
        where = loaded.at("output", "dir")
    else:
        where = f"{loaded.path}: output.dir (default runs/{loaded.recipe.name})"
    check_output_folder(target, where)
    with output_lock(target):
        yield


async def _execute_steps(
    loaded: LoadedRecipe,
    target: Path,
    use_cache: bool,
    progress: ProgressFactory,
    rows: list[Row],
    engine: StepsEngine | None,
) -> RunResult:
    recipe = loaded.recipe
    run = RunState(loaded, progress, given=len(rows))
    if engine is not None:
        run.encode = engine.encoder_for(run)
    steps = recipe.steps
    tail = streamed_tail(steps)
    async with TeacherPool(seed=recipe.seed, use_cache=use_cache, max_cost_usd=recipe.max_cost_usd) as pool:
        index = 0
        while index < len(steps) and not run.shortfall:
            stop = row_wise_run_end(steps, index)
            if engine is not None and any(step.step_teacher() for step in steps[index:stop]):
                # A run of row-wise steps that asks a teacher goes to the engine whole; the other
                # steps, and row-wise ones that ask none (a regex filter), run here.
                rows = await engine.run_steps(run, index, stop, rows)
                index = stop
                continue
            if index == tail and len(rows) > CHUNK_ROWS:
                return await _stream(run, pool, tail, rows, target)
            step_run = run.start_step(index, steps[index], pool)
            rows = await step_run.run(rows)
            step_run.close()
            run.shortfall_at(step_run)
            index += 1
    if recipe.output.format == "messages":
        rows = for_trl(with_messages(rows))
    writer = RunWriter(target)
    try:
        writer.add(rows, run.failures)
        return run.finish(writer, target, rows)
    finally:
        writer.discard()


async def _stream(run: RunState, pool: TeacherPool, tail: int, rows: list[Row], target: Path) -> RunResult:
    """The run's last steps, all row-wise, a chunk of rows at a time: each chunk goes through
    every one of them and then to the outputs (see `synthkd.streaming`). The rows handed in are
    taken out of `rows` chunk by chunk."""
    steps = run.loaded.recipe.steps
    step_runs = [
        run.start_step(index, steps[index], pool, total_rows=len(rows)) for index in range(tail, len(steps))
    ]
    writer = RunWriter(target)
    try:
        run.streamed = {"from_step": tail, "chunk_rows": CHUNK_ROWS, "chunks": 0}
        for chunk in chunks_of(rows, CHUNK_ROWS):
            run.streamed["chunks"] += 1
            added = len(run.failures)
            for step_run in step_runs:
                chunk = await step_run.run(chunk)
                if run.shortfall_at(step_run):
                    break
            if run.loaded.recipe.output.format == "messages":
                chunk = for_trl(with_messages(chunk))
            writer.add(chunk, run.failures[added:])
            if run.shortfall:
                break
        for step_run in step_runs:
            step_run.close()
        return run.finish(writer, target, None)
    finally:
        writer.discard()


class RunState:
    """What a run adds up as its steps go: their reports, the failures, why it stopped short."""

    def __init__(self, loaded: LoadedRecipe, progress: ProgressFactory, given: int) -> None:
        self.loaded = loaded
        self.progress = progress
        self.given = given  # rows handed to the run (the Python API's `dataset=`)
        self.streamed: dict[str, int] | None = None  # how the last steps streamed, if they did
        self.engine: list[dict[str, Any]] = []  # what an engine ran, and how (the manifest)
        self.encode: Encoder | None = None  # where embeddings are encoded (None: here)
        self.failures: list[tuple[str, Failure]] = []
        self.reports: list[StepReport] = []
        self.shortfall: str | None = None
        self.started = datetime.now(timezone.utc)

    def start_step(self, index: int, step: Step, pool: TeacherPool, total_rows: int | None = None) -> StepRun:
        """A step ready to run, on all rows at once or (given `total_rows`) a chunk at a time."""
        step_run = StepRun(self, index, step, pool, total_rows)
        self.reports.append(step_run.report)
        return step_run

    def shortfall_at(self, step_run: StepRun) -> bool:
        """Whether the step has lost too many rows to failed requests (see `too_many_failures`):
        later steps, and later chunks, would pay for requests on data the run cannot keep."""
        ratio = self.loaded.recipe.output.max_failure_ratio
        self.shortfall = too_many_failures(step_run.report, ratio, step_run.failures)
        return self.shortfall is not None

    def finish(self, writer: RunWriter, target: Path, rows: list[Row] | None) -> RunResult:
        """Write the manifest and put the outputs in place: the run folder, or beside it when the
        run fell short (then raise `RunIncompleteError`). `rows`: the rows written, or None for a
        run that streamed them (the result reads them back from data.jsonl when asked)."""
        count = writer.rows_written
        if not count and not self.shortfall:
            self.shortfall = _why_no_rows(self.reports)
        manifest = build_manifest(self.loaded, self.reports, self.started, count, len(self.failures))
        if self.given:
            manifest["input_rows"] = self.given
        if self.streamed:
            manifest["streamed"] = self.streamed
        if self.engine:
            manifest["engine"] = self.engine
        if self.shortfall:
            manifest["incomplete"] = self.shortfall
        folder = incomplete_folder(target) if self.shortfall else target
        writer.finish(folder, manifest)
        kept = RowsOnDisk(folder / "data.jsonl", count) if rows is None else rows
        result = RunResult(folder, kept, self.failures, self.reports, manifest)
        if self.shortfall:
            raise RunIncompleteError(
                f"{self.shortfall}. The previous outputs in {target} are left as they were; what this run "
                f"got is in {folder} (failures.jsonl says why each row failed). Every answer received is "
                "cached, so running again sends only what is missing",
                result,
            )
        shutil.rmtree(incomplete_folder(target), ignore_errors=True)  # a later run made it whole
        return result


class StepRun:
    """One step of a run: its teachers' dispatchers and its bar, made once, and the report it
    adds up, over all the rows at once or chunk after chunk (then the same dispatchers serve
    every chunk, so the recipe's concurrency, rate limits and stats span them)."""

    def __init__(
        self, run: RunState, index: int, step: Step, pool: TeacherPool, total_rows: int | None
    ) -> None:
        self.step = step
        self.label = f"{index}:{step.step}"
        self.report = StepReport(index, step.step)
        self.failures: list[Failure] = []
        self._pool = pool
        self._dispatchers: dict[str, Dispatcher] = {}  # every teacher the step asked for, by id
        config = step.step_teacher()
        own = self.dispatcher_for(config) if config is not None else None
        if config is not None:  # the dataset's writer loads in a thread while the teacher answers
            import_writer_in_background()
        # What made a row: stamped on every row the step makes, in every chunk (see `_stamp_provenance`).
        self._provenance = step.provenance() if config is not None else None
        self.bar = bar = run.progress.step(self.label, own.stats if own else None)
        self.chunks = ChunkedProgress(bar, total_rows) if total_rows is not None else None
        loaded = run.loaded
        self.context = StepContext(
            loaded.base_dir, loaded.recipe.seed, own, self.chunks or bar, self.dispatcher_for, run.encode
        )
        self._run = run

    def dispatcher_for(self, config: TeacherConfig) -> Dispatcher:
        """The dispatcher of a teacher the step talks to (its own, a judge), sharing loaded models."""
        key = teacher_id(config)
        if key not in self._dispatchers:
            self._dispatchers[key] = self._pool.dispatcher(config)
        return self._dispatchers[key]

    async def run(self, rows: list[Row]) -> list[Row]:
        """Run the step on `rows` (all of them, or one chunk) and count what it made of them."""
        clock = time.perf_counter()
        if self.chunks is not None:
            self.chunks.begin_chunk(len(rows))
        result = await self.step.run(rows, self.context)
        made = (
            result.rows
            if self._provenance is None
            else _stamp_provenance(self._provenance, rows, result.rows)
        )
        report = self.report
        report.rows_in += len(rows)
        report.rows_out += len(made)
        report.rows_failed += len(result.failures)
        report.rows_dropped = dict(Counter(report.rows_dropped) + result.dropped)
        report.details = (
            self.step.merge_details(report.details, result.details) if report.details else result.details
        )
        report.seconds += time.perf_counter() - clock
        self.failures += result.failures
        self._run.failures += [(self.label, failure) for failure in result.failures]
        return made

    def close(self) -> None:
        """The step is done: its teachers' spend goes into its report."""
        if self.chunks is not None:
            self.chunks.end()
        # Its bar stops its clock (a step done short of its total shows no time left); a
        # factory of the caller's may give bars without `finish`.
        finish = getattr(self.bar, "finish", None)
        if finish is not None:
            finish()
        for dispatcher in self._dispatchers.values():
            self.report.absorb(dispatcher.stats)
        self.report.seconds = round(self.report.seconds, 3)


def too_many_failures(report: StepReport, max_ratio: float, failures: list[Failure]) -> str | None:
    """Why a step's failed requests fail the run, or None. Counted are the rows whose requests got
    no answer after every attempt (server errors, timeouts, outages: what a rerun may still get),
    as a share of the rows the step handled: its input, or for a step that makes rows, what it
    made plus what failed. Answers that did not parse are the teacher's quality, in the funnel."""
    reasons = Counter(failure.reason for failure in failures if is_transient_reason(failure.reason))
    lost = sum(reasons.values())
    handled = max(report.rows_in, report.rows_out + report.rows_failed)
    if not lost or lost <= max_ratio * handled:
        return None
    common = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common(3))
    return (
        f"step {report.index}:{report.step} lost {lost} of {handled} rows to failed requests "
        f"({common}), more than output.max_failure_ratio {max_ratio:g} allows"
    )


def _why_no_rows(reports: list[StepReport]) -> str:
    emptied = next((report for report in reports if report.rows_in and not report.rows_out), None)
    if emptied is None:
        return "the run produced no rows"
    why = [f"{emptied.rows_failed} failed"] if emptied.rows_failed else []
    why += [f"{reason} {count}" for reason, count in emptied.rows_dropped.items()]
    where = f"step {emptied.index}:{emptied.step}"
    return f"the run produced no rows: {where} kept none of {emptied.rows_in}" + (
        f" ({', '.join(why)})" if why else ""
    )


def _stamp_provenance(entry: dict[str, str], before: list[Row], after: list[Row]) -> list[Row]:
    """Add a step's provenance `entry` to every row it produced. Rows it passed through untouched
    are the very same objects as its input rows, and keep the provenance they had."""
    passed_through = {id(row) for row in before}
    return [
        row if id(row) in passed_through else {**row, "provenance": [*(row.get("provenance") or []), entry]}
        for row in after
    ]


def run_recipe(loaded: LoadedRecipe, **kwargs: Any) -> RunResult:
    """Check, preflight and execute a recipe from synchronous code outside an event loop (it
    does not train, so the `train:` section's teachers are not preflighted). `synthkd.run` is
    the public form of this."""
    rows = kwargs.get("rows")
    check(loaded, set().union(*(row.keys() for row in rows)) if rows else set())
    preflight(loaded, training=False)
    return asyncio.run(execute(loaded, **kwargs))


def build_manifest(
    loaded: LoadedRecipe, reports: list[StepReport], started: datetime, rows: int, failures: int
) -> dict[str, Any]:
    recipe = loaded.recipe
    templates = {}
    for step in recipe.steps:
        for name, source in step.template_sources().items():
            templates[name] = hashlib.sha256(source.encode("utf-8")).hexdigest()
    teachers = []
    for use in recipe_teachers(recipe, training=False):  # those that made the data
        described = {
            "backend": use.config.backend,
            "model": use.config.model,
            "base_url": redact_url(use.config.base_url),
        }
        if described not in teachers:
            teachers.append(described)
    costs = [report.cost_usd for report in reports]
    return {
        "name": recipe.name,
        "synthkd_version": __version__,
        "recipe_sha256": loaded.sha256(),
        # The recipe as run. It holds the NAME of the key variable, never a key; URLs lose any
        # user:password part.
        "recipe": _redacted_recipe(loaded),
        "teachers": teachers,
        "templates": templates,
        # The data files and folders the steps read from disk, as named (the rest came from the Hub).
        "data_files": sorted(recipe.data_files()),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
        "failures": failures,
        "cost_usd": None if None in costs else round(sum(costs), 6),
        # The pip extras its checks found it needs (the card's install line), besides `report`.
        "extras": sorted(loaded.extras),
        "steps": [asdict(report) for report in reports],
    }


def _redacted_recipe(loaded: LoadedRecipe) -> dict[str, Any]:
    """The recipe as run, with the user:password part of every teacher's base_url removed: the
    recipe's and every section `recipe_teachers` names (a step's, a judge's, training's)."""
    data = loaded.recipe.model_dump(mode="json", by_alias=True, exclude_none=True)
    teachers = [data.get("teacher")]
    for use in recipe_teachers(loaded.recipe):
        node: Any = data
        for part in use.key:
            node = node.get(part) if isinstance(node, dict) else node[part]
        teachers.append(node)
    for teacher in teachers:
        if isinstance(teacher, dict) and teacher.get("base_url"):
            teacher["base_url"] = redact_url(teacher["base_url"])
    return data


def plan(loaded: LoadedRecipe, *, use_cache: bool = True) -> list[tuple[Step, StepPlan]]:
    """A dry run: what every step would send, without loading a model or sending anything."""
    cache = ResponseCache.default() if use_cache else None
    rows: list[Row] = []
    plans = []
    try:
        for step in loaded.recipe.steps:
            rows, step_plan = step.plan(rows, cache)
            plans.append((step, step_plan))
    finally:
        if cache is not None:
            cache.close()
    return plans
