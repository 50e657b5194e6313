"""The files a recipe reads (seed data, prompt templates), kept with its run so the run can be
pushed and rerun from the Hub: `synthkd run hf://datasets/<repo>/recipe.yaml`.

At the end of a run they are copied into `<run dir>/recipe_files/`, each under the name the recipe
gives it, so a later `synthkd push` does not depend on the files still being where they were. A
push puts them beside recipe.yaml, where the recipe's relative paths find them first (before the
shipped files). A name that cannot sit beside the recipe (absolute, with `..`, or taking a name the
repository needs: README.md, recipe.yaml, data/) is stored as `files/<its file name>` and the
pushed recipe is pointed there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from synthkd.atomic import atomic_write_text

FILES_DIR = "recipe_files"
NAMES_FILE = "recipe_files.json"  # in the run folder: as named in the recipe -> path in FILES_DIR
RESERVED = {"README.md", "recipe.yaml", "data", ".gitattributes", ".huggingface"}


def stored_names(named: list[str]) -> dict[str, str]:
    """Where each file as named goes beside the pushed recipe (see the module's docstring)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for name in named:
        path = PurePosixPath(name.replace("\\", "/"))
        clean = not path.is_absolute() and ".." not in path.parts and "~" not in name and path.parts
        if clean and path.parts[0] not in RESERVED:
            stored = path.as_posix()
        else:
            stored, count = f"files/{path.name}", 1
            while stored in taken:
                count += 1
                stored = f"files/{path.stem}-{count}{path.suffix}"
        names[name] = stored
        taken.add(stored)
    return names


def keep_recipe_files(run_dir: Path, data_files: dict[str, Path], templates: dict[str, str]) -> None:
    """Copy the recipe's data files and templates into `run_dir/recipe_files/` (replaced whole)."""
    names = stored_names([*data_files, *templates])
    staging = run_dir / f".{FILES_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for named, source in data_files.items():
        target = staging / names[named]
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    for named, text in templates.items():
        target = staging / names[named]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    final = run_dir / FILES_DIR
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    atomic_write_text(run_dir / NAMES_FILE, json.dumps(names, indent=1) + "\n", what="the recipe's file list")


def read_names(run_dir: Path) -> dict[str, str]:
    """The kept files of a run, as named -> path beside the recipe; {} for a run without them."""
    path = run_dir / NAMES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


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
