"""`synthkd init`: a copy of a recipe (a shipped one, or any file) that its user owns, with the
files it names (seeds, templates, documents, tools) beside it, so that the copy runs as it is and
points at nothing outside its folder.

What is a file the recipe names is found the way the recipe finds it: every string of the recipe
that resolves (`shipped.resolve_path`, from the recipe's folder, then the shipped files) to a file
or folder, wherever it is. A file named inside that folder keeps its relative path, so the
recipe's text stays as it is; one named from elsewhere (`../self_instruct/seed_tasks.jsonl`, an
absolute path) is copied to the top of the new folder and its line in the recipe rewritten.
Templates' `{% include %}`s are followed too, and a LICENSE file beside a copied file goes with it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.errors import RecipeError
from synthkd.file_copy import copy_entry
from synthkd.recipe import find_recipe, load_recipe
from synthkd.shipped import resolve_path
from synthkd.yaml_source import KeyPath

# Keys whose value is never a file to copy: a place the run writes, a name that may also be a
# folder's (`name: quickstart` beside recipes/quickstart/, `step: label` and prompts/label/), or a
# model (a local model folder is gigabytes, and a recipe names it where it is, not beside itself).
NOT_FILES = {"dir", "output_dir", "name", "step", "model", "student", "tokenizer"}
# A template's include/import/extends of another file, as written.
_TEMPLATE_REFERENCE = re.compile(r"{%-?\s*(?:include|import|extends|from)\s+(['\"])([^'\"]+)\1")


@dataclass
class RecipeCopy:
    """What `copy_recipe` wrote: the new recipe file, and each copied file or folder as
    (where it came from, where it is now)."""

    recipe: Path
    files: list[tuple[Path, Path]] = field(default_factory=list)


@dataclass(frozen=True)
class NamedFile:
    """A file or folder a recipe names: where it is, the path the copy gives it, and the recipe
    key naming it with the value written there (key None: the recipe's text stays as it is)."""

    origin: Path
    written: str
    key: KeyPath | None = None
    value: str = ""


def copy_recipe(name: str, dest: str | Path | None = None) -> RecipeCopy:
    """Copy the recipe `name` (a path, a shipped recipe's name: `recipe.find_recipe`) with the
    files it names into `dest`: a folder (made if missing; default ./<recipe file's stem>), or a
    .yaml path for the recipe. Refuses (RecipeError) to overwrite anything; writes nothing until
    all of it is ready."""
    source = find_recipe(name)
    loaded = load_recipe(source)  # a recipe that does not validate is not a starting point
    folder, recipe_name = _destination(source, dest)
    copies = _named_files(loaded.data, source.parent, recipe_name)
    targets = [folder / recipe_name, *(folder / named.written for named in copies)]
    existing = [target for target in targets if target.exists() or target.is_symlink()]
    if existing:
        raise RecipeError(
            f"{', '.join(str(path) for path in existing)} already exist(s); init never overwrites: "
            "give another destination, or move those away",
            where="synthkd init",
        )
    text = _rewritten(source.read_text(encoding="utf-8"), loaded.lines, copies)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthkd-init-", dir=folder.parent))
    try:
        (staging / recipe_name).write_text(text, encoding="utf-8")
        for named in copies:
            copy_entry(named.origin, staging / named.written)
        _move_into(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RecipeCopy(folder / recipe_name, [(named.origin, folder / named.written) for named in copies])


def _destination(source: Path, dest: str | Path | None) -> tuple[Path, str]:
    """The folder and the recipe's file name in it."""
    if dest is None:
        return Path.cwd() / source.stem, source.name
    path = Path(dest).expanduser().absolute()
    if path.suffix in (".yaml", ".yml"):
        return path.parent, path.name
    return path, source.name


def _named_files(data: Any, recipe_dir: Path, recipe_name: str) -> list[NamedFile]:
    """The files and folders the recipe names, then those its templates include; none written
    where the recipe will be (`recipe_name`)."""
    found: dict[Path, NamedFile] = {}
    # Paths kept as written first, so that a file moved to the top from elsewhere takes another
    # name than one of them (`../data/seeds.jsonl` beside the recipe's own `seeds.jsonl`).
    for key, value in sorted(_strings(data, ()), key=lambda item: not _stays_inside(item[1])):
        if key and key[-1] in NOT_FILES:
            continue
        origin = _copyable(value, recipe_dir)
        if origin is not None and origin not in found:
            written = _place_in_copy(
                value, origin, {recipe_name, *(named.written for named in found.values())}
            )
            found[origin] = NamedFile(origin, written, None if written == value else key, value)
    for named in list(found.values()):
        for licence in sorted(named.origin.parent.glob("LICENSE*")) if named.origin.is_file() else []:
            # The data's terms travel with it (the quickstart's seeds are Self-Instruct's, Apache-2.0).
            written = (Path(named.written).parent / licence.name).as_posix()
            if licence.resolve() not in found and written not in {other.written for other in found.values()}:
                found[licence.resolve()] = NamedFile(licence.resolve(), written)
        if named.origin.suffix == ".jinja":
            for included in _template_references(named.origin):
                target = _copyable(included, recipe_dir)
                if target is not None and target not in found and _stays_inside(included):
                    found[target] = NamedFile(target, included)
    return list(found.values())


def _strings(node: Any, key: KeyPath) -> list[tuple[KeyPath, str]]:
    if isinstance(node, dict):
        return [item for name, value in node.items() for item in _strings(value, (*key, str(name)))]
    if isinstance(node, list):
        return [item for index, value in enumerate(node) for item in _strings(value, (*key, index))]
    return [(key, node)] if isinstance(node, str) else []


def _copyable(value: str, recipe_dir: Path) -> Path | None:
    """Where `value` points if it names a file or folder the recipe reads: any the recipe's path
    resolves to, except a folder holding the recipe itself (`..`: not data) and a bare word that
    only the shipped folders have (`judge` beside prompts/judge/: a name, not a folder)."""
    if not value or len(value) > 255 or any(char.isspace() for char in value):
        return None  # prose (a system prompt), not a path
    try:
        found = resolve_path(value, recipe_dir)
    except OSError:
        return None
    if found is None:
        return None
    found = found.resolve()
    if found.is_dir():
        bare_shipped_name = "/" not in value and not (recipe_dir / value).exists()
        if bare_shipped_name or recipe_dir.resolve().is_relative_to(found):
            return None
    return found


def _stays_inside(written: str) -> bool:
    path = Path(written)
    return not path.is_absolute() and not written.startswith("~") and ".." not in path.parts


def _place_in_copy(value: str, origin: Path, used: set[str]) -> str:
    """The path the copy gives the file: as the recipe writes it where that stays inside the new
    folder, else its name at the top of it (its parent's name prefixed if two share a name, then
    numbered)."""
    if _stays_inside(value):
        return value
    names = [origin.name, f"{origin.parent.name}_{origin.name}"]
    names += (f"{origin.stem}_{number}{origin.suffix}" for number in range(2, len(used) + 3))
    return next(name for name in names if name not in used)


def _template_references(template: Path) -> list[str]:
    try:
        text = template.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [match.group(2) for match in _TEMPLATE_REFERENCE.finditer(text)]


def _rewritten(text: str, lines: dict[KeyPath, int], copies: list[NamedFile]) -> str:
    """The recipe's text with each value that named a file outside its folder replaced, on its
    own line (comments and layout kept)."""
    rows = text.splitlines(keepends=True)
    for named in copies:
        if named.key is not None:
            number = lines[named.key] - 1
            rows[number] = rows[number].replace(named.value, named.written, 1)
    return "".join(rows)


def _move_into(staging: Path, folder: Path) -> None:
    """Everything staged into `folder`: one rename when the folder is new, else entry by entry
    (none exists there: checked before staging)."""
    if not folder.exists():
        os.replace(staging, folder)
        staging.mkdir()  # for the caller's cleanup
        return
    for entry in staging.iterdir():
        target = folder / entry.name
        if target.exists() and entry.is_dir():
            _move_into(entry, target)
        else:
            os.replace(entry, target)
