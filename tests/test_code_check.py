"""code_check: answers' code run against tests in a sandboxed subprocess; failures dropped by reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.sandbox import Limits, check_solution
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
        ("import os\nfd = os.open('/tmp', 0)\nos.open('x', os.O_CREAT | os.O_WRONLY, dir_fd=fd)\n", "",
         "sandbox_violation", "directory handle"),
        ("x = bytearray(1024 ** 3)\n", "assert 1", "memory", "256 MB"),
        ("while True:\n    print('spam' * 1000)\n", "assert 1", "output_limit", "MB"),
        ("open('scratch.txt', 'w').write('ok')\nimport tempfile\ntempfile.TemporaryFile().write(b'x')\n",
         "assert open('scratch.txt').read() == 'ok'", "ok", ""),
    ],
)  # fmt: skip
def test_sandbox_outcomes(code: str, tests: str, status: str, detail: str):
    result = check_solution(
        code, tests, Limits(cpu_seconds=5, wall_seconds=10, memory_mb=256, file_size_mb=1)
    )
    assert (result.status, detail in result.detail) == (status, True), result


def test_a_caught_refusal_still_stops_the_run(tmp_path: Path):
    target = tmp_path / "outside.txt"
    code = f"try:\n    open({str(target)!r}, 'w').write('x')\nexcept BaseException:\n    pass\n" + ADD
    result = check_solution(code, ADD_TESTS, FAST)
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
