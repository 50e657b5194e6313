"""The core install (`pip install synthkd`, no extras) runs API-teacher recipes, and a recipe that
needs an extra stops before any request with one line naming the recipe key and the pip command.

The core install is simulated in a subprocess: a `sitecustomize` on PYTHONPATH makes every module
that only the extras bring (computed from pyproject.toml and the installed packages' metadata,
torch, transformers, faiss, plotly, sklearn... included) impossible to import or find, as it is
after `pip install .`. bench/core_install.sh builds a real one.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from synthkd.errors import MissingExtraError
from synthkd.extras import EXTRAS, check_installed, needs_extra, require
from synthkd.testing.fake_openai import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "synthkd"
OPTIONAL = ("local", "curate", "train", "report", "ray")
# Extras outside `all`, which cannot be installed beside it (vllm pins its own CUDA torch): not
# installed here, so what they bring is known from pyproject.toml alone.
SEPARATE = ("vllm",)
# What a core install must not have (the list); the blocked set below holds more.
HEAVY_MODULES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "faiss",
    "sentence_transformers",
    "plotly",
    "sklearn",
    "accelerate",
    "gguf",
    "ray",
)


# ---- pyproject.toml: what each install holds ------------------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _project() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _declared(extra: str | None) -> set[str]:
    """Distributions pyproject.toml lists for the core install (None) or an extra."""
    project = _project()
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {_canonical(Requirement(spec).name) for spec in specs}


def _closure(names: set[str]) -> set[str]:
    """The distributions `names` install, following the installed packages' own requirements
    (without their extras; a requirement not installed here is kept but not followed)."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in requires:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_canonical(requirement.name))
    return found


@cache
def _modules_of() -> dict[str, set[str]]:
    """Installed distribution -> the top-level modules it provides."""
    found: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            found.setdefault(_canonical(dist), set()).add(module)
    return found


def _distribution_of(module: str) -> set[str]:
    return {dist for dist, modules in _modules_of().items() if module in modules}


@cache
def _blocked() -> tuple[list[str], list[str]]:
    """(modules, distributions) that only the extras install: absent from a core install."""
    core = _closure(_declared(None))
    extras = _closure(set().union(*(_declared(extra) for extra in OPTIONAL)))
    dists = sorted(extras - core)
    modules = sorted({module for dist in dists for module in _modules_of().get(dist, ())})
    return modules, dists


def test_heavy_packages_are_extras_not_core():
    core = _declared(None)
    core_closure = _closure(core)
    for module in HEAVY_MODULES:
        dists = _distribution_of(module)
        assert dists, f"{module} is not installed here: install the test environment with .[all,test]"
        assert not dists & core_closure, f"{module} ({dists}) is in the core install"
        assert any(dists & _declared(extra) for extra in OPTIONAL), f"{module} ({dists}) is in no extra"
    # datasets is core; it must not bring torch (or anything heavy) with it.
    assert "datasets" in core and "torch" not in _closure({"datasets"})
    assert set(_blocked()[0]) >= set(HEAVY_MODULES)


def test_all_is_every_optional_extra():
    assert _declared("all") == set().union(*(_declared(extra) for extra in OPTIONAL))
    assert set(OPTIONAL) | set(SEPARATE) == set(EXTRAS), "synthkd.extras.EXTRAS and pyproject.toml differ"
    assert "vllm" not in _declared("all")


def _brings(extra: str, module: str) -> bool:
    """Whether the extra installs the module: by the installed packages' metadata, or, for a
    module not installed here (a separate extra's), by the extra naming its distribution."""
    dists = _distribution_of(module)
    if dists:
        return bool(dists & _closure(_declared(extra)))
    return _canonical(module) in _declared(extra)


def test_each_extra_installs_the_modules_synthkd_says_it_does():
    """`synthkd.extras.EXTRAS` decides which missing module means which extra (and so which pip
    command the error shows); each of those modules must come with that extra."""
    for extra, modules in EXTRAS.items():
        for module in modules:
            assert _brings(extra, module), f"{module} does not come with the {extra!r} extra"


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level third-party module -> the synthkd files importing it (anywhere in the file)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "sandbox_child" in path.parts:  # runs isolated, imports the answer under test only
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "synthkd" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(str(path.relative_to(REPO)))
    # Found by name, not imported: the extras' modules that synthkd only looks for or imports
    # through synthkd.extras.require.
    for modules in EXTRAS.values():
        for module in modules:
            found.setdefault(module, []).append("synthkd/extras.py")
    return found


def test_every_module_synthkd_imports_comes_with_core_or_an_extra():
    """A new lazy import of a package no install declares fails here, not on a user's machine;
    one that only an extra brings must be blocked in the simulated core install below."""
    core = _closure(_declared(None))
    extras = {extra: _closure(_declared(extra)) for extra in (*OPTIONAL, "test")}
    blocked = set(_blocked()[0])
    undeclared = []
    for module, files in _third_party_imports().items():
        dists = _distribution_of(module)
        if not dists and any(_brings(extra, module) for extra in SEPARATE):
            continue  # a separate extra's, not installed here (nor in a core install)
        if dists & core:
            assert module not in blocked
            continue
        if not any(dists & installed for installed in extras.values()):
            undeclared.append(f"{module} ({', '.join(sorted(set(files)))})")
        elif module != "uvloop":  # the test extra's; the fake server does without it
            assert module in blocked, module
    assert not undeclared, f"imported but in no install of pyproject.toml: {undeclared}"


# ---- synthkd.extras in process -----------------------------------------------------------------------


def test_a_missing_extra_is_one_line_naming_the_key_and_the_command():
    where = "r.yaml:7: steps.2.method"
    with pytest.raises(MissingExtraError) as caught:
        require("synthkd_absent_module", "curate", "semantic dedup", where)
    assert str(caught.value) == (
        "r.yaml:7: steps.2.method: semantic dedup needs the 'curate' extra "
        "(synthkd_absent_module is not installed): pip install 'synthkd[curate]'"
    )
    assert caught.value.exit_code == 2 and caught.value.extra == "curate"
    with pytest.raises(
        MissingExtraError, match=r"^r\.yaml:7: steps\.2\.method: x needs .*synthkd_absent_module"
    ):
        check_installed(("json", "synthkd_absent_module"), "curate", "x", where)
    check_installed(("json", "numpy"), "curate", "x", where)  # all there: nothing raised


def test_needs_extra_finds_the_missing_module_behind_a_library_error():
    """transformers re-raises a missing torch as its own ModuleNotFoundError without a name."""

    def lazy_import():
        try:
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError("Could not import module 'read_gguf_metadata'") from exc

    expected = "needs the 'local' extra \\(torch is not installed\\)"
    with pytest.raises(MissingExtraError, match=expected), needs_extra("local", "counting tokens"):
        lazy_import()
    # A module that is not the extra's is a real error, not a missing extra: it passes through.
    with pytest.raises(ModuleNotFoundError) as caught, needs_extra("report", "the HTML report"):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    assert not isinstance(caught.value, MissingExtraError)


# ---- the simulated core install ---------------------------------------------------------------------

BOOTSTRAP = '''\
"""The core install, simulated: the modules only synthkd's extras bring cannot be found."""
import importlib.abc
import importlib.metadata
import importlib.util
import sys

BLOCKED_MODULES = frozenset({modules!r})
BLOCKED_DISTS = frozenset({dists!r})


def _blocked(name):
    return name.partition(".")[0] in BLOCKED_MODULES


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
_find_spec = importlib.util.find_spec


def find_spec(name, package=None):
    return None if _blocked(name) else _find_spec(name, package)


importlib.util.find_spec = find_spec
_distribution = importlib.metadata.distribution


def distribution(name):
    if name.replace("_", "-").lower() in BLOCKED_DISTS:
        raise importlib.metadata.PackageNotFoundError(name)
    return _distribution(name)


importlib.metadata.distribution = distribution
importlib.metadata.version = lambda name: distribution(name).version
'''


@pytest.fixture
def core_env(tmp_path: Path) -> dict[str, str]:
    boot = tmp_path / "core-boot"
    boot.mkdir()
    modules, dists = _blocked()
    (boot / "sitecustomize.py").write_text(BOOTSTRAP.format(modules=modules, dists=dists), encoding="utf-8")
    path = os.pathsep.join(p for p in (str(boot), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_COLOR": "1"}


def core_synthkd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`synthkd ARGS` in the simulated core install, in the test's folder."""
    done = subprocess.run(
        [sys.executable, "-m", "synthkd.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    return done


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The error a refused command printed: one line, nothing else."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


SEEDS = [{"instruction": "Say hi."}, {"instruction": "Name a colour."}, {"instruction": "Count to 3."}]


def write_recipe(server: FakeOpenAIServer, steps: list[dict], **sections) -> Path:
    """r.yaml: load the seeds, then `steps`, with the fake server as the (API) teacher."""
    Path("seeds.jsonl").write_text("".join(json.dumps(row) + "\n" for row in SEEDS), encoding="utf-8")
    recipe = {
        "name": "core",
        "teacher": {
            "backend": "openai",
            "model": "gpt-4o-mini",
            "base_url": server.base_url,
            "api_key_env": None,
        },
        "steps": [{"step": "load", "path": "seeds.jsonl"}, *steps],
        **sections,
    }
    Path("r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return Path("r.yaml")


def test_the_simulation_hides_the_extras(core_env):
    probe = (
        "import importlib.util, importlib.metadata\n"
        "assert importlib.util.find_spec('torch') is None and importlib.util.find_spec('plotly') is None\n"
        "try:\n    import sklearn\nexcept ModuleNotFoundError as e:\n    print('blocked', e.name)\n"
        "try:\n    importlib.metadata.version('torch')\n"
        "except importlib.metadata.PackageNotFoundError:\n    print('no torch')\n"
        "import datasets, litellm, openai, synthkd.cli\n"
        "print(importlib.util.find_spec('datasets') is not None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=core_env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["blocked", "sklearn", "no", "torch", "True"], done.stderr[-2000:]


def test_core_install_runs_a_label_recipe_with_the_basic_report(core_env, server):
    server.reset()
    recipe = write_recipe(server, [{"step": "label"}, {"step": "filter", "min_chars": 1}])
    done = core_synthkd(core_env, "run", str(recipe))
    assert done.returncode == 0, done.stderr[-3000:]
    out = Path("runs/core")
    assert len((out / "data.jsonl").read_text().splitlines()) == len(SEEDS)
    assert (out / "dataset").is_dir() and (out / "README.md").is_file()
    assert server.stats()["requests"] == len(SEEDS)
    assert "skipped" not in done.stderr and "warning" not in done.stderr
    # The basic report is drawn in Python: no plotly, no script.
    page = (out / "report.html").read_text()
    assert "<svg" in page and "<script" not in page

    # The instruction map needs the extra: one line, exit 2, and the report there is left alone.
    mapped = core_synthkd(core_env, "report", str(out), "--map")
    assert mapped.returncode == 2
    line = error_line(mapped)
    assert "the report's instruction map" in line and line.endswith("pip install 'synthkd[report]'")
    assert (out / "report.html").read_text() == page

    # A recipe asking for the map gets the basic report and one line saying how to get the map.
    full = core_synthkd(core_env, "run", str(recipe), "--set", "output.report=full")
    assert full.returncode == 0, full.stderr[-3000:]
    (warned,) = [line for line in full.stderr.splitlines() if "instruction map" in line]
    assert "written without its instruction map" in warned and "pip install 'synthkd[report]'" in warned
    assert "<svg" in (out / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("step", "key"),
    [
        ({"step": "dedup", "method": "embedding"}, "steps.2.method"),
        ({"step": "dedup", "method": "minhash"}, "steps.2.method"),
        (
            {
                "step": "decontaminate",
                "eval_sets": [{"path": "seeds.jsonl", "columns": ["instruction"]}],
                "embedding_threshold": 0.9,
            },
            "steps.2.embedding_threshold",
        ),
        ({"step": "quality", "languages": ["en"]}, "steps.2.languages"),
    ],
    ids=["dedup-embedding", "dedup-minhash", "decontaminate-embedding", "quality-languages"],
)
def test_a_curation_step_needs_the_curate_extra_before_any_request(core_env, server, step, key):
    server.reset()
    recipe = write_recipe(server, [{"step": "label"}, step])
    done = core_synthkd(core_env, "run", str(recipe))
    assert done.returncode == 2
    line = error_line(done)
    assert "r.yaml:" in line and f"{key}:" in line
    assert "needs the 'curate' extra" in line and line.endswith("pip install 'synthkd[curate]'")
    assert server.stats()["requests"] == 0
    assert not Path("runs/core").exists()


def test_semantic_dedup_names_its_line(core_env, server):
    """The message points at the recipe's line, as every recipe error does."""
    server.reset()
    recipe = write_recipe(server, [{"step": "label"}, {"step": "dedup", "method": "embedding"}])
    done = core_synthkd(core_env, "run", str(recipe))
    line_number = next(
        number
        for number, text in enumerate(recipe.read_text().splitlines(), start=1)
        if "method: embedding" in text
    )
    assert error_line(done).startswith(f"error: {recipe.resolve()}:{line_number}: steps.2.method: semantic")
    assert server.stats()["requests"] == 0


@pytest.mark.parametrize(
    "teacher",
    [{"backend": "transformers", "model": "embedded"}, None],
    ids=["transformers-backend", "default-teacher"],
)
def test_a_local_teacher_needs_the_local_extra(core_env, server, teacher):
    """The transformers backend, and the embedded teacher a recipe without `teacher:` gets."""
    write_recipe(server, [{"step": "label"}])
    data = yaml.safe_load(Path("r.yaml").read_text())
    if teacher is None:
        del data["teacher"]
    else:
        data["teacher"] = teacher
    Path("r.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    done = core_synthkd(core_env, "run", "r.yaml")
    assert done.returncode == 2
    line = error_line(done)
    assert "teacher.backend:" in line and "embedded teacher" in line
    assert "needs the 'local' extra" in line and line.endswith("pip install 'synthkd[local]'")
    assert not Path("runs/core").exists()
    # `validate` says the same, as an error (a step's missing extra is one too), not a warning.
    checked = core_synthkd(core_env, "validate", "r.yaml")
    assert checked.returncode == 2 and error_line(checked) == line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("step", "key"),
    [
        ({"step": "doc_qa", "documents": "docs.txt"}, "steps.1.tokenizer"),
        ({"step": "logits", "tokenizer": "embedded", "top_k": 5}, "steps.1.tokenizer"),
    ],
    ids=["doc_qa-tokenizer", "logits-api-tokenizer"],
)
def test_a_tokenizer_needs_the_local_extra(core_env, server, step, key):
    server.reset()
    Path("docs.txt").write_text("Water boils at 100 degrees Celsius at sea level.\n")
    steps = [step] if step["step"] == "doc_qa" else [{"step": "label"}, step]
    if step["step"] == "logits":
        key = "steps.2.tokenizer"
    recipe = write_recipe(server, steps)
    done = core_synthkd(core_env, "run", str(recipe))
    assert done.returncode == 2
    line = error_line(done)
    assert f"{key}:" in line and line.endswith("pip install 'synthkd[local]'")
    assert server.stats()["requests"] == 0


def test_a_train_section_needs_the_train_extra_unless_no_train(core_env, server):
    server.reset()
    train = {"method": "sft", "student": "embedded", "args": {"max_steps": 1}}
    recipe = write_recipe(server, [{"step": "label"}], train=train)
    done = core_synthkd(core_env, "run", str(recipe))
    assert done.returncode == 2
    line = error_line(done)
    assert "r.yaml:" in line and " train: training a student" in line
    assert "needs the 'train' extra" in line and line.endswith("pip install 'synthkd[train]'")
    assert server.stats()["requests"] == 0 and not Path("runs/core").exists()

    # `synthkd train` says the same; `run --no-train` makes the dataset without it.
    assert error_line(core_synthkd(core_env, "train", str(recipe))) == line
    done = core_synthkd(core_env, "run", str(recipe), "--no-train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.stats()["requests"] == len(SEEDS)
    assert (Path("runs/core") / "data.jsonl").is_file() and not Path("runs/core/student").exists()


def test_a_steps_own_local_teacher_is_refused_before_the_api_steps_send(core_env, server):
    """logits from a local teacher (its own `teacher:`) after an API label step: preflight names
    the step's key before the label step sends anything."""
    server.reset()
    local = {"backend": "transformers", "model": "embedded"}
    recipe = write_recipe(server, [{"step": "label"}, {"step": "logits", "teacher": local}])
    done = core_synthkd(core_env, "run", str(recipe))
    assert done.returncode == 2
    line = error_line(done)
    assert "steps.2.teacher.backend:" in line and line.endswith("pip install 'synthkd[local]'")
    assert server.stats()["requests"] == 0
