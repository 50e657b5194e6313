"""A non-editable wheel ships the prompts and recipes, and finds them from any working directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_prompts_and_recipes_and_finds_them(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("synthkd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "prompts/label.jinja",
        "recipes/quickstart.yaml",
        "recipes/quickstart/seed_tasks.jsonl",
        "recipes/medical/qa.yaml",
    ):
        assert f"synthkd/_shipped/{shipped}" in names
    assert "synthkd/cli.py" in names and not any(name.startswith("tests/") for name in names)
    # The sandbox's child code is data to the parent (bound read-only into each sandbox), not an import.
    child = {"boot.py", "hook.py", "judge.py", "rpc.py"}
    assert {f"synthkd/sandbox_child/{name}" for name in child} <= names

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import synthkd.shipped as s, synthkd.recipe as r; "
        "print(s.shipped_root()); "
        "loaded = r.load_recipe('recipes/quickstart.yaml'); print(loaded.path); "
        "from synthkd.pipeline import check; check(loaded); print('checked'); "
        "from synthkd.sandbox import Limits, check_solution; "
        "print(check_solution('def f():\\n    return 1\\n', 'assert f() == 1\\n', Limits()).status)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    root, recipe, checked, sandboxed = out.stdout.split()
    assert root == str(installed / "synthkd" / "_shipped")
    assert recipe == str(installed / "synthkd" / "_shipped" / "recipes" / "quickstart.yaml")
    assert checked == "checked"
    assert sandboxed == "ok"  # the sandbox finds its child code in the installed wheel


def test_python_m_synthkd_is_the_command(tmp_path: Path):
    # For an environment whose scripts folder is not on PATH; from another folder, like a user's.
    done = subprocess.run(
        [sys.executable, "-m", "synthkd", "validate", "quikstart"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "did you mean quickstart?" in done.stderr, done.stderr
