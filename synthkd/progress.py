"""Rich progress bars, one per step: rows done, rows/s, tokens, cost, retries and failures."""

from __future__ import annotations

import importlib
import os
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from synthkd.dispatch.dispatcher import DispatchStats
from synthkd.steps.base import Progress as StepProgressProtocol

# The display redraws 10 times a second; a bar told of every answer (hundreds a second) spent
# more CPU on the telling than on the drawing, so the rows done are handed over at this pace.
UPDATE_SECONDS = 0.1


class StepBar(StepProgressProtocol):
    """The bar of one step; reads the step's dispatcher stats when it advances.

    Rows advance the bar at most every UPDATE_SECONDS, and at once when the step's total is
    reached; `flush` hands over any rows still held (the factory does, before the next bar and
    when the display stops)."""

    def __init__(self, progress: Progress, task: TaskID, stats: DispatchStats | None) -> None:
        self._progress = progress
        self._task = task
        self._stats = stats
        self._total: int | None = None
        self._done = 0  # rows advanced, held or handed over
        self._held = 0  # rows not handed to the display yet
        self._updated_at = 0.0

    def set_total(self, total: int) -> None:
        self.flush()
        self._total = total
        self._progress.update(self._task, total=total)

    def advance(self, rows: int = 1) -> None:
        self._done += rows
        self._held += rows
        now = time.monotonic()
        if now - self._updated_at >= UPDATE_SECONDS or (
            self._total is not None and self._done >= self._total
        ):
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Hand the rows held to the display, with the step's tokens, cost, retries and failures."""
        if not self._held:
            return
        rows, self._held = self._held, 0
        self._updated_at = time.monotonic() if now is None else now
        fields = {}
        if self._stats is not None:
            stats = self._stats
            cost = "?" if stats.cost_usd is None else f"${stats.cost_usd:.4f}"
            fields = {
                "tokens": stats.prompt_tokens + stats.completion_tokens,
                "cost": cost,
                "retries": sum(stats.retries.values()),
                "failed": stats.failed,
            }
        self._progress.update(self._task, advance=rows, **fields)


RATE_MIN_SECONDS = 1.0  # a step younger than this has no rate worth showing


class RowsPerSecondColumn(ProgressColumn):
    """Rows per second over the whole step so far. Over less than a second (a step answered from
    the cache at once) a rate means nothing and once read 224,208 rows/s: it shows as -."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        speed = task.completed / elapsed if elapsed >= RATE_MIN_SECONDS else 0.0
        return Text(f"{speed:7.1f} rows/s" if speed else "      - rows/s", style="cyan")


class WaitingColumn(ProgressColumn):
    """What the step's requests wait on (`DispatchStats.waiting_on`), read live: a batch job's
    standing changes while no row advances the bar."""

    def render(self, task: Task) -> Text:
        stats = task.fields.get("stats")
        waiting = stats.waiting_on if stats is not None else ""
        return Text(waiting, style="yellow")


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        RowsPerSecondColumn(),
        TextColumn("tok {task.fields[tokens]}  {task.fields[cost]}"),
        TextColumn("retries {task.fields[retries]}  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        WaitingColumn(),
        console=console,
    )


def add_step_bar(progress: Progress, label: str, stats: DispatchStats | None) -> StepBar:
    task = progress.add_task(label, total=None, tokens=0, cost="$0", retries=0, failed=0, stats=stats)
    return StepBar(progress, task, stats)


class RichProgressFactory:
    """Gives each step a bar in one live rich display (a context manager around the run)."""

    def __init__(self, console: Console) -> None:
        self._progress = make_progress(console)
        self._stopped = False
        self._bars: list[StepBar] = []

    def __enter__(self) -> RichProgressFactory:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the live display (what is printed next goes below the final bars); once."""
        if not self._stopped:
            self._stopped = True
            self._flush_bars()
            self._progress.stop()

    def step(self, label: str, stats: DispatchStats | None) -> StepBar:
        self._flush_bars()  # the step before is done: its bar shows every row it advanced
        self._bars.append(add_step_bar(self._progress, label, stats))
        return self._bars[-1]

    def _flush_bars(self) -> None:
        for bar in self._bars:
            bar.flush()


def quiet_library_progress_bars() -> None:
    """transformers and datasets draw bars of their own (loading weights, saving shards).

    Through their environment variables, read when they are imported: importing them here only
    to switch the bars off cost a run about a second before its first request. A library already
    imported is told directly."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers follows the Hub's
    switches = {
        "datasets": lambda module: module.disable_progress_bars(),
        "transformers": lambda module: module.utils.logging.disable_progress_bar(),
    }
    for library, switch_off in switches.items():
        if library in sys.modules:
            # Imported again rather than read from sys.modules: another thread may be importing it
            # still (`output.import_writer_in_background`), and the import waits for it to finish.
            switch_off(importlib.import_module(library))
