"""`load`: read seed rows from a file, a `save_to_disk` folder or a Hub dataset."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache
from synthkd.data_files import read_rows
from synthkd.errors import RecipeError
from synthkd.hub_ids import is_hub_dataset_id
from synthkd.shipped import not_found
from synthkd.steps.base import CheckContext, Columns, Row, Step, StepContext, StepPlan, StepResult
from synthkd.steps.sources import SeedSource


class LoadStep(Step, SeedSource):
    """Read rows. Self-Instruct's `seed_tasks.jsonl` is recognised and its instances flattened."""

    step: Literal["load"] = "load"
    path: str = Field(description="a .jsonl/.json/.csv/.parquet file, a save_to_disk folder, or a Hub id")
    split: str = Field("train", description="split of a Hub dataset or a DatasetDict folder")
    limit: int | None = Field(None, ge=1, description="keep the first N rows")
    rename: dict[str, str] = Field(default_factory=dict, description="column renames, old: new")

    _rows: list[Row] | None = PrivateAttr(None)

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        source = self.local_file(self.path, ctx, "path")
        if source is None and not is_hub_dataset_id(self.path):
            raise RecipeError(not_found("file", self.path, ctx.recipe_dir), where=ctx.at("path"))
        if source is None:
            return None  # a Hub dataset: its columns are known only once it is downloaded
        rows = read_rows(source, self.split)
        if not rows:  # before any request: a run of nothing is a mistake, not a dataset
            raise RecipeError(f"{source} is empty: no rows to load", where=ctx.at("path"))
        self._rows = self._finish(rows, ctx)
        return set().union(*(row.keys() for row in self._rows)) if self._rows else {"id"}

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        if self._rows is None:  # a Hub dataset
            from datasets import load_dataset

            dataset = load_dataset(self.path, split=self.split)
            self._rows = self._finish([dict(row) for row in dataset], None)
        ctx.progress.set_total(len(self._rows))
        ctx.progress.advance(len(self._rows))
        return StepResult(list(rows) + self._rows)

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        return list(rows) + (self._rows or []), StepPlan()

    def _finish(self, rows: list[Row], ctx: CheckContext | None) -> list[Row]:
        rows = flatten_self_instruct(rows)
        if self.limit is not None:
            rows = rows[: self.limit]
        if self.rename:
            present = set().union(*(row.keys() for row in rows)) if rows else set()
            unknown = sorted(set(self.rename) - present)
            if unknown and ctx is not None:
                raise RecipeError(
                    f"cannot rename missing column(s) {', '.join(unknown)}; "
                    f"the data has: {', '.join(sorted(present))}",
                    where=ctx.at("rename"),
                )
            rows = [{self.rename.get(key, key): value for key, value in row.items()} for row in rows]
        return assign_ids(rows)


def flatten_self_instruct(rows: list[Row]) -> list[Row]:
    """Self-Instruct seed tasks carry `instances: [{input, output}]`; make one row per instance."""
    if not rows or not all(isinstance(row.get("instances"), list) for row in rows):
        return rows
    flat = []
    for row in rows:
        base = {key: value for key, value in row.items() if key not in ("instances", "id")}
        instances = row["instances"] or [{"input": "", "output": ""}]
        for index, instance in enumerate(instances):
            task_id = str(row.get("id", "")) or None
            flat_row = {
                **({"id": task_id if len(instances) == 1 else f"{task_id}-{index}"} if task_id else {}),
                **base,
                "input": instance.get("input", ""),
                "output": instance.get("output", ""),
            }
            flat.append(flat_row)
    return flat


def assign_ids(rows: list[Row]) -> list[Row]:
    """Give every row a stable, unique string `id`: its own if it has one, else a hash of its
    content. A repeated id gets the first free `-N` suffix that no other row's own id takes, so
    rows a, a, a-1 become a, a-2, a-1."""
    bases = []
    for row in rows:
        if row.get("id") not in (None, ""):
            bases.append(str(row["id"]))
        else:
            canonical = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
            bases.append(hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12])
    own = set(bases)
    assigned: set[str] = set()
    next_suffix: dict[str, int] = {}
    result = []
    for row, base in zip(rows, bases, strict=True):
        row_id = base
        if row_id in assigned:
            count = next_suffix.get(base, 1)
            while f"{base}-{count}" in assigned or f"{base}-{count}" in own:
                count += 1
            next_suffix[base] = count + 1
            row_id = f"{base}-{count}"
        assigned.add(row_id)
        rest = {key: value for key, value in row.items() if key != "id"}
        result.append({"id": row_id, **rest})
    return result
