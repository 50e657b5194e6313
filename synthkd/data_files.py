"""Read rows from a local data file (.jsonl, .json, .csv, .parquet) or a `save_to_disk` folder.

Shared by every step that reads data the recipe names: load, decontaminate's eval sets, doc_qa's
documents.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from synthkd.errors import RecipeError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

Row = dict[str, Any]


def read_rows(source: Path, split: str) -> list[Row]:
    """Rows of a local file or `save_to_disk` folder, as plain dicts."""
    if source.is_dir():
        from datasets import Dataset, DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(source))
        except FileNotFoundError as exc:
            raise RecipeError(f"not a save_to_disk folder: {exc}", where=str(source)) from None
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise RecipeError(f"no split {split!r}; it has: {', '.join(loaded)}", where=str(source))
            loaded = loaded[split]
        assert isinstance(loaded, Dataset)
        return [dict(row) for row in loaded]
    suffix = source.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(source)
    if suffix == ".json":
        return _read_json(source)
    if suffix == ".csv":
        with source.open(newline="", encoding="utf-8") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(source).to_pylist()
    raise RecipeError(
        f"unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}", where=str(source)
    )


def _read_jsonl(source: Path) -> list[Row]:
    rows = []
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecipeError(
                    f"invalid JSON: {exc.msg} (column {exc.colno})", where=f"{source}:{number}"
                ) from None
            if not isinstance(row, dict):
                raise RecipeError("each line must be a JSON object", where=f"{source}:{number}")
            rows.append(row)
    return rows


def _read_json(source: Path) -> list[Row]:
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecipeError(f"invalid JSON: {exc.msg}", where=f"{source}:{exc.lineno}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]  # the common {"data": [...]} wrapper
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise RecipeError('expected a JSON list of objects (or {"data": [...]})', where=str(source))
    return data
