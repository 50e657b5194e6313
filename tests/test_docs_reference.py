"""The generated documentation stays true: docs/reference.md is what the pydantic fields say, and
the README's recipe table is what `synthkd recipes` lists. Regenerate with `make docs`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from synthkd import docs_reference
from synthkd.docs_reference import TABLE_END, TABLE_START, missing_descriptions, reference_markdown, type_text
from synthkd.steps import STEP_CLASSES

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run `make docs` (python -m synthkd.docs_reference) and commit the result"


def test_the_key_reference_is_generated_from_the_code():
    written = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert written == reference_markdown(), f"docs/reference.md is out of date: {REGENERATE}"


def test_every_recipe_key_has_a_description():
    assert missing_descriptions() == [], "add description= to these fields: " + ", ".join(
        missing_descriptions()
    )


def test_the_reference_has_every_step_and_its_keys():
    text = reference_markdown()
    for cls in STEP_CLASSES:
        chapter = text.split(f"\n## {cls.type_name()}\n", 1)[1].split("\n## ", 1)[0]
        for key, _ in docs_reference.documented_fields(cls):
            assert f"| `{key}` |" in chapter, (cls.type_name(), key)
    assert "| `schema` |" in text  # a field's alias is the key a recipe writes (label's output_schema)
    assert "| `output_schema` |" not in text


def test_types_read_as_yaml_does():
    assert type_text(int | None, {}) == "`int` \\| `null`"
    assert type_text(list[str], {}) == "list of `str`"


def _readme_table_rows() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip().splitlines()[2:]
    rows = []
    for line in table:
        path, summary = (cell.strip() for cell in line.strip("|").split(" | ", 1))
        rows.append((path.strip("`"), summary.replace("\\|", "|")))
    return rows


def test_the_readme_recipe_table_is_what_synthkd_recipes_lists():
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from synthkd.cli import console_main; raise SystemExit(console_main())",
            "recipes",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    expected = [tuple(part.strip() for part in line.split("  ", 1)) for line in listed]
    assert _readme_table_rows() == expected, f"the README's recipe table is out of date: {REGENERATE}"
    assert len(expected) >= 20


def test_check_finds_a_stale_file_and_regenerating_fixes_it(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "recipes").mkdir()
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "recipes" / "quickstart.yaml", tmp_path / "recipes" / "quickstart.yaml")
    (tmp_path / "docs" / "reference.md").write_text("# edited by hand\n", encoding="utf-8")
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    start = readme.index(TABLE_START) + len(TABLE_START)
    (tmp_path / "README.md").write_text(readme[:start] + "\n| stale |" + readme[start:], encoding="utf-8")

    assert docs_reference.main(["--check", "--root", str(tmp_path)]) == 1
    assert docs_reference.main(["--root", str(tmp_path)]) == 0
    assert docs_reference.main(["--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "docs" / "reference.md").read_text(encoding="utf-8") == reference_markdown()
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == (ROOT / "README.md").read_text(
        encoding="utf-8"
    )
