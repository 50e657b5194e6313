"""A small finished run for the publishing tests (card, push, report, show), made once per module.

The teacher is the local fake OpenAI server, with an API key variable whose value is a canary. A
base_url with a user:password part cannot be sent to (aiohttp refuses URL credentials beside the
Authorization header the SDKs always set), so `plant_url_credentials` puts one into the manifest's
recipe afterwards: the publishing code must strip it even where the pipeline's redaction did not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_jsonl, write_recipe

from synthkd.cli import main
from synthkd.testing.fake_openai import FakeOpenAIServer

CANARY_KEY = "sk-canary-7f3e9b21c4d84a6f9e0b5c2d"  # the value of the API key variable
CANARY_PASSWORD = "canarypw-4b1d8e6a0f"  # the password in the teacher's base_url
CANARY_HF_TOKEN = "hf_canarytoken9c2e5a7d1b3f"  # the Hub token
KEY_VARIABLE = "SYNTHKD_TEST_CANARY_KEY"

SEEDS = [
    {"id": "tides", "instruction": "Explain why the sea has two high tides a day."},
    {"id": "tides-copy", "instruction": "explain why the sea has two high tides a day"},
    {"id": "bread", "instruction": "Describe how yeast makes bread dough rise."},
    {"id": "budget", "instruction": "How do I start a monthly household budget?"},
    {"id": "sleep", "instruction": "Give three tips for falling asleep faster."},
    {"id": "sql", "instruction": "Write a SQL query that counts rows in a table."},
    {"id": "python", "instruction": "Write a Python function that reverses a list."},
    {"id": "photo", "instruction": "What does photosynthesis produce in plants?"},
    {"id": "rome", "instruction": "Summarise the fall of the Roman Empire in two sentences."},
    {"id": "bad", "instruction": "Say something unhelpful about gardening."},
    {
        "id": "leaked",
        "instruction": "A train leaves the station at 3 pm travelling at 60 km per hour; when is it there?",
    },
]
EVAL = [{"question": "A train leaves the station at 3 pm travelling at 60 km per hour towards the city."}]
JUDGE = "(?s)impartial judge.*"
SCRIPT = [
    {"match": JUDGE + "unhelpful", "reply": '{"score": 2, "justification": "unhelpful"}'},
    {"match": JUDGE + "(SQL|Python)", "reply": '{"score": 9, "justification": "correct code"}'},
    {"match": JUDGE, "reply": '{"score": 7, "justification": "fine"}'},
]


def recipe(base_url: str, output: dict | None = None) -> dict:
    return {
        "name": "publish-test",
        "seed": 7,
        "teacher": {
            "backend": "openai",
            "model": "gpt-4o-mini",
            "base_url": base_url,
            "api_key_env": KEY_VARIABLE,
            "params": {"temperature": 0.7, "max_tokens": 64},
        },
        "steps": [
            {"step": "load", "path": "seeds.jsonl"},
            {"step": "label", "system": "You are a helpful assistant."},
            {"step": "dedup", "method": "exact"},
            {
                "step": "decontaminate",
                "columns": ["instruction"],
                "eval_sets": [{"path": "eval.jsonl", "columns": ["question"], "name": "toy-eval"}],
            },
            {"step": "judge", "min_score": 5, "teacher": {"params": {"temperature": 0}}},
        ],
        "output": {"format": "messages", "license": "apache-2.0", **(output or {})},
    }


_shared: Path | None = None


def make_run(base: Path, output: dict | None = None, env: dict[str, str] | None = None) -> Path:
    """Run the recipe through `synthkd run` (so the card and report are written as after any run).

    The default run is made once per test session and shared: tests that change it work on a copy.
    """
    global _shared
    if output is None and env is None:
        if _shared is None or not (_shared / "manifest.json").exists():
            _shared = make_run(base, output={}, env={})
        return _shared
    base.mkdir(parents=True, exist_ok=True)
    write_jsonl(base / "seeds.jsonl", SEEDS)
    write_jsonl(base / "eval.jsonl", EVAL)
    with pytest.MonkeyPatch.context() as patch, FakeOpenAIServer(script=SCRIPT) as server:
        patch.setenv(KEY_VARIABLE, CANARY_KEY)
        patch.setenv("SYNTHKD_CACHE_DIR", str(base / "cache"))
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        path = write_recipe(base / "recipe.yaml", recipe(server.base_url, output))
        code = main(["run", str(path), "--output", str(base / "run")])
    assert code == 0
    return base / "run"


def plant_url_credentials(run_dir: Path) -> None:
    """Put the canary password (and a key in a query string) into every teacher base_url of the
    manifest's recipe, as if the pipeline had not redacted them."""
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    teachers = [manifest["recipe"]["teacher"]] + [
        s["teacher"] for s in manifest["recipe"]["steps"] if "teacher" in s
    ]
    for teacher in teachers:
        scheme, rest = teacher["base_url"].split("://", 1)
        teacher["base_url"] = f"{scheme}://tester:{CANARY_PASSWORD}@{rest}?api_key={CANARY_PASSWORD}"
    manifest["teachers"][0]["base_url"] = teachers[0]["base_url"]
    path.write_text(json.dumps(manifest))
