"""Write a run's results: the dataset, data.jsonl, failures.jsonl and manifest.json.

They are written into a staging folder that then replaces the run folder's outputs at once (see
`synthkd.output_folder`): a run that fails or is killed leaves the previous outputs whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthkd.atomic import is_disk_full
from synthkd.errors import StorageFullError
from synthkd.gc_pause import cycle_collection_paused
from synthkd.kd.topk import storage_features
from synthkd.output_folder import staging_folder, swap_into_place
from synthkd.redaction import redact_value, secret_values

# For annotations only: importing synthkd.steps.base imports every step (datasketch, scipy: 2 s),
# and `synthkd show` and `synthkd report` reach this module (through publish.rundir) without steps.
if TYPE_CHECKING:
    from synthkd.steps.base import Failure, Row


_writer_import: threading.Thread | None = None


def import_writer_in_background() -> None:
    """Start importing `datasets`, which writes the dataset, in a background thread (once).

    The import costs about a second of CPU. Met in `write_run`, it comes after the last answer, a
    second added to the run; started while a step waits on its teacher, it runs in the event
    loop's idle time and is done by then. An import that fails here is left for `write_run` to
    meet again, and report, where it always did."""
    global _writer_import
    if _writer_import is not None or "datasets" in sys.modules:
        return
    _writer_import = threading.Thread(target=_import_datasets, name="synthkd-import-datasets", daemon=True)
    _writer_import.start()


def _import_datasets() -> None:
    with contextlib.suppress(Exception):
        import datasets  # noqa: F401


def uniform(rows: list[Row]) -> list[Row]:
    """Same columns on every row (None where a row lacks one), in first-seen order. Rows that
    have them already, in that order, are passed as they are (the usual case: copying every row
    cost a 200,000-row run a second)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    order = tuple(columns)
    return [row if tuple(row) == order else {column: row.get(column) for column in order} for row in rows]


def to_dataset(rows: list[Row]) -> Any:
    """The rows (uniform columns) as a `datasets.Dataset`, with compact types for kd columns."""
    dataset = _inferred_dataset(rows)
    compact = {c: f for c, f in storage_features().items() if c in dataset.column_names}
    if not compact:
        return dataset
    from datasets import Features

    return dataset.cast(Features({**dataset.features, **compact}))


def _inferred_dataset(rows: list[Row]) -> Any:
    """The rows as a `datasets.Dataset` with Arrow types that survive parquet and pandas.

    Message lists (TRL's `messages`, `prompt`, `chosen`, `rejected`: lists of dicts with a `role`)
    become lists of structs whatever their turns hold: a key only some turns have (`tool_calls`,
    `tool_call_id`, `name`) is None in the others, which chat templates and transformers treat as
    absent. Only a tool call's `arguments`, whose keys differ from tool to tool, is stored as JSON
    text (`datasets.Json`: `datasets` and TRL read it back as the dict chat templates render; pyarrow
    and pandas see the JSON string of OpenAI's wire format). Any other column whose nested dicts
    differ in keys at the same place is stored whole as `datasets.Json`: Arrow would otherwise give
    every dict every key seen anywhere, filled with None, or fail when a key's type differs.
    """
    from datasets import Dataset

    if not rows:
        return Dataset.from_dict({"id": []})
    try:
        from datasets import Json
    except ImportError:  # datasets < 4.5 has no Json feature: arguments stay JSON text
        Json = None
    conversations = [column for column in rows[0] if _is_message_list(row[column] for row in rows)]
    if not conversations:
        return _typed_dataset(rows, [], Json)
    import pyarrow as pa

    with_text = _with_arguments_as_text(rows, conversations)
    try:
        return _typed_dataset(with_text, conversations, Json)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Turns Arrow cannot unify (text content here, a list of parts there): such a column is
        # stored whole as JSON, as it is, and the others as above.
        whole = [c for c in conversations if not _arrow_types([row[c] for row in with_text])]
        if not whole:
            raise
    mixed = [{**row, **{c: rows[index][c] for c in whole}} for index, row in enumerate(with_text)]
    return _typed_dataset(mixed, [c for c in conversations if c not in whole], Json, as_json=whole)


def _with_arguments_as_text(rows: list[Row], conversations: list[str]) -> list[Row]:
    """The rows with tool calls' `arguments` as JSON text in the conversation columns; a row
    without tool calls is passed as it is, not copied."""
    result = []
    for row in rows:
        changed = None
        for column in conversations:
            text = _arguments_as_text(row[column])
            if text is not row[column]:
                changed = {**(changed or row), column: text}
        result.append(changed or row)
    return result


def _typed_dataset(
    rows: list[Row], conversations: list[str], json_type: Any, as_json: list[str] | None = None
) -> Any:
    from datasets import Dataset, Features

    if json_type is None:
        return Dataset.from_list(rows)
    varied = [
        c
        for c in rows[0]
        if c in (as_json or []) or (c not in conversations and _keys_vary(row[c] for row in rows))
    ]
    if not varied and not conversations:
        return Dataset.from_list(rows)
    plain = Dataset.from_list(
        [{k: v for k, v in row.items() if k not in varied} for row in rows] if varied else rows
    )
    features = Features(
        {c: json_type() if c in varied else _json_arguments(plain.features[c], json_type) for c in rows[0]}
    )
    if features == plain.features:  # no tool call anywhere, nothing stored as JSON
        return plain
    return Dataset.from_list(rows, features=features)


def _arrow_types(values: list[Any]) -> bool:
    """Whether Arrow can give `values` one type."""
    import pyarrow as pa

    try:
        pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _is_message_list(values: Any) -> bool:
    """Whether a column holds conversations: lists of dicts that each have a text `role`."""
    seen = False
    for value in values:
        if value is None:
            continue
        if not isinstance(value, list):
            return False
        for message in value:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return False
            seen = True
    return seen


def _arguments_as_text(messages: Any) -> Any:
    """`messages` with each tool call's `arguments` (OpenAI's {"function": {"name", "arguments"}}
    or the flat {"name", "arguments"}) as JSON text; everything else as it is."""
    if not isinstance(messages, list) or not any(isinstance(m.get("tool_calls"), list) for m in messages):
        return messages
    return [
        {**message, "tool_calls": [_call_as_text(call) for call in message["tool_calls"]]}
        if isinstance(message.get("tool_calls"), list)
        else message
        for message in messages
    ]


def _call_as_text(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    call = dict(call)
    if isinstance(call.get("function"), dict):
        call["function"] = _call_as_text(call["function"])
    arguments = call.get("arguments")
    if arguments is not None and not isinstance(arguments, str):
        call["arguments"] = json.dumps(arguments, ensure_ascii=False)
    return call


def _json_arguments(feature: Any, json_type: Any, in_call: bool = False) -> Any:
    """`feature` with every `arguments` inside a `tool_calls` typed `json_type` (datasets.Json)."""
    from datasets import LargeList, List  # datasets >= 4.5 here: it has Json

    if isinstance(feature, dict):
        return {
            key: json_type()
            if in_call and key == "arguments"
            else _json_arguments(value, json_type, in_call or key == "tool_calls")
            for key, value in feature.items()
        }
    if isinstance(feature, (List, LargeList)):
        kind = type(feature)
        inner = _json_arguments(feature.feature, json_type, in_call)
        return kind(inner, length=feature.length) if kind is List else kind(inner)
    return feature


def _keys_vary(values: Any) -> bool:
    """Whether the values differ in shape at the same place: dicts with other keys, or a text
    here and a number there (a user's parser returning either), which Arrow cannot type."""
    shapes: dict[str, object] = {}
    scalar_shapes: dict[type, object] = {}
    # Dicts already walked, by place: walking one again can find nothing new. Rows share such
    # dicts (the provenance entry a step stamps on every row it makes), so each is walked once.
    walked: dict[str, set[int]] = {}

    def walk(value: Any, where: str) -> bool:
        if value is None:
            return False
        if isinstance(value, dict):
            seen = walked.setdefault(where, set())
            if id(value) in seen:
                return False
            seen.add(id(value))
            shape: object = frozenset(value)
        elif isinstance(value, list):
            shape = "list"
        else:
            kind = type(value)
            shape = scalar_shapes.get(kind) or scalar_shapes.setdefault(kind, _scalar_shape(value))
        if shapes.setdefault(where, shape) != shape:
            return True
        if isinstance(value, dict):
            return any(walk(item, f"{where}.{key}") for key, item in value.items())
        if isinstance(value, list):
            return any(walk(item, where + "[]") for item in value)
        return False

    # A scalar's shape at the top is all there is to it: after one value of a type, the next
    # values of that type (most columns: every row's text) can be skipped without a call.
    top_scalars: set[type] = set()
    for value in values:
        kind = type(value)
        if kind in top_scalars:
            continue
        if walk(value, ""):
            return True
        if not isinstance(value, (dict, list)):
            top_scalars.add(kind)
    return False


def _scalar_shape(value: Any) -> object:
    """Ints and floats are one shape ("number"), as Arrow unifies them; any other type its own."""
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value)


@contextlib.contextmanager
def _no_datasets_bar() -> Iterator[None]:
    """datasets draws a bar for saving shards; the run's own bars and summary say it already (and
    `synthkd.run(progress=False)` means none at all). Put back as the caller had it."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def write_run(out_dir: Path, rows: list[Row], failures: list[tuple[str, Failure]], manifest: dict) -> None:
    """Write all outputs to a fresh staging folder, then make it the run folder (see the module)."""
    writer = RunWriter(out_dir)
    try:
        writer.add(rows, failures)
        writer.finish(out_dir, manifest)
    finally:
        writer.discard()


class RunWriter:
    """Writes a run's outputs as its rows come, in chunks, into a staging folder that `finish`
    makes the run folder (or the `.incomplete` one beside it).

    Each chunk's rows are appended to data.jsonl and typed into a dataset shard of their own
    (`to_dataset`), so a run that streams its rows (see `synthkd.streaming`) never holds them all.
    A run written in one chunk gets exactly the dataset it always did: the one shard is the
    dataset. Chunks whose column types differ (a column empty in one, text in another) are cast
    to common types; where Arrow cannot unify them, the dataset is typed again from data.jsonl
    as a whole, as one chunk would have been."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = _real_folder(out_dir)
        self.rows_written = 0
        self._secrets = secret_values()  # a teacher that echoed a key: no file keeps its value
        self._shards: list[Path] = []
        with _full_disk_is_one_line(self.out_dir):
            self.staging = staging_folder(self.out_dir)
            self._rows_file = (self.staging / "data.jsonl").open("w", encoding="utf-8")
            self._failures_file = (self.staging / "failures.jsonl").open("w", encoding="utf-8")

    def add(self, rows: list[Row], failures: list[tuple[str, Failure]] = ()) -> None:
        """Write a chunk of rows (and failures): data.jsonl's lines and one dataset shard."""
        with _full_disk_is_one_line(self.out_dir), cycle_collection_paused():
            records = redact_value([{"step": step, **asdict(f)} for step, f in failures], self._secrets)
            _append_jsonl(self._failures_file, records)
            if rows:
                rows = redact_value(uniform(rows), self._secrets)
                _append_jsonl(self._rows_file, rows)
                self._add_shard(rows)
            for handle in (self._rows_file, self._failures_file):
                handle.flush()  # a chunk is on disk once added, not when a buffer fills

    def _add_shard(self, rows: list[Row]) -> None:
        shard = self.staging / f".shard-{len(self._shards):05d}"
        dataset = to_dataset(rows)
        # One shard even with no rows: datasets writes no arrow file for an empty dataset
        # otherwise, and then cannot load it back (IndexError in load_from_disk).
        with _no_datasets_bar():
            dataset.save_to_disk(str(shard), num_shards=1 if len(dataset) == 0 else None)
        self._shards.append(shard)
        self.rows_written += len(rows)

    def finish(self, destination: Path, manifest: dict) -> None:
        """Write the manifest and the whole dataset, then make the staging folder `destination`
        (the run folder, or the `.incomplete` folder beside it)."""
        destination = _real_folder(destination)
        with _full_disk_is_one_line(destination), cycle_collection_paused():
            if not self._shards:  # a run of no rows still has a dataset, with no rows
                self._add_shard([])
            self._rows_file.close()
            self._failures_file.close()
            self._assemble_dataset(self.staging / "dataset")
            manifest = redact_value(manifest, self._secrets)
            manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
            (self.staging / "manifest.json").write_text(manifest_text)
            staging = self.staging
            if destination != self.out_dir and staging.parent != destination.parent:
                staging = _moved_to_staging_for(staging, destination)  # staged inside the run folder
            swap_into_place(staging, destination)
            self.staging = staging

    def discard(self) -> None:
        """Remove what is left of the staging folder (all of it, unless `finish` moved it)."""
        for handle in (self._rows_file, self._failures_file):
            with contextlib.suppress(OSError):  # a full disk met flushing it: the files go anyway
                handle.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def _assemble_dataset(self, target: Path) -> None:
        if len(self._shards) == 1:
            os.rename(self._shards[0], target)
            return
        from datasets import concatenate_datasets

        parts = [load_run_dataset(shard) for shard in self._shards]
        try:
            whole = concatenate_datasets(_with_common_features(parts))
        except (ValueError, TypeError, NotImplementedError) + _arrow_errors():
            # Shapes Arrow cannot unify across chunks (a struct here, JSON text there): type the
            # dataset from all the rows at once, as a run in one chunk is typed.
            whole = to_dataset(uniform(list(read_jsonl(self.staging / "data.jsonl"))))
        with _no_datasets_bar():
            whole.save_to_disk(str(target), num_shards=1 if len(whole) == 0 else None)
        del parts, whole
        for shard in self._shards:
            shutil.rmtree(shard, ignore_errors=True)


def _real_folder(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.resolve() if out_dir.is_symlink() else out_dir  # replace what a link points to


def _append_jsonl(handle: Any, records: list[dict[str, Any]]) -> None:
    handle.writelines(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file written here (data.jsonl, failures.jsonl), one at a time."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _arrow_errors() -> tuple[type[Exception], ...]:
    import pyarrow as pa

    return (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _with_common_features(parts: list[Any]) -> list[Any]:
    """The dataset shards with the same columns, in the same order, and the same types: a column
    a shard lacks is added empty, and one typed null where it was always empty takes the type
    another shard gave it. Shards already alike are returned as they are."""
    from datasets import Features, Value

    columns: dict[str, Any] = {}
    for part in parts:
        for name, feature in part.features.items():
            if columns.get(name) is None or columns[name] == Value("null"):
                columns[name] = feature
    features = Features(columns)
    aligned = []
    for part in parts:
        if list(part.features) == list(features) and part.features == features:
            aligned.append(part)
            continue
        for name in features:
            if name not in part.column_names:
                part = part.add_column(name, [None] * len(part))
        aligned.append(part.select_columns(list(features)).cast(features))
    return aligned


def _moved_to_staging_for(staging: Path, destination: Path) -> Path:
    """The staged outputs moved to a new staging folder beside `destination`: a run folder that
    cannot be renamed stages inside itself, and its `.incomplete` folder is beside it."""
    moved = staging_folder(destination)
    for entry in staging.iterdir():
        shutil.move(str(entry), str(moved / entry.name))
    shutil.rmtree(staging, ignore_errors=True)
    return moved


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
