"""Prompt templates: Jinja files, rendered strictly so a missing variable is an error, not ''."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from synthkd.errors import RecipeError
from synthkd.shipped import candidate_paths, resolve_path

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class PromptTemplate:
    """A loaded template: its source (hashed into the manifest) and the variables it reads."""

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.name = name
        try:
            parsed = _ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise RecipeError(f"template syntax error: {exc.message}", where=f"{name}:{exc.lineno}") from None
        self.variables = frozenset(meta.find_undeclared_variables(parsed))
        self._template = _ENV.from_string(source)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def render(self, values: dict[str, Any]) -> str:
        try:
            return self._template.render(values).strip()
        except jinja2.UndefinedError as exc:
            raise RecipeError(f"template variable missing: {exc.message}", where=self.name) from None


def load_template(path: str, base_dir: Path, where: str) -> PromptTemplate:
    """Find a template file (recipe folder first, then the shipped prompts) and parse it."""
    found = resolve_path(path, base_dir)
    if found is None or not found.is_file():
        tried = ", ".join(str(p) for p in candidate_paths(path, base_dir))
        raise RecipeError(f"template not found: {path} (tried {tried})", where=where)
    return PromptTemplate(found.read_text(encoding="utf-8"), str(found))
