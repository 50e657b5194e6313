"""`synthkd show`: a table of a run's rows, filtered by column, score and step lineage."""

from __future__ import annotations

from pathlib import Path

import pytest
from publish_run import make_run

from synthkd.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("show"))


def show(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["show", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_default_columns_and_limit(run_dir: Path, capsys):
    code, out, _ = show(capsys, str(run_dir), "--limit", "3")
    assert code == 0
    assert "3 of 8 matching rows" in out
    for column in ("id", "instruction", "response", "score"):
        assert column in out
    assert "tides" in out and "Answer: Explain why the sea" in out


def test_where_and_columns(run_dir: Path, capsys):
    code, out, _ = show(capsys, str(run_dir), "--where", "id=bread", "--columns", "id,score,finish_reason")
    assert code == 0
    assert "1 of 1 matching rows" in out and "bread" in out and "stop" in out
    assert "tides" not in out
    code, out, _ = show(capsys, str(run_dir), "--where", "score=7", "--limit", "100")
    assert "6 of 6 matching rows" in out  # numbers compare as numbers: 7 matches 7.0


def test_min_score(run_dir: Path, capsys):
    code, out, _ = show(capsys, str(run_dir), "--min-score", "8", "--columns", "id,score")
    assert code == 0
    assert "2 of 2 matching rows" in out
    assert "sql" in out and "python" in out and "tides" not in out


def test_step_lineage(run_dir: Path, capsys):
    code, out, _ = show(capsys, str(run_dir), "--step", "judge", "--limit", "100")
    assert code == 0 and "8 of 8 matching rows" in out
    code, _, err = show(capsys, str(run_dir), "--step", "dedup")  # dedup passes rows through
    assert code == 2
    assert "no row has it in its provenance" in err and "judge, label" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--columns", "id,nope"], "no column 'nope'"),
        (["--where", "idbread"], "write COLUMN=VALUE"),
        (["--min-score", "5", "--score-column", "rating"], "no column 'rating'"),
        (["--limit", "0"], "positive number"),
    ],
)
def test_bad_filters_are_one_clear_error(run_dir: Path, capsys, args: list[str], message: str):
    code, _, err = show(capsys, str(run_dir), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_run_dir(tmp_path: Path, capsys):
    code, _, err = show(capsys, str(tmp_path / "nowhere"))
    assert code == 2 and "no such run folder" in err
    code, _, err = show(capsys, str(tmp_path))
    assert code == 2 and "no manifest.json" in err
