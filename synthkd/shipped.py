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
