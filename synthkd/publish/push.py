"""Push a run to the Hub: parquet data, the card and the recipe, in one commit.

The folder that is uploaded is first written out whole (`--dry-run [DIR]` keeps it) and searched for
secrets before anything is created on the Hub or written to DIR, then sent with
`HfApi.create_repo` and one `create_commit`, so a dataset repository never shows a card without
its data or data from two runs. A dry-run folder holds a marker file (not uploaded): only a folder
with it, or a new or empty one, is ever replaced. Beside recipe.yaml go the seed files and
templates it reads (`recipe_files`), so `synthkd run hf://datasets/<repo>/recipe.yaml` reruns it.
A card already in the repository keeps its metadata keys the run does not set (`card_merge`).
A run whose card has no license is refused: the Hub would show the data with no terms of reuse.
"""

from __future__ import annotations

import fnmatch
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthkd.errors import SynthkdError
from synthkd.file_copy import copy_entry, staged_folder
from synthkd.hub_ids import HUB_LICENSES, is_repo_id, repo_id_error
from synthkd.publish.card import CARD_FILE, RECIPE_FILE, REPO_PLACEHOLDER, build_card, write_recipe
from synthkd.publish.card_merge import merge_metadata, other_config_paths
from synthkd.publish.hub_http import first_line, http_status, is_unreachable
from synthkd.publish.recipe_files import kept_files, read_names, repoint
from synthkd.publish.rundir import PublishInputError, RunDir, open_run
from synthkd.publish.secrets import assert_no_secret, secret_values

# Parquet shards of at most this much Arrow data, as datasets' push_to_hub does.
MAX_SHARD_BYTES = 500 * 2**20
DATA_DIR = "data"
DRY_RUN_DIR = "push-dry-run"  # `--dry-run` without a folder writes here, in the run folder
DRY_RUN_MARKER = ".synthkd-dry-run"  # in a dry-run folder: this folder is ours to replace


class PushError(SynthkdError):
    """The Hub refused or could not be reached; nothing was committed."""

    exit_code = 1


@dataclass
class PushResult:
    repo_id: str
    files: list[str]  # paths in the repository, sorted
    commit_url: str | None = None  # None for a dry run
    folder: Path | None = None  # the dry run's folder


def check_repo_id(repo_id: str) -> str:
    if not is_repo_id(repo_id):
        raise PublishInputError(repo_id_error(repo_id))
    return repo_id


def stage(run: RunDir, folder: Path, repo_id: str | None = None) -> list[str]:
    """Write into `folder` exactly what is uploaded; return the repository paths, sorted."""
    data = folder / DATA_DIR
    data.mkdir(parents=True)
    for split, dataset in run.splits().items():
        shards = max(1, math.ceil(dataset.data.nbytes / MAX_SHARD_BYTES))
        for index in range(shards):
            shard = dataset.shard(shards, index, contiguous=True)
            shard.to_parquet(str(data / f"{split}-{index:05d}-of-{shards:05d}.parquet"))
    card = run.path / CARD_FILE
    # The card written at the end of the run has the templates' texts; rebuilt if it is gone, or
    # if the license was given to the push (the card's metadata and its license section change).
    rebuild = not card.exists() or run.output.get("license") != _card_license(card.read_text("utf-8"))
    text = str(build_card(run)) if rebuild else card.read_text(encoding="utf-8")
    if repo_id is not None:  # the card's usage examples name the repository once it is known
        text = text.replace(REPO_PLACEHOLDER, repo_id)
    (folder / CARD_FILE).write_text(text, encoding="utf-8")
    _stage_recipe(run, folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _card_license(text: str) -> Any:
    from huggingface_hub import DatasetCard

    return DatasetCard(text).data.to_dict().get("license")


def _stage_recipe(run: RunDir, folder: Path) -> None:
    """recipe.yaml with the files it reads beside it, pointed at them; without `output.hub`, so a
    rerun from the Hub does not push over this repository."""
    names = read_names(run.path)
    for stored, source in kept_files(run.path, names).items():  # all there, or an error naming the missing
        copy_entry(source, folder / stored)
    recipe = repoint(run.recipe, names)
    output = {key: value for key, value in (recipe.get("output") or {}).items() if key != "hub"}
    write_recipe(run, folder / RECIPE_FILE, {**recipe, "output": output})


def _check_dry_run_folder(folder: Path) -> None:
    """A dry-run folder is ours only if it is new, empty, or holds the marker a previous dry run
    left (it is then replaced whole). Any other folder (a clone of the dataset repository, with
    .git and notes of the user's) is refused, never deleted."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise PublishInputError(f"{folder}: exists and is not a folder; give a new folder for --dry-run")
    names = sorted(p.name for p in folder.iterdir())
    if not names or DRY_RUN_MARKER in names:
        return
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise PublishInputError(
        f"{folder}: not empty ({shown}) and not written by an earlier --dry-run (no {DRY_RUN_MARKER} "
        "in it), so it is not replaced; give a new or empty folder for --dry-run"
    )


def _write_dry_run(run: RunDir, target: Path, repo_id: str, secrets: list[str]) -> list[str]:
    """Stage beside `target`, search for secrets, then swap the staged folder in: a refused or
    failed dry run leaves `target` as it was."""
    with staged_folder(target) as staging:
        files = stage(run, staging, repo_id)
        assert_no_secret((staging / f for f in files), secrets)
        (staging / DRY_RUN_MARKER).write_text(
            "written by synthkd push --dry-run; the next dry run into this folder replaces it\n",
            encoding="utf-8",
        )
    return files


def _token(token_env: str | None) -> str | None:
    if token_env is None:
        return None  # huggingface_hub looks up HF_TOKEN, then the token saved by `hf auth login`
    token = os.environ.get(token_env)
    if not token:
        raise PublishInputError(f"environment variable {token_env} (output.hub.token_env) is not set")
    return token


def push(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token_env: str | None = None,
    dry_run: str | Path | bool | None = None,
    commit_message: str | None = None,
    extra_secrets: list[str] | None = None,
    license: str | None = None,
) -> PushResult:
    """Create `repo_id` (a dataset repository) if needed and commit the run to it; or, with `dry_run`
    (a folder, or True for `<run dir>/push-dry-run`), only write the folder that would be uploaded.
    `license`: a Hub license id for a run whose recipe had no `output.license`."""
    check_repo_id(repo_id)
    run = open_run(run_dir)
    if license is not None:
        run.manifest.setdefault("recipe", {}).setdefault("output", {})["license"] = _check_license(license)
    _require_license(run)
    token = _token(token_env)
    secrets = secret_values(run.recipe, [token, *(extra_secrets or [])])
    if dry_run is not None and dry_run is not False:
        target = _dry_run_folder(run, dry_run)
        _check_dry_run_folder(target)
        return PushResult(repo_id, _write_dry_run(run, target, repo_id, secrets), folder=target)
    _check_online()
    # Staged in a temporary folder and searched for secrets before the repository is created (a
    # refused push leaves no empty, maybe public, repository), and the card again once merged.
    with tempfile.TemporaryDirectory(prefix="synthkd-push-") as tmp:
        folder = Path(tmp)
        files = stage(run, folder, repo_id)
        assert_no_secret((folder / f for f in files), secrets)
        with _hub_errors(repo_id, token) as api:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            existing = api.list_repo_files(repo_id, repo_type="dataset")
            kept_paths = _merge_existing_card(api, repo_id, folder, existing)
            assert_no_secret([folder / CARD_FILE], secrets)
            commit_url = _commit(api, run, folder, files, existing, kept_paths, repo_id, commit_message)
    return PushResult(repo_id, files, commit_url)


def _check_license(value: str) -> str:
    if value not in HUB_LICENSES:
        raise PublishInputError(
            f"--license {value!r} is not a Hub license id (e.g. apache-2.0, cc-by-4.0, mit)"
        )
    return value


def _require_license(run: RunDir) -> None:
    if not run.output.get("license"):
        raise PublishInputError(
            f"{run.path}: the run's recipe has no output.license, so its card grants no rights to reuse "
            "the data; refusing to push it. Give one: synthkd push ... --license <Hub license id> "
            "(e.g. apache-2.0), or set output.license in the recipe for the next run"
        )


def _dry_run_folder(run: RunDir, dry_run: str | Path | bool) -> Path:
    return run.path / DRY_RUN_DIR if dry_run is True else Path(dry_run)


def _check_online() -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise PublishInputError("HF_HUB_OFFLINE is set: unset it to push (or use --dry-run)")


@contextmanager
def _hub_errors(repo_id: str, token: str | None) -> Iterator[Any]:
    """An HfApi for HF_ENDPOINT; what the Hub refuses, or a Hub that cannot be reached, becomes a
    PushError naming the endpoint (nothing is committed before the commit itself)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    # HF_ENDPOINT is read now, not when huggingface_hub was imported, so a caller may set it late.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        yield api
    except HfHubHTTPError as exc:
        raise PushError(
            f"push to {api.endpoint} ({repo_id}) failed: HTTP {http_status(exc)}: {first_line(exc)}"
        ) from None
    except Exception as exc:  # connection refused, DNS: nothing committed
        if not is_unreachable(exc):
            raise
        raise PushError(f"push to {api.endpoint} ({repo_id}) failed: {exc}") from None


def _merge_existing_card(api: Any, repo_id: str, folder: Path, existing: list[str]) -> list[str]:
    """Merge the repository's README.md into the staged card (`card_merge`); return the data file
    patterns of the configs it keeps, whose files the push must not delete."""
    if CARD_FILE not in existing:
        return []
    import yaml
    from huggingface_hub import DatasetCard

    old_path = api.hf_hub_download(repo_id, CARD_FILE, repo_type="dataset")
    try:
        old = DatasetCard(Path(old_path).read_text(encoding="utf-8")).data.to_dict()
    except (ValueError, yaml.YAMLError) as exc:  # its metadata block is not a YAML mapping
        raise PushError(
            f"{repo_id}: the {CARD_FILE} already in the repository has metadata that cannot be read "
            f"({first_line(exc)}); fix or remove its --- block on the Hub, then push again "
            "(nothing was committed)"
        ) from None
    ours = DatasetCard((folder / CARD_FILE).read_text(encoding="utf-8"))
    merged = merge_metadata(old, ours.data.to_dict())
    text = f"---\n{_metadata_yaml(merged)}---\n\n{ours.text.lstrip(chr(10))}"
    (folder / CARD_FILE).write_text(text, encoding="utf-8")
    return other_config_paths(merged)


def _metadata_yaml(metadata: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)


def _commit(
    api: Any,
    run: RunDir,
    folder: Path,
    files: list[str],
    existing: list[str],
    kept_paths: list[str],
    repo_id: str,
    message: str | None,
) -> str:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    # Data files of an earlier push that this one does not replace (another shard count, a split
    # that is gone) are deleted in the same commit, so the repository holds one run; files the
    # configs a merged card keeps name stay.
    stale = [
        path
        for path in existing
        if path.startswith(f"{DATA_DIR}/")
        and path.endswith(".parquet")
        and path not in files
        and not any(fnmatch.fnmatch(path, pattern) for pattern in kept_paths)
    ]
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
    operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
    shards = sum(1 for f in files if f.startswith(f"{DATA_DIR}/"))
    info = api.create_commit(
        repo_id,
        operations,
        repo_type="dataset",
        commit_message=message or f"synthkd: {run.name} ({shards} data file(s), card, recipe)",
    )
    return info.commit_url
