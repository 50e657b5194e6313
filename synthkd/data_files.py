"""Read rows from a local data file (.jsonl, .json, .csv, .parquet) or a `save_to_disk` folder.

Shared by every step that reads data the recipe names: load, decontaminate's eval sets, doc_qa's
documents. Text files are UTF-8, with or without a byte-order mark; any other encoding, a malformed
line or a CSV row with more fields than its header is a RecipeError naming the file and line.
"""

from __future__ import annotations

import codecs
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
    if suffix in _TEXT_READERS:
        try:
            return _TEXT_READERS[suffix](source)
        except UnicodeDecodeError:
            raise _not_utf8(source) from None
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(source).to_pylist()
    raise RecipeError(
        f"unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}", where=str(source)
    )


def _read_jsonl(source: Path) -> list[Row]:
    rows = []
    with source.open(encoding="utf-8-sig") as handle:
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
    text = source.read_text(encoding="utf-8-sig")
    if not text.strip():
        return []  # an empty file: no rows (the load step says so)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(f"invalid JSON: {exc.msg}", where=f"{source}:{exc.lineno}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]  # the common {"data": [...]} wrapper
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise RecipeError('expected a JSON list of objects (or {"data": [...]})', where=str(source))
    return data


def _read_csv(source: Path) -> list[Row]:
    """Rows keyed by the header's names. Blank lines are skipped and a short row's missing fields
    are None, as with csv.DictReader; a row with more fields than the header is an error."""
    rows: list[Row] = []
    # utf-8-sig: a byte-order mark (Excel writes one) must not become part of the first name.
    with source.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next((record for record in reader if record), [])
            for record in reader:
                if not record:
                    continue
                if len(record) > len(header):
                    raise RecipeError(
                        f"this row has {len(record)} fields but the header names {len(header)} "
                        "columns; quote a value that contains a comma",
                        where=f"{source}:{reader.line_num}",
                    )
                missing: list[str | None] = [None] * (len(header) - len(record))
                rows.append(dict(zip(header, [*record, *missing], strict=True)))
        except csv.Error as exc:
            raise RecipeError(f"invalid CSV: {exc}", where=f"{source}:{reader.line_num}") from None
    return rows


# The text formats; a UnicodeDecodeError from any of them is reported by `_not_utf8`.
_TEXT_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}


def _not_utf8(source: Path) -> RecipeError:
    """Where a file stops being UTF-8: its line, the byte and its column on that line."""
    data = source.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        return RecipeError(
            f"the file is not UTF-8: line {line}, byte 0x{data[exc.start]:02x} at column {column}; "
            "save it as UTF-8",
            where=str(source),
        )
    return RecipeError("the file is not UTF-8; save it as UTF-8", where=str(source))
