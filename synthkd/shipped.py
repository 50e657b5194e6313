"""Where the prompts and recipes that ship with synthkd live, and how recipe paths resolve."""

from __future__ import annotations

from pathlib import Path

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
    root = shipped_root()
    bases = [base_dir] if base_dir is not None else [Path.cwd()]
    bases += [root, root / "prompts", root / "recipes"]
    seen: list[Path] = []
    for base in bases:
        candidate = base / path
        if candidate not in seen:
            seen.append(candidate)
    return seen


def resolve_path(relative: str | Path, base_dir: Path | None) -> Path | None:
    """The first existing candidate for `relative`, or None."""
    for candidate in candidate_paths(relative, base_dir):
        if candidate.exists():
            return candidate
    return None


SUMMARY_CHARS = 110  # a recipe's line in `synthkd recipes`


def shipped_recipes() -> list[tuple[str, str]]:
    """Every shipped recipe as (path to give `synthkd run`, e.g. recipes/quickstart.yaml, and one
    line on what it makes: the first sentence of the comment it opens with)."""
    recipes = shipped_root() / "recipes"
    found = []
    for path in sorted(recipes.rglob("*.yaml")):
        found.append((f"recipes/{path.relative_to(recipes).as_posix()}", _summary(path)))
    return found


def _summary(path: Path) -> str:
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(part for part in comment if part).split(". ", 1)[0]  # its first sentence
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + " …"
