"""Bad seed files and mistyped --set values: one line naming the file and line (or the flag), exit
code 2, no traceback; a CSV's byte-order mark is not part of its first column's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_jsonl, run_cli, write_jsonl

RECIPE = """\
name: t
teacher:
  backend: openai
  model: gpt-4o-mini
  api_key_env: SYNTHKD_TEST_KEY
  base_url: http://127.0.0.1:{port}/v1
steps:
  - step: load
    path: {seeds}
  - step: label
    prompt: prompts/label.jinja
output:
  dir: out
"""

LOAD_ONLY = """\
name: t
steps:
  - step: load
    path: {seeds}
output:
  dir: out
"""


@pytest.fixture
def recipe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Say hi."}, {"instruction": "Name a colour."}])
    monkeypatch.setenv("SYNTHKD_TEST_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def recipe(recipe_dir: Path, port: int, seeds: str = "seeds.jsonl") -> Path:
    path = recipe_dir / "recipe.yaml"
    path.write_text(RECIPE.format(port=port, seeds=seeds))
    return path


def test_latin1_jsonl_names_line_byte_and_column(recipe_dir, capsys, listening_port):
    seeds = recipe_dir / "seeds.jsonl"
    seeds.write_bytes('{"instruction": "Say hi."}\n{"instruction": "Café au lait"}\n'.encode("latin-1"))
    code, out = run_cli(["validate", str(recipe(recipe_dir, listening_port))], capsys)
    assert code == 2, out
    assert f"{seeds}: the file is not UTF-8: line 2, byte 0xe9 at column 21; save it as UTF-8" in out


def test_latin1_json_and_csv_name_line_byte_and_column(recipe_dir, capsys, listening_port):
    (recipe_dir / "seeds.json").write_bytes('[\n  {"instruction": "Ol\xe1"}\n]\n'.encode("latin-1"))
    code, out = run_cli(["validate", str(recipe(recipe_dir, listening_port, "seeds.json"))], capsys)
    assert code == 2, out
    assert "seeds.json: the file is not UTF-8: line 2, byte 0xe1 at column 22; save it as UTF-8" in out

    (recipe_dir / "seeds.csv").write_bytes("id,instruction\n1,Say hi.\n2,Café\n".encode("latin-1"))
    code, out = run_cli(["validate", str(recipe(recipe_dir, listening_port, "seeds.csv"))], capsys)
    assert code == 2, out
    assert "seeds.csv: the file is not UTF-8: line 3, byte 0xe9 at column 6; save it as UTF-8" in out


def test_csv_row_with_extra_fields_names_line_and_counts(recipe_dir, capsys, listening_port):
    seeds = recipe_dir / "seeds.csv"
    seeds.write_text('id,instruction\n1,"Say hi, politely."\n2,Name a colour, then another\n')
    code, out = run_cli(["validate", str(recipe(recipe_dir, listening_port, "seeds.csv"))], capsys)
    assert code == 2, out
    assert f"{seeds}:3: this row has 3 fields but the header names 2 columns" in out


def test_csv_with_byte_order_mark_keeps_the_first_column_name(recipe_dir, capsys):
    text = "id,instruction\r\nq1,Say hi.\r\nq2,Name a colour.\r\n"
    (recipe_dir / "seeds.csv").write_bytes(text.encode("utf-8-sig"))
    path = recipe_dir / "recipe.yaml"
    path.write_text(LOAD_ONLY.format(seeds="seeds.csv"))
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 0, out
    assert "load -> id, instruction" in out
    code, out = run_cli(["run", str(path)], capsys)
    assert code == 0, out
    rows = read_jsonl(recipe_dir / "out" / "data.jsonl")
    assert [(row["id"], row["instruction"]) for row in rows] == [("q1", "Say hi."), ("q2", "Name a colour.")]
    assert not any("\ufeff" in key for row in rows for key in row)


@pytest.mark.parametrize(
    ("name", "content"),
    [("seeds.jsonl", ""), ("seeds.jsonl", "\n  \n\n"), ("seeds.csv", "id,instruction\n")],
)
def test_empty_seeds_file_says_so(recipe_dir, capsys, listening_port, name, content):
    (recipe_dir / name).write_text(content)
    path = recipe(recipe_dir, listening_port, name)
    code, out = run_cli(["run", str(path)], capsys)
    assert code == 2, out
    assert f"recipe.yaml:9: steps.0.path: {recipe_dir / name} is empty: no rows to load" in out
    assert "needs column" not in out
    assert not (recipe_dir / "out").exists()


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        (
            "teacher.params=5",
            "--set teacher.params: teacher.params: expected a mapping of key: value pairs (got 5)",
        ),
        (
            "steps.1.teacher.params=[1]",
            "--set steps.1.teacher.params: steps.1.teacher.params: expected a mapping of key: value pairs",
        ),
        ("steps.1.n=abc", "--set steps.1.n: steps.1.n: Input should be a valid integer"),
        (
            "steps.1.step=[label]",
            "--set steps.1.step: steps.1.step: unknown step ['label'] (did you mean 'label'?); valid steps:",
        ),
    ],
)
def test_set_with_a_wrong_type_names_the_flag_and_what_is_expected(
    recipe_dir, capsys, listening_port, assignment, expected
):
    code, out = run_cli(["validate", str(recipe(recipe_dir, listening_port)), "--set", assignment], capsys)
    assert code == 2, out
    assert out.startswith(f"error: {expected}"), out
    assert out.count("error:") == 1 and out.count("expected a mapping") <= 1  # once, not once per step
