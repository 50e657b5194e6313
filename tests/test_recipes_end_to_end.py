"""The shipped topics, evol_instruct, dialogue, doc_qa and rationale recipes, run end to end.

Each runs as a user would (`synthkd run recipes/<name>.yaml`), with only the teacher pointed at the
fake OpenAI server. Its scripted answers include ones the recipe's checks must drop (refusals,
short answers, near-duplicates, unsupported evidence, wrong final answers, empty turns); each test
asserts those were dropped, for the stated reason, and the good rows kept with their columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl

from synthkd.chunking import chunk_text, token_counter
from synthkd.cli import main
from synthkd.shipped import shipped_root
from synthkd.testing.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.slow

LONG_ANSWER = "A practical answer: start with the basics, give one worked example, then the common mistakes."


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


def run_shipped(server, tmp_path: Path, name: str, script: list[dict], *overrides: str) -> tuple[Path, dict]:
    """Run the shipped recipe `name` on the fake server answering by `script`; the run folder and
    its manifest."""
    server.reset()
    server.configure(script=script)
    out = tmp_path / name
    teacher = ["teacher.backend=openai", "teacher.model=fake-model", f"teacher.base_url={server.base_url}",
               "teacher.api_key_env=null"]  # fmt: skip
    args = ["run", f"recipes/{name}.yaml", "--output", str(out)]
    for override in [*teacher, *overrides]:
        args += ["--set", override]
    assert main(args) == 0
    return out, json.loads((out / "manifest.json").read_text())


def by_step(manifest: dict) -> dict[str, dict]:
    return {step["step"]: step for step in manifest["steps"]}


SUBTOPICS = "^We are building a map of the domain"
REQUESTS = '(?s)^Write 3 different requests .*about "'
TOPICS_SCRIPT = [
    {
        "match": SUBTOPICS,
        "reply": "1. Heart failure\n2. Atrial fibrillation\n3. Heart failure management\n4. Hypertension",
    },
    {
        "match": REQUESTS + 'Heart failure"',
        "reply": "1. What are the early signs of heart failure?\n2. How is heart failure staged?\n"
        "3. Which drugs improve survival in heart failure?",
    },
    {
        "match": REQUESTS + 'Atrial fibrillation"',
        "reply": "1. How is atrial fibrillation diagnosed?\n"
        "2. How is atrial fibrillation diagnosed in adults?\n"
        "3. When should anticoagulation be started for atrial fibrillation?",
    },
    {
        "match": REQUESTS + 'Hypertension"',
        "reply": "1. What blood pressure counts as hypertension?\n"
        "2. List lifestyle changes that lower blood pressure.\n3. Explain how ACE inhibitors work.",
    },
    # The label step's answers: the last user message is the instruction itself.
    {"match": "^How is heart failure staged", "reply": "I'm sorry, but I can't help with that request."},
    {"match": "^Explain how ACE inhibitors", "reply": "They relax."},
    {"match": ".", "reply": LONG_ANSWER + " ({word})"},
]


def test_topics_recipe(tmp_path: Path, server):
    out, manifest = run_shipped(server, tmp_path, "topics", TOPICS_SCRIPT)
    steps = by_step(manifest)
    assert steps["topics"]["rows_dropped"] == {"duplicate_topic": 1, "duplicate_instruction": 1}
    assert steps["filter"]["rows_dropped"] == {"refusal": 1, "too_short": 1}
    assert server.stats()["requests"] == 1 + 3 + 8  # the tree, a request list per leaf, 8 answers
    rows = read_jsonl(out / "data.jsonl")
    assert [(row["topic"], row["instruction"]) for row in rows] == [
        ("Heart failure", "What are the early signs of heart failure?"),
        ("Heart failure", "Which drugs improve survival in heart failure?"),
        ("Atrial fibrillation", "How is atrial fibrillation diagnosed?"),
        ("Atrial fibrillation", "When should anticoagulation be started for atrial fibrillation?"),
        ("Hypertension", "What blood pressure counts as hypertension?"),
        ("Hypertension", "List lifestyle changes that lower blood pressure."),
    ]
    assert manifest["rows"] == len(rows) and read_jsonl(out / "failures.jsonl") == []
    system = "You are an experienced cardiologist advising a general practitioner. Be accurate and practical."
    for row in rows:
        assert row["topic_path"] == [row["topic"]] and row["id"].startswith("topic-")
        assert row["response"].startswith(LONG_ANSWER) and row["system"] == system
        assert row["messages"] == [
            {"role": "system", "content": system},
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["response"]},
        ]


REWRITE = "(?s)(?:Rewrite the instruction below|Write a brand-new instruction).*"
EVOL_SCRIPT = [
    # seed_task_3 evolves twice; its second rewrite is matched first, by the words the first added.
    {
        "match": REWRITE + "step by step for a beginner",
        "reply": "Describe two situations, one at work and one at school, in which the given stereotype "
        "harms people, and compare how each could be prevented.",
    },
    {
        "match": REWRITE + "the given stereotype can harm you",
        "reply": "Describe a situation in which the given stereotype can harm you, "
        "step by step for a beginner.",
    },
    {
        "match": REWRITE + "breakfast that doesn't include eggs",
        "reply": "#Rewritten Prompt#: Suggest an egg-free breakfast with 40 g of protein.",
    },
    {
        "match": REWRITE + "relation between the given pairs",
        "reply": "What is the relation between the given pairs?",
    },
    {
        "match": REWRITE + "one-sentence description",
        "reply": "Generate a one-sentence description of each of the following scientists, "
        "naming a discovery.",
    },
    {
        "match": REWRITE + "subjective title for the following email",
        "reply": "Generate an appropriate subject line of at most eight words for the following email.",
    },
    # The answers to evolved instructions (the user message is the instruction itself).
    {
        "match": "^Generate a one-sentence description of each",
        "reply": "I'm sorry, but I cannot help with that.",
    },
    {"match": "^Generate an appropriate subject line", "reply": "Done."},
    {"match": ".", "reply": LONG_ANSWER + " ({word})"},
]


def test_evol_instruct_recipe(tmp_path: Path, server):
    out, manifest = run_shipped(server, tmp_path, "evol_instruct", EVOL_SCRIPT, "steps.0.limit=5")
    # Each of the four failing seeds fails in both rounds (an eliminated parent is tried again).
    assert by_step(manifest)["evol_instruct"]["rows_dropped"] == {
        "copied_prompt_words": 2,  # breakfast: the rewrite kept the "#Rewritten Prompt#:" heading
        "no_information_gain": 2,  # relation: the rewrite is the instruction unchanged
        "refusal_or_short_answer": 4,  # description: refused; email: answered in one word
    }
    rows = read_jsonl(out / "data.jsonl")
    assert [(row["id"], row["parent_id"], row["round"]) for row in rows] == [
        ("seed_task_3-r1", "seed_task_3", 1),
        ("seed_task_3-r1-r2", "seed_task_3-r1", 2),
    ]
    assert rows[0]["instruction"].endswith("step by step for a beginner.")
    assert rows[1]["instruction"].startswith("Describe two situations")
    assert manifest["rows"] == 2 and read_jsonl(out / "failures.jsonl") == []
    for row in rows:
        assert row["operation"] in {"add_constraints", "deepen", "concretize", "increase_reasoning",
                                    "complicate_input", "breadth"}  # fmt: skip
        assert row["response"].startswith(LONG_ANSWER) and row["finish_reason"] == "stop"
        assert row["messages"] == [
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["response"]},
        ]
        assert not {"input", "output", "prompt"} & set(row)


USER_SIDE = "(?s)^You are playing the user"
DIALOGUE_SCRIPT = [
    {"match": USER_SIDE + ".*tomato plants", "reply": "<end>"},
    {"match": USER_SIDE + ".*The user is: a nurse in her thirties",
     "reply": "User: How do I budget around night shifts?"},
    {"match": USER_SIDE, "reply": "Could you give me an example about {word}?"},
    {"match": "^What is the difference between a list and a tuple", "reply": "   "},  # an empty answer
    {"match": ".", "reply": LONG_ANSWER + " ({word})"},
]  # fmt: skip


def test_dialogue_recipe(tmp_path: Path, server):
    # The shipped recipe keeps the default max_failure_ratio (0.1); one failed conversation of 8 is
    # over it, so the test allows it.
    out, manifest = run_shipped(server, tmp_path, "dialogue", DIALOGUE_SCRIPT, "output.max_failure_ratio=0.2")
    failures = read_jsonl(out / "failures.jsonl")
    assert [(f["id"], f["reason"]) for f in failures] == [("python", "empty_answer")]
    rows = {row["id"]: row for row in read_jsonl(out / "data.jsonl")}
    assert set(rows) == {"budget", "garden", "run", "letter", "history", "sleep", "sql"}
    assert manifest["rows"] == 7 and by_step(manifest)["dialogue"]["rows_failed"] == 1
    # 8 openings answered, 7 follow-ups asked, 6 second answers (the gardener had nothing more).
    assert server.stats()["requests"] == 8 + 7 + 6
    system = {"role": "system", "content": "You are a friendly, practical assistant."}
    garden = rows.pop("garden")
    assert garden["turns"] == 1 and [m["role"] for m in garden["messages"]] == ["system", "user", "assistant"]
    budget = rows["budget"]["messages"]
    assert budget[3] == {"role": "user", "content": "How do I budget around night shifts?"}  # label stripped
    for row_id, row in rows.items():
        messages = row["messages"]
        assert row["turns"] == 2 and messages[0] == system, row_id
        assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant"]
        assert all(m["content"].strip() for m in messages)
        assert messages[2]["content"].startswith(LONG_ANSWER) and row["response"] == messages[4]["content"]


EIFFEL_PAIRS = [
    {"question": "Who designed the Eiffel Tower?", "answer": "Gustave Eiffel",
     "evidence": "It was designed by the engineer Gustave Eiffel"},
    {"question": "When was the Eiffel Tower built?", "answer": "In 1925",
     "evidence": "built for the 1889 Exposition Universelle"},  # the answer is not in the passage
    {"question": "How tall is the Eiffel Tower?", "answer": "330 metres",
     "evidence": "The tower is 330 metres tall."},  # the evidence is invented
]  # fmt: skip
TAJ_PAIRS = [
    {"question": "Who commissioned the Taj Mahal?", "answer": "Shah Jahan",
     "evidence": "commissioned in 1632 by the Mughal emperor, Shah Jahan"},
    {"question": "In which city is the Taj Mahal?", "answer": "Agra",
     "evidence": "in the Indian city of Agra"},
]  # fmt: skip
WALL_PAIR = {"question": "What is the Great Wall of China made of?",
             "answer": "stone, brick, tamped earth, wood",
             "evidence": "made of stone, brick, tamped earth, wood"}  # fmt: skip
INVENTED = {"question": "What is it?", "answer": "{word}", "evidence": "{word} {word}"}
DOC_QA_SCRIPT = [
    {"match": "Passage:\nThe Eiffel Tower is an iconic", "reply": json.dumps(EIFFEL_PAIRS)},
    {"match": "Passage:\nThe Taj Mahal", "reply": "```json\n" + json.dumps(TAJ_PAIRS) + "\n```"},
    {"match": "Passage:\nThe Great Wall", "reply": "Here are two good questions about the wall!"},
    {"match": "^Your answer could not be used", "reply": json.dumps([WALL_PAIR])},  # the re-ask
    # Every other passage: a pair whose evidence is not in it.
    {"match": "Passage:", "reply": json.dumps([INVENTED])},
]  # fmt: skip


def test_doc_qa_recipe(tmp_path: Path, server):
    documents = (shipped_root() / "recipes/doc_qa/sample_docs.jsonl").read_text().splitlines()
    count = token_counter("embedded")  # the recipe's tokenizer and chunk size
    chunks = sum(len(chunk_text(json.loads(line)["text"], 128, count)) for line in documents)
    out, manifest = run_shipped(server, tmp_path, "doc_qa", DOC_QA_SCRIPT)
    assert server.stats()["requests"] == chunks + 1  # a request per chunk, and one re-ask
    assert by_step(manifest)["doc_qa"]["rows_dropped"] == {
        "answer_not_in_chunk": 1,  # Eiffel's 1925
        "evidence_not_in_chunk": 1 + chunks - 3,  # Eiffel's 330 metres, and every other chunk's pair
    }
    rows = read_jsonl(out / "data.jsonl")
    assert [(row["id"], row["instruction"], row["response"]) for row in rows] == [
        ("0#0-q0", "Who designed the Eiffel Tower?", "Gustave Eiffel"),
        ("1#0-q0", "What is the Great Wall of China made of?", "stone, brick, tamped earth, wood"),
        ("2#0-q0", "Who commissioned the Taj Mahal?", "Shah Jahan"),
        ("2#0-q1", "In which city is the Taj Mahal?", "Agra"),
    ]
    assert manifest["rows"] == 4 and read_jsonl(out / "failures.jsonl") == []
    for row, document in zip(rows, [documents[0], documents[1], documents[2], documents[2]], strict=True):
        text = json.loads(document)
        assert row["context"] == text["text"] and row["title"] == text["title"]
        assert row["doc_id"] == row["chunk_id"].split("#")[0]
        assert row["context"][row["evidence_start"] : row["evidence_end"]] == row["evidence"]
        assert row["messages"][0]["role"] == "user" and row["context"] in row["messages"][0]["content"]
        assert row["instruction"] in row["messages"][0]["content"]
        assert row["messages"][1] == {"role": "assistant", "content": row["response"]}


RATIONALE_SCRIPT = [
    {"match": "^Sam has 3 apples", "reply": "Sam has 3 apples and buys 4 more: 3 + 4 = 7.\nFinal answer: 7"},
    {"match": "^A train travels", "reply": "60 km each hour: 60 + 3 = 63 km.\nFinal answer: 63"},  # wrong
    {"match": "^A box holds 12 pencils", "reply": "5 boxes of 12 pencils make 60 pencils."},  # no final line
    {"match": "^Your answer could not be used", "reply": "5 x 12 = 60.\nFinal answer: 60"},  # the re-ask
    {"match": "^Ana pays", "reply": "20 - 13 = 7.\n**Final answer:** $7."},
    {"match": "^How many days", "reply": "Each week has 7 days, 3 x 7 = 21.\nFinal answer: 21"},
    {"match": "^24 sweets", "reply": "24 / 6 = 4.\nFinal answer: 4"},
    {"match": "^How many legs", "reply": "Each dog has 4 legs, 4 x 4 = 16.\nFinal answer: 16"},
    {"match": "^How many minutes", "reply": "An hour has 60 minutes, 2 x 60 = 120.\nFinal answer: 120"},
]  # fmt: skip


def test_rationale_recipe(tmp_path: Path, server):
    out, manifest = run_shipped(server, tmp_path, "rationale", RATIONALE_SCRIPT)
    assert by_step(manifest)["rationale"]["rows_dropped"] == {"wrong_answer": 1}
    assert server.stats()["requests"] == 8 * 2 + 2  # two samples a problem; both pencil answers re-asked
    rows = {row["id"]: row for row in read_jsonl(out / "data.jsonl")}
    assert set(rows) == {"apples", "pencils", "change", "week", "share", "legs", "minutes"}
    assert manifest["rows"] == 7 and read_jsonl(out / "failures.jsonl") == []
    apples = rows["apples"]
    assert (apples["rationale"], apples["answer"]) == (
        "Sam has 3 apples and buys 4 more: 3 + 4 = 7.",
        "7",
    )
    assert (
        rows["pencils"]["answer"] == "60" and rows["change"]["answer"] == "$7."
    )  # re-asked; normalised to 7
    system = "You are a patient teacher. Explain each step so that a ten-year-old could follow it."
    for row_id, row in rows.items():
        assert row["agreement"] == 1.0 and row["system"] == system, row_id
        assert row["rationale"].strip() and row["answer_gold"] in row["response"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][0]["content"] == system and row["messages"][2]["content"] == row["response"]
        assert row["messages"][1]["content"].startswith(row["instruction"])
