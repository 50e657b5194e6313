"""Run a recipe pushed to the Hub: `synthkd run hf://datasets/<namespace>/<name>/recipe.yaml`.

The repository's files (all but the parquet data under data/) are downloaded with
`huggingface_hub.snapshot_download` into the Hub cache (HF_HOME; HF_ENDPOINT and HF_TOKEN are
honoured), and the recipe is read from there, so its relative paths find the seed files and
templates `synthkd push` put beside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from synthkd.errors import RecipeError
from synthkd.hub_ids import REPO_ID_PATTERN, is_repo_id
from synthkd.publish.hub_http import first_line, http_status, is_unreachable
from synthkd.shipped import leaves_its_folder

HUB_PREFIX = "hf://"
# hf://datasets/namespace/name[@revision][/path/in/repo.yaml]; a revision is a branch, tag or
# commit without "/", or a pull request's refs/pr/N (its slashes would otherwise be read as the path).
_HUB_URL = re.compile(
    rf"^hf://datasets/(?P<repo>{REPO_ID_PATTERN}?)(@(?P<rev>refs/pr/\d+|[^/@]+))?(/(?P<path>.+))?$"
)
DEFAULT_RECIPE = "recipe.yaml"
ADDRESS = (
    "give hf://datasets/<namespace>/<name>/recipe.yaml (optionally <name>@<revision>: a branch, tag "
    "or commit, or refs/pr/<N>; a branch with / in its name is not supported)"
)


def is_hub_recipe(path: str | Path) -> bool:
    return str(path).startswith(HUB_PREFIX)


def download_recipe(url: str) -> Path:
    """The local path of the recipe `url` names, its repository's files downloaded beside it."""
    match = _HUB_URL.match(url)
    if match is None or not is_repo_id(match["repo"]):
        raise RecipeError(f"not a Hub recipe address: {ADDRESS}", where=url)
    repo, revision = match["repo"], match["rev"]
    path = match["path"] or DEFAULT_RECIPE
    if leaves_its_folder(path):  # hf://datasets/a/b/../../x.yaml: outside the downloaded repository
        raise RecipeError(f"{path!r} is not a path inside the repository {repo}", where=url)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        # data/ holds the dataset itself (parquet shards), which a rerun makes again: not fetched.
        # HF_ENDPOINT is read now, not when huggingface_hub was imported (as push does).
        folder = snapshot_download(
            repo,
            repo_type="dataset",
            revision=revision,
            ignore_patterns=["data/*"],
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except LocalEntryNotFoundError:
        raise RecipeError(
            "cannot download the repository: the Hub cannot be reached (or HF_HUB_OFFLINE is set) "
            "and no copy is cached",
            where=url,
        ) from None
    except HfHubHTTPError as exc:
        raise RecipeError(
            f"cannot download the repository: HTTP {http_status(exc)} (is {repo} public?)", where=url
        ) from None
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        raise RecipeError(f"cannot download the repository: {first_line(exc)}", where=url) from None
    root = Path(folder)
    recipe = root / path  # inside it: `path` was checked before the download
    if not recipe.is_file():
        raise RecipeError(f"the repository {repo} has no {path}", where=url)
    return recipe
