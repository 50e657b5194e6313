"""Small helpers shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_cli(args: list[str], capsys) -> tuple[int, str]:  # noqa: ANN001 (pytest's CaptureFixture)
    """Run the `synthkd` command in-process: its exit code and its output, rich's line breaks
    unwrapped. A traceback is never a clear message, so none may be printed."""
    from synthkd.cli import main

    code = main(args)
    captured = capsys.readouterr()
    out = " ".join((captured.err + captured.out).split())
    assert "Traceback" not in out
    return code, out
