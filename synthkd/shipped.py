"""Where the prompts and recipes that ship with synthkd live, and how recipe paths resolve."""

from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath

from synthkd.errors import RecipeError
from synthkd.spelling import close_names

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_root() -> Path:
    """The folder holding the shipped `prompts/` and `recipes/`.

    In a wheel they are copied to `synthkd/_shipped/`; in a source checkout (or an editable
    install) they are the repository's top-level folders.
    """
    in_wheel = _PACKAGE_DIR / "_shipped"
    return in_wheel if in_wheel.is_dir() else _PACKAGE_DIR.parent


def candidate_paths(relative: str | Path, base_dir: Path | None) -> list[Path]:
    """Places a recipe path may point to, in the order they are tried.

    First relative to the recipe's folder, then to the shipped root, then inside the shipped
    `prompts/` and `recipes/`, so `prompts/label.jinja` and `label.jinja` both find the shipped file.
    """
    path = Path(relative).expanduser()
    if path.is_absolute():
        return [path]
    seen: list[Path] = []
    for base in search_folders(base_dir):
        candidate = base / path
        if candidate not in seen:
            seen.append(candidate)
    return seen


def search_folders(base_dir: Path | None) -> list[Path]:
    """Where a relative recipe path is looked for, in order: the recipe's folder (the working
    directory for a recipe path itself), the shipped root, its `prompts/` and `recipes/`."""
    root = shipped_root()
    return [base_dir if base_dir is not None else Path.cwd(), root, root / "prompts", root / "recipes"]


def resolve_path(relative: str | Path, base_dir: Path | None) -> Path | None:
    """The first existing candidate for `relative`, or None."""
    for candidate in candidate_paths(relative, base_dir):
        if candidate.exists():
            return candidate
    return None


def leaves_its_folder(relative: str | Path) -> bool:
    """Whether a recipe path can point outside the folders it is looked for in: absolute, from
    the home folder (`~`), or climbing out with `..`. Checked on the name, not the resolved path:
    the Hub cache's snapshot files are links into its blob store, outside the snapshot folder."""
    text = str(relative).replace("\\", "/")
    if text.startswith("~") or Path(text).is_absolute() or PureWindowsPath(text).drive:
        return True
    return os.path.normpath(text).replace("\\", "/").split("/")[0] == ".."


def not_found(what: str, relative: str | Path, base_dir: Path | None) -> str:
    """The message for a recipe path that resolves nowhere: the close names in the folder it was
    looked for in ("did you mean quickstart/seed_tasks.jsonl?"), else where it was looked for."""
    close = close_paths(relative, base_dir)
    if close:
        return f"{what} not found: {relative}; did you mean {' or '.join(close)}?"
    if Path(relative).expanduser().is_absolute():
        return f"{what} not found: {relative}"
    where = (
        f"the working directory ({Path.cwd()})" if base_dir is None else f"the recipe's folder ({base_dir})"
    )
    return f"{what} not found: {relative} (looked in {where} and synthkd's shipped prompts and recipes)"


def close_paths(relative: str | Path, base_dir: Path | None) -> list[str]:
    """Existing paths spelled like `relative`, written as it is (so they resolve the same way):
    each missing folder replaced by the closest name in its parent, the file by the closest names
    in its folder, from the first place `candidate_paths` looks in that has any (a file with the
    same suffix is looked for everywhere before any other)."""
    text = str(relative)
    if text.startswith("~"):  # keep the user's ~ rather than the expanded home folder
        prefix, rest, bases = "~/", Path(text[1:].lstrip("/")), [Path.home()]
    elif Path(text).is_absolute():
        path = Path(text)
        prefix, rest, bases = path.anchor, path.relative_to(path.anchor), [Path(path.anchor)]
    else:
        prefix, rest, bases = "", Path(text), search_folders(base_dir)
    for same_suffix in (True, False):
        for base in bases:
            found = _corrected(base, rest.parts, same_suffix)
            if found:
                return [prefix + path for path in found]
    return []


def _corrected(base: Path, parts: tuple[str, ...], same_suffix: bool) -> list[str]:
    """`parts` under `base` with each missing folder replaced by the closest entry of its parent
    and a missing last part by the closest entries of its folder (with `same_suffix`, only those
    with its suffix); empty if a part has no close entry or nothing was missing."""
    node, written, changed = base, [], False
    for position, part in enumerate(parts):
        if part in ("..", ".") or (node / part).exists():
            node, written = node / part, [*written, part]
            continue
        try:
            entries = [name for name in os.listdir(node) if not name.startswith(".")]
        except OSError:
            return []
        if position < len(parts) - 1:
            match = close_names(part, entries)[:1]
            if not match:
                return []
            node, written, changed = node / match[0], [*written, match[0]], True
            continue
        if same_suffix:
            entries = [name for name in entries if Path(name).suffix == Path(part).suffix]
        return ["/".join([*written, match]) for match in close_names(part, entries)]
    return ["/".join(written)] if changed else []  # a folder corrected, or nothing missing


RECIPE_SUFFIXES = (".yaml", ".yml")


def find_recipe_file(name: str | Path) -> Path:
    """The recipe file `name` means: a recipe file's path as given (from the working directory),
    else a shipped recipe by its name, as `synthkd recipes` lists it or without `recipes/` and
    `.yaml` (`quickstart`, `law/doc_qa`). The one place a recipe name is looked up, so that every
    command takes the same names. RecipeError, with the names close to it, if neither."""
    given = Path(name).expanduser()
    if given.is_file():
        return given.resolve()
    shipped = shipped_recipe_files().get(_short_name(str(name)))
    if shipped is None:
        raise RecipeError(_recipe_not_found(str(name)))
    return shipped


def shipped_recipe_files() -> dict[str, Path]:
    """Every shipped recipe by its short name (`law/doc_qa`)."""
    recipes = shipped_root() / "recipes"
    files = sorted(recipes.rglob("*.yaml"))
    return {path.relative_to(recipes).with_suffix("").as_posix(): path for path in files}


def _short_name(name: str) -> str:
    return name.removeprefix("./").removeprefix("recipes/").removesuffix(".yaml")


def _recipe_not_found(name: str) -> str:
    """What is close to a recipe name that is neither a file nor a shipped recipe: recipe files
    spelled like it (written as the user wrote theirs), then shipped recipes' names; never a file
    that is no recipe (quickstart.log beside a mistyped `quickstart`)."""
    files = [path for path in close_paths(name, None) if Path(path).suffix in RECIPE_SUFFIXES]
    meant = {_short_name(path) for path in files}
    names = close_names(_short_name(name), list(shipped_recipe_files()))
    close = [*files, *(short for short in names if short not in meant)]
    if close:
        return f"recipe file not found: {name}; did you mean {' or '.join(close)}?"
    return f"recipe file not found: {name}: no such file, nor a shipped recipe's name (`synthkd recipes`)"


SUMMARY_CHARS = 110  # a recipe's line in `synthkd recipes`


def shipped_recipes() -> list[tuple[str, str]]:
    """Every shipped recipe as (path to give `synthkd run`, e.g. recipes/quickstart.yaml, and one
    line on what it makes: the first sentence of the comment it opens with)."""
    return [(f"recipes/{short}.yaml", _summary(path)) for short, path in shipped_recipe_files().items()]


def _summary(path: Path) -> str:
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(part for part in comment if part).split(". ", 1)[0]  # its first sentence
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + " …"
