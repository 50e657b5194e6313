"""A rerun answers every teacher step from the request cache and writes the same dataset, byte for byte.

Each case runs a small recipe against the fake OpenAI server (scripted so that every step gets
answers it can parse, plus some it cannot, so failures.jsonl is not empty), then runs it again with
the server's counters reset and every request answered by a 401, which would stop the run. The
rerun must send nothing (the server counts no request; the manifest shows only cache hits) and
write the same data.jsonl, failures.jsonl and dataset/ files (every byte: arrow shards,
dataset_info.json, state.json) and the same manifest apart from what a rerun changes by nature
(timestamps, seconds, requests sent, cache hits, the cost of requests sent).

Local-teacher cases (magpie, which refuses API teachers, and `logits` scoring with a local model)
run on the tiny random model of tests/tiny_model.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import write_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.shipped import shipped_root
from synthkd.testing.fake_openai import FakeOpenAIServer

# What a rerun changes by nature: when it ran, how long it took, and that it asked nothing.
RUN_FIELDS = ("started", "finished")
STEP_RUN_FIELDS = ("seconds", "requests_sent", "cache_hits", "cost_usd")
# The rerun's server: any request stops the run (401 is fatal), and is counted.
REFUSE_ALL = [{"match": "", "status": 401, "code": "invalid_api_key", "message": "the rerun must not ask"}]


@pytest.fixture(scope="module")
def server():
    """One server for the module; each case sets its own script (first match wins)."""
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@dataclass
class Case:
    script: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    rows: list[dict[str, Any]] | None = None  # written to rows.jsonl, loaded by a first `load` step
    files: dict[str, str] = field(default_factory=dict)  # more files beside the recipe
    teacher: dict[str, Any] | None = None  # default: the fake server
    local: bool = False  # a transformers teacher on the tiny model: no server involved
    expect_failures: bool = False  # failures.jsonl must not be empty (so its bytes are compared)


# ---- label, judge, critique_revise chained ---------------------------------------------------

POINTWISE = "(?s)You are an impartial judge of an AI assistant's answer.*Response:\n"
CRITIQUE = "(?s)Critique the response against.*Response:\n"
REVISE = "(?s)and a critique of that response.*Response:\n"
CHAIN = Case(
    rows=[{"id": t, "instruction": f"Explain {t}."} for t in ("tides", "rain", "wind", "snow", "fog")],
    script=[
        {"match": POINTWISE + "Answer: Explain tides", "reply": '{"score": 9, "justification": "Clear."}'},
        {
            "match": POINTWISE + "Answer: Explain rain",
            "reply": '```json\n{"score": 3, "justification": "Thin."}\n```',
        },
        {"match": POINTWISE + "Answer: Explain wind", "reply": "I'd give it a solid eight!"},
        {"match": "(?s)outside the scale|not a JSON object", "reply": "still no score"},
        {"match": POINTWISE, "reply": '{"score": 8, "justification": "Fine, {word}."}'},
        {
            "match": CRITIQUE + "Answer: Explain tides",
            "reply": "1. It only repeats the question.\n2. Nothing is uncertain.\n\n**Needs revision:** Yes",
        },
        {
            "match": REVISE + "Answer: Explain tides",
            "reply": "Revised response:\nThe moon's gravity pulls the sea.",
        },
        {
            "match": CRITIQUE + "The moon's gravity",
            "reply": "1. Follows it.\n2. Follows it.\nNeeds revision: no",
        },
        {"match": CRITIQUE + "Answer: Explain snow", "reply": "It says nothing."},  # no verdict: re-asked
        {"match": "no final line .Needs revision", "reply": "It says nothing.\nNeeds revision: yes"},
        {"match": REVISE + "Answer: Explain snow", "reply": "Snow is frozen {word} falling as flakes."},
        {"match": CRITIQUE, "reply": "1. Fine.\n2. Fine.\nNeeds revision: no"},
    ],
    steps=[
        {"step": "label", "system": "Be brief."},
        {"step": "judge", "min_score": 5},
        {"step": "critique_revise", "principles": ["Answer the question.", "Be honest."], "rounds": 2},
    ],
    expect_failures=True,  # wind: unparseable score
)

LABEL = Case(
    rows=[
        {"id": f"q{i}", "instruction": f"Name {i} primes.", "input": "" if i % 2 else f"Case {i}"}
        for i in range(6)
    ],
    script=[
        {"match": "Name 3 primes", "reply": "I'm sorry, I can't help with that."},
        {"match": "Name 5 primes", "reply": "2, 3, 5, 7 and", "finish_reason": "length"},  # kept, cut off
    ],
    steps=[
        {"step": "label", "n": 2, "systems": ["Be brief.", "Be thorough.", "Be kind."]},
        {"step": "filter", "drop_refusals": True},
    ],
)

LABEL_SCHEMA = Case(
    rows=[
        {"id": f"city{i}", "instruction": f"City {i}: give its name and population as JSON."}
        for i in range(4)
    ],
    script=[
        {"match": "City 0", "reply": "The city is big."},  # not JSON, twice
        {"match": "City 1", "reply": '{"name": "Oslo"}'},  # misses a key, then fixed
        {"match": "(?s)not valid.*required property", "reply": '{"name": "Oslo", "population": 700000}'},
        {"match": "not valid", "reply": "Still prose."},
        {"match": "City", "reply": '```json\n{"name": "{word}", "population": 1000}\n```'},
    ],
    steps=[
        {
            "step": "label",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
                "required": ["name", "population"],
            },
        }
    ],
    expect_failures=True,
)

JUDGE_PAIRWISE = Case(
    rows=[
        {"id": "clear", "instruction": "Define pi.", "response_a": "Sloppy", "response_b": "Precise"},
        {"id": "biased", "instruction": "Define e.", "response_a": "One", "response_b": "Two"},
        {"id": "garbled", "instruction": "Define i.", "response_a": "Garbled", "response_b": "Fine"},
    ],
    script=[
        {"match": "(?s)Response A:\nPrecise.*Response B:\nSloppy", "reply": '{"winner": "A"}'},
        {"match": "(?s)Response A:\nSloppy.*Response B:\nPrecise", "reply": '{"winner": "B"}'},
        {"match": "(?s)Response A:\nGarbled", "reply": "A, I think"},
        {"match": "(?s)not a JSON object", "reply": "A, really"},
        {"match": "(?s)Response A:", "reply": '{"winner": "A", "justification": "first is best"}'},
    ],
    steps=[{"step": "judge", "mode": "pairwise", "pair_columns": ["response_a", "response_b"]}],
    expect_failures=True,
)

JUDGE_ASPECTS = Case(
    rows=[
        {"id": n, "instruction": "How much paracetamol?", "response": n} for n in ("unsafe", "safe", "poor")
    ],
    script=[
        {
            "match": f"(?s)Response:\n{name}",
            "reply": json.dumps(
                {a: {"score": s, "justification": a} for a, s in zip(("accuracy", "safety"), v, strict=True)}
            ),
        }
        for name, v in {"unsafe": (10, 2), "safe": (8, 8), "poor": (4, 6)}.items()
    ],
    steps=[
        {
            "step": "judge",
            "aspects": ["accuracy", "safety"],
            "min_score": 5,
            "min_aspect_scores": {"safety": 4},
        }
    ],
)

# ---- preference (a separate judge teacher) ------------------------------------------------------

JUDGE = "(?s)impartial judge.*Response:\n"
PREFERENCE = Case(
    rows=[
        {"id": "weak", "instruction": "Explain tides.", "student": "Weak student"},
        {"id": "tied", "instruction": "Explain rain.", "student": "Tied student"},
        {"id": "strong", "instruction": "Explain wind.", "student": "Strong student"},
        {"id": "garbled", "instruction": "Explain hail.", "student": "Garbled student"},
    ],
    script=[
        {"match": JUDGE + "Answer:", "reply": '{"score": 8, "justification": "teacher"}'},
        {"match": JUDGE + "Weak student", "reply": '{"score": 3, "justification": "vague"}'},
        {"match": JUDGE + "Tied student", "reply": '{"score": 7.5, "justification": "close"}'},
        {"match": JUDGE + "Strong student", "reply": '{"score": 10, "justification": "best"}'},
        {"match": JUDGE + "Garbled student", "reply": "ten out of ten"},
        {"match": "(?s)outside the scale|not a JSON object", "reply": "still ten"},
    ],
    steps=[
        {
            "step": "preference",
            "n": 2,
            "candidate_columns": ["student"],
            "min_margin": 1,
            "judge_teacher": {"model": "judge-m"},
        }
    ],
    expect_failures=True,  # the garbled candidate's score
)

# ---- classify ------------------------------------------------------------------------------------

CLASSIFY = Case(
    rows=[
        {"id": "great", "review": "Great phone, the screen is gorgeous.", "gold": "positive"},
        {"id": "battery", "review": "Terrible battery, dead by noon.", "gold": "positive"},
        {"id": "plain", "review": "It is a phone.", "gold": "neutral"},
        {"id": "odd", "review": "Purple monkey dishwasher.", "gold": "neutral"},
    ],
    script=[
        {"match": "(?s)Text:\nGreat phone", "reply": "The screen is praised.\n**Label:** Positive."},
        {"match": "(?s)Text:\nTerrible battery", "reply": "It dies early.\nLabel: NEGATIVE"},
        {"match": "(?s)Text:\nIt is a phone", "reply": "Flat.\nLabel: mixed"},
        {"match": "'mixed' is not one of the labels", "reply": "Flat.\nLabel: neutral"},
        {"match": "(?s)Text:\nPurple monkey", "reply": "Odd.\nLabel: surreal"},
        {"match": "'surreal' is not one of the labels", "reply": "Odd.\nLabel: Surreal"},
    ],
    steps=[
        {
            "step": "classify",
            "labels": {"positive": "the writer likes it", "negative": "", "neutral": ""},
            "text_column": "review",
            "rationale": True,
            "gold_column": "gold",
        }
    ],
    expect_failures=True,
)

# ---- tool_calls ----------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "name": "search_flights",
        "description": "Flights between two airports on a date.",
        "parameters": {
            "type": "object",
            "properties": {
                "origin": {"type": "string"},
                "destination": {"type": "string"},
                "date": {"type": "string"},
                "passengers": {"type": "integer", "minimum": 1},
            },
            "required": ["origin", "destination", "date"],
        },
    },
]
TOOL_SCRIPT = [
    {
        "match": "(?s)Write one realistic message.*tool `get_weather`",
        "reply": "What's the weather in Oslo and in Rome?",
    },
    {
        "match": "(?s)Write one realistic message.*tool `search_flights`",
        "reply": '"Find me flights from Paris CDG to Rome FCO on 1 May 2025 for two of us."',
    },
    {
        "match": "(?s)User request:\nWhat's the weather in Oslo and in Rome.*Decide which tool calls",
        "reply": '```json\n[{"name": "get_weather", "arguments": {"city": "Oslo"}},\n'
        ' {"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}]\n```',
    },
    {
        "match": "(?s)User request:\nFind me flights.*Decide which tool calls",
        "reply": '[{"name": "search_flights", "arguments": {"origin": "CDG", "destination": "FCO", '
        '"date": "2025-05-01", "passengers": "two"}}]',
    },
    {
        "match": "'two' is not of type 'integer'",
        "reply": '[{"name": "search_flights", "arguments": {"origin": "CDG", "destination": "FCO", '
        '"date": "2025-05-01", "passengers": 2}}]',
    },
    {
        "match": "(?s)User request:\nBook me a room.*Decide which tool calls",
        "reply": '[{"name": "book_hotel", "arguments": {"city": "Rome"}}]',
    },
    {
        "match": "unknown function 'book_hotel'",
        "reply": '[{"name": "book_hotel", "arguments": {"city": "Rome"}}]',
    },
    {"match": "(?s)User request:\nTell me a joke.*Decide which tool calls", "reply": "[]"},
    # A second round for the flights only: the weather at the destination, then nothing more.
    {"match": "(?s)Find me flights.*already called tools.*get_weather\\(", "reply": "[]"},
    {
        "match": "(?s)Find me flights.*Decide whether more",
        "reply": '[{"name": "get_weather", "arguments": {"city": "Rome"}}]',
    },
    {"match": "Decide whether more", "reply": "[]"},
    {
        "match": "(?s)Find me flights.*Earlier calls and what they returned.*Then the",
        "reply": '[{"city": "Rome", "conditions": "sunny", "temperature": 21}]',
    },
    {
        "match": "(?s)weather in Oslo.*The assistant made these calls",
        "reply": '[{"temperature": 4, "conditions": "snow"}, {"temperature": 19, "conditions": "sunny"}]',
    },
    {
        "match": "(?s)Find me flights.*The assistant made these calls",
        "reply": '{"flights": [{"number": "AF1404", "departs": "07:10", "price_eur": 129}]}',
    },
    {
        "match": "(?s)weather in Oslo.*To answer, you called tools",
        "reply": "Oslo: 4 °C and snow. Rome: 19 °C.",
    },
    {
        "match": "(?s)Find me flights.*To answer, you called tools",
        "reply": "AF1404 leaves at 07:10 for €129; Rome is sunny.",
    },
]
TOOL_CALLS = Case(
    rows=[
        {"id": "weather", "request": "What's the weather in Oslo and in Rome?"},
        {
            "id": "flights",
            "request": "Find me flights from Paris CDG to Rome FCO on 1 May 2025 for two of us.",
        },
        {"id": "hotel", "request": "Book me a room in Rome."},
        {"id": "joke", "request": "Tell me a joke."},
    ],
    files={"tools.json": json.dumps(TOOLS)},
    script=TOOL_SCRIPT,
    steps=[
        {
            "step": "tool_calls",
            "tools": "tools.json",
            "request_column": "request",
            "system": "You help travellers.",
            "max_rounds": 2,
        }
    ],
    expect_failures=True,
)
TOOL_REQUESTS = Case(  # the teacher writes the requests too
    files={"tools.json": json.dumps(TOOLS)},
    script=TOOL_SCRIPT,
    steps=[{"step": "tool_calls", "tools": "tools.json", "num_requests": 4}],
)

# ---- rationale then recompute --------------------------------------------------------------------

STATEMENT = "Revenue: 1250. Operating costs: 300. Shares outstanding: 50."
EXPR = "(?s){}.*Expression: <the expression>"
FINAL = "(?s){}.*Final answer: <the answer>"
NUMBERS = Case(
    rows=[
        {"id": "right", "input": STATEMENT, "instruction": "What is operating profit?", "output": "950"},
        {
            "id": "planted",
            "input": STATEMENT,
            "instruction": "What is the operating margin?",
            "output": "80%",
        },
        {"id": "per-share", "input": STATEMENT, "instruction": "What is revenue per share?", "output": "$25"},
        {"id": "commas", "input": STATEMENT, "instruction": "What is revenue less costs?", "output": "950"},
        {"id": "unsafe", "input": STATEMENT, "instruction": "What are costs per share?", "output": "6"},
        {"id": "wrong", "input": "", "instruction": "What is 3 + 3?", "output": "6"},
        {"id": "colour", "input": "", "instruction": "Name a primary colour.", "output": "Blue"},
    ],
    script=[
        {"match": "no commas in numbers", "reply": "Expression: 1250 - 300"},
        {"match": "the only functions are", "reply": "Expression: __import__('os').system('touch pwned')"},
        {"match": EXPR.format("operating profit\\?"), "reply": "Expression: 1250 - 300"},
        {"match": EXPR.format("operating margin\\?"), "reply": "Expression: (1250 - 300) / 1250 * 100"},
        {
            "match": EXPR.format("revenue per share\\?"),
            "reply": "Revenue over shares.\nExpression: 1250 / 50",
        },
        {"match": EXPR.format("revenue less costs\\?"), "reply": "Expression: 1,250 - 300"},
        {
            "match": EXPR.format("costs per share\\?"),
            "reply": "Expression: __import__('os').system('touch pwned')",
        },
        {"match": FINAL.format("operating profit"), "reply": "1250 less 300.\nFinal answer: 950"},
        {"match": FINAL.format("operating margin"), "reply": "Profit over revenue.\nFinal answer: 80%"},
        {"match": FINAL.format("revenue per share"), "reply": "1250 / 50.\nFinal answer: $25"},
        {"match": FINAL.format("revenue less costs"), "reply": "1,250 - 300.\n**Final answer:** 950"},
        {"match": FINAL.format("costs per share"), "reply": "300 / 50.\nFinal answer: 6"},
        {"match": FINAL.format("3 \\+ 3"), "reply": "Three and three make seven.\nFinal answer: 7"},
        {"match": FINAL.format("primary colour"), "reply": "Blue is a primary colour."},
        {"match": "Your answer could not be used", "reply": "Blue is one.\nFinal answer: blue"},
    ],
    steps=[
        {"step": "rationale", "gold_column": "output", "n": 2, "system": "Explain simply."},
        {"step": "recompute"},
    ],
    expect_failures=True,  # unsafe: invalid_expression
)

# ---- doc_qa --------------------------------------------------------------------------------------

DOCUMENTS = shipped_root() / "recipes/doc_qa/sample_docs.jsonl"
DOC_QA = Case(
    files={"docs.jsonl": "".join(DOCUMENTS.read_text().splitlines(keepends=True)[:3])},
    script=[
        {
            "match": "Eiffel Tower is an iconic",
            "reply": json.dumps(
                [
                    {
                        "question": "Who designed the Eiffel Tower?",
                        "answer": "Gustave Eiffel",
                        "evidence": "It was designed by the engineer   Gustave Eiffel",
                    },
                    {
                        "question": "When was it built?",
                        "answer": "In 1925",
                        "evidence": "built for the 1889 Exposition",
                    },
                    {
                        "question": "How tall is it?",
                        "answer": "330 metres",
                        "evidence": "The tower is 330 metres tall.",
                    },
                ]
            ),
        },
        {"match": "Great Wall", "reply": "Here are some questions!"},  # unparseable, then re-asked
        {  # (the re-ask's last message holds only the error; the Taj Mahal's is another)
            "match": "Your answer could not be used: not a JSON list",
            "reply": json.dumps(
                [
                    {
                        "question": "What is the Great Wall made of?",
                        "answer": "stone, brick, wood",
                        "evidence": "made of stone, brick, tamped earth, wood",
                    }
                ]
            ),
        },  # fmt: skip
        {"match": ".", "reply": "[]"},  # the Taj Mahal: an empty list, re-asked, then a failure
    ],
    steps=[
        {
            "step": "doc_qa",
            "documents": "docs.jsonl",
            "chunk_tokens": 512,
            "pairs_per_chunk": 3,
            "tokenizer": "{tiny}",
        }
    ],
    expect_failures=True,
)

# ---- dialogue ------------------------------------------------------------------------------------

USER_SIDE = "(?s)You are playing the user"
DIALOGUE = Case(
    rows=[
        {"id": "tea", "instruction": "How do I brew tea?", "persona": "a student"},
        {"id": "bread", "instruction": "How is bread made?", "persona": "a baker"},
        {"id": "soup", "instruction": "How is soup made?", "persona": "a cook"},
        {"id": "mute", "instruction": "Say nothing", "persona": "anyone"},
    ],
    script=[
        {"match": USER_SIDE + ".*What about green tea", "reply": "<end>"},
        {"match": USER_SIDE + ".*The user is: a student.*tea", "reply": "User: What about green tea?"},
        {"match": USER_SIDE, "reply": "And then, {word}?"},
        {"match": "^Say nothing", "reply": ""},
    ],
    steps=[{"step": "dialogue", "turns": 3, "persona_column": "persona", "system": "Be kind."}],
    expect_failures=True,
)

# ---- topics --------------------------------------------------------------------------------------

TOPICS = Case(
    script=[
        {
            "match": "List 3 distinct subtopics of this domain",
            "reply": "1. Heart failure\n2. Heart failure care\n3. {word} rhythm",
        },
        {
            "match": "List 3 distinct subtopics",
            "reply": "1. {word} {word}\n2. {word} {word}\n3. {word} {word}",
        },
        {"match": "(?s)Write 2 different requests.*Heart failure", "reply": "Sure, here you go!"},
        {"match": "Your answer could not be used", "reply": "1. What are the early signs of heart failure?"},
        {
            "match": "Write 2 different requests",
            "reply": "1. Explain {word} {word} {word}.\n2. Compare {word} and {word}.",
        },
    ],
    steps=[{"step": "topics", "domain": "cardiology", "breadth": 3, "depth": 2, "per_topic": 2}],
)

# ---- evol_instruct -------------------------------------------------------------------------------

LONG_ANSWER = " ".join(["This answer explains the idea carefully with a worked example."] * 3)
REWRITE = "(?s)(?:Rewrite the instruction below|Write a brand-new instruction).*"
EVOL = Case(
    rows=[
        {"id": name, "instruction": text}
        for name, text in [
            ("hello", "Say hello."),
            ("fruit", "Name a fruit."),
            ("gravity", "Explain gravity."),
            ("cat", "Describe a cat."),
            ("primes", "List primes."),
            ("tides", "Explain tides."),
        ]
    ],
    script=[
        {
            "match": REWRITE + "Say hello",
            "reply": "#Rewritten Prompt#: Say hello politely to a new colleague.",
        },
        {"match": REWRITE + "Name a fruit", "reply": "Name a fruit."},
        {
            "match": REWRITE + "Explain gravity",
            "reply": "Explain gravity to a {word} child with one example.",
        },
        {"match": REWRITE + "Describe a cat", "reply": "Describe a cat in exactly three sentences."},
        {"match": REWRITE + "List primes", "reply": "   "},
        {"match": "Your answer could not be used", "reply": "Instruction: List the first {word} primes."},
        {"match": REWRITE, "reply": "Explain {word} and {word} to a {word} reader, with a table."},
        {"match": "(?s)Name a fruit.*Does the second ask for exactly the same", "reply": "Yes"},
        {"match": "Does the second ask for exactly the same", "reply": "No"},
        {"match": "^Describe a cat in exactly", "reply": "I'm sorry, but I cannot help with that."},
        {"match": ".", "reply": LONG_ANSWER},
    ],
    steps=[{"step": "evol_instruct", "rounds": 2, "elimination": "teacher", "keep_original": True}],
)

# ---- self_instruct -------------------------------------------------------------------------------

GENERATED = """Here are new tasks:
Task 4: Write a short poem about the ocean sea.
Task 5: Draw a picture of a cat sitting on a mat.
Task 6: Do it.
Task 7: "Quote" the most famous line of a play you like.
Task 8: Detect whether a tweet expresses sarcasm or sincere sentiment.
Task 9: Summarise the main argument of the given essay in two sentences.
Task 10: Suggest three names for a bakery that sells only bread.
Task 11: Plan a {word} day trip for {word} friends."""
SELF_INSTRUCT = Case(
    rows=[
        {"instruction": "Write a short poem about the sea.", "is_classification": False},
        {
            "instruction": "Classify the sentiment of the given movie review as positive or negative.",
            "is_classification": True,
        },
        {"instruction": "Explain how a bicycle gear system works to a child.", "is_classification": False},
    ],  # fmt: skip
    script=[
        {"match": "We are collecting a varied set of tasks", "reply": GENERATED},
        {"match": "(?s)Is the following task a classification.*sarcasm", "reply": "Yes."},
        {"match": "Is the following task a classification", "reply": "No"},
        {
            "match": "(?s)classification task below.*sarcasm",
            "reply": "Class label: sarcastic\nInput: Great, more rain.",
        },
        {"match": "(?s)task below.*bakery", "reply": "Sure, happy to help!"},
        {
            "match": "Your answer could not be used",
            "reply": "Input: <none>\nOutput: Crumb & Co; Daily Loaf; Rise",
        },
        {
            "match": "task below",
            "reply": "Input: An essay about {word}.\nOutput: {word} grows. It needs planning.",
        },
    ],
    steps=[{"step": "self_instruct", "num_instructions": 4, "requests_per_round": 1}],
)

# ---- code_check ----------------------------------------------------------------------------------


def _answer(code: str) -> str:
    return f"Here is a solution.\n\n```python\n{code}```\n\nFor example:\n\n```\n>>> add(1, 2)\n3\n```\n"


ADD = "def add(a, b):\n    return a + b\n"
CODE = Case(
    rows=[
        {"id": "right", "instruction": "Write add(a, b).", "response": _answer(ADD)},
        {
            "id": "wrong",
            "instruction": "Write add(a, b) for me.",
            "response": _answer("def add(a, b):\n    return a * b\n"),
        },
        {
            "id": "crash",
            "instruction": "Write a function that crashes.",
            "response": _answer("def add(a, b):\n    raise RuntimeError('boom')\n"),
        },
        {
            "id": "prose",
            "instruction": "Write add(a, b), no code please.",
            "response": "Just use the + operator.",
        },
        {"id": "hello", "instruction": "Print a greeting.", "response": _answer("print('hello')\n")},
        {
            "id": "mul",
            "instruction": "Write mul(a, b).",
            "response": _answer("def mul(a, b):\n    return a * b\n"),
        },
    ],  # fmt: skip
    script=[
        {
            "match": "(?s)Task:\nWrite add\\(a, b\\)",
            "reply": "```python\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n```",
        },
        {
            "match": "(?s)Task:\nWrite a function that crashes",
            "reply": "```python\ndef test_add():\n    assert add(1, 1) == 2\n```",
        },
        {"match": "(?s)Task:\nPrint a greeting", "reply": "UNTESTABLE"},
        {"match": "(?s)Task:\nWrite mul", "reply": "assert mul(2, 3) == 6"},  # no code block: re-asked
        {"match": "Your answer could not be used", "reply": "```python\nassert mul(2, 3) == 6\n```"},
    ],
    steps=[{"step": "code_check", "cpu_seconds": 2, "wall_seconds": 10, "workers": 2}],
)

# ---- logits, from an API teacher's log-probs and from a local teacher's scores ---------------------

LOGITS_API = Case(
    rows=[
        {"prompt": p, "response": "old answer"}
        for p in [
            *(f"Question {i}: tell me about the fox." for i in range(5)),
            "A short question.",
            "An odd question.",
        ]
    ],
    script=[
        {"match": "odd", "reply": "Zyxqvw jumps."},  # a token the tiny vocabulary lacks: unmappable
        {"match": "short", "reply": "The fox."},
        {"match": ".", "reply": "The quick brown fox jumps over the lazy dog."},
    ],  # fmt: skip
    steps=[{"step": "logits", "top_k": 4, "tokenizer": "{tiny}"}],
)
LOGITS_LOCAL = Case(
    rows=[
        {"prompt": f"Question {i}: what is {i} plus {i}?", "response": "The quick brown fox."}
        for i in range(6)
    ],
    script=[],
    teacher={"backend": "transformers", "model": "{tiny}"},
    local=True,
    steps=[{"step": "logits", "top_k": 5}],
)
MAGPIE = Case(
    script=[],
    teacher={
        "backend": "transformers",
        "model": "{tiny}",
        "batch_size": 4,
        "params": {"temperature": 1.0, "max_tokens": 12},
    },
    local=True,
    steps=[{"step": "magpie", "num_rows": 8, "min_words": 2, "system": "Talk about bread."}],
)

CASES: dict[str, Case] = {
    "label+judge+critique_revise": CHAIN,
    "label": LABEL,
    "label-schema": LABEL_SCHEMA,
    "judge-pairwise": JUDGE_PAIRWISE,
    "judge-aspects": JUDGE_ASPECTS,
    "preference": PREFERENCE,
    "classify": CLASSIFY,
    "tool_calls": TOOL_CALLS,
    "tool_calls-requests": TOOL_REQUESTS,
    "rationale+recompute": NUMBERS,
    "doc_qa": DOC_QA,
    "dialogue": DIALOGUE,
    "topics": TOPICS,
    "evol_instruct": EVOL,
    "self_instruct": SELF_INSTRUCT,
    "code_check": CODE,
    "logits-api": LOGITS_API,
    "logits-local": LOGITS_LOCAL,
    "magpie-local": MAGPIE,
}


def _fill(value: Any, tiny: Path) -> Any:
    """The case's recipe values with "{tiny}" replaced by the tiny model's folder."""
    if isinstance(value, str):
        return value.replace("{tiny}", str(tiny))
    if isinstance(value, dict):
        return {k: _fill(v, tiny) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, tiny) for v in value]
    return value


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def without_run_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    kept = {key: value for key, value in manifest.items() if key not in RUN_FIELDS}
    kept["steps"] = [
        {k: v for k, v in step.items() if k not in STEP_RUN_FIELDS} for step in manifest["steps"]
    ]
    return kept


def first_difference(name: str, first: bytes, second: bytes) -> str:
    """Where two versions of a file part: the line for text, the offset for binary files."""
    if name.endswith((".json", ".jsonl")):
        for number, (a, b) in enumerate(zip(first.splitlines(), second.splitlines(), strict=False), 1):
            if a != b:
                return f"{name} line {number}:\n  first: {a[:400]!r}\n  rerun: {b[:400]!r}"
        return f"{name}: {len(first.splitlines())} lines, then {len(second.splitlines())}"
    offset = next(
        (i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b),
        min(len(first), len(second)),
    )
    return f"{name}: {len(first)} bytes, then {len(second)}; first difference at byte {offset}"


@pytest.mark.parametrize("name", list(CASES))
def test_a_rerun_sends_nothing_and_writes_the_same_bytes(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    case = CASES[name]
    tiny = (
        request.getfixturevalue("tiny_model") if "{tiny}" in json.dumps([case.steps, case.teacher]) else None
    )
    server = None if case.local else request.getfixturevalue("server")
    for file_name, text in case.files.items():
        (tmp_path / file_name).write_text(text, encoding="utf-8")
    steps = _fill(case.steps, tiny) if tiny else case.steps
    if case.rows is not None:
        write_jsonl(tmp_path / "rows.jsonl", case.rows)
        steps = [{"step": "load", "path": "rows.jsonl"}, *steps]
    if case.local:
        teacher = _fill(case.teacher, tiny)
    else:
        teacher = {
            "backend": "openai",
            "model": "m",
            "base_url": server.base_url,
            "api_key_env": None,
            **(case.teacher or {}),
        }
    out = tmp_path / "out"
    path = write_recipe(
        tmp_path / "r.yaml",
        {"name": "rerun", "seed": 7, "teacher": teacher, "steps": steps, "output": {"dir": str(out)}},
    )

    if server is not None:
        server.configure(script=case.script)
        server.reset()
    run_recipe(load_recipe(path))
    first = snapshot(out)
    first_manifest = json.loads(first["manifest.json"])
    asked = [step["requests_sent"] + step["cache_hits"] for step in first_manifest["steps"]]
    assert sum(step["requests_sent"] for step in first_manifest["steps"]) > 0
    if server is not None:
        assert server.stats()["requests"] == sum(step["requests_sent"] for step in first_manifest["steps"])
    assert first_manifest["rows"] > 0
    assert first["failures.jsonl"] or not case.expect_failures

    if server is not None:  # every request the rerun might send is counted, and stops the run
        server.configure(script=REFUSE_ALL)
        server.reset()
    run_recipe(load_recipe(path))
    if server is not None:
        assert server.stats()["requests"] == 0
    second = snapshot(out)
    second_manifest = json.loads(second["manifest.json"])
    assert [step["requests_sent"] for step in second_manifest["steps"]] == [0] * len(asked)
    assert [step["cache_hits"] for step in second_manifest["steps"]] == asked

    assert sorted(second) == sorted(first)
    assert any(re.fullmatch(r"dataset/.*\.arrow", file) for file in first)
    assert without_run_fields(second_manifest) == without_run_fields(first_manifest)
    different = [
        first_difference(file, first[file], second[file])
        for file in sorted(first)
        if file != "manifest.json" and first[file] != second[file]
    ]
    # failures.jsonl included: a failure's attempts once read 0 from the cache where the first run
    # wrote 2 (the ask and its re-ask).
    assert not different, "the rerun wrote different bytes:\n" + "\n".join(different)
