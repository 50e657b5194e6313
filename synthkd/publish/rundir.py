"""Read a finished run folder: its manifest, its rows and its dataset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthkd.errors import SynthkdError
from synthkd.output import load_run_dataset, read_jsonl


class PublishInputError(SynthkdError):
    """Bad input to card, push, report or show (no run folder, a bad repo id, an unknown column)."""

    exit_code = 2


@dataclass
class RunDir:
    """A run folder written by `synthkd run`: manifest.json, data.jsonl, dataset/."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def recipe(self) -> dict[str, Any]:
        return self.manifest.get("recipe") or {}

    @property
    def output(self) -> dict[str, Any]:
        return self.recipe.get("output") or {}

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("steps") or [])

    def rows(self) -> Iterator[dict[str, Any]]:
        """The rows, streamed from data.jsonl (the dataset's rows, as plain JSON)."""
        path = self.path / "data.jsonl"
        if path.exists():
            yield from read_jsonl(path)

    def dataset(self):
        """The `datasets` Dataset or DatasetDict of dataset/ (save_to_disk)."""
        folder = self.path / "dataset"
        if not folder.exists():
            raise PublishInputError(f"{self.path}: no dataset/ folder; was the run finished?")
        return load_run_dataset(folder)

    def splits(self) -> dict[str, Any]:
        """split name -> Dataset; a single Dataset is the `train` split, as push_to_hub names it."""
        from datasets import DatasetDict

        dataset = self.dataset()
        return dict(dataset) if isinstance(dataset, DatasetDict) else {"train": dataset}


def open_run(path: str | Path) -> RunDir:
    """The run folder at `path`, or one clear error saying what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise PublishInputError(f"{folder}: no such run folder (give the output.dir of a finished run)")
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise PublishInputError(f"{folder}: not a synthkd run folder (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PublishInputError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise PublishInputError(f"{manifest_path}: not a synthkd manifest")
    return RunDir(folder, manifest)
