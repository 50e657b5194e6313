"""Write a run's results: the dataset, data.jsonl, failures.jsonl and manifest.json.

Everything is written into a staging folder beside the run folder and then swapped into place,
so a run that fails never leaves a half-written dataset where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # steps import this module (with_messages); a runtime import would be circular
    from synthkd.steps.base import Failure, Row

OUTPUT_FILES = ("dataset", "data.jsonl", "failures.jsonl", "manifest.json")


def with_messages(rows: list[Row]) -> list[Row]:
    """Add TRL's conversational `messages` column; the flat columns stay."""
    result = []
    for row in rows:
        if "messages" in row or "response" not in row:
            result.append(row)
            continue
        user = row.get("prompt")
        if user is None:
            user = "\n\n".join(part for part in (row.get("instruction"), row.get("input")) if part)
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}]
        result.append({**row, "messages": messages})
    return result


def uniform(rows: list[Row]) -> list[Row]:
    """Same columns on every row (None where a row lacks one), in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return [{column: row.get(column) for column in columns} for row in rows]


def to_dataset(rows: list[Row]) -> Any:
    """The rows (uniform columns) as a `datasets.Dataset`.

    A column whose nested dicts differ in keys at the same place (tool-call arguments, tool schemas,
    messages with and without `tool_calls`) is stored as `datasets.Json`: Arrow would otherwise give
    every dict every key seen anywhere, filled with None, or fail when a key's type differs.
    """
    from datasets import Dataset, Features

    if not rows:
        return Dataset.from_dict({"id": []})
    try:
        from datasets import Json
    except ImportError:  # datasets < 4.5 has no Json feature
        return Dataset.from_list(rows)
    varied = [column for column in rows[0] if _keys_vary(row[column] for row in rows)]
    if not varied:
        return Dataset.from_list(rows)
    plain = Dataset.from_list([{k: v for k, v in row.items() if k not in varied} for row in rows])
    features = Features({c: Json() if c in varied else plain.features[c] for c in rows[0]})
    return Dataset.from_list(rows, features=features)


def _keys_vary(values: Any) -> bool:
    shapes: dict[str, frozenset] = {}

    def walk(value: Any, where: str) -> bool:
        if isinstance(value, dict):
            keys = frozenset(value)
            if shapes.setdefault(where, keys) != keys:
                return True
            return any(walk(item, f"{where}.{key}") for key, item in value.items())
        if isinstance(value, list):
            return any(walk(item, where + "[]") for item in value)
        return False

    return any(walk(value, "") for value in values)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def write_run(out_dir: Path, rows: list[Row], failures: list[tuple[str, Failure]], manifest: dict) -> None:
    """Write all outputs to a staging folder, then move them into `out_dir` in one swap."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        rows = uniform(rows)
        dataset = to_dataset(rows)
        dataset.save_to_disk(str(staging / "dataset"))
        write_jsonl(staging / "data.jsonl", rows)
        write_jsonl(staging / "failures.jsonl", [{"step": step, **asdict(f)} for step, f in failures])
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        _swap_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace the outputs in `out_dir` by the staged ones; other files there are left alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    retired = out_dir.parent / f".{out_dir.name}.retired-{os.getpid()}"
    shutil.rmtree(retired, ignore_errors=True)
    retired.mkdir()
    for name in OUTPUT_FILES:
        if (out_dir / name).exists():
            os.replace(out_dir / name, retired / name)
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(retired, ignore_errors=True)
