"""Rows that stream: a run's last steps, when each of them handles every row on its own (label,
filter, judge, logits: `Step.row_wise`), take the rows a chunk at a time, and each chunk goes to
the outputs as soon as it is through them. A 200,000-row label run then holds one chunk of
answers at a time, not 200,000, and its outputs are mostly written while the teacher answers.

The chunks run one after another through the same dispatcher per step, so the recipe's
concurrency, rate limits and spending caps hold across them as in one pass; what a chunk costs
is the tail of its last requests, one round trip per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from synthkd.output import read_jsonl
from synthkd.steps.base import Progress, Row, Step

# Rows per chunk: large enough that a chunk's tail (its last round trip) is a small share of its
# time at any concurrency a provider allows, small enough that a chunk's rows are a few MB.
CHUNK_ROWS = 5_000


def streamed_tail(steps: Sequence[Step]) -> int:
    """The index of the first of the run's last steps that all stream (`Step.row_wise`), or
    len(steps) when the last step does not."""
    start = len(steps)
    while start > 0 and steps[start - 1].row_wise:
        start -= 1
    return start


def row_wise_run_end(steps: Sequence[Step], start: int) -> int:
    """The index after the run of row-wise steps that begins at `start`."""
    stop = start
    while stop < len(steps) and steps[stop].row_wise:
        stop += 1
    return stop


def chunks_of(rows: list[Row], size: int) -> Iterator[list[Row]]:
    """`rows` a chunk at a time, each taken out of the list as it is handed on, so the list does
    not keep the rows of the chunks done."""
    while rows:
        chunk = rows[:size]
        del rows[:size]
        yield chunk


class ChunkedProgress(Progress):
    """A step's bar over all the chunks. A step sets its total on each call (each chunk); this
    makes it the run's total, estimated from the rows seen so far and exact after the last."""

    def __init__(self, bar: Progress, total_rows: int) -> None:
        self.bar = bar
        self.total_rows = total_rows
        self.rows_seen = 0  # input rows of the chunks begun
        self.done_total = 0  # the totals of the chunks finished
        self.chunk_rows = 0
        self.chunk_total = 0

    def begin_chunk(self, rows: int) -> None:
        self.done_total += self.chunk_total
        self.chunk_total = 0
        self.chunk_rows = rows
        self.rows_seen += rows

    def set_total(self, total: int) -> None:
        self.chunk_total = total
        per_row = total / self.chunk_rows if self.chunk_rows else 1.0
        ahead = max(self.total_rows - self.rows_seen, 0)
        self.bar.set_total(self.done_total + total + round(per_row * ahead))

    def advance(self, rows: int = 1) -> None:
        self.bar.advance(rows)

    def end(self) -> None:
        """No chunk is left: the total is what was counted."""
        self.bar.set_total(self.done_total + self.chunk_total)


class RowsOnDisk(Sequence[Row]):
    """The rows of a streamed run, read from its data.jsonl when asked for (`RunResult.rows`):
    a run that streamed its rows does not hold them."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count
        self._rows: list[Row] | None = None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Row]:
        if self._rows is not None:
            yield from self._rows
            return
        yield from read_jsonl(self.path)

    def __getitem__(self, index: Any) -> Any:
        if self._rows is None:  # read once, on the first look at one row
            self._rows = list(iter(self))
        return self._rows[index]

    def __repr__(self) -> str:
        return f"RowsOnDisk({str(self.path)!r}, {self.count} rows)"
