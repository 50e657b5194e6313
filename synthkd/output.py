"""Write a run's results: the dataset, data.jsonl, failures.jsonl and manifest.json.

Everything is written into a fresh staging folder beside the run folder, which then becomes the run
folder: the old one is renamed out of the way, the staging folder renamed into place, the old one
deleted. Whatever else the old run folder held (a trained student, a report) is hard-linked into the
staging folder first, so it is carried over without copying and without ever being moved out of
the old folder. A run that fails or is killed at any point leaves the previous outputs whole: all
old or all new, never a mix. Folders a killed run left behind are cleaned up (or, if it was killed
between the two renames, the old run folder is put back) by the next write to the same place.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthkd.kd.topk import storage_features

# For annotations only: importing synthkd.steps.base imports every step (datasketch, scipy: 2 s),
# and `synthkd show` and `synthkd report` reach this module (through publish.rundir) without steps.
if TYPE_CHECKING:
    from synthkd.steps.base import Failure, Row

OUTPUT_FILES = ("dataset", "data.jsonl", "failures.jsonl", "manifest.json")


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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(out_dir)
    staging = _side_folder(out_dir, "staging")
    staging.mkdir()
    try:
        rows = uniform(rows)
        dataset = to_dataset(rows)
        # One shard even with no rows: datasets writes no arrow file for an empty dataset otherwise,
        # and then cannot load it back (IndexError in load_from_disk).
        dataset.save_to_disk(str(staging / "dataset"), num_shards=1 if len(dataset) == 0 else None)
        write_jsonl(staging / "data.jsonl", rows)
        write_jsonl(staging / "failures.jsonl", [{"step": step, **asdict(f)} for step, f in failures])
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        _swap_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def _side_folder(out_dir: Path, kind: str) -> Path:
    """`.<run>.<kind>-<pid>-<random>` beside the run folder (same file system: renames are atomic)."""
    return out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def side_folders(out_dir: Path, kind: str) -> list[Path]:
    """The staging or retired folders of `out_dir` whose writer is no longer running."""
    prefix = f".{out_dir.name}.{kind}-"
    if not out_dir.parent.is_dir():
        return []
    found = []
    for path in out_dir.parent.iterdir():
        if not path.name.startswith(prefix):
            continue
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if not (pid.isdigit() and _running(int(pid))):
            found.append(path)
    return found


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's process exists; a bogus pid does not
    return True


def recover(out_dir: Path) -> None:
    """Clean up after a writer that was killed: delete its staging folders; put its retired run
    folder back if it died before the new one was renamed into place, else delete it."""
    for staging in side_folders(out_dir, "staging"):
        shutil.rmtree(staging, ignore_errors=True)
    retired = sorted(side_folders(out_dir, "retired"), key=lambda path: path.stat().st_mtime)
    if retired and not out_dir.exists():
        os.rename(retired.pop(), out_dir)
    for path in retired:
        shutil.rmtree(path, ignore_errors=True)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Make `staging` the run folder, carrying over what else the old one held."""
    if out_dir.exists() and _contains_cwd(out_dir):
        # Renaming the working directory away would leave this process in a deleted folder.
        _swap_files(staging, out_dir)
        return
    if out_dir.exists():
        for entry in out_dir.iterdir():
            if entry.name not in OUTPUT_FILES:
                _link_tree(entry, staging / entry.name)
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    retired = _side_folder(out_dir, "retired")
    os.rename(out_dir, retired)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(retired, out_dir)  # the old outputs stay where they were
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _contains_cwd(folder: Path) -> bool:
    with contextlib.suppress(OSError):
        cwd, folder = Path.cwd().resolve(), folder.resolve()
        return cwd == folder or folder in cwd.parents
    return False


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link a file or folder tree (copy where links are impossible); symlinks stay symlinks."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(source, target)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _swap_files(staging: Path, out_dir: Path) -> None:
    """The fallback: replace the output files one by one; other files there are left alone."""
    retired = _side_folder(out_dir, "retired")
    retired.mkdir()
    for name in OUTPUT_FILES:
        if (out_dir / name).exists():
            os.replace(out_dir / name, retired / name)
    for name in OUTPUT_FILES:
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(retired, ignore_errors=True)
