"""Write a run's results: the dataset, data.jsonl, failures.jsonl and manifest.json.

They are written into a staging folder that then replaces the run folder's outputs at once (see
`synthkd.output_folder`): a run that fails or is killed leaves the previous outputs whole.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthkd.atomic import is_disk_full
from synthkd.errors import StorageFullError
from synthkd.kd.topk import storage_features
from synthkd.output_folder import staging_folder, swap_into_place
from synthkd.redaction import redact_value, secret_values

# For annotations only: importing synthkd.steps.base imports every step (datasketch, scipy: 2 s),
# and `synthkd show` and `synthkd report` reach this module (through publish.rundir) without steps.
if TYPE_CHECKING:
    from synthkd.steps.base import Failure, Row


def uniform(rows: list[Row]) -> list[Row]:
    """Same columns on every row (None where a row lacks one), in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return [{column: row.get(column) for column in columns} for row in rows]


def to_dataset(rows: list[Row]) -> Any:
    """The rows (uniform columns) as a `datasets.Dataset`, with compact types for kd columns."""
    dataset = _inferred_dataset(rows)
    compact = {c: f for c, f in storage_features().items() if c in dataset.column_names}
    if not compact:
        return dataset
    from datasets import Features

    return dataset.cast(Features({**dataset.features, **compact}))


def _inferred_dataset(rows: list[Row]) -> Any:
    """The rows as a `datasets.Dataset` with the types `datasets` infers.

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
    """Write all outputs to a fresh staging folder, then make it the run folder (see the module)."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink():  # replace the folder it points to, not the link
        out_dir = out_dir.resolve()
    with _full_disk_is_one_line(out_dir):
        staging = staging_folder(out_dir)
        try:
            # A teacher that echoed a key, a server error quoting one: no file keeps a secret value.
            secrets = secret_values()
            rows = redact_value(uniform(rows), secrets)
            failure_records = redact_value([{"step": step, **asdict(f)} for step, f in failures], secrets)
            manifest = redact_value(manifest, secrets)
            dataset = to_dataset(rows)
            # One shard even with no rows: datasets writes no arrow file for an empty dataset otherwise,
            # and then cannot load it back (IndexError in load_from_disk).
            dataset.save_to_disk(str(staging / "dataset"), num_shards=1 if len(dataset) == 0 else None)
            write_jsonl(staging / "data.jsonl", rows)
            write_jsonl(staging / "failures.jsonl", failure_records)
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
            swap_into_place(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _full_disk_is_one_line(out_dir: Path) -> Iterator[None]:
    """A full disk met while writing the outputs (ENOSPC from a plain write, from pyarrow or from
    `datasets`) as `StorageFullError` naming the run folder; nothing there has changed."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise StorageFullError(
            out_dir,
            what="the run folder",
            outcome="the new outputs were not written, and the previous ones there, if any, are left whole",
            fix="free some space there (or choose another folder with --output) and run the same command "
            "again: the answers received are cached, so they are not requested again",
        ) from exc


def load_run_dataset(folder: Path) -> Any:
    """A run's dataset/ folder as a `datasets` Dataset (or DatasetDict)."""
    from datasets import load_from_disk

    try:
        return load_from_disk(str(folder))
    except IndexError:
        # Runs written before write_run saved one shard for no rows have no arrow file at all.
        from datasets import Dataset, DatasetInfo

        info = DatasetInfo.from_directory(str(folder))
        return Dataset.from_dict({name: [] for name in info.features or {}}, features=info.features)
