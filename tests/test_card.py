"""The dataset card of a run: Hub metadata that validates, prose from the manifest, recipe.yaml."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard
from publish_run import CANARY_KEY, CANARY_PASSWORD, make_run, plant_url_credentials

from synthkd.api import load_recipe as load_any
from synthkd.cli import main
from synthkd.hub_ids import HUB_LICENSES
from synthkd.pipeline import build_manifest, check, preflight
from synthkd.publish.card import TAXONOMY_MEANING, taxonomy, validate_metadata, write_card
from synthkd.publish.recipe_files import keep_recipe_files
from synthkd.recipe import load_recipe
from synthkd.shipped import shipped_root
from synthkd.steps import STEP_TYPES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("card"))


def test_card_metadata_parses_and_validates(run_dir: Path):
    card = DatasetCard.load(run_dir / "README.md")  # written by `synthkd run`
    metadata = card.data.to_dict()
    assert validate_metadata(metadata) == []
    assert metadata["license"] == "apache-2.0"
    assert {"synthetic", "synthkd"} <= set(metadata["tags"])
    assert {"kd-labeling", "kd-curation", "kd-feedback"} <= set(metadata["tags"])
    assert metadata["size_categories"] == ["n<1K"]
    assert metadata["task_categories"] == ["text-generation"]
    assert metadata["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert metadata["dataset_info"]["splits"][0]["num_examples"] == 8
    features = {feature["name"] for feature in metadata["dataset_info"]["features"]}
    assert {"id", "instruction", "response", "messages", "score", "provenance"} <= features
    assert "language" not in metadata  # not set, and no quality step checked it: not guessed


def test_card_prose_comes_from_the_manifest(run_dir: Path):
    text = DatasetCard.load(run_dir / "README.md").text
    assert "| `gpt-4o-mini` | openai | OpenAI-compatible server at 127.0.0.1 |" in text
    assert "| 2:dedup | 11 | 10 | 0 | duplicate_exact: 1 |" in text  # the funnel
    assert "| 4:judge | 9 | 8 | 0 | below_min_score: 1 |" in text
    assert "`toy-eval`" in text and "| `leaked` | toy-eval |" in text  # decontamination
    assert "| 1:label | labeling |" in text and "| 4:judge | feedback |" in text  # taxonomy
    # The templates' texts, folded away.
    assert "<details><summary><code>prompts/label.jinja</code>" in text
    assert "{{ instruction }}" in text or "instruction" in text.split("prompts/label.jinja", 1)[1][:2000]
    assert "terms of use" in text
    assert "recipe.yaml" in text and "synthkd run recipe.yaml" in text
    # exact dedup and n-gram decontamination need no extra; the report needs its own
    assert "pip install 'synthkd[report]'" in text
    assert "| **total** |" in text  # tokens and cost
    assert "## License" in text and "apache-2.0" in text


def test_recipe_yaml_reproduces_the_recipe(run_dir: Path):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    reloaded = load_recipe(run_dir / "recipe.yaml")
    assert reloaded.sha256() == manifest["recipe_sha256"]
    assert CANARY_KEY not in (run_dir / "recipe.yaml").read_text()


def test_no_license_is_never_assumed(run_dir: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["recipe"]["output"]["license"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    card = DatasetCard.load(write_card(copy))
    assert "license" not in card.data.to_dict()
    assert "No license was chosen" in card.text
    assert validate_metadata(card.data.to_dict()) == []


def test_credentials_in_urls_are_removed(run_dir: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    plant_url_credentials(copy)
    write_card(copy)
    for name in ("README.md", "recipe.yaml"):
        assert CANARY_PASSWORD not in (copy / name).read_text()
    assert "127.0.0.1" in (copy / "recipe.yaml").read_text()  # the host stays


def test_every_step_type_has_a_category_of_the_survey():
    categories = taxonomy()
    assert set(categories) == set(STEP_TYPES) - {"load"}
    assert set(categories.values()) <= set(TAXONOMY_MEANING)
    # The teacher critiques and revises answers in the data: feedback; self-knowledge is a model
    # refining what it wrote itself.
    assert categories["critique_revise"] == "feedback"


def test_validate_metadata_finds_what_the_hub_rejects():
    problems = validate_metadata(
        {
            "license": "apache2",
            "task_categories": ["text-gen"],
            "size_categories": ["tiny"],
            "language": ["EN"],
        }
    )
    assert len(problems) == 5  # license, task, size, language, configs


def test_a_license_the_hub_does_not_know_is_a_recipe_error(capsys: pytest.CaptureFixture):
    assert main(["validate", "recipes/quickstart.yaml", "--set", "output.license=apache2"]) == 2
    assert "did you mean 'apache-2.0'" in capsys.readouterr().err


def test_a_recipe_records_the_extras_its_checks_asked_for(tmp_path: Path, listening_port: int):
    """The card's install line names what the recipe needs, as the checks that refuse it found."""
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "hi"}\n')
    teacher = {"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{listening_port}/v1"}
    loaded = load_any(
        {
            "name": "needs",
            "teacher": {**teacher, "api_key_env": None},
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "dedup", "method": "minhash"}],
            "train": {"method": "sft", "student": "embedded"},
        },
        base_dir=tmp_path,
    )
    check(loaded)
    assert loaded.extras == {"curate"}
    preflight(loaded, network=False)
    assert loaded.extras == {"curate", "train"}
    assert build_manifest(loaded, [], datetime.now(timezone.utc), 0, 0)["extras"] == ["curate", "train"]


SHIPPED = sorted((shipped_root() / "recipes").rglob("*.yaml"))
LONG = "x" * 2000  # clipped in the example record


def plant_run(recipe: Path, folder: Path) -> Path:
    """A run folder as `synthkd run` leaves it, without running the teacher: the manifest built
    from the checked recipe, a two-row dataset, and the recipe's files kept beside it."""
    from datasets import Dataset

    loaded = load_recipe(recipe)
    check(loaded)
    manifest = build_manifest(loaded, [], datetime.now(timezone.utc), 2, 0)
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rows = {"id": ["a", "b"], "instruction": ["Name a colour.", "Say hi."], "response": [LONG, "hi"]}
    Dataset.from_dict(rows).save_to_disk(str(folder / "dataset"))
    keep_recipe_files(folder, loaded.recipe.data_files(), loaded.recipe.template_sources())
    return folder


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: str(p.relative_to(shipped_root() / "recipes")))
def test_a_card_from_every_shipped_recipe_is_complete(recipe: Path, tmp_path: Path):
    run = plant_run(recipe, tmp_path / "run")
    card = DatasetCard.load(write_card(run))
    metadata = card.data.to_dict()
    assert validate_metadata(metadata) == []
    assert metadata["license"] in HUB_LICENSES
    assert metadata["language"] == ["en"]
    assert metadata["source_datasets"]  # every seed file says where it comes from
    for source in metadata["source_datasets"]:
        assert source == "original" or source.startswith("https://") or "/" in source
    # The example record: the first row, its long answer clipped.
    example = card.text.split("## Example record", 1)[1].split("```json\n", 1)[1].split("\n```", 1)[0]
    row = json.loads(example)
    assert row["id"] == "a" and row["instruction"] == "Name a colour."
    assert row["response"].startswith("x" * 300) and row["response"].endswith("(1700 more characters)")
    # Every step that implements a published method cites it, with the survey.
    bibtex = card.text.split("```bibtex\n", 1)[1]
    assert "@article{xu2024survey" in bibtex
    for step in load_recipe(recipe).recipe.steps:
        if type(step).citation:
            assert type(step).citation.splitlines()[0] in bibtex
    assert "synthkd run hf://datasets/<this repository>/recipe.yaml" in card.text


def test_the_self_instruct_seeds_are_attributed(tmp_path: Path):
    run = plant_run(shipped_root() / "recipes" / "quickstart.yaml", tmp_path / "run")
    card = DatasetCard.load(write_card(run))
    assert card.data.to_dict()["source_datasets"] == ["https://github.com/yizhongw/self-instruct"]
    line = (
        "| 0:load | `quickstart/seed_tasks.jsonl` | https://github.com/yizhongw/self-instruct | apache-2.0 |"
    )
    assert line in card.text


def test_a_seed_file_without_a_source_is_named_not_attributed(tmp_path: Path, listening_port: int):
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "hi"}\n')
    (tmp_path / "recipe.yaml").write_text(
        "name: mine\nteacher: {backend: openai, model: m, api_key_env: null, "
        f"base_url: 'http://127.0.0.1:{listening_port}/v1'}}\n"
        "steps:\n  - {step: load, path: seeds.jsonl}\n  - {step: label}\n"
    )
    run = plant_run(tmp_path / "recipe.yaml", tmp_path / "run")
    card = DatasetCard.load(write_card(run))
    assert "source_datasets" not in card.data.to_dict()
    assert "| 0:load | `seeds.jsonl` | not stated (the step has no `source:`) | not stated |" in card.text
    assert "@article{xu2024survey" in card.text and "@inproceedings{wang2023selfinstruct" not in card.text


def test_magpie_reads_no_seeds_so_its_data_is_original(tmp_path: Path):
    run = plant_run(shipped_root() / "recipes" / "magpie.yaml", tmp_path / "run")
    card = DatasetCard.load(write_card(run))
    assert card.data.to_dict()["source_datasets"] == ["original"]
    assert "@article{xu2024magpie" in card.text


def test_the_source_table_shows_the_stored_name_not_a_local_path(tmp_path: Path, listening_port: int):
    """A seed file outside the recipe's folder is pushed as files/<name>: the card says that name,
    not the path on the author's machine."""
    private = tmp_path / "home" / "alice" / "clients" / "acme"
    private.mkdir(parents=True)
    (private / "seeds.jsonl").write_text('{"instruction": "hi"}\n')
    (tmp_path / "recipe.yaml").write_text(
        "name: mine\nteacher: {backend: openai, model: m, api_key_env: null, "
        f"base_url: 'http://127.0.0.1:{listening_port}/v1'}}\n"
        f"steps:\n  - {{step: load, path: {private / 'seeds.jsonl'}}}\n  - {{step: label}}\n"
    )
    run = plant_run(tmp_path / "recipe.yaml", tmp_path / "run")
    text = DatasetCard.load(write_card(run)).text
    assert "| 0:load | `files/seeds.jsonl` |" in text and "alice" not in text


def test_stored_names_are_distinct_and_refuse_the_recipe_folder():
    from synthkd.publish.recipe_files import stored_names
    from synthkd.publish.rundir import PublishInputError

    names = stored_names(["/abs/seeds.jsonl", "files/seeds.jsonl", "~/seeds.jsonl", "prompts/a.jinja"])
    assert names["files/seeds.jsonl"] == "files/seeds.jsonl"  # a clean name keeps its own name
    assert len(set(names.values())) == 4
    assert names["/abs/seeds.jsonl"].endswith("/seeds.jsonl") and names["/abs/seeds.jsonl"].startswith(
        "files/"
    )
    for name in (".", "./", "data/.."):
        with pytest.raises(PublishInputError, match="holds the recipe"):
            stored_names([name])


def test_a_step_may_not_read_the_recipes_own_folder(tmp_path: Path, listening_port: int, capsys):
    (tmp_path / "recipe.yaml").write_text(
        "name: mine\nteacher: {backend: openai, model: m, api_key_env: null, "
        f"base_url: 'http://127.0.0.1:{listening_port}/v1'}}\n"
        "steps:\n  - {step: doc_qa, documents: .}\n"
    )
    assert main(["validate", str(tmp_path / "recipe.yaml")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "steps.0.documents" in err and "is the folder holding the recipe" in err


def test_kept_folders_leave_out_hidden_files_and_eval_sets_are_not_kept(tmp_path: Path, listening_port: int):
    docs = tmp_path / "docs"
    for name in ("a.md", "sub/b.md", ".git/config", ".env"):
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(f"{name} text " * 20)
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "hi", "response": "ho"}\n')
    (tmp_path / "eval.jsonl").write_text('{"question": "held out"}\n')
    (tmp_path / "recipe.yaml").write_text(
        "name: mine\nteacher: {backend: openai, model: m, api_key_env: null, "
        f"base_url: 'http://127.0.0.1:{listening_port}/v1'}}\n"
        "steps:\n  - {step: load, path: seeds.jsonl}\n"
        "  - {step: decontaminate, eval_sets: [{path: eval.jsonl, columns: [question]}]}\n"
    )
    loaded = load_recipe(tmp_path / "recipe.yaml")
    check(loaded)
    assert set(loaded.recipe.data_files()) == {"seeds.jsonl"}  # the evaluation set is not recorded
    keep_recipe_files(tmp_path / "run", {"docs": docs, **loaded.recipe.data_files()}, {})
    kept = tmp_path / "run" / "recipe_files" / "tree"
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "docs/a.md",
        "docs/sub/b.md",
        "seeds.jsonl",
    ]


def test_output_hub_without_a_license_is_refused_when_the_recipe_loads(capsys):
    args = [
        "validate",
        "recipes/quickstart.yaml",
        "--set",
        "output.hub.repo_id=me/data",
        "--set",
        "output.license=null",
    ]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "output.license" in err and "apache-2.0" in err and "`other`" in err
    assert main([*args, "--set", "output.license=other", "--allow-missing-key"]) == 0
