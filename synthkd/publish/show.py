"""`synthkd show RUN_DIR`: the rows of a run as a rich table, filtered, for a look in the terminal."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from synthkd.publish.report import instruction_of, response_of
from synthkd.publish.rundir import PublishInputError, RunDir
from synthkd.text import clip

DEFAULT_COLUMNS = ("id", "instruction", "response", "score")
CELL_CHARS = 300  # a long answer is cut in the table; `--columns` and data.jsonl have it whole


@dataclass
class RowFilter:
    where: dict[str, str] = field(default_factory=dict)  # column -> value, compared as text
    min_score: float | None = None
    score_column: str = "score"
    step: str | None = None  # rows with this step in their provenance (made or remade by it)

    def keep(self, row: dict[str, Any]) -> bool:
        for column, wanted in self.where.items():
            if not _matches(row.get(column), wanted):
                return False
        if self.min_score is not None:
            score = row.get(self.score_column)
            if not isinstance(score, int | float) or score < self.min_score:
                return False
        if self.step is not None:
            lineage = row.get("provenance") or []
            if not any(isinstance(entry, dict) and entry.get("step") == self.step for entry in lineage):
                return False
        return True


def parse_where(items: Iterable[str]) -> dict[str, str]:
    where = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise PublishInputError(f"--where {item!r}: write COLUMN=VALUE, e.g. --where finish_reason=stop")
        where[column.strip()] = value
    return where


def _matches(value: Any, wanted: str) -> bool:
    """--where compares as text, numbers as numbers (score=7 matches 7.0), booleans as true/false."""
    if isinstance(value, bool):
        return str(value).lower() == wanted.strip().lower()
    if isinstance(value, int | float):
        try:
            return float(wanted) == value
        except ValueError:
            return False
    return _text(value) == wanted


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _cell(row: dict[str, Any], column: str) -> str:
    # instruction and response fall back to the messages, so a preference or dialogue row shows too.
    value = row.get(column)
    if value is None and column == "instruction":
        value = instruction_of(row)
    elif value is None and column == "response":
        value = response_of(row)
    text = _text(value)
    return clip(text, CELL_CHARS)


def select(
    run: RunDir, row_filter: RowFilter, limit: int | None
) -> tuple[list[dict[str, Any]], int, set[str]]:
    """The first `limit` rows that pass, how many passed in all, and every column seen."""
    kept: list[dict[str, Any]] = []
    matched = 0
    columns: set[str] = set()
    for row in run.rows():
        columns.update(row)
        if row_filter.keep(row):
            matched += 1
            if limit is None or len(kept) < limit:
                kept.append(row)
    return kept, matched, columns


def _steps_in_lineage(rows: Iterator[dict[str, Any]]) -> set[str]:
    return {
        entry["step"]
        for row in rows
        for entry in row.get("provenance") or []
        if isinstance(entry, dict) and "step" in entry
    }


def show_table(
    run: RunDir,
    columns: list[str] | None = None,
    row_filter: RowFilter | None = None,
    limit: int | None = 20,
) -> tuple[str, Table]:
    """A summary line and a rich Table of the rows that pass `row_filter`. Unknown columns are errors
    naming the known ones."""
    row_filter = row_filter or RowFilter()
    if limit is not None and limit < 1:
        raise PublishInputError(f"--limit {limit}: give a positive number of rows")
    rows, matched, known = select(run, row_filter, limit)
    derived = {"instruction", "response"}  # shown from the messages when the column itself is absent
    wanted = list(columns) if columns else [c for c in DEFAULT_COLUMNS if c in known or c in derived]
    asked = [*wanted, *row_filter.where]
    if row_filter.min_score is not None:
        asked.append(row_filter.score_column)
    unknown = [c for c in asked if c not in known and c not in derived]
    if unknown and known:
        raise PublishInputError(
            f"{run.path}: no column {', '.join(repr(c) for c in unknown)}; "
            f"columns: {', '.join(sorted(known))}"
        )
    if row_filter.step is not None and known:
        steps = _steps_in_lineage(run.rows())
        if row_filter.step not in steps:
            raise PublishInputError(
                f"--step {row_filter.step}: no row has it in its provenance; steps there: "
                f"{', '.join(sorted(steps)) or '(none: rows carry no provenance)'}"
            )
    # The summary is a line of its own: as a table title it would wrap to a narrow table's width.
    summary = f"{run.name}: {len(rows)} of {matched} matching rows ({run.path / 'data.jsonl'})"
    table = Table(show_lines=True)
    for column in wanted:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row, column) for column in wanted))
    return summary, table
