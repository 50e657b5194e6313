"""Every shipped recipe validates and dry-runs; the quickstart runs end to end on the embedded teacher."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import read_jsonl

from synthkd.cli import main
from synthkd.recipe import load_recipe
from synthkd.shipped import shipped_root

RECIPES = sorted((shipped_root() / "recipes").rglob("*.yaml"))


def test_recipes_are_found():
    assert len(RECIPES) >= 2
    assert any(path.name == "quickstart.yaml" for path in RECIPES)


COST = re.compile(r"~?\d+\.\d{4}|price unknown")  # the dry run's cost cell
MINUTES = re.compile(r"~?\d+\.\d")  # and its time cell


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(shipped_root() / "recipes")))
def test_recipe_validates_and_dry_runs(recipe: Path, capsys: pytest.CaptureFixture, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # validate stops on a missing key; none is used
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    assert main(["run", str(recipe), "--dry-run"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out  # the dry run is the command's answer: stdout
    assert "dry run" in out and "requests" in out
    table = {cells[0]: cells for cells in _table_rows(out)}
    # Every teacher step is estimated, with a cost and a time, and so is the total.
    teacher_steps = [
        f"{i}:{step.step}" for i, step in enumerate(load_recipe(recipe).recipe.steps) if step.uses_teacher
    ]
    assert teacher_steps
    for label in [*teacher_steps, "total"]:
        *_, cost, minutes = table[label]
        assert COST.fullmatch(cost) and MINUTES.fullmatch(minutes), (label, table[label])
    assert "not estimated" not in out


def _table_rows(out: str) -> list[list[str]]:
    """The dry-run table's body rows, as lists of cells (the total's has empty ones)."""
    lines = [line for line in out.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


@pytest.mark.slow
def test_quickstart_end_to_end_offline(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch):
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    # Run by the path a user types, from a folder that is not the repository: the shipped copy is found.
    assert main(["run", "recipes/quickstart.yaml", "--output", str(tmp_path / "qs")]) == 0
    out = " ".join(capsys.readouterr().err.split())
    rows = read_jsonl(tmp_path / "qs" / "data.jsonl")
    assert 20 <= len(rows) <= 24  # the filter may drop an empty or refusing answer of the tiny model
    assert f"{len(rows)} rows -> {tmp_path / 'qs'}/dataset" in out
    assert all(row["response"].strip() and row["messages"][0]["role"] == "system" for row in rows)
    assert (tmp_path / "qs" / "failures.jsonl").exists()
    import json

    manifest = json.loads((tmp_path / "qs" / "manifest.json").read_text())
    assert manifest["teachers"] == [{"backend": "transformers", "model": "embedded", "base_url": None}]
    label = manifest["steps"][1]
    assert label["requests_sent"] == 24 and label["completion_tokens"] > 0
    assert manifest["steps"][2]["rows_out"] == len(rows)
    from datasets import load_from_disk

    dataset = load_from_disk(str(tmp_path / "qs" / "dataset"))
    assert dataset.num_rows == len(rows) and "messages" in dataset.column_names
    # The recipe ends by training a student and evaluating it before and after.
    assert "agreement with teacher" in out and "before" in out and "after" in out
    evaluation = json.loads((tmp_path / "qs" / "student" / "eval.json").read_text())
    assert evaluation["method"] == "sft" and evaluation["held_out_rows"] >= 4
    assert evaluation["train_losses"] and evaluation["after"]["loss"] > 0


def test_recipes_lists_every_shipped_recipe_with_a_line_on_it(capsys: pytest.CaptureFixture):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert set(listed) == {
        f"recipes/{path.relative_to(shipped_root() / 'recipes').as_posix()}" for path in RECIPES
    }
    assert listed["recipes/quickstart.yaml"].startswith("The quickstart: runs offline with no API key")
    assert all(len(summary) <= 112 and summary.strip() for summary in listed.values())


def _recipe_strings(node, key: str = "") -> list[tuple[str, str]]:
    """Every (key, string) of a recipe's data."""
    if isinstance(node, dict):
        return [item for name, value in node.items() for item in _recipe_strings(value, str(name))]
    if isinstance(node, list):
        return [item for value in node for item in _recipe_strings(value, key)]
    return [(key, node)] if isinstance(node, str) else []


@pytest.mark.parametrize(
    ("name", "copied"),
    [
        (
            "quickstart",
            {name: name for name in ("quickstart/seed_tasks.jsonl", "quickstart/LICENSE-self-instruct")},
        ),
        (
            "recipes/law/doc_qa.yaml",
            {name: name for name in ("documents/mutual_nda.md", "generate.jinja", "question.jinja")},
        ),
        # Named from outside its folder (../self_instruct/): copied beside it, the recipe rewritten.
        (
            "loop/iterative_dpo",
            {
                "seed_tasks.jsonl": "../self_instruct/seed_tasks.jsonl",
                "LICENSE-self-instruct": "../self_instruct/LICENSE-self-instruct",
            },
        ),
        (
            "medical/qa.yaml",
            {name: name for name in ("topics.jsonl", "questions.jinja", "judge_safety.jinja")},
        ),
        ("tool_use/function_calling", {"tools.json": "tools.json"}),
    ],
)
def test_init_copies_a_recipe_with_its_files_and_the_copy_validates_on_its_own(
    name, copied, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
):
    from helpers import run_cli

    from synthkd.recipe import find_recipe
    from synthkd.shipped import resolve_path

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    dest = tmp_path / "mine"
    code, out = run_cli(["init", name, str(dest)], capsys)
    assert code == 0, out
    source = find_recipe(name)
    recipe = dest / source.name
    assert f"wrote mine/{source.name}" in out and f"next: synthkd validate mine/{source.name}" in out
    for relative, original in copied.items():
        assert (dest / relative).read_bytes() == (source.parent / original).read_bytes()
    # The copy is the user's: every file it names resolves inside it, none to the shipped files.
    for key, text in _recipe_strings(load_recipe(recipe).data):
        found = resolve_path(text, dest) if key not in ("name", "step") and " " not in text else None
        if found is not None and found.is_file():
            assert found.resolve().is_relative_to(dest), (key, text, found)
    code, out = run_cli(["validate", str(recipe)], capsys)
    assert code == 0, out
    assert "steps valid" in out


def test_init_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture):
    from helpers import run_cli

    dest = tmp_path / "mine"
    (dest / "quickstart").mkdir(parents=True)
    (dest / "quickstart" / "seed_tasks.jsonl").write_text("my own seeds\n")
    code, out = run_cli(["init", "quickstart", str(dest)], capsys)
    assert code == 2
    assert f"{dest / 'quickstart' / 'seed_tasks.jsonl'} already exist(s); init never overwrites" in out
    # Nothing written, not even the files that were free: no half-made copy.
    assert sorted(path.name for path in dest.rglob("*")) == ["quickstart", "seed_tasks.jsonl"]
    assert (dest / "quickstart" / "seed_tasks.jsonl").read_text() == "my own seeds\n"
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".synthkd-init")]
    # Into a .yaml path: the recipe takes that name, its files go beside it.
    code, out = run_cli(["init", "quickstart", str(tmp_path / "other" / "mine.yaml")], capsys)
    assert code == 0, out
    assert (tmp_path / "other" / "quickstart" / "seed_tasks.jsonl").is_file()
    code, out = run_cli(["init", "quickstart", str(tmp_path / "other" / "mine.yaml")], capsys)
    assert code == 2 and "mine.yaml" in out and "already exist(s)" in out


def test_init_of_an_unknown_recipe_suggests_the_shipped_one(tmp_path: Path, capsys: pytest.CaptureFixture):
    from helpers import run_cli

    code, out = run_cli(["init", "law/doc-qa"], capsys)
    assert code == 2
    assert "error: recipe file not found: law/doc-qa; did you mean law/doc_qa?" in out
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"]  # nothing written (the cache is conftest's)


USER_RECIPE = """\
name: mine
teacher: {{backend: openai, model: gpt-4o-mini, api_key_env: SYNTHKD_TEST_KEY, base_url: "http://127.0.0.1:9/v1"}}
steps:
{steps}
output:
  dir: out
"""


@pytest.mark.parametrize(
    ("steps", "rewritten"),
    [
        # A data file and a template beside the recipe's folder, and one named by its absolute path.
        (
            "  - step: load\n    path: ../data/seeds.jsonl\n"
            "  - step: label\n    prompt: {root}/templates/ask.jinja",
            {"../data/seeds.jsonl": "seeds.jsonl", "{root}/templates/ask.jinja": "ask.jinja"},
        ),
        # A folder of documents outside it (its dot-files stay behind).
        ("  - step: doc_qa\n    documents: ../docs", {"../docs": "docs"}),
        # A file named like one in the recipe's folder: each keeps its own content.
        (
            "  - step: load\n    path: ../data/seeds.jsonl\n"
            "  - step: decontaminate\n    columns: [instruction]\n"
            "    eval_sets:\n      - path: seeds.jsonl\n        columns: [instruction]",
            {"../data/seeds.jsonl": "data_seeds.jsonl", "seeds.jsonl": "seeds.jsonl"},
        ),
    ],
    ids=["file", "folder", "same-name"],
)
def test_init_copies_the_files_a_user_recipe_names_outside_its_folder(
    steps, rewritten, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
):
    import shutil

    from helpers import run_cli, write_jsonl

    monkeypatch.setenv("SYNTHKD_TEST_KEY", "sk-test")
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "seeds.jsonl", [{"instruction": "Say hi."}])
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ask.jinja").write_text("Answer: {{ instruction }}")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "contract.md").write_text("# Terms\n\nThe supplier delivers within 30 days.\n")
    (tmp_path / "docs" / ".notes").write_text("private")
    (tmp_path / "a").mkdir()
    write_jsonl(tmp_path / "a" / "seeds.jsonl", [{"instruction": "A test question."}])
    text = USER_RECIPE.format(steps=steps.format(root=tmp_path))
    (tmp_path / "a" / "a.yaml").write_text(text)

    code, out = run_cli(["init", "a/a.yaml", "new"], capsys)
    assert code == 0, out
    copy = (tmp_path / "new" / "a.yaml").read_text()
    for written, placed in rewritten.items():
        written = written.format(root=tmp_path)
        assert f" {placed}\n" in copy and (written == placed or written not in copy), copy
        origin, target = tmp_path / "a" / written, tmp_path / "new" / placed
        if origin.is_dir():
            assert sorted(path.name for path in target.iterdir()) == ["contract.md"]  # no .notes
        else:
            assert target.read_bytes() == origin.read_bytes()
    assert (tmp_path / "a" / "a.yaml").read_text() == text  # the original as it was
    # The copy reads its own files: with the originals gone it still validates.
    for folder in ("data", "templates", "docs", "a"):
        shutil.rmtree(tmp_path / folder)
    code, out = run_cli(["validate", "new/a.yaml"], capsys)
    assert code == 0, out


def test_init_and_validate_take_a_local_recipe_before_a_shipped_one_of_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
):
    from helpers import run_cli, write_jsonl

    monkeypatch.setenv("SYNTHKD_TEST_KEY", "sk-test")
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Say hi."}])
    text = USER_RECIPE.format(steps="  - step: load\n    path: seeds.jsonl\n  - step: label")
    (tmp_path / "quickstart.yaml").write_text(text)
    code, out = run_cli(["validate", "quickstart.yaml"], capsys)
    assert code == 0 and f"ok {tmp_path / 'quickstart.yaml'}" in out, out
    code, out = run_cli(["init", "quickstart.yaml", "new"], capsys)
    assert code == 0, out
    assert (tmp_path / "new" / "quickstart.yaml").read_text() == text
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["quickstart.yaml", "seeds.jsonl"]


def test_init_leaves_a_local_model_folder_where_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
):
    from helpers import run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a" / "my-student").mkdir(parents=True)
    (tmp_path / "a" / "my-student" / "model.safetensors").write_bytes(b"\0" * 1024)  # gigabytes, really
    (tmp_path / "a" / "a.yaml").write_text(
        "name: mine\nteacher: {backend: transformers, model: my-student}\n"
        "steps:\n  - step: magpie\n    num_rows: 2\noutput:\n  dir: out\n"
        "train: {method: sft, student: my-student}\n"
    )
    code, out = run_cli(["init", "a/a.yaml", "new"], capsys)
    assert code == 0, out
    assert not (tmp_path / "new" / "my-student").exists(), "a model folder was copied"
    assert "model: my-student" in (tmp_path / "new" / "a.yaml").read_text()
