"""`synthkd push` and `output.hub`: one commit to a local stand-in for the Hub, no secret uploaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub
from huggingface_hub import DatasetCard
from publish_run import (
    CANARY_HF_TOKEN,
    CANARY_KEY,
    CANARY_PASSWORD,
    EVAL,
    KEY_VARIABLE,
    SCRIPT,
    make_run,
    plant_url_credentials,
)

from synthkd.cli import main
from synthkd.publish.card import validate_metadata
from synthkd.publish.push import DRY_RUN_MARKER

CANARIES = (CANARY_KEY, CANARY_PASSWORD, CANARY_HF_TOKEN)
DATA_FILE = "data/train-00000-of-00001.parquet"
# What the recipe reads, uploaded beside recipe.yaml under the names it gives them; not its
# evaluation set (eval.jsonl), which published beside the training data would not be held out.
RECIPE_FILES = [
    "prompts/judge/pairwise.jinja",
    "prompts/judge/pointwise.jinja",
    "prompts/label.jinja",
    "prompts/reask.jinja",
    "seeds.jsonl",
]
UPLOADED = sorted(["README.md", DATA_FILE, "recipe.yaml", *RECIPE_FILES])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("push"))


@pytest.fixture
def planted(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run whose manifest holds credentials in its teacher URLs."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    plant_url_credentials(copy)
    (copy / "README.md").unlink()  # the card is rebuilt from the planted manifest
    return copy


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The fake Hub, HF_ENDPOINT pointing at it, online for it, a Hub cache of its own (every fake
    repository starts at the same revision, so a shared cache would answer from another test's
    files), and the canaries in the environment."""
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        monkeypatch.setenv(KEY_VARIABLE, CANARY_KEY)
        monkeypatch.setenv("SYNTHKD_TEST_HF_TOKEN", CANARY_HF_TOKEN)
        yield fake


def assert_no_canary(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        for canary in CANARIES:
            assert canary.encode() not in data, f"a canary secret is in {name}"


def test_push_creates_the_repo_and_commits_once(planted: Path, hub: FakeHub, capsys):
    args = ["push", str(planted), "me/kd-data", "--private", "--token-env", "SYNTHKD_TEST_HF_TOKEN"]
    assert main(args) == 0
    repo = hub.repos["datasets/me/kd-data"]
    assert repo["private"] is True
    assert len(hub.commits) == 1
    (commit,) = hub.commits
    assert sorted(commit["added"]) == UPLOADED
    assert sorted(repo["files"]) == sorted([".gitattributes", *UPLOADED])
    # The token went to the Hub, in the header only.
    assert all(auth == f"Bearer {CANARY_HF_TOKEN}" for _, _, auth in hub.requests)
    assert_no_canary(commit["added"])
    assert hub.validated and hub.validated[0] == commit["added"]["README.md"].decode()
    card = DatasetCard(commit["added"]["README.md"].decode())
    assert validate_metadata(card.data.to_dict()) == []
    assert card.data.license == "apache-2.0"
    assert 'load_dataset("me/kd-data")' in card.text  # the usage example names the repository
    recipe = yaml.safe_load(commit["added"]["recipe.yaml"])
    assert recipe["teacher"]["api_key_env"] == KEY_VARIABLE  # the name stays, the value never came
    assert recipe["teacher"]["base_url"].startswith("http://127.0.0.1:")
    assert "kd-data" in capsys.readouterr().err


def test_a_second_push_replaces_stale_data_in_one_commit(planted: Path, hub: FakeHub):
    hub.repos["datasets/me/kd-data"] = {
        "private": False,
        "files": {"data/train-00000-of-00002.parquet": b"old", "data/train-00001-of-00002.parquet": b"old"},
    }
    assert main(["push", str(planted), "me/kd-data", "--token-env", "SYNTHKD_TEST_HF_TOKEN"]) == 0
    (commit,) = hub.commits
    assert sorted(commit["deleted"]) == [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    ]
    assert sorted(hub.repos["datasets/me/kd-data"]["files"]) == UPLOADED


def test_dry_run_folder_loads_with_datasets(planted: Path, tmp_path: Path, monkeypatch):
    from datasets import load_dataset, load_from_disk

    monkeypatch.setenv(KEY_VARIABLE, CANARY_KEY)
    folder = tmp_path / "upload"
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(folder)]) == 0
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert sorted(files) == sorted([*UPLOADED, DRY_RUN_MARKER])  # the marker: this folder is ours
    assert_no_canary(files)
    loaded = load_dataset(str(folder))
    original = load_from_disk(str(planted / "dataset"))
    assert list(loaded) == ["train"]
    assert loaded["train"].num_rows == original.num_rows == 8
    assert loaded["train"].features == original.features
    assert loaded["train"]["id"] == original["id"]
    # Again into the same folder: a previous dry run is replaced, not an error.
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(folder)]) == 0


def test_run_with_output_hub_pushes_at_the_end(tmp_path: Path, hub: FakeHub):
    hub_config = {"repo_id": "me/auto", "token_env": "SYNTHKD_TEST_HF_TOKEN"}
    run = make_run(tmp_path / "base", output={"hub": hub_config}, env={"HF_ENDPOINT": hub.url})
    assert (run / "report.html").exists() and (run / "README.md").exists()
    (commit,) = hub.commits
    assert commit["repo"] == "datasets/me/auto"
    assert sorted(commit["added"]) == UPLOADED
    assert_no_canary(commit["added"])


def test_a_secret_in_what_would_be_uploaded_stops_the_push(
    planted: Path, tmp_path: Path, monkeypatch, capsys
):
    """Defence in depth: a key's value in a field the redaction does not know is found by the scan."""
    manifest = json.loads((planted / "manifest.json").read_text())
    manifest["recipe"]["steps"][1]["teacher"]["params"]["extra_body"] = {"note": CANARY_KEY}
    (planted / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(KEY_VARIABLE, CANARY_KEY)
    folder = tmp_path / "upload"
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "refusing to upload" in err and CANARY_KEY not in err
    assert not folder.exists() or not any(folder.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["RUN", "not a repo"], "is not a Hub repository id"),
        (["RUN", "a/b/c"], "is not a Hub repository id"),
        (["RUN", "me/x--y"], "is not a Hub repository id"),
        (["MISSING", "me/data"], "no such run folder"),
        (["RUN", "me/data", "--token-env", "SYNTHKD_TEST_UNSET_TOKEN"], "SYNTHKD_TEST_UNSET_TOKEN"),
        (["RUN", "me/data"], "HF_HUB_OFFLINE is set"),  # the tests run offline; no --dry-run
    ],
)
def test_bad_input_is_one_clear_error(run_dir: Path, tmp_path: Path, capsys, args: list[str], message: str):
    paths = {"RUN": str(run_dir), "MISSING": str(tmp_path / "missing")}
    assert main(["push", *(paths.get(a, a) for a in args)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unreachable_hub_is_an_error_not_a_traceback(run_dir: Path, monkeypatch, capsys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert main(["push", str(run_dir), "me/data"]) == 1
    assert "push to http://127.0.0.1" in capsys.readouterr().err


EXISTING_CARD = """---
pretty_name: Our tidy dataset
license: mit
annotations_creators: [machine-generated]
tags: [ours]
configs:
- config_name: extra
  data_files:
  - split: train
    path: data/extra-*
---

# Old prose about an older version
"""


def test_push_merges_into_the_metadata_of_an_existing_card(planted: Path, hub: FakeHub):
    hub.repos["datasets/me/kd-data"] = {
        "private": False,
        "files": {"README.md": EXISTING_CARD.encode(), "data/extra-00000.parquet": b"theirs"},
    }
    assert main(["push", str(planted), "me/kd-data", "--token-env", "SYNTHKD_TEST_HF_TOKEN"]) == 0
    files = hub.repos["datasets/me/kd-data"]["files"]
    card = DatasetCard(files["README.md"].decode())  # read back from the Hub
    metadata = card.data.to_dict()
    assert metadata["pretty_name"] == "Our tidy dataset"  # the author's name for it stays
    assert metadata["annotations_creators"] == ["machine-generated"]  # a key the run does not set
    assert metadata["license"] == "apache-2.0"  # the run's own keys win
    assert metadata["tags"][0] == "ours" and "synthkd" in metadata["tags"]
    assert [c["config_name"] for c in metadata["configs"]] == ["extra", "default"]
    assert metadata["dataset_info"]["splits"][0]["num_examples"] == 8
    assert validate_metadata(metadata) == []
    assert "Old prose" not in card.text and "## Funnel" in card.text  # the prose is the run's
    assert files["data/extra-00000.parquet"] == b"theirs"  # the kept config's data is not deleted


def test_a_run_without_a_license_is_not_pushed(planted: Path, tmp_path: Path, capsys):
    manifest = json.loads((planted / "manifest.json").read_text())
    del manifest["recipe"]["output"]["license"]
    (planted / "manifest.json").write_text(json.dumps(manifest))
    folder = tmp_path / "upload"
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "no output.license" in err and "--license" in err and not folder.exists()
    # The license given to the push goes into the card and the recipe.
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(folder), "--license", "cc-by-4.0"]) == 0
    assert DatasetCard.load(folder / "README.md").data.license == "cc-by-4.0"
    assert "`cc-by-4.0`" in (folder / "README.md").read_text()  # the prose says so too
    assert yaml.safe_load((folder / "recipe.yaml").read_text())["output"]["license"] == "cc-by-4.0"
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(folder), "--license", "apache2"]) == 2


def test_dry_run_without_a_folder_writes_into_the_run_folder(planted: Path, monkeypatch, capsys):
    monkeypatch.setenv(KEY_VARIABLE, CANARY_KEY)
    assert main(["push", str(planted), "me/kd-data", "--dry-run"]) == 0
    folder = planted / "push-dry-run"
    assert f"dry run: {folder} holds" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        [*UPLOADED, DRY_RUN_MARKER]
    )
    assert "hf://datasets/me/kd-data/recipe.yaml" in (folder / "README.md").read_text()


def test_a_pushed_recipe_reruns_from_the_hub(planted: Path, tmp_path: Path, hub: FakeHub, monkeypatch):
    """`synthkd run hf://datasets/<repo>/recipe.yaml`: the recipe, its seeds and templates come from
    the (fake) Hub, the evaluation set (not uploaded) is given again with --set, the answers come
    from a fresh fake teacher, and the rows are the same as the pushed run's."""
    from helpers import read_jsonl, write_jsonl

    from synthkd.testing.fake_openai import FakeOpenAIServer

    assert main(["push", str(planted), "me/kd-data", "--token-env", "SYNTHKD_TEST_HF_TOKEN"]) == 0
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("SYNTHKD_CACHE_DIR", str(tmp_path / "fresh-cache"))  # nothing replayed
    monkeypatch.chdir(tmp_path)  # no seeds.jsonl here: they must come from the Hub
    card = hub.repos["datasets/me/kd-data"]["files"]["README.md"].decode()
    assert "evaluation sets the run was decontaminated against are not uploaded" in card
    assert "--set steps.3.eval_sets.0.path=<file>" in card
    eval_set = tmp_path / "mine" / "eval.jsonl"  # outside the snapshot: a path the user gives is allowed
    eval_set.parent.mkdir()
    write_jsonl(eval_set, EVAL)
    with FakeOpenAIServer(script=SCRIPT) as server:
        teacher_urls = [
            f"{key}.base_url={server.base_url}" for key in ("teacher", "steps.1.teacher", "steps.4.teacher")
        ]
        args = ["run", "hf://datasets/me/kd-data/recipe.yaml", "--output", str(tmp_path / "again")]
        sets = [*(f"--set={url}" for url in teacher_urls), f"--set=steps.3.eval_sets.0.path={eval_set}"]
        assert main([*args, *sets]) == 0
        assert server.stats()["requests"] > 0
    fields = ("id", "instruction", "response", "score")
    again = [{k: row[k] for k in fields} for row in read_jsonl(tmp_path / "again" / "data.jsonl")]
    before = [{k: row[k] for k in fields} for row in read_jsonl(planted / "data.jsonl")]
    assert again == before and len(again) == 8
    assert not any(path.startswith("data/") for _, path, _ in hub.requests if "/resolve/" in path)


def test_a_bad_hub_recipe_address_is_one_clear_error(hub: FakeHub, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert main(["validate", "hf://datasets/me/missing/recipe.yaml"]) == 2
    err = capsys.readouterr().err
    assert "hf://datasets/me/missing/recipe.yaml" in err and "HTTP 404" in err and "Traceback" not in err


def test_dry_run_never_replaces_a_folder_it_did_not_write(planted: Path, tmp_path: Path, capsys):
    """A clone of the dataset repository holds README.md, recipe.yaml and data/ too, and the user's
    .git and notes: a dry run into it is refused and it is left as it was."""
    clone = tmp_path / "clone"
    for name in ("README.md", "recipe.yaml", "data/train.parquet", ".git/config", "notes.txt"):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_text(f"the user's {name}")
    before = {p.relative_to(clone).as_posix(): p.read_text() for p in clone.rglob("*") if p.is_file()}
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(clone)]) == 2
    err = capsys.readouterr().err
    assert str(clone) in " ".join(err.split()) and DRY_RUN_MARKER in err
    assert {p.relative_to(clone).as_posix(): p.read_text() for p in clone.rglob("*") if p.is_file()} == before


def test_a_push_pushes_no_dry_run_marker(planted: Path, hub: FakeHub):
    assert main(["push", str(planted), "me/kd-data", "--dry-run"]) == 0  # a marker in the run folder
    assert main(["push", str(planted), "me/kd-data", "--token-env", "SYNTHKD_TEST_HF_TOKEN"]) == 0
    (commit,) = hub.commits
    assert not any(DRY_RUN_MARKER in path or "push-dry-run" in path for path in commit["added"])


def test_a_refused_push_creates_no_repository(planted: Path, hub: FakeHub, monkeypatch, capsys):
    """The secret scan runs before create_repo: a refused push leaves no (maybe public) empty repo."""
    manifest = json.loads((planted / "manifest.json").read_text())
    manifest["recipe"]["steps"][1]["teacher"]["params"]["extra_body"] = {"note": CANARY_KEY}
    (planted / "manifest.json").write_text(json.dumps(manifest))
    assert main(["push", str(planted), "me/kd-data", "--token-env", "SYNTHKD_TEST_HF_TOKEN"]) == 1
    assert "refusing to upload" in capsys.readouterr().err
    assert hub.repos == {} and hub.commits == []
    assert not [path for method, path, _ in hub.requests if method == "POST"]


def test_a_remote_card_with_broken_metadata_is_a_clear_error(planted: Path, hub: FakeHub, capsys):
    broken = "---\nlicense: [mit\ntags: {\n---\n\n# Theirs\n"
    hub.repos["datasets/me/kd-data"] = {"private": False, "files": {"README.md": broken.encode()}}
    assert main(["push", str(planted), "me/kd-data", "--token-env", "SYNTHKD_TEST_HF_TOKEN"]) == 1
    err = capsys.readouterr().err
    assert "me/kd-data" in err and "README.md already in the repository" in err and "Traceback" not in err
    assert hub.commits == []


def test_a_missing_kept_file_stops_the_push(planted: Path, tmp_path: Path, capsys):
    kept = planted / "recipe_files" / "tree" / "seeds.jsonl"
    kept.unlink()
    folder = tmp_path / "upload"
    assert main(["push", str(planted), "me/kd-data", "--dry-run", str(folder)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(kept) in err and "'seeds.jsonl' is missing" in err and not folder.exists()


def test_a_hub_recipe_address_stays_in_its_repository(hub: FakeHub, capsys):
    hub.repos["datasets/me/r"] = {"private": False, "files": {"recipe.yaml": b"name: x\n"}}
    assert main(["validate", "hf://datasets/me/r/../../../x.yaml"]) == 2
    assert "is not a path inside the repository me/r" in capsys.readouterr().err
    assert not [path for _, path, _ in hub.requests]  # refused before anything is downloaded


def test_a_hub_recipe_revision_may_be_a_pull_request(hub: FakeHub):
    main(["validate", "hf://datasets/me/r@refs/pr/1/recipe.yaml"])
    paths = [path for _, path, _ in hub.requests]
    # Asked for revision refs/pr/1 of me/r (not a file pr/1/recipe.yaml at the main revision).
    assert paths and all("refs%2Fpr%2F1" in path or "refs/pr/1" in path for path in paths)


def put_hub_recipe(hub: FakeHub, steps: list[dict], base_url: str, **files: bytes) -> None:
    """A recipe of someone else's in the fake Hub's me/r, with `files` beside it."""
    teacher = {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": "OPENAI_API_KEY"}
    recipe = {"name": "theirs", "teacher": teacher, "steps": steps}
    hub.repos["datasets/me/r"] = {
        "private": False,
        "files": {"recipe.yaml": yaml.safe_dump(recipe).encode(), **files},
    }


@pytest.mark.parametrize("named", ["~/secrets.txt", "../../outside.txt", "/etc/hostname"])
def test_a_hub_recipe_reads_no_file_outside_its_repository(hub: FakeHub, capsys, named: str):
    """A pushed recipe naming `documents: ~` would send the home folder to its author's teacher."""
    put_hub_recipe(hub, [{"step": "load", "path": named}], "http://127.0.0.1:9/v1")
    assert main(["validate", "hf://datasets/me/r/recipe.yaml", "--allow-missing-key"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "steps.0.path" in err and "may name only files in its own repository" in err


def test_a_hub_recipe_on_litellm_names_its_provider(hub: FakeHub, tmp_path: Path, monkeypatch, capsys):
    """litellm picks the endpoint from the model's name: the line names the provider, not this machine."""
    teacher = {"backend": "litellm", "model": "anthropic/claude-x", "api_key_env": "ANTHROPIC_API_KEY"}
    steps = [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}]
    recipe = {"name": "theirs", "teacher": teacher, "steps": steps}
    hub.repos["datasets/me/r"] = {
        "private": False,
        "files": {"recipe.yaml": yaml.safe_dump(recipe).encode(), "seeds.jsonl": b'{"instruction": "hi"}\n'},
    }
    monkeypatch.chdir(tmp_path)
    assert main(["run", "hf://datasets/me/r/recipe.yaml", "--dry-run"]) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "litellm anthropic/claude-x -> anthropic (through litellm) (key: $ANTHROPIC_API_KEY)" in out


def test_a_hub_run_says_where_its_teachers_send(hub: FakeHub, tmp_path: Path, monkeypatch, capsys):
    steps = [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}]
    put_hub_recipe(
        hub, steps, "http://collector.example:8000/v1", **{"seeds.jsonl": b'{"instruction": "hi"}\n'}
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", "hf://datasets/me/r/recipe.yaml", "--dry-run"]) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "steps.1.teacher: openai m -> http://collector.example:8000/v1 (key: $OPENAI_API_KEY)" in out
