"""Prompt templates: Jinja files, rendered strictly so a missing variable is an error, not ''.

A recipe is a file people share, so its templates are untrusted: they render in Jinja's
immutable sandbox (no `__class__`/`__globals__` walks to `os`, no mutating a row), and
`{% include %}`, `{% import %}` and `{% extends %}` read only from the recipe's folder and the
shipped prompts. What the sandbox refuses is a `RecipeError` naming the template, never a run
of the template's code. Unsafe names spelled out in the template are refused when it is parsed,
so `synthkd validate` reports them too; the sandbox refuses the rest (names built at run time)
when the template renders.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from synthkd.errors import RecipeError
from synthkd.shipped import not_found, resolve_path, shipped_root

# A recipe's `prompt:` may name a shipped file as `prompts/label.jinja`; an include may too.
_SHIPPED_PREFIX = "prompts/"


class _IncludeLoader(jinja2.FileSystemLoader):
    """Templates a template may include: the recipe's folder first, then the shipped prompts.

    Jinja's loader already refuses `..` segments; this also refuses absolute names and files
    whose real path (symlinks followed) lies outside the folders searched.
    """

    def __init__(self, folders: list[Path]) -> None:
        super().__init__([str(folder) for folder in folders], encoding="utf-8")
        self.real_folders = [Path(os.path.realpath(folder)) for folder in folders]

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        if Path(template).is_absolute() or template.startswith(("/", "\\")):
            raise _IncludeRefused(template, "an absolute path")
        if any(part == ".." for part in template.replace("\\", "/").split("/")):
            raise _IncludeRefused(template, "a path outside the recipe folder")
        names = [template]
        if template.startswith(_SHIPPED_PREFIX):
            names.append(template[len(_SHIPPED_PREFIX) :])
        for name in names:
            try:
                source, filename, uptodate = super().get_source(environment, name)
            except jinja2.TemplateNotFound:
                continue
            real = Path(os.path.realpath(filename))
            if not any(real.is_relative_to(folder) for folder in self.real_folders):
                raise _IncludeRefused(template, f"a link to {real}, outside the recipe folder")
            return source, filename, uptodate
        raise jinja2.TemplateNotFound(template)


class _IncludeRefused(jinja2.TemplateNotFound):
    """An include name that points outside the folders includes may come from."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name)
        self.why = why


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, refusing an unsafe attribute at once.

    Jinja returns an undefined that fails only when used, and a further `|attr(...)` on it turns
    the refusal into a plain "no attribute" error; raising here keeps the message clear.
    """

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


@functools.lru_cache(maxsize=64)
def _environment(base_dir: Path | None) -> ImmutableSandboxedEnvironment:
    """The sandboxed environment whose includes read from `base_dir` and the shipped prompts."""
    folders = [base_dir.resolve()] if base_dir is not None else []
    folders.append((shipped_root() / "prompts").resolve())
    return _Sandbox(
        loader=_IncludeLoader(folders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


class PromptTemplate:
    """A loaded template: its source (hashed into the manifest) and the variables it reads.

    `variables` covers the templates it includes or extends as well, since they see the same row
    (less the names the including template sets itself). `base_dir` is the recipe's folder, where
    includes are looked for before the shipped prompts (only the shipped prompts when it is None).
    """

    def __init__(self, source: str, name: str, *, base_dir: Path | None = None) -> None:
        self.source = source
        self.name = name
        self.base_dir = base_dir
        self._env = _environment(base_dir)
        # File -> source of every template this one includes, imports or extends (named in the
        # source; ones whose name is built at run time are not known here).
        self.included_sources: dict[str, str] = {}
        parsed = _parse(self._env, source, name)
        self.variables = frozenset(self._check(parsed, name, seen={name}))
        self._template = self._env.from_string(parsed)
        # A plain dict, not Jinja's ChainMap of the environment's globals: every render builds its
        # context from these, and the ChainMap made that 3x slower (16 vs 5 us a row).
        self._template.globals = dict(self._template.globals)

    def __reduce__(self) -> tuple[Any, ...]:
        # Jinja's compiled templates do not pickle; a step sent to another process (a Ray actor)
        # parses its templates again there, from their source.
        return (_rebuilt_template, (self.source, self.name, self.base_dir))

    def _check(self, parsed: nodes.Template, name: str, seen: set[str]) -> set[str]:
        """Refuse unsafe names and bad includes; the variables read, included templates' too."""
        _refuse_unsafe_names(parsed, name)
        variables = set(meta.find_undeclared_variables(parsed))
        declared = _declared_names(parsed)
        for names, optional, shares_context in _references(parsed):
            found = self._include_source(names, optional, name)
            if found is None or found[1] in seen:
                continue
            source, filename = found
            seen.add(filename)
            self.included_sources[filename] = source
            included = self._check(_parse(self._env, source, filename), filename, seen)
            if shares_context:
                variables |= included - declared
        return variables

    def _include_source(self, names: list[str], optional: bool, name: str) -> tuple[str, str] | None:
        """The first of `names` that exists (Jinja's order), or None if the include may be missing."""
        found = None
        for included in names:
            try:
                source, filename, _ = self._env.loader.get_source(self._env, included)
            except _IncludeRefused as exc:
                raise RecipeError(_include_error(exc, included), where=name) from None
            except jinja2.TemplateNotFound:
                continue
            found = found or (source, filename or included)
        if found is None and not optional:
            missing = jinja2.TemplatesNotFound(names) if len(names) > 1 else jinja2.TemplateNotFound(names[0])
            raise RecipeError(_include_error(missing, names[0]), where=name)
        return found

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def render(self, values: dict[str, Any]) -> str:
        try:
            return self._template.render(values).strip()
        except SecurityError as exc:
            raise RecipeError(f"template refused by the sandbox: {exc}", where=self.name) from None
        except jinja2.UndefinedError as exc:
            raise RecipeError(f"template variable missing: {exc.message}", where=self.name) from None
        except jinja2.TemplateNotFound as exc:  # an include whose name is built at run time
            raise RecipeError(_include_error(exc, exc.name), where=self.name) from None
        except jinja2.TemplateSyntaxError as exc:
            where = f"{exc.filename or self.name}:{exc.lineno}"
            raise RecipeError(f"template syntax error: {exc.message}", where=where) from None
        except RecursionError:
            raise RecipeError("template includes itself without end", where=self.name) from None


def _references(parsed: nodes.Template) -> Iterator[tuple[list[str], bool, bool]]:
    """Each include, import and extends named in the source: (names to try, may be missing,
    sees the row). Names built at run time are left to the loader when the template renders."""
    for node in parsed.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        target = node.template
        if isinstance(target, nodes.Const):
            names = list(target.value) if isinstance(target.value, list | tuple) else [target.value]
        elif isinstance(target, nodes.List | nodes.Tuple) and all(
            isinstance(item, nodes.Const) for item in target.items
        ):
            names = [item.value for item in target.items]
        else:
            continue
        if not names or not all(isinstance(item, str) for item in names):
            continue
        optional = isinstance(node, nodes.Include) and node.ignore_missing
        yield names, optional, isinstance(node, nodes.Extends) or node.with_context


def _declared_names(parsed: nodes.Template) -> set[str]:
    """Names a template sets itself (`set`, `for`, macros, imports): an include reads those too."""
    declared = {node.name for node in parsed.find_all(nodes.Name) if node.ctx in ("store", "param")}
    declared |= {node.name for node in parsed.find_all(nodes.Macro)}
    declared |= {node.target for node in parsed.find_all(nodes.Import)}
    for node in parsed.find_all(nodes.FromImport):
        declared |= {alias if isinstance(alias, str) else alias[1] for alias in node.names}
    return declared


def _parse(env: jinja2.Environment, source: str, name: str) -> nodes.Template:
    try:
        return env.parse(source, filename=name)
    except jinja2.TemplateSyntaxError as exc:
        raise RecipeError(f"template syntax error: {exc.message}", where=f"{name}:{exc.lineno}") from None


def _include_error(exc: jinja2.TemplateNotFound, included: Any) -> str:
    if isinstance(exc, _IncludeRefused):
        return (
            f"include refused: {included!r} is {exc.why}; templates may include only files in the "
            "recipe's folder and the shipped prompts"
        )
    if isinstance(exc, jinja2.TemplatesNotFound):  # `{% include [a, b] %}`: none of them exists
        included = ", ".join(repr(str(name)) for name in exc.templates)
    else:
        included = repr(included)
    return f"include not found: {included} (looked in the recipe's folder and the shipped prompts)"


def _unsafe(name: Any) -> bool:
    """What the sandbox always refuses: attributes starting with '_' (dunders and private ones)."""
    return isinstance(name, str) and name.startswith("_")


def _refuse_unsafe_names(parsed: nodes.Template, name: str) -> None:
    """Refuse `x.__class__`, `x["__globals__"]` and `x|attr("__init__")` when the template is parsed.

    The sandbox would refuse them when rendering; refusing them here makes `validate` say so.
    A subscript with one leading '_' (`row["_note"]`) stays allowed: it may be a column.
    """
    for node, attribute in _attribute_accesses(parsed):
        if isinstance(node, nodes.Getitem) and not attribute.startswith("__"):
            continue
        raise RecipeError(
            f"template refused by the sandbox: attribute {attribute!r} is unsafe "
            "(templates cannot reach names starting with '_')",
            where=f"{name}:{node.lineno}",
        )


def _attribute_accesses(node: nodes.Node) -> Iterator[tuple[nodes.Node, str]]:
    """Attribute names spelled out in the template, innermost first (`a.__init__.__globals__`
    yields `__init__` before `__globals__`)."""
    for child in node.iter_child_nodes():
        yield from _attribute_accesses(child)
    if isinstance(node, nodes.Getattr) and _unsafe(node.attr):
        yield node, node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and _unsafe(node.arg.value):
        yield node, node.arg.value
    elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        first = node.args[0]
        if isinstance(first, nodes.Const) and _unsafe(first.value):
            yield node, first.value


def _rebuilt_template(source: str, name: str, base_dir: Path | None) -> PromptTemplate:
    return PromptTemplate(source, name, base_dir=base_dir)


def load_template(path: str, base_dir: Path, where: str) -> PromptTemplate:
    """Find a template file (recipe folder first, then the shipped prompts) and parse it."""
    found = resolve_path(path, base_dir)
    if found is None or not found.is_file():
        raise RecipeError(not_found("template", path, base_dir), where=where)
    return PromptTemplate(found.read_text(encoding="utf-8"), str(found), base_dir=base_dir)
