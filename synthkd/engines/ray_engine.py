"""The Ray engine (`engine: ray`): a recipe's runs of row-wise steps (label, filter, judge, logits)
spread over a Ray cluster; the other steps (dedup, self-instruct rounds, ...) see every row at
once and run in the driver, between them, as under the local engine.

- The rows a run of row-wise steps gets are cut into shards of `engine.shard_rows`: the unit of
  work, of retry and of resume.
- The shards are a Ray Data dataset mapped by a pool of actors (`ShardRunner`). Each actor builds
  the steps' teachers once (a local model is loaded once per actor, on a GPU of its own when the
  cluster has GPUs) and runs the steps on one shard at a time with the code the local engine runs
  (`pipeline.StepRun`), behind the same request cache. An API teacher's concurrency, rpm and tpm
  are split evenly among the actors, so together they keep the recipe's limits.
- An actor that dies (killed, out of memory, its node lost) is restarted by Ray and its shard is
  run again; a shard counts only when its whole result has reached the driver, so no row is lost
  or doubled.
- The driver writes each shard's result as it arrives to `<cache>/shards/<run of steps>/<shard>.json`,
  whole or not at all (written aside and renamed into place: the file is the completion marker).
  The names are digests of the steps and of the shard's rows, so running the same command again
  after the driver was killed sends only the shards without a file. The folder is removed once the
  run of steps is through; the request cache still holds every answer.

Ray is the scheduler and the transport: nothing here retries, places or ships work by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from synthkd.atomic import atomic_write_text
from synthkd.curate.embeddings import Encoder
from synthkd.errors import RecipeError, SynthkdError, causes
from synthkd.extras import require
from synthkd.paths import cache_root
from synthkd.pipeline import ProgressFactory, RunState, StepReport, too_many_failures
from synthkd.recipe import EngineConfig, LoadedRecipe
from synthkd.redaction import redact_value
from synthkd.steps.base import Failure, Progress, Row, Step
from synthkd.teachers.http_errors import is_transient_reason
from synthkd.teachers.registry import capabilities_of
from synthkd.version import __version__

T = TypeVar("T")

# How often Ray restarts an actor that died (and retries its shard) before the run stops.
ACTOR_RESTARTS = 3
# Variables an actor needs as the driver has them: where the cache and the models are, offline
# switches. A local cluster's workers inherit the driver's environment; a running cluster's do not.
PASSED_VARIABLES = (
    "SYNTHKD_CACHE_DIR",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "LITELLM_LOCAL_MODEL_COST_MAP",
)


class RayEngine:
    """Runs runs of row-wise steps on a Ray cluster: the one at `config.address`, else a local one
    started on first use (and stopped by `close`)."""

    def __init__(self, config: EngineConfig, *, use_cache: bool = True) -> None:
        self.config = config
        self.use_cache = use_cache
        self._connected = False  # whether this engine called ray.init (then close() lets go)
        self._stop = threading.Event()  # set when the run is cancelled

    async def run_steps(self, run: RunState, start: int, stop: int, rows: list[Row]) -> list[Row]:
        self._connect()  # in this thread: ray.init installs signal handlers
        self._stop.clear()
        try:
            return await _in_daemon_thread(self._run_steps, run, start, stop, rows)
        except asyncio.CancelledError:  # Ctrl-C: the thread stops taking results; close() stops Ray
            self._stop.set()
            raise

    def encoder_for(self, run: RunState) -> Encoder:
        """Sentence embeddings encoded by a pool of `TextEncoder` actors (one per GPU, else one
        with the CPUs), a batch of `shard_rows` texts at a time; each encoding is listed in the
        manifest's `engine`."""

        def encode(texts: list[str], model: str, batch_size: int) -> Any:
            self._connect()
            clock = time.perf_counter()
            vectors, workers = self._encode(texts, model, batch_size)
            run.engine.append(
                {
                    "name": "ray",
                    "encoded": len(texts),
                    "model": model,
                    "workers": workers,
                    "seconds": round(time.perf_counter() - clock, 3),
                }
            )
            return vectors

        return encode

    def _encode(self, texts: list[str], model: str, batch_size: int) -> tuple[Any, int]:
        import numpy as np
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
        resources = ray.cluster_resources()
        placement = model_placement(resources, self.config)
        size = self.config.shard_rows
        workers = min(placement.fitting(resources), math.ceil(len(texts) / size))
        items = [{"index": index, "text": text} for index, text in enumerate(texts)]
        constructor = {
            "model": model,
            "batch_size": batch_size,
            "device": "cuda" if placement.gpus else "cpu",
            "environment": actor_environment(None),
        }
        dataset = _on_actors(items, size, TextEncoder, constructor, placement, workers, batch_format="numpy")
        vectors: list[Any] = [None] * len(texts)
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for index, vector in zip(batch["index"], batch["vector"], strict=True):
                    vectors[int(index)] = vector
        except Exception as exc:
            raise _our_error(exc) from None
        return np.stack(vectors).astype(np.float32), workers

    def close(self) -> None:
        """Let go of Ray if this engine connected to it: a local cluster it started stops; on a
        running cluster, the run's actors end with its job."""
        if self._connected:
            import ray

            if self._stop.is_set():
                # The thread still waiting on Ray Data fails once Ray is gone, and Ray Data logs
                # that as an internal error with its stack trace: not news to a user who stopped it.
                logging.getLogger("ray.data").setLevel(logging.CRITICAL + 1)
            ray.shutdown()
            self._connected = False

    def _connect(self) -> None:
        # The bars are synthkd's; Ray's own lines are noise here. Ray Data sets its loggers up
        # when imported, from RAY_DATA_LOG_LEVEL; Ray's core logs to stderr on its own (a warning
        # for every actor pool, about restarting actors whose arguments the driver keeps).
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        # Ray starts a cluster of its own wherever Ray is used unconnected; after close() (Ctrl-C)
        # the thread still iterating must fail at once instead.
        os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
        ray = require("ray", "ray", "engine: ray")
        require("ray.data", "ray", "engine: ray")
        logging.getLogger("ray").setLevel(logging.ERROR)
        if ray.is_initialized():
            return
        _check_reachable(self.config.address)
        try:
            with _stderr_silenced():  # Ray's core says, on stderr, that it read RAY_BACKEND_LOG_LEVEL
                ray.init(
                    address=self.config.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RecipeError(
                f"cannot reach the Ray cluster at {self.config.address}: {exc}; start one (ray start "
                "--head) or leave engine.address out to start a local one",
                where="engine.address",
            ) from None
        self._connected = True

    def _run_steps(self, run: RunState, start: int, stop: int, rows: list[Row]) -> list[Row]:
        loaded = run.loaded
        steps = loaded.recipe.steps[start:stop]
        clock = time.perf_counter()
        size = self.config.shard_rows
        shards = [rows[offset : offset + size] for offset in range(0, len(rows), size)]
        store = ShardStore(loaded, start, stop, self.use_cache)
        keys = [store.key(shard) for shard in shards]
        results: dict[int, dict[str, Any]] = {}
        for index, key in enumerate(keys):
            if (done := store.read(key)) is not None:
                results[index] = done
        resumed = len(results)
        bars = StepBars(run.progress, start, steps, len(rows))
        for index in sorted(results):
            bars.shard_done(results[index], len(shards) - len(results))
        todo = [index for index in range(len(shards)) if index not in results]
        workers = 0
        if todo:
            workers = self._run_shards(loaded, start, stop, shards, todo, keys, store, results, bars)
        bars.close()
        made = _merge(run, start, steps, [results[index] for index in range(len(shards))])
        wall = time.perf_counter() - clock
        _spread_seconds(run.reports[-len(steps) :], wall)
        run.engine.append(
            {
                "name": "ray",
                "steps": [f"{start + offset}:{step.step}" for offset, step in enumerate(steps)],
                "shards": len(shards),
                "shard_rows": size,
                "resumed_shards": resumed,
                "workers": workers,
            }
        )
        if not run.shortfall:
            store.remove()
        return made

    def _run_shards(
        self,
        loaded: LoadedRecipe,
        start: int,
        stop: int,
        shards: list[list[Row]],
        todo: list[int],
        keys: list[str],
        store: ShardStore,
        results: dict[int, dict[str, Any]],
        bars: StepBars,
    ) -> int:
        import ray

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        resources = ray.cluster_resources()
        placement = actor_placement(loaded.recipe.steps[start:stop], resources, self.config)
        workers = min(placement.fitting(resources), len(todo))
        items = [{"shard": index, "rows": json.dumps(shards[index], ensure_ascii=False)} for index in todo]
        constructor = {
            "loaded": loaded,
            "start": start,
            "stop": stop,
            "workers": workers,
            "use_cache": self.use_cache,
            "environment": actor_environment(loaded),
        }
        dataset = _on_actors(items, 1, ShardRunner, constructor, placement, workers)
        try:
            for answer in dataset.iter_rows():
                if self._stop.is_set():
                    break
                if answer["error"]:
                    raise pickle.loads(answer["error"])
                index = int(answer["shard"])
                result = json.loads(answer["result"])
                if not _lost_rows(result):  # a shard whose rows a rerun may still get is not done
                    store.write(keys[index], result)
                results[index] = result
                bars.shard_done(result, len(shards) - len(results))
        except SynthkdError:
            raise
        except Exception as exc:
            raise _our_error(exc) from None
        return workers


class ShardStore:
    """Where the shards of one run of steps are kept once done: one JSON file each, named by the
    digest of the steps (and the synthkd version, the seed, the templates) and of the shard's rows.
    Without the cache (`--no-cache`) nothing is kept and nothing is resumed."""

    def __init__(self, loaded: LoadedRecipe, start: int, stop: int, keep: bool) -> None:
        steps = loaded.recipe.steps[start:stop]
        material = {
            "synthkd": __version__,
            "seed": loaded.recipe.seed,
            "steps": [step.model_dump(mode="json", by_alias=True) for step in steps],
            "templates": [step.template_sources() for step in steps],
        }
        self.digest = _digest(material)
        self.folder = shard_folder_root() / self.digest[:32] if keep else None

    def key(self, rows: list[Row]) -> str:
        return _digest([self.digest, rows])[:32]

    def read(self, key: str) -> dict[str, Any] | None:
        if self.folder is None:
            return None
        try:
            return json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not done (or unreadable: done again)
            return None

    def write(self, key: str, result: dict[str, Any]) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps(redact_value(result), ensure_ascii=False)
            atomic_write_text(self.folder / f"{key}.json", text, what="a finished shard")

    def remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class ShardRunner:
    """A Ray Data actor: the steps start..stop-1 with their teachers built once, run on one shard
    at a time in the actor's own event loop. It returns each shard's rows, failures and per-step
    reports as JSON."""

    def __init__(
        self,
        loaded: LoadedRecipe,
        start: int,
        stop: int,
        workers: int,
        use_cache: bool,
        environment: dict[str, str],
    ) -> None:
        os.environ.update(environment)
        from synthkd.dispatch.pool import TeacherPool
        from synthkd.pipeline import register_recipe_secrets

        register_recipe_secrets(loaded)  # redacted from what the actor caches and returns, as here
        self.loaded = loaded
        self.start = start
        self.steps = [shared_limits(step, workers) for step in loaded.recipe.steps[start:stop]]
        self.loop = asyncio.new_event_loop()
        self.pool = TeacherPool(seed=loaded.recipe.seed, use_cache=use_cache)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        shards = [int(index) for index in batch["shard"]]
        try:
            results = [self.loop.run_until_complete(self._run(json.loads(text))) for text in batch["rows"]]
        except SynthkdError as exc:
            # The run's own error (a refused key, a full disk) stops the run with its one line, as
            # in the local engine; raised here, Ray would wrap it in its traceback.
            return {"shard": shards, "result": [""] * len(shards), "error": [pickle.dumps(exc)] * len(shards)}
        texts = [json.dumps(result, ensure_ascii=False) for result in results]
        return {"shard": shards, "result": texts, "error": [b""] * len(shards)}

    async def _run(self, rows: list[Row]) -> dict[str, Any]:
        run = RunState(self.loaded, ProgressFactory(), given=0)
        for offset, step in enumerate(self.steps):
            step_run = run.start_step(self.start + offset, step, self.pool)
            rows = await step_run.run(rows)
            step_run.close()
        return {
            "rows": rows,
            "failures": [[label, asdict(failure)] for label, failure in run.failures],
            "reports": [asdict(report) for report in run.reports],
        }


class TextEncoder:
    """A Ray Data actor: a sentence-transformers model loaded once, encoding a batch of texts at
    a time as `curate.embeddings.encode_here` does in the driver."""

    def __init__(self, model: str, batch_size: int, device: str, environment: dict[str, str]) -> None:
        os.environ.update(environment)
        from synthkd.curate.embeddings import load_encoder

        load_encoder(model, device)  # loaded once, before the first batch (encode_here keeps it)
        self.model, self.batch_size, self.device = model, batch_size, device

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from synthkd.curate.embeddings import encode_here

        vectors = encode_here(list(batch["text"]), self.model, self.batch_size, self.device)
        return {"index": batch["index"], "vector": vectors}


class ActorPlacement:
    """How many actors a run of steps gets and what each one holds of the cluster."""

    def __init__(self, workers: int, cpus: float, gpus: float) -> None:
        self.workers, self.cpus, self.gpus = workers, cpus, gpus

    def fitting(self, resources: dict[str, float]) -> int:
        """`workers`, but no more actors than the cluster can hold at once (more would wait for
        resources that never come, `engine.workers` above the cluster's CPUs)."""
        room = [self.workers, int(resources.get("CPU", 0) // self.cpus) if self.cpus else self.workers]
        if self.gpus:
            room.append(int(resources.get("GPU", 0) // self.gpus))
        return max(1, min(room))


def actor_placement(steps: list[Step], resources: dict[str, float], config: EngineConfig) -> ActorPlacement:
    """API teachers: an actor per CPU of the cluster (each mostly waits on the network). A local
    model: see `model_placement`. `workers` overrides the count."""
    local = [
        config for step in steps for config in step.teacher_fields().values() if capabilities_of(config).local
    ]
    if local:
        return model_placement(resources, config, on_gpu=all(teacher.device != "cpu" for teacher in local))
    allowed = min(teacher.concurrency for step in steps for teacher in step.teacher_fields().values())
    return ActorPlacement(min(config.workers or max(1, int(resources.get("CPU", 1))), allowed), 1, 0)


def model_placement(
    resources: dict[str, float], config: EngineConfig, *, on_gpu: bool = True
) -> ActorPlacement:
    """A model per actor: an actor per GPU, each on its own; on a cluster without GPUs (or for a
    model held to the CPU) one actor with every CPU (a model's threads share a machine's cores;
    two copies would halve each one's). `workers` overrides the count."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0))
    if on_gpu and gpus:
        return ActorPlacement(config.workers or gpus, 1, 1)
    workers = config.workers or 1
    return ActorPlacement(workers, max(1, cpus // workers), 0)


def shared_limits(step: Step, workers: int) -> Step:
    """The step with each teacher's concurrency, rpm and tpm split among `workers` actors."""
    if workers <= 1:
        return step
    update = {}
    for key, config in step.teacher_fields().items():
        update[key] = config.model_copy(
            update={
                # Never more in flight than the recipe allows: actor_placement keeps workers at most
                # the concurrency, so each gets at least one.
                "concurrency": max(1, config.concurrency // workers),
                "rpm": config.rpm / workers if config.rpm else None,
                "tpm": config.tpm / workers if config.tpm else None,
            }
        )
    return step.model_copy(update=update)


def actor_environment(loaded: LoadedRecipe | None) -> dict[str, str]:
    """What an actor sets in its environment before building teachers: `PASSED_VARIABLES` and the
    key variables the recipe's steps name (values stay in the cluster's memory; never written)."""
    names = list(PASSED_VARIABLES)
    for step in loaded.recipe.steps if loaded is not None else []:
        names += [config.api_key_env for config in step.teacher_fields().values() if config.api_key_env]
    environment = {name: os.environ[name] for name in names if name in os.environ}
    environment["SYNTHKD_CACHE_DIR"] = str(cache_root())  # resolved here: HOME may differ there
    return environment


class StepBars:
    """The steps' bars in the driver, moved on as shards come back: the first step's total is
    exact; a later step's is estimated from what the shards so far passed on to it."""

    def __init__(self, progress: ProgressFactory, start: int, steps: list[Step], total_rows: int) -> None:
        self.bars: list[Progress] = [
            progress.step(f"{start + offset}:{step.step}", None) for offset, step in enumerate(steps)
        ]
        self.total_rows = total_rows
        self.first_rows = 0  # input rows of the shards done
        self.rows_in = [0] * len(steps)
        for bar in self.bars:
            bar.set_total(total_rows)

    def shard_done(self, result: dict[str, Any], shards_left: int) -> None:
        reports = result["reports"]
        if not reports:
            return
        self.first_rows += reports[0]["rows_in"]
        for index, (bar, report) in enumerate(zip(self.bars, reports, strict=False)):
            self.rows_in[index] += report["rows_in"]
            share = self.rows_in[index] / self.first_rows if self.first_rows else 1
            bar.set_total(self.rows_in[index] + round((self.total_rows - self.first_rows) * share))
            bar.advance(report["rows_in"])

    def close(self) -> None:
        for bar, rows in zip(self.bars, self.rows_in, strict=True):
            bar.set_total(rows)


def _merge(run: RunState, start: int, steps: list[Step], results: list[dict[str, Any]]) -> list[Row]:
    """The shards' results, in shard order, as the run's: rows, failures, one report per step."""
    reports = [StepReport(start + offset, step.step) for offset, step in enumerate(steps)]
    failures: list[list[Failure]] = [[] for _ in steps]
    rows: list[Row] = []
    labels = [f"{start + offset}:{step.step}" for offset, step in enumerate(steps)]
    for result in results:
        rows += result["rows"]
        for offset, (report, shard) in enumerate(zip(reports, result["reports"], strict=False)):
            report.add(StepReport(**shard), steps[offset].merge_details)
        for label, failure in result["failures"]:
            failures[labels.index(label)].append(Failure(**failure))
    ratio = run.loaded.recipe.output.max_failure_ratio
    for report, label, lost in zip(reports, labels, failures, strict=True):
        run.reports.append(report)
        run.failures += [(label, failure) for failure in lost]
        run.shortfall = run.shortfall or too_many_failures(report, ratio, lost)
    return rows


def _spread_seconds(reports: list[StepReport], wall: float) -> None:
    """The run of steps took `wall` seconds in all; each step gets the share its shards spent in it."""
    spent = sum(report.seconds for report in reports)
    for report in reports:
        report.seconds = round(wall * (report.seconds / spent if spent else 1 / len(reports)), 3)


def _on_actors(
    items: list[dict[str, Any]],
    batch_size: int,
    actor: type,
    constructor: dict[str, Any],
    placement: ActorPlacement,
    workers: int,
    **options: Any,
) -> Any:
    """A Ray Data dataset of `items` mapped `batch_size` at a time by a pool of `workers` actors
    of class `actor`, each placed as `placement` says.

    A shard that kills its actor every time (a crash in a native library, memory) stops the run
    after ACTOR_RESTARTS restarts instead of being retried forever (Ray Data's default); a task on
    a restarted actor is retried as often as it takes. Ray 2.60 takes these only as
    `ray_remote_args`, which it warns are deprecated (the extra pins ray below 2.64, where they
    go); that warning is not the user's to act on."""
    import ray

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        return ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / batch_size)).map_batches(
            actor,
            fn_constructor_kwargs=constructor,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=placement.cpus,
            num_gpus=placement.gpus,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=-1,
            **options,
        )


def _lost_rows(result: dict[str, Any]) -> bool:
    """Whether a shard lost rows to failed requests that a later run may still get answered (the
    failures that count against output.max_failure_ratio): such a shard is run again."""
    return any(is_transient_reason(failure["reason"]) for _, failure in result["failures"])


class ClusterError(SynthkdError):
    """Ray could not run a shard: its actor kept dying, or the cluster went away."""


def _our_error(exc: BaseException) -> BaseException:
    """The error to raise for a failure inside Ray: synthkd's own (a fatal teacher error, a full
    disk), which Ray wraps in its task errors, else one line saying what Ray reported."""
    for cause in causes(exc):
        original = getattr(cause, "cause", None)
        for candidate in (original, cause):
            if isinstance(candidate, SynthkdError) and type(candidate).__module__.startswith("synthkd"):
                return candidate
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return ClusterError(
        f"engine: ray could not run the steps (after {ACTOR_RESTARTS} restarts of an actor, if it died): "
        f"{type(exc).__name__}: {first_line}. Answers received are cached and finished shards kept: "
        "the same command goes on from there"
    )


async def _in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread`, in a daemon thread of its own. asyncio.run, ending, joins the threads of
    its default executor, and after a Ctrl-C the one reading Ray Data's iterator may never return
    (Ray is shut down under it): the driver hung there. A daemon thread is not waited for."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # cancelled meanwhile: nobody waits for it
            outcome(value)

    def work() -> None:
        try:
            value, outcome = context.run(function, *args), future.set_result
        except BaseException as exc:  # handed to the awaiting task, as to_thread does
            value, outcome = exc, future.set_exception
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run ended without it
            loop.call_soon_threadsafe(settle, outcome, value)

    threading.Thread(target=work, name="synthkd-ray-steps", daemon=True).start()
    return await future


def _check_reachable(address: str | None) -> None:
    """A `host:port` (or ray://host:port) address must accept a connection: Ray itself retries a
    refused one for a minute before it says so."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise RecipeError(
            f"cannot reach the Ray cluster at {address}: {exc}; start one (ray start --head) or leave "
            "engine.address out to start a local one",
            where="engine.address",
        ) from None


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null within the block: Ray's C++ core writes there directly.
    A failure is still raised as a Python exception, with its message."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _digest(material: Any) -> str:
    text = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shard_folder_root() -> Path:
    """Where every run's unfinished shards are kept (`synthkd cache clear` empties it)."""
    return cache_root() / "shards"
