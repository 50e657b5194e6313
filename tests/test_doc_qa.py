"""Document-grounded QA: chunking, parsing, and the support check decided pair by pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl, write_recipe

from synthkd.chunking import chunk_text, token_counter
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.doc_qa import content_word_share, find_span, parse_qa_pairs
from synthkd.steps.parsing import ParseError
from synthkd.testing.fake_openai import FakeOpenAIServer

DOCUMENTS = Path(__file__).resolve().parents[1] / "recipes/doc_qa/sample_docs.jsonl"
EIFFEL_PAIRS = [
    {
        "question": "Who designed the Eiffel Tower?",
        "answer": "Gustave Eiffel",
        "evidence": "It was designed by the engineer   Gustave Eiffel",
    },  # extra spaces still match
    {
        "question": "When was the Eiffel Tower built?",
        "answer": "In 1925",
        "evidence": "built for the 1889 Exposition Universelle",
    },  # answer not in the chunk
    {
        "question": "How tall is the Eiffel Tower?",
        "answer": "330 metres",
        "evidence": "The tower is 330 metres tall.",
    },  # evidence invented
]


def test_chunks_respect_the_token_budget_and_offsets():
    count = token_counter("embedded")
    text = " ".join(json.loads(line)["text"] for line in DOCUMENTS.read_text().splitlines())
    chunks = chunk_text(text, 64, count)
    assert len(chunks) > 5
    for chunk, start, end in chunks:
        assert count(chunk) <= 64 and text[start:end] == chunk


def test_parse_and_support_helpers():
    assert parse_qa_pairs('```json\n[{"question": "q?", "answer": "a", "evidence": "e"}]\n```') == [
        {"question": "q?", "answer": "a", "evidence": "e"}
    ]
    for bad in ("not json", "[]", '[{"question": "q"}]'):
        with pytest.raises(ParseError):
            parse_qa_pairs(bad)
    assert find_span("the ENGINEER gustave", "designed by the engineer Gustave Eiffel") == (12, 32)
    assert find_span("Gustave Effel", "Gustave Eiffel") is None
    assert content_word_share("the year 1889", "built for 1889 fair") == 0.5


def test_unsupported_pairs_are_dropped_one_by_one(tmp_path: Path):
    script = [
        {"match": "Eiffel Tower is an iconic", "reply": json.dumps(EIFFEL_PAIRS)},
        {"match": "Great Wall", "reply": "Here are some questions!"},  # unparseable, then re-asked
        {
            "match": "Your answer could not be used",
            "reply": json.dumps(
                [
                    {
                        "question": "What is the Great Wall made of?",
                        "answer": "stone, brick, wood",
                        "evidence": "made of stone, brick, tamped earth, wood",
                    }
                ]
            ),
        },
        {"match": ".", "reply": "[]"},  # every other document: an empty list, which is re-asked then failed
    ]
    documents = tmp_path / "docs.jsonl"
    documents.write_text("".join(DOCUMENTS.read_text().splitlines(keepends=True)[:2]))
    path = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "dq",
            "teacher": {"backend": "openai", "model": "m", "base_url": "", "api_key_env": None},
            "steps": [
                {"step": "doc_qa", "documents": "docs.jsonl", "chunk_tokens": 128, "pairs_per_chunk": 3}
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    with FakeOpenAIServer(script=script) as server:
        result = run_recipe(load_recipe(path, [f"teacher.base_url={server.base_url}"]))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert result.reports[0].rows_dropped == {"answer_not_in_chunk": 1, "evidence_not_in_chunk": 1}
    assert [row["id"] for row in rows] == ["0#0-q0", "1#0-q0"]
    eiffel, wall = rows
    assert eiffel["response"] == "Gustave Eiffel" and eiffel["title"] == "Eiffel Tower - A French Icon"
    assert eiffel["evidence"] == "It was designed by the engineer Gustave Eiffel"
    assert eiffel["context"][eiffel["evidence_start"] : eiffel["evidence_end"]] == eiffel["evidence"]
    assert eiffel["messages"][0]["content"].startswith("Answer the question using the context.")
    assert "Who designed the Eiffel Tower?" in eiffel["messages"][0]["content"]
    assert wall["instruction"] == "What is the Great Wall made of?"
    assert read_jsonl(tmp_path / "out" / "failures.jsonl") == []
