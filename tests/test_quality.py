"""Quality heuristics: each drop reason on a hand-made row."""

from __future__ import annotations

import asyncio
from pathlib import Path

from synthkd.curate.heuristics import language_of, repeated_ngram_ratio
from synthkd.steps.base import CheckContext, StepContext
from synthkd.steps.quality import QualityStep

GOOD = (
    "Bread rises because yeast ferments sugars and releases carbon dioxide, which the gluten network traps."
)
ROWS = [
    {"id": "good", "response": GOOD, "finish_reason": "stop"},
    {"id": "empty", "response": "   ", "finish_reason": "stop"},
    {"id": "cut", "response": GOOD, "finish_reason": "length"},
    {"id": "tiny", "response": "Yes.", "finish_reason": "stop"},
    {"id": "long", "response": GOOD * 5, "finish_reason": "stop"},
    {"id": "refuse", "response": "As an AI language model, I cannot bake bread.", "finish_reason": "stop"},
    {
        "id": "loop",
        "response": "the dough the dough the dough the dough the dough the dough",
        "finish_reason": "stop",
    },
    {
        "id": "french",
        "response": "Le pain lève parce que la levure fermente les sucres du pain.",
        "finish_reason": "stop",
    },
]


def test_signals():
    assert repeated_ngram_ratio(GOOD) == 0.0
    assert repeated_ngram_ratio("a b c a b c a b c") == 4 / 7
    assert language_of(GOOD) == "en" and language_of(ROWS[-1]["response"]) == "fr"


def test_each_reason_is_counted():
    step = QualityStep(step="quality", min_tokens=3, max_tokens=60, languages=["en"])
    step.check({"id", "response", "finish_reason"}, CheckContext(Path("."), lambda key: key))
    result = asyncio.run(step.run(ROWS, StepContext(Path("."), 0, None)))
    assert [row["id"] for row in result.rows] == ["good"]
    assert dict(result.dropped) == {
        "empty": 1,
        "truncated": 1,
        "too_few_tokens": 1,
        "too_many_tokens": 1,
        "refusal": 1,
        "repetitive": 1,
        "wrong_language": 1,
    }
