"""synthkd's modules form layers: a module imports only from its own layer or the ones below it.

Every `import` counts, wherever it is: at the top, inside a function, under TYPE_CHECKING. A lazy
import is for a heavy third-party package (torch, transformers, litellm, datasets), never a way
round a cycle between synthkd's own modules.
"""

from __future__ import annotations

import ast
import sys
import typing
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synthkd"

# Lowest first. A module belongs to the layer of the longest name here that is it or a package
# above it (`synthkd.publish.config` before `synthkd.publish`); `synthkd` itself means only the
# package's __init__, which offers the public API (and so sits near the top).
LAYERS: list[tuple[str, list[str]]] = [
    (
        "base: the standard library and third-party packages only, or each other",
        [
            "synthkd.version",
            "synthkd.extras",
            "synthkd.errors",
            "synthkd.extras",
            "synthkd.redaction",
            "synthkd.atomic",
            "synthkd.file_copy",
            "synthkd.gc_pause",
            "synthkd.config_base",
            "synthkd.hub_ids",
            "synthkd.text",
            "synthkd.spelling",
            "synthkd.shipped",
            "synthkd.yaml_source",
            "synthkd.templates",
            "synthkd.overrides",
            "synthkd.paths",
            "synthkd.data_files",
            "synthkd.model_source",
            "synthkd.messages",
            "synthkd.kd",
            "synthkd.sandbox",
            "synthkd.sandbox_child",
        ],
    ),
    ("teachers: the backends, their config and the embedded model", ["synthkd.teachers"]),
    (
        "services the dispatcher and the steps use",
        ["synthkd.cache", "synthkd.pricing", "synthkd.preflight", "synthkd.chunking", "synthkd.curate"],
    ),
    ("dispatch: requests to the teachers, through the cache", ["synthkd.dispatch"]),
    ("steps", ["synthkd.steps"]),
    (
        "what runs over the steps' rows",
        [
            "synthkd.output",
            "synthkd.output_folder",
            "synthkd.streaming",
            "synthkd.progress",
            "synthkd.training.config",
            "synthkd.experiment.config",
            "synthkd.loop.config",
        ],
    ),
    ("publish: the card, the report, the push (given plain values, not the recipe)", ["synthkd.publish"]),
    ("recipe: the schema and loader", ["synthkd.recipe"]),
    (
        "what runs a recipe",
        [
            "synthkd.pipeline",
            "synthkd.dry_run",
            "synthkd.recipe_copy",
            "synthkd.training",
            "synthkd.engines",
            "synthkd.experiment",
            "synthkd.loop",
        ],
    ),
    (
        "the public Python API: synthkd.run and the names `import synthkd` offers",
        ["synthkd", "synthkd.api", "synthkd.reporter"],
    ),
    (
        "the command line, the test helpers and the generated docs",
        ["synthkd.cli", "synthkd.__main__", "synthkd.testing", "synthkd.docs_reference"],
    ),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            matches = module == name or (name != "synthkd" and module.startswith(name + "."))
            if matches and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, the nested ones included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from synthkd.kd import topk` imports the module synthkd.kd.topk
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else base))
    return found


def test_every_module_has_a_layer():
    missing = sorted(module for module in MODULES if _layer_of(module) is None)
    assert not missing, f"add these modules to LAYERS in {Path(__file__).name}: {missing}"


def test_imports_go_down_the_layers():
    upward = []
    for module, path in MODULES.items():
        layer = _layer_of(module)
        if layer is None:
            continue
        for line, imported in _imports(module, path):
            if imported != "synthkd" and not imported.startswith("synthkd."):
                continue
            target = _layer_of(imported)
            if target is None or target > layer:
                where = "no layer" if target is None else f"layer {target}: {LAYERS[target][0]}"
                upward.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {layer}: "
                    f"{LAYERS[layer][0]}) imports {imported} ({where})"
                )
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


# What steps share lives in modules of its own; a step never imports another step.
SHARED_STEP_MODULES = {
    "synthkd.steps.base",
    "synthkd.steps.parsing",
    "synthkd.steps.scoring",
    "synthkd.steps.preference_rows",
    "synthkd.steps.sources",
}


def test_a_step_imports_no_other_step():
    found = [
        f"{module} imports {imported} (line {line})"
        for module, path in MODULES.items()
        if module.startswith("synthkd.steps.") and module not in SHARED_STEP_MODULES
        for line, imported in _imports(module, path)
        if imported.startswith("synthkd.steps.") and imported not in SHARED_STEP_MODULES
    ]
    assert not found, "move what steps share into a module of its own:\n" + "\n".join(found)


def test_the_sandbox_child_needs_only_the_standard_library():
    """The child runs in an isolated interpreter (`python -I`): synthkd is not importable there."""
    child = [module for module in MODULES if module.startswith("synthkd.sandbox_child")]
    assert len(child) >= 3
    outside = [
        f"{module} imports {imported} (line {line})"
        for module in child
        for line, imported in _imports(module, MODULES[module])
        if imported.split(".")[0] not in sys.stdlib_module_names and imported != "solution"
    ]
    assert not outside, outside


def _backend_names() -> set[str]:
    from synthkd.teachers.config import TeacherConfig

    return set(typing.get_args(TeacherConfig.model_fields["backend"].annotation))


def _names_backend(node: ast.AST, names: set[str]) -> bool:
    """`x.backend`, `backend`, `x["backend"]`, `x.get("backend")`, a backend name or a collection of them."""
    if isinstance(node, ast.Attribute):
        return node.attr == "backend"
    if isinstance(node, ast.Name):
        return node.id == "backend"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "backend"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "backend"
    if isinstance(node, ast.Constant):
        return node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_backend(element, names) for element in node.elts)
    return False


def test_only_the_teachers_package_knows_backend_names():
    """Outside synthkd/teachers/ code asks `capabilities_of(config)` or the backend's spec, never
    `config.backend == "openai"`: a new backend is then one module and one registry entry."""
    names = _backend_names()
    assert names >= {"openai", "litellm", "transformers"}
    found = []
    for module, path in MODULES.items():
        if module == "synthkd.teachers" or module.startswith("synthkd.teachers."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
            elif isinstance(node, ast.Match):
                operands = [node.subject]
            else:
                continue
            if any(_names_backend(operand, names) for operand in operands):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)[:120]}")
    assert not found, "backend compared by name outside synthkd/teachers/:\n" + "\n".join(found)


def test_the_checks_catch_what_they_look_for(tmp_path: Path):
    """The helpers above on made-up code: an upward import and a backend comparison are seen."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from synthkd.recipe import LoadedRecipe\n"
        "def f(config):\n"
        "    from synthkd import pipeline\n"
        "    return config.backend == 'openai' or 'litellm' != config.model\n",
        encoding="utf-8",
    )
    assert [imported for _, imported in _imports("synthkd.teachers.probe", source)] == [
        "synthkd.recipe",
        "synthkd.pipeline",
    ]
    assert _layer_of("synthkd.teachers.probe") < _layer_of("synthkd.recipe")
    assert _layer_of("synthkd.publish.config") < _layer_of("synthkd.recipe") < _layer_of("synthkd.cli")
    compares = [node for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.Compare)]
    names = _backend_names()
    assert len(compares) == 2 and all(
        any(_names_backend(operand, names) for operand in [c.left, *c.comparators]) for c in compares
    )
