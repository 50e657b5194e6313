"""Push a run to the Hub: parquet data, the card and the recipe, in one commit.

The folder that is uploaded is first written out whole (`--dry-run DIR` keeps it), searched for
secrets, then sent with `HfApi.create_repo` and one `create_commit`, so a dataset repository never
shows a card without its data or data from two runs.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from synthkd.errors import SynthkdError
from synthkd.publish.card import CARD_FILE, RECIPE_FILE, REPO_PLACEHOLDER, build_card, write_recipe
from synthkd.publish.rundir import PublishInputError, RunDir, open_run
from synthkd.publish.secrets import assert_no_secret, secret_values

# The Hub's rule for repository ids: namespace/name, letters, digits, - _ . (no -- or .. inside).
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# Parquet shards of at most this much Arrow data, as datasets' push_to_hub does.
MAX_SHARD_BYTES = 500 * 2**20
DATA_DIR = "data"


class PushError(SynthkdError):
    """The Hub refused or could not be reached; nothing was committed."""

    exit_code = 1


@dataclass
class PushResult:
    repo_id: str
    files: list[str]  # paths in the repository, sorted
    commit_url: str | None = None  # None for a dry run


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise PublishInputError(
            f"{repo_id!r} is not a Hub repository id: give namespace/name (letters, digits, - _ .), "
            "e.g. my-user/my-dataset"
        )
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
    # The card written at the end of the run has the templates' texts; rebuild only if it is gone.
    text = card.read_text(encoding="utf-8") if card.exists() else str(build_card(run))
    if repo_id is not None:  # the card's usage example names the repository once it is known
        text = text.replace(f'load_dataset("{REPO_PLACEHOLDER}")', f'load_dataset("{repo_id}")')
    (folder / CARD_FILE).write_text(text, encoding="utf-8")
    write_recipe(run, folder / RECIPE_FILE)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _prepare_dry_run_folder(folder: Path) -> None:
    """A dry-run folder is ours only if it is new, empty, or holds a previous dry run."""
    if folder.exists():
        if not folder.is_dir():
            raise PublishInputError(f"{folder}: exists and is not a folder")
        foreign = [p.name for p in folder.iterdir() if p.name not in (CARD_FILE, RECIPE_FILE, DATA_DIR)]
        if foreign:
            raise PublishInputError(
                f"{folder}: not empty ({', '.join(sorted(foreign)[:3])}...); give a new folder for --dry-run"
            )


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
    dry_run: str | Path | None = None,
    commit_message: str | None = None,
    extra_secrets: list[str] | None = None,
) -> PushResult:
    """Create `repo_id` (a dataset repository) if needed and commit the run to it; or, with `dry_run`,
    only write the folder that would be uploaded."""
    check_repo_id(repo_id)
    run = open_run(run_dir)
    token = _token(token_env)
    secrets = secret_values(run.recipe, [token, *(extra_secrets or [])])
    if dry_run is None:
        _check_online()
    else:
        _prepare_dry_run_folder(Path(dry_run))
    # Staged in a temporary folder and searched for secrets first: a file with a secret is never
    # uploaded, nor left in the dry-run folder.
    with tempfile.TemporaryDirectory(prefix="synthkd-push-") as tmp:
        folder = Path(tmp)
        files = stage(run, folder, repo_id)
        assert_no_secret((folder / f for f in files), secrets)
        if dry_run is not None:
            target = Path(dry_run)
            shutil.rmtree(target / DATA_DIR, ignore_errors=True)
            shutil.copytree(folder, target, dirs_exist_ok=True)
            return PushResult(repo_id, files)
        commit_url = _commit(run, folder, files, repo_id, private, token, commit_message)
    return PushResult(repo_id, files, commit_url)


def _check_online() -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise PublishInputError("HF_HUB_OFFLINE is set: unset it to push (or use --dry-run DIR)")


def _commit(
    run: RunDir,
    folder: Path,
    files: list[str],
    repo_id: str,
    private: bool,
    token: str | None,
    message: str | None,
) -> str:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    # HF_ENDPOINT is read now, not when huggingface_hub was imported, so a caller may set it late.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        existing = api.list_repo_files(repo_id, repo_type="dataset")
        # Data files of an earlier push that this one does not replace (another shard count, a split
        # that is gone) are deleted in the same commit, so the repository holds one run.
        stale = [
            path
            for path in existing
            if path.startswith(f"{DATA_DIR}/") and path.endswith(".parquet") and path not in files
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
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise PushError(
            f"push to {api.endpoint} ({repo_id}) failed: HTTP {status}: {_first_line(exc)}"
        ) from None
    except Exception as exc:  # connection refused, DNS (httpx2 errors are not OSErrors): nothing committed
        if exc.__class__.__module__.split(".")[0] not in ("httpx", "httpx2") and not isinstance(exc, OSError):
            raise
        raise PushError(f"push to {api.endpoint} ({repo_id}) failed: {exc}") from None
    return info.commit_url


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
