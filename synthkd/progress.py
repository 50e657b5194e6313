"""Rich progress bars, one per step: rows done, rows/s, tokens, cost, retries and failures."""

from __future__ import annotations

import os
import sys

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


class StepBar(StepProgressProtocol):
    """The bar of one step; reads the step's dispatcher stats when it advances."""

    def __init__(self, progress: Progress, task: TaskID, stats: DispatchStats | None) -> None:
        self._progress = progress
        self._task = task
        self._stats = stats

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, rows: int = 1) -> None:
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


class RowsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:7.1f} rows/s" if speed else "      - rows/s", style="cyan")


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        RowsPerSecondColumn(),
        TextColumn("tok {task.fields[tokens]}  {task.fields[cost]}"),
        TextColumn("retries {task.fields[retries]}  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console,
    )


def add_step_bar(progress: Progress, label: str, stats: DispatchStats | None) -> StepBar:
    task = progress.add_task(label, total=None, tokens=0, cost="$0", retries=0, failed=0)
    return StepBar(progress, task, stats)


class RichProgressFactory:
    """Gives each step a bar in one live rich display (a context manager around the run)."""

    def __init__(self, console: Console) -> None:
        self._progress = make_progress(console)
        self._stopped = False

    def __enter__(self) -> RichProgressFactory:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the live display (what is printed next goes below the final bars); once."""
        if not self._stopped:
            self._stopped = True
            self._progress.stop()

    def step(self, label: str, stats: DispatchStats | None) -> StepBar:
        return add_step_bar(self._progress, label, stats)


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
        module = sys.modules.get(library)
        if module is not None:
            switch_off(module)
