"""No configured secret value reaches the terminal or a file, wherever it came from: a server's
error body that quotes the key (401, 400, 500), or a teacher's answer that echoes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli, write_jsonl, write_recipe

from synthkd.testing.fake_openai import FakeOpenAIServer

# Named so that only the recipe's api_key_env makes it a secret, not a credential-like name.
VARIABLE = "SYNTHKD_TEST_VALUE_FOR_TEACHER"
SECRET = "sk-canary-quoted-0123456789abcdef"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(VARIABLE, SECRET)


def recipe(tmp_path: Path, base_url: str, rows: int) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Explain item {i}."} for i in range(rows)])
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "secrets",
            "teacher": {
                "backend": "openai",
                "model": "fake-model",
                "base_url": base_url,
                "api_key_env": VARIABLE,
                "concurrency": 2,
                "max_attempts": 2,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out"), "max_failure_ratio": 1.0},
        },
    )


def files_holding_the_secret(*folders: Path) -> list[str]:
    needle = SECRET.encode()
    return [
        str(path)
        for folder in folders
        if folder.exists()
        for path in folder.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]


def test_error_bodies_and_answers_that_quote_the_key_are_redacted_everywhere(tmp_path, capsys, private_cache):
    script = [
        {"match": r"item 0\.", "status": 400, "message": f"invalid request from key {SECRET}"},
        {"match": r"item 1\.", "status": 500, "message": f"upstream failed for {SECRET}"},
        {"match": r"item 2\.", "reply": f"Your key is {SECRET}, keep it safe."},
    ]
    with FakeOpenAIServer(script=script) as server:
        code, out = run_cli(["run", str(recipe(tmp_path, server.base_url, rows=4))], capsys)
    assert code == 0
    assert SECRET not in out
    assert files_holding_the_secret(tmp_path / "out", private_cache) == []
    failures = (tmp_path / "out" / "failures.jsonl").read_text()
    assert "invalid request from key <redacted>" in failures and "upstream failed for <redacted>" in failures
    assert "Your key is <redacted>, keep it safe." in (tmp_path / "out" / "data.jsonl").read_text()


def test_a_refused_key_quoted_by_the_server_is_not_printed(tmp_path, capsys, private_cache):
    script = [{"match": ".", "status": 401, "message": f"Incorrect API key provided: {SECRET}."}]
    with FakeOpenAIServer(script=script) as server:
        code, out = run_cli(["run", str(recipe(tmp_path, server.base_url, rows=3))], capsys)
    assert code == 1
    assert "Incorrect API key provided: <redacted>" in out and SECRET not in out
    assert files_holding_the_secret(tmp_path, private_cache) == []
