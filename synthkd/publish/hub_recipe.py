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

HUB_PREFIX = "hf://"
# hf://datasets/namespace/name[@revision][/path/in/repo.yaml]
_HUB_URL = re.compile(
    r"^hf://datasets/(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*?)(@(?P<rev>[\w.-]+))?(/(?P<path>.+))?$"
)
DEFAULT_RECIPE = "recipe.yaml"


def is_hub_recipe(path: str | Path) -> bool:
    return str(path).startswith(HUB_PREFIX)


def download_recipe(url: str) -> Path:
    """The local path of the recipe `url` names, its repository's files downloaded beside it."""
    match = _HUB_URL.match(url)
    if match is None:
        raise RecipeError(
            "not a Hub recipe address: give hf://datasets/<namespace>/<name>/recipe.yaml "
            "(optionally <name>@<revision>)",
            where=url,
        )
    repo, revision = match["repo"], match["rev"]
    path = match["path"] or DEFAULT_RECIPE
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
        status = exc.response.status_code if exc.response is not None else "?"
        raise RecipeError(
            f"cannot download the repository: HTTP {status} (is {repo} public?)", where=url
        ) from None
    recipe = Path(folder) / path
    if not recipe.is_file():
        raise RecipeError(f"the repository {repo} has no {path}", where=url)
    return recipe
