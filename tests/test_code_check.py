"""code_check: answers' code run against tests in a sandboxed subprocess; failures dropped by reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import read_jsonl, run_cli, write_jsonl, write_recipe

from synthkd import sandbox
from synthkd.errors import RecipeError
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.sandbox import Limits, bwrap_problem, check_solution, choose_isolation
from synthkd.steps.code_check import extract_code, parse_tests
from synthkd.steps.parsing import ParseError
from synthkd.testing.fake_openai import FakeOpenAIServer

FAST = Limits(cpu_seconds=1, wall_seconds=3, memory_mb=256)
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def answer(code: str, prose: str = "Here is a solution.") -> str:
    """An answer shaped like a chat model's: prose, the code block, an example and its output."""
    return f"{prose}\n\n```python\n{code}```\n\nFor example:\n\n```\n>>> add(1, 2)\n3\n```\n"


def test_extract_code():
    text = "Intro\n```py\nx = 1\n```\nthen\n```bash\npip install y\n```\n```python\ny = 2\n```"
    assert extract_code(text) == "x = 1\n\ny = 2\n"
    assert extract_code("```\nz = 3\n```") == "z = 3\n"  # untagged blocks when none is tagged
    assert extract_code("no code at all") is None
    assert extract_code("```python\n```") is None


def test_parse_tests():
    assert parse_tests("Tests:\n```python\nassert f(1) == 2\n```") == "assert f(1) == 2\n"
    assert parse_tests("UNTESTABLE") is None
    with pytest.raises(ParseError, match="no ```python code block"):
        parse_tests("assert f(1) == 2")
    with pytest.raises(ParseError, match="no assert"):
        parse_tests("```python\nprint(f(1))\n```")
    with pytest.raises(ParseError, match="not valid Python"):
        parse_tests("```python\nassert f(1 == 2\n```")


@pytest.mark.parametrize(
    ("code", "tests", "status", "detail"),
    [
        (ADD, ADD_TESTS, "ok", ""),
        ("def add(a, b):\n    return a - b\n", ADD_TESTS, "failed", "AssertionError"),
        (ADD, "def test_add():\n    assert add(1, 1) == 3\n", "failed", "AssertionError"),
        (
            ADD,
            "import unittest\nclass T(unittest.TestCase):\n    def test_a(self):\n"
            "        self.assertEqual(add(1, 1), 3)\n",
            "failed",
            "FAILED",
        ),
        ("import sys\nsys.exit(0)\n" + ADD, ADD_TESTS, "failed", "exit(0)"),
        ("import subprocess\nsubprocess.run(['true'])\n" + ADD, ADD_TESTS, "sandbox_violation", "Popen"),
        ("import os\nos.system('true')\n" + ADD, ADD_TESTS, "sandbox_violation", "os.system"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", "", "sandbox_violation", "network"),
        ("import os\nopen(f'/proc/{os.getppid()}/environ').read()\n", "", "sandbox_violation", "private"),
        ("import sqlite3\nsqlite3.connect('/tmp/synthkd-escape.db')\n", "", "sandbox_violation", "sqlite3"),
        ("import os\nfd = os.open('/usr', 0)\nos.open('x', os.O_CREAT | os.O_WRONLY, dir_fd=fd)\n", "",
         "sandbox_violation", "directory handle"),
        ("x = bytearray(1024 ** 3)\n", "assert 1", "memory", "256 MB"),
        ("while True:\n    print('spam' * 1000)\n", "assert 1", "output_limit", "MB"),
        ("open('scratch.txt', 'w').write('ok')\nimport tempfile\ntempfile.TemporaryFile().write(b'x')\n",
         "assert open('scratch.txt').read() == 'ok'", "ok", ""),
    ],
)  # fmt: skip
def test_sandbox_outcomes(code: str, tests: str, status: str, detail: str):
    result = check_solution(
        code, tests, Limits(cpu_seconds=5, wall_seconds=10, memory_mb=256, file_size_mb=1), isolation="bwrap"
    )
    assert (result.status, detail in result.detail) == (status, True), result
    assert result.isolation == "bwrap"


def test_a_caught_refusal_still_stops_the_run(tmp_path: Path):
    target = tmp_path / "outside.txt"
    code = f"try:\n    open({str(target)!r}, 'w').write('x')\nexcept BaseException:\n    pass\n" + ADD
    result = check_solution(code, ADD_TESTS, FAST, isolation="bwrap")
    assert result.status == "sandbox_violation" and not target.exists()


SCRIPT = [
    # Tests shaped like a chat model's reply: prose around one python block.
    {
        "match": "(?s)Task:\nWrite add",
        "reply": "These tests check addition:\n\n```python\n" + ADD_TESTS + "```",
    },
    {"match": "(?s)Task:\nWrite a function that loops", "reply": "```python\nassert add(1, 1) == 2\n```"},
    {"match": "(?s)Task:\nWrite a function that naps", "reply": "```python\nassert add(1, 1) == 2\n```"},
    {"match": "(?s)Task:\nWrite a logger", "reply": "```python\nassert add(2, 2) == 4\n```"},
    {"match": "(?s)Task:\nPrint a greeting", "reply": "UNTESTABLE"},
    {"match": "(?s)Task:\nWrite mul", "reply": "assert mul(2, 3) == 6"},  # no code block: re-asked
    {"match": "Your answer could not be used", "reply": "```python\nassert mul(2, 3) == 6\n```"},
]


def test_planted_answers_end_to_end(tmp_path: Path):
    escaped = tmp_path / "escaped.txt"
    writer = f"def add(a, b):\n    open({str(escaped)!r}, 'a').write('hi')\n    return a + b\n"
    planted = {
        "right": ("Write add(a, b).", answer(ADD)),
        "wrong": ("Write add(a, b) for me.", answer("def add(a, b):\n    return a * b\n")),
        "loops": ("Write a function that loops.", answer("def add(a, b):\n    while True:\n        pass\n")),
        "naps": (
            "Write a function that naps.",
            answer("import time\n\ndef add(a, b):\n    time.sleep(60)\n"),
        ),
        "writes": ("Write a logger.", answer(writer)),
        "prose": ("Write add(a, b), no code please.", "Just use the + operator."),
        "hello": ("Print a greeting.", answer("print('hello')\n")),
        "mul": ("Write mul(a, b).", answer("def mul(a, b):\n    return a * b\n")),
    }
    rows = [{"id": key, "instruction": task, "response": text} for key, (task, text) in planted.items()]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = write_recipe(
            tmp_path / "r.yaml",
            {
                "name": "code",
                "teacher": {
                    "backend": "openai",
                    "model": "m",
                    "base_url": server.base_url,
                    "api_key_env": None,
                },
                "steps": [
                    {"step": "load", "path": "rows.jsonl"},
                    {"step": "code_check", "cpu_seconds": 1, "wall_seconds": 3, "workers": 4},
                ],
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        result = run_recipe(load_recipe(path))
    kept = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(kept) == {"right", "mul"}
    assert kept["right"]["tests"] == ADD_TESTS
    assert kept["right"]["provenance"][-1]["step"] == "code_check"
    assert result.reports[1].rows_dropped == {
        "tests_failed": 1,
        "timeout": 2,
        "sandbox_violation": 1,
        "no_code": 1,
        "untestable": 1,
    }
    assert not escaped.exists()
    details = result.manifest["steps"][1]["details"]
    reasons = {example["id"]: example["reason"] for example in details["dropped_examples"]}
    assert reasons == {
        "wrong": "tests_failed",
        "loops": "timeout",
        "naps": "timeout",
        "writes": "sandbox_violation",
    }
    assert details["checked"] == 6 and details["passed"] == 2
    assert details["isolation"] == "bwrap"  # auto picks bubblewrap where it works (here, and in CI)


def test_tests_from_a_column_need_no_teacher(tmp_path: Path):
    write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"id": "ok", "response": answer(ADD), "tests": ADD_TESTS},
            {
                "id": "bad",
                "response": answer("def add(a, b):\n    return 0\n"),
                "tests": ADD_TESTS.splitlines(),
            },
        ],
    )
    path = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "code-tests",
            "steps": [
                {"step": "load", "path": "rows.jsonl"},
                {"step": "code_check", "tests_column": "tests"},
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    result = run_recipe(load_recipe(path))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["ok"]
    assert result.reports[1].rows_dropped == {"tests_failed": 1}
    assert result.manifest["teachers"] == []


# -- isolation: bubblewrap, or an explicit opt-out


def test_bubblewrap_works_on_this_machine():
    """The tests below and test_sandbox_attacks.py need it: `make bubblewrap` (apt-get install
    bubblewrap). Without it they fail, they do not skip."""
    assert bwrap_problem() is None, f"{bwrap_problem()}: install bubblewrap (make bubblewrap)"


def test_right_code_passes_and_wrong_code_fails_under_bubblewrap():
    right = check_solution(ADD, ADD_TESTS, FAST, isolation="bwrap")
    wrong = check_solution("def add(a, b):\n    return a - b\n", ADD_TESTS, FAST, isolation="bwrap")
    assert (right.status, right.isolation) == ("ok", "bwrap"), right
    assert (wrong.status, wrong.isolation, wrong.detail) == ("failed", "bwrap", "AssertionError"), wrong


@pytest.fixture
def no_bubblewrap(monkeypatch: pytest.MonkeyPatch):
    """This machine as if bubblewrap were not installed."""
    monkeypatch.setattr(sandbox, "BWRAP", "synthkd-no-such-bwrap")
    assert bwrap_problem() is not None


def _code_recipe(tmp_path: Path, step: dict, teacher: dict | None = None) -> Path:
    wrong = answer("def add(a, b):\n    return 0\n")
    rows = [
        {"id": "right", "instruction": "Write add(a, b).", "response": answer(ADD), "tests": ADD_TESTS},
        {"id": "wrong", "instruction": "Write add(a, b).", "response": wrong, "tests": ADD_TESTS},
    ]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    recipe = {
        "name": "code-isolation",
        "steps": [{"step": "load", "path": "rows.jsonl"}, {"step": "code_check", **step}],
        "output": {"dir": str(tmp_path / "out")},
    }
    if teacher:
        recipe["teacher"] = teacher
    return write_recipe(tmp_path / "r.yaml", recipe)


def test_without_bubblewrap_root_is_refused_before_any_request(
    tmp_path: Path, no_bubblewrap, capsys: pytest.CaptureFixture
):
    assert os.geteuid() == 0, "this test is about running as root (as these tests do, and CI)"
    with FakeOpenAIServer(script=SCRIPT) as server:
        teacher = {"backend": "openai", "model": "m", "base_url": server.base_url, "api_key_env": None}
        path = _code_recipe(tmp_path, {"cpu_seconds": 1}, teacher)  # tests written by the teacher
        with pytest.raises(RecipeError) as raised:
            run_recipe(load_recipe(path))
        code, out = run_cli(["run", str(path), "--no-train"], capsys)
        assert server.stats()["requests"] == 0
    message = str(raised.value)
    assert raised.value.exit_code == 2 and code == 2
    assert "steps.1.isolation" in message and "root" in message and "isolation: none" in message
    assert "bubblewrap" in message and "steps.1.isolation" in out
    assert not (tmp_path / "out").exists()


def test_isolation_none_is_the_explicit_opt_in_as_root(
    tmp_path: Path, no_bubblewrap, capsys: pytest.CaptureFixture
):
    path = _code_recipe(tmp_path, {"tests_column": "tests", "isolation": "none", "cpu_seconds": 2})
    result = run_recipe(load_recipe(path))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["right"]
    details = result.manifest["steps"][1]["details"]
    assert details["isolation"] == "none" and "without OS isolation" in details["warning"]
    assert "warning: code_check:" in capsys.readouterr().err


def test_as_non_root_without_bubblewrap_it_runs_with_a_warning(
    tmp_path: Path, no_bubblewrap, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    chosen = choose_isolation("auto")
    assert chosen.mode == "none" and "bubblewrap is not available" in (chosen.warning or "")
    path = _code_recipe(tmp_path, {"tests_column": "tests", "cpu_seconds": 2})
    result = run_recipe(load_recipe(path))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["right"]
    assert result.manifest["steps"][1]["details"]["isolation"] == "none"
    assert "bubblewrap is not available" in capsys.readouterr().err


def test_isolation_bwrap_requires_bubblewrap(tmp_path: Path, no_bubblewrap):
    path = _code_recipe(tmp_path, {"tests_column": "tests", "isolation": "bwrap"})
    with pytest.raises(RecipeError, match=r"steps\.1\.isolation.*bubblewrap cannot be used"):
        run_recipe(load_recipe(path))
