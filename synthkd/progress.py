"""Rich progress bars, one per step: rows done, rows/s, time left, tokens, cost, and the failed
rows and retries by reason.

Every column but the last two is as wide for 1 row as for the step's last, so nothing shifts
sideways while numbers grow; the failures and retries, and what the step waits on, whose words
come and go, are last."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
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

    def finish(self) -> None:
        """The step is done (`StepRun.close`): its rows are shown and its clock stops, so a step
        that ended short of its total (rows dropped early) shows no time left and keeps its rate."""
        self.flush()
        self._progress.stop_task(self._task)

    def flush(self, now: float | None = None) -> None:
        """Hand the rows held to the display, with the step's tokens and cost so far."""
        if not self._held:
            return
        rows, self._held = self._held, 0
        self._updated_at = time.monotonic() if now is None else now
        fields = {}
        if self._stats is not None:
            stats = self._stats
            cost = "?" if stats.cost_usd is None else f"${stats.cost_usd:.4f}"
            fields = {"tokens": stats.prompt_tokens + stats.completion_tokens, "cost": cost}
        self._progress.update(self._task, advance=rows, **fields)


RATE_MIN_SECONDS = 1.0  # a step younger than this has no rate worth showing


def step_rate(task: Task) -> float | None:
    """Rows per second over the whole step so far; None for a step under RATE_MIN_SECONDS or
    with nothing done. rich's own speed is over a moving window: it jittered, and a step
    answered from the cache at once read 224,208 rows/s."""
    elapsed = task.elapsed or 0.0
    if elapsed < RATE_MIN_SECONDS or not task.completed:
        return None
    return task.completed / elapsed


def rows_done(task: Task) -> int:
    """The rows the bar shows as done: never past its total. A step that advanced beyond the
    total it set (critique_revise once showed 10/8) is a bug of that step; the bar stays honest."""
    done = int(task.completed)
    return min(done, int(task.total)) if task.total is not None else done


class RowsDoneColumn(ProgressColumn):
    """done/total, the done part right-aligned as wide as the total, so the column keeps its
    width from the first row to the last."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(f"{rows_done(task):>6}/?", style="progress.download")
        total = int(task.total)
        return Text(f"{rows_done(task):>{len(str(total))}}/{total}", style="progress.download")


class RowsPerSecondColumn(ProgressColumn):
    """Rows per second over the whole step so far (`step_rate`); - when there is none."""

    def render(self, task: Task) -> Text:
        speed = step_rate(task)
        return Text(f"{speed:7.1f}/s" if speed else "      -/s", style="cyan")


class EtaColumn(ProgressColumn):
    """Time left at the step's rate so far: - where that is not known (no total, a step under a
    second, nothing done yet) and for a step with nothing left or that is done."""

    def render(self, task: Task) -> Text:
        speed = step_rate(task)
        left = (task.total or 0) - rows_done(task)
        if speed is None or task.total is None or left <= 0 or task.stop_time is not None:
            return Text("eta       -", style="progress.remaining")
        minutes, seconds = divmod(round(left / speed), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def compact_count(count: int) -> str:
    """999, 12.3k, 4.5M: a token count in at most 6 characters."""
    for limit, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.1f}{unit}"
    return str(count)


class SpendColumn(ProgressColumn):
    """Tokens and cost, right-aligned in widths that hold a large run's numbers."""

    def render(self, task: Task) -> Text:
        fields = task.fields
        if fields.get("stats") is None:  # a step that asks no teacher (load, filter; training)
            return Text(" " * 20)
        return Text(f"tok {compact_count(fields['tokens']):>6} {fields['cost']:>9}")


# What a retried error's reason (`TeacherError.reason`) is called on the bar.
RETRY_WORDS = {
    "http_429": "rate-limit",
    "timeout": "timeout",
    "http_408": "timeout",
    "connection": "connection",
    "malformed": "malformed",
}


def retry_word(reason: str) -> str:
    if reason in RETRY_WORDS:
        return RETRY_WORDS[reason]
    if reason.startswith("http_5"):
        return "server-error"
    return reason.replace("_", "-")


def retry_reasons(retries: Mapping[str, int]) -> str:
    """'retries: 3 rate-limit, 1 timeout, 2 server-error' (each kind in the order first seen,
    so the words do not swap places as counts change); '' with none."""
    counts: dict[str, int] = {}
    for reason, count in retries.items():
        if count:
            word = retry_word(reason)
            counts[word] = counts.get(word, 0) + count
    if not counts:
        return ""
    return "retries: " + ", ".join(f"{count} {word}" for word, count in counts.items())


class TroubleColumn(ProgressColumn):
    """The step's failed rows and its retries by reason, read live: retries happen while no row
    advances the bar (a 429 waiting out its Retry-After). Empty while all is well."""

    def render(self, task: Task) -> Text:
        stats = task.fields.get("stats")
        text = Text(no_wrap=True, overflow="ellipsis")  # cut short, not wrapped, on a narrow terminal
        if stats is None:
            return text
        # A copy first: the run's thread adds to the counter while this one draws
        # (dict() of a Counter is copied in one step under the GIL).
        retries = retry_reasons(dict(stats.retries))
        if stats.failed:
            text.append(f"{stats.failed} failed", style="red")
            text.append("  " if retries else "")
        return text.append(retries, style="yellow")


class WaitingColumn(ProgressColumn):
    """What the step's requests wait on (`DispatchStats.waiting_on`), read live: a batch job's
    standing changes while no row advances the bar."""

    def render(self, task: Task) -> Text:
        stats = task.fields.get("stats")
        waiting = stats.waiting_on if stats is not None else ""
        return Text(waiting, style="yellow", no_wrap=True, overflow="ellipsis")


def make_progress(console: Console, **options: object) -> Progress:
    """The step bars' display; `options` go to rich's Progress (tests pass their clock).

    The columns of numbers are never cut; on a narrow terminal the words after them are."""

    def fixed() -> Column:
        return Column(no_wrap=True)

    return Progress(
        TextColumn("[bold]{task.description:<16}", table_column=fixed()),
        BarColumn(bar_width=16, table_column=fixed()),
        RowsDoneColumn(table_column=fixed()),
        RowsPerSecondColumn(table_column=fixed()),
        EtaColumn(table_column=fixed()),
        TimeElapsedColumn(table_column=fixed()),
        SpendColumn(table_column=fixed()),
        TroubleColumn(),
        WaitingColumn(),
        console=console,
        **options,
    )


def add_step_bar(progress: Progress, label: str, stats: DispatchStats | None) -> StepBar:
    task = progress.add_task(label, total=None, tokens=0, cost="$0", stats=stats)
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
