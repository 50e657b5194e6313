"""The files a recipe reads (seed data, prompt templates), kept with its run so the run can be
pushed and rerun from the Hub: `synthkd run hf://datasets/<repo>/recipe.yaml`.

At the end of a run they are copied into `<run dir>/recipe_files/`, each under the name the recipe
gives it, with `names.json` (as named -> stored name). A push puts them beside recipe.yaml, where
the recipe's relative paths find them first (before the shipped files). A name that cannot sit
beside the recipe (absolute, `~`, with `..`, or taking a name the repository needs: README.md,
recipe.yaml, data/) is stored as `files/<its file name>` (`files/2/<name>` if that is taken) and
the pushed recipe is pointed there.

Evaluation sets are not among them (`decontaminate` does not record its files): a held-out set
published beside the training data would no longer be held out.

The folder is written whole into a staging folder, names file included, and swapped in by renames
(`file_copy.replace_folder`), so a crash leaves the old kept files or the new ones, never a names
file listing files that are not there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from synthkd.file_copy import copy_entry, recover_folder, staged_folder
from synthkd.publish.rundir import PublishInputError

FILES_DIR = "recipe_files"
NAMES_FILE = "names.json"  # in FILES_DIR: as named in the recipe -> path beside the recipe
STORED_DIR = "tree"  # in FILES_DIR: the files, under their stored names
RESERVED = {"README.md", "recipe.yaml", "data", ".gitattributes", ".huggingface"}
MOVED_DIR = "files"


def stored_names(named: list[str]) -> dict[str, str]:
    """Where each file as named goes beside the pushed recipe (see the module's docstring); every
    stored name is distinct, and a name that can stay as it is keeps it. A name for the recipe's
    own folder (`.`) is refused: the run would keep, and a push upload, everything beside the
    recipe (runs/ with it)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    paths = {name: PurePosixPath(name.replace("\\", "/")) for name in named}
    for name, path in paths.items():
        if not path.parts or path.name in ("", ".", ".."):
            raise PublishInputError(
                f"{name!r} names a folder that holds the recipe: give the step a folder of its own"
            )
    for name, path in paths.items():  # first the names that can stay as they are
        clean = not path.is_absolute() and ".." not in path.parts and not name.startswith("~")
        if clean and path.parts[0] not in RESERVED and not _clashes(path.as_posix(), taken):
            names[name] = path.as_posix()
            taken.add(names[name])
    for name, path in paths.items():
        if name in names:
            continue
        stored, count = f"{MOVED_DIR}/{path.name}", 1
        while _clashes(stored, taken):
            count += 1
            stored = f"{MOVED_DIR}/{count}/{path.name}"
        names[name] = stored
        taken.add(stored)
    return {name: names[name] for name in named}


def _clashes(stored: str, taken: set[str]) -> bool:
    """The same name, or one inside the other (a folder kept and a file in it)."""
    return any(
        stored == other or stored.startswith(other + "/") or other.startswith(stored + "/") for other in taken
    )


def keep_recipe_files(run_dir: Path, data_files: dict[str, Path], templates: dict[str, str]) -> None:
    """Copy the recipe's data files and templates into `run_dir/recipe_files/` (replaced whole).
    Hidden files in a kept folder (.git, .env) are left out."""
    names = stored_names([*data_files, *templates])
    final = run_dir / FILES_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    recover_folder(final)
    for stale in run_dir.glob(f".{FILES_DIR}.staging-*"):  # a killed run's (the run folder is locked)
        shutil.rmtree(stale, ignore_errors=True)
    with staged_folder(final) as staging:
        for named, source in data_files.items():
            copy_entry(source, staging / STORED_DIR / names[named])
        for named, text in templates.items():
            target = staging / STORED_DIR / names[named]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        (staging / NAMES_FILE).write_text(json.dumps(names, indent=1) + "\n", encoding="utf-8")


def read_names(run_dir: Path) -> dict[str, str]:
    """The kept files of a run, as named -> path beside the recipe; {} for a run without them."""
    folder = run_dir / FILES_DIR
    recover_folder(folder)
    path = folder / NAMES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def kept_path(run_dir: Path, stored: str) -> Path:
    """Where the file stored as `stored` is in the run folder."""
    return run_dir / FILES_DIR / STORED_DIR / stored


def kept_files(run_dir: Path, names: dict[str, str]) -> dict[str, Path]:
    """Stored name -> the kept file or folder, for the run's `names` (`read_names`); a
    PublishInputError naming one that is gone (a push of a recipe without a file it reads could
    not be rerun)."""
    found = {}
    for named, stored in names.items():
        path = kept_path(run_dir, stored)
        if not path.exists():
            raise PublishInputError(
                f"{path}: the recipe's file {named!r} is missing from the run's {FILES_DIR}/ "
                "(rerun the recipe to keep its files again)"
            )
        found[stored] = path
    return found


def repoint(recipe: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The recipe with each step value naming a moved file replaced by where it was stored."""
    moved = {named: stored for named, stored in names.items() if named != stored}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return moved.get(value, value) if isinstance(value, str) else value

    return {**recipe, "steps": walk(recipe.get("steps") or [])} if moved else recipe
