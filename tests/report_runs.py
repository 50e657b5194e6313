"""Small finished runs of three formats, for the report's tests: SFT, DPO pairs and tool calls.

Each is made by `synthkd run` against the fake OpenAI server, so its rows have exactly the columns
the steps write (and its report.html is the one a run writes). They are tiny: a few rows, a second
or two each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import write_jsonl, write_recipe

from synthkd.cli import main
from synthkd.testing.fake_openai import FakeOpenAIServer

JUDGE = "(?s)impartial judge.*"

# ---- SFT: instructions with an input (the email a title is asked for), one answer cut short -------

EMAIL = (
    "Hi team, the quarterly review moves from Thursday to Friday at 10:00 because the board meeting "
    "ran over. Please bring the updated sales figures and the hiring plan. Thanks, Dana"
)
SFT_SEEDS = [
    {"id": "email", "instruction": "Suggest a title for the following email:", "input": EMAIL},
    {"id": "tides", "instruction": "Explain why the sea has two high tides a day.", "input": ""},
    {"id": "bread", "instruction": "Describe how yeast makes bread dough rise.", "input": ""},
    {"id": "poem", "instruction": "Write a long poem about the sea.", "input": ""},
    {
        "id": "sum",
        "instruction": "Summarise the paragraph in one sentence.",
        "input": "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    },
]
SFT_SCRIPT = [
    {"match": JUDGE + "poem", "reply": '{"score": 4, "justification": "cut off"}'},
    {"match": JUDGE + "email", "reply": '{"score": 9, "justification": "apt"}'},
    {"match": JUDGE, "reply": '{"score": 7, "justification": "fine"}'},
    {"match": "quarterly review", "reply": "Quarterly review moved to Friday 10:00"},
    # An answer that hit max_tokens: the server says so with finish_reason "length".
    {
        "match": "long poem",
        "reply": "The sea, the sea, the grey and restless sea,",
        "finish_reason": "length",
    },
]


def sft_recipe(base_url: str) -> dict:
    return {
        "name": "report-sft",
        "seed": 3,
        "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
        "steps": [
            {"step": "load", "path": "seeds.jsonl"},
            {"step": "label", "system": "You are a concise assistant."},
            {"step": "judge", "min_score": 1},
        ],
        "output": {"format": "messages"},
    }


# ---- DPO: the teacher's answer against a student's, judged -----------------------------------------

DPO_ROWS = [
    {"id": "tides", "instruction": "Explain tides.", "student": "Weak student: the moon, maybe."},
    {"id": "rain", "instruction": "Explain rain.", "student": "Weak student: clouds get heavy."},
    {"id": "wind", "instruction": "Explain wind.", "student": "Strong student: air flows from high to low."},
]
DPO_SCRIPT = [
    {"match": JUDGE + "Response:\nAnswer:", "reply": '{"score": 8, "justification": "teacher"}'},
    {"match": JUDGE + "Weak student", "reply": '{"score": 3, "justification": "vague"}'},
    {"match": JUDGE + "Strong student", "reply": '{"score": 10, "justification": "best"}'},
]


def dpo_recipe(base_url: str) -> dict:
    return {
        "name": "report-dpo",
        "seed": 3,
        "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
        "steps": [
            {"step": "load", "path": "seeds.jsonl"},
            {"step": "preference", "n": 1, "candidate_columns": ["student"], "min_margin": 1},
        ],
        "output": {"format": "messages"},
    }


# ---- tool calls: a request, the call made with its arguments, the result, the answer -------------

# The shipped recipe's tools (weather, currency, calendar), so the report shows real schemas.
TOOLS_FILE = Path(__file__).resolve().parents[1] / "recipes" / "tool_use" / "tools.json"
TOOL_REQUESTS = [
    {"id": "weather", "request": "What's the weather in Oslo right now, in celsius?"},
    {"id": "money", "request": "How much is 250 euros in Norwegian kroner?"},
]
TOOL_SCRIPT = [
    {
        "match": "(?s)User request:\nWhat's the weather.*Decide which tool calls",
        "reply": '[{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]',
    },
    {
        "match": "(?s)User request:\nHow much is 250.*Decide which tool calls",
        "reply": '[{"name": "convert_currency", "arguments": '
        '{"amount": 250, "from_currency": "EUR", "to_currency": "NOK"}}]',
    },
    {"match": "(?s)weather in Oslo.*The assistant made these calls", "reply": '[{"temperature": 4}]'},
    {"match": "(?s)250 euros.*The assistant made these calls", "reply": '[{"converted": 2912.5}]'},
    {"match": "(?s)weather in Oslo.*To answer, you called tools", "reply": "It is 4 °C in Oslo."},
    {"match": "(?s)250 euros.*To answer, you called tools", "reply": "250 EUR is about 2,912 NOK."},
]


def tool_recipe(base_url: str) -> dict:
    return {
        "name": "report-tools",
        "seed": 3,
        "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
        "steps": [
            {"step": "load", "path": "seeds.jsonl"},
            {"step": "tool_calls", "tools": "tools.json", "request_column": "request"},
        ],
        "output": {"format": "messages"},
    }


KINDS = {
    "sft": (SFT_SEEDS, SFT_SCRIPT, sft_recipe),
    "dpo": (DPO_ROWS, DPO_SCRIPT, dpo_recipe),
    "tools": (TOOL_REQUESTS, TOOL_SCRIPT, tool_recipe),
}


def make_format_run(base: Path, kind: str) -> Path:
    """Run the `kind` recipe (sft, dpo or tools) through `synthkd run`; return its run folder."""
    seeds, script, recipe = KINDS[kind]
    base.mkdir(parents=True, exist_ok=True)
    write_jsonl(base / "seeds.jsonl", seeds)
    shutil.copyfile(TOOLS_FILE, base / "tools.json")
    with pytest.MonkeyPatch.context() as patch, FakeOpenAIServer(script=script) as server:
        patch.setenv("SYNTHKD_CACHE_DIR", str(base / "cache"))
        path = write_recipe(base / "recipe.yaml", recipe(server.base_url))
        code = main(["run", str(path), "--output", str(base / "run")])
    assert code == 0
    return base / "run"
