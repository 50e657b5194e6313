"""Every domain recipe end to end at the smallest scale, on the local server with scripted answers.

One entry of CASES per recipe: the server's script (regex on the last user message -> a reply
shaped like a real teacher's), `--set` overrides that cut the recipe down, the columns every output
row must have, the funnel the manifest must show, and optionally a check of its own. To cover a
new recipe, add an entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import read_jsonl
from tiny_model import build_tiny_model

from synthkd.cli import main
from synthkd.shipped import shipped_root
from synthkd.testing.fake_openai import FakeOpenAIServer

Funnel = list[tuple[str, int, int, dict[str, int]]]  # (step, rows_in, rows_out, rows_dropped)


@dataclass
class Case:
    script: list[dict[str, str]]  # FakeOpenAIServer rules: the first whose `match` is found answers
    funnel: Funnel
    columns: set[str]  # every output row has these (besides id, and messages unless `messages` is False)
    overrides: list[str] = field(default_factory=list)  # `--set` values, beyond pointing at the server
    # Run the recipe's train: section too, on the tiny model of tests/tiny_model.py ("{student}" in an
    # override is its folder), with `student_template` as its chat template when given.
    train: bool = False
    student_template: str | None = None
    messages: bool = True  # rows are SFT conversations ending in the teacher's answer (else e.g. DPO pairs)
    check: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None  # (rows, manifest)
    check_run: Callable[[Path], None] | None = None  # the run folder (e.g. the student's eval.json)


def aspects(accuracy: int, safety: int, helpfulness: int) -> str:
    scores = {"accuracy": accuracy, "safety": safety, "helpfulness": helpfulness}
    return json.dumps({k: {"score": v, "justification": f"{k} {v}"} for k, v in scores.items()})


MEDICAL_JUDGE = "(?s)clinical safety reviewer.*Response:"
MEDICAL = Case(
    script=[
        {  # self_instruct: seed topics in, new questions out (the third is a near-duplicate)
            "match": "Write 4 new clinical questions",
            "reply": "Task 8: What are the first-line investigations for a patient with new-onset atrial "
            "fibrillation?\nTask 9: How should an adult take ibuprofen for acute low back pain?\n"
            "Task 10: What are the first line investigations for a patient with new onset atrial "
            "fibrillation?\nTask 11: Which symptoms in a pregnant woman with a urinary tract infection "
            "need same-day review?",
        },
        # Planted unsafe dosing that a lenient judge still finds accurate and helpful: the mean (7)
        # passes min_score; min_aspect_scores drops it on safety.
        {"match": MEDICAL_JUDGE + ".*800 mg", "reply": aspects(9, 3, 9)},
        {"match": MEDICAL_JUDGE, "reply": aspects(9, 9, 8)},
        {
            "match": "first-line investigations",
            "reply": "A 12-lead ECG confirms the rhythm; bloods look for causes such as thyroid disease; "
            "stroke risk is scored before deciding on anticoagulation. Anyone unstable needs emergency "
            "care.\nFinal answer: Confirm with an ECG, check thyroid function, electrolytes and a blood "
            "count, assess stroke and bleeding risk, and refer urgently if the patient is unstable.",
        },
        {
            "match": "ibuprofen",
            "reply": "Ibuprofen reduces inflammation and pain.\nFinal answer: Take 800 mg of ibuprofen "
            "three times a day until the pain goes away.",
        },
        {
            "match": "pregnant woman",
            "reply": "Urinary infection in pregnancy can progress to kidney infection.\nFinal answer: "
            "Fever, loin pain, vomiting or contractions need same-day review; any suspected infection "
            "in pregnancy should be assessed by a doctor or midwife promptly.",
        },
    ],
    overrides=["steps.1.num_instructions=3", "steps.1.requests_per_round=1", "steps.1.new_per_request=4"],
    columns={"instruction", "rationale", "answer", "response", "system", "score", "aspect_scores"},
    funnel=[
        ("load", 0, 16, {}),
        ("self_instruct", 16, 3, {"near_duplicate": 1}),
        ("rationale", 3, 3, {}),
        ("judge", 3, 2, {"below_min_safety": 1}),  # the dose without caveats
    ],
)


def _pairs(*pairs: tuple[str, str, str]) -> str:
    return json.dumps([{"question": q, "answer": a, "evidence": e} for q, a, e in pairs])


CONFIDENTIALITY = "How long do the confidentiality obligations last after the agreement ends?"
LAW = Case(
    script=[  # one rule per chunk of the three sample documents, matched by a clause in it
        {
            "match": "5\\. Return of information",
            "reply": _pairs(
                (
                    "Within how many business days must the receiving Party under the Mutual "
                    "Non-Disclosure Agreement return Confidential Information after a written request?",
                    "Within ten business days.",
                    "5. Return of information. Within ten business days of a written request, the "
                    "receiving Party shall return or destroy all Confidential Information",
                )
            ),
        },
        {
            "match": "6\\. Duration\\. This Agreement lasts",
            "reply": _pairs(
                (
                    "How long does the Mutual Non-Disclosure Agreement last?",
                    "Two years from the date of signature.",
                    "6. Duration. This Agreement lasts for two years from the date of signature",
                ),
                (
                    CONFIDENTIALITY,
                    "Five years.",
                    "the obligations in clause 3 continue for five years after the Agreement ends",
                ),
            ),
        },
        {
            "match": "3\\.1 The Customer shall pay",
            "reply": _pairs(
                (
                    "What monthly fee does Bluebell Bakery pay under the Data Services Agreement?",
                    "2,400 euros per month.",
                    "3.1 The Customer shall pay a fee of 2,400 euros per month.",
                ),
                (
                    "When must the Customer pay each invoice under the Data Services Agreement?",
                    "Within thirty days of the invoice date.",
                    "the Customer shall pay each invoice within thirty days of the invoice date.",
                ),
            ),
        },
        {
            "match": "8\\.1 Either party may end",
            "reply": _pairs(
                (
                    "How much notice must a party give to end the Data Services Agreement at any time?",
                    "Sixty days' written notice.",
                    "8.1 Either party may end this Agreement at any time by giving sixty days' written "
                    "notice.",
                ),
                (  # the same question as for the NDA: a duplicate the dedup step drops
                    CONFIDENTIALITY,
                    "Three years.",
                    "5. Confidentiality. Each party shall keep the other party's confidential information "
                    "secret during this Agreement and for three years after it ends.",
                ),
            ),
        },
        {
            "match": "Section 4\\. Protection of deposits",
            "reply": _pairs(
                (
                    "What is the largest deposit a landlord may accept under the Residential Tenancy "
                    "Deposits Act?",
                    "Two months' rent.",
                    "Section 3. Maximum deposit. A landlord shall not require or accept a deposit that is "
                    "greater than two months' rent.",
                ),
                (
                    "Within how many days must a landlord lodge a deposit with an approved scheme?",
                    "Within thirty days of receiving it.",
                    "(1) A landlord who receives a deposit shall lodge it with an approved scheme within "
                    "thirty days of receiving it.",
                ),
                (  # a citation that is not in the document
                    "Can a landlord charge a fee for lodging the deposit?",
                    "No.",
                    "Section 9. No landlord may charge a fee for lodging a deposit.",
                ),
            ),
        },
        {
            "match": "Section 7\\. Penalties",
            "reply": _pairs(
                (
                    "When must a landlord return the deposit under the Residential Tenancy Deposits Act?",
                    "Within fourteen days after the tenancy ends.",
                    "(1) The landlord shall return the deposit within fourteen days after the tenancy ends.",
                ),
                (  # an answer the cited clause does not support
                    "What can a tenant claim when a deposit is returned late?",
                    "Statutory interest plus legal costs.",
                    "(1) The landlord shall return the deposit within fourteen days after the tenancy ends.",
                ),
            ),
        },
    ],
    columns={"instruction", "response", "context", "evidence", "evidence_start", "evidence_end", "doc_id"},
    funnel=[
        ("doc_qa", 0, 10, {"evidence_not_in_chunk": 1, "answer_not_in_chunk": 1}),
        ("dedup", 10, 9, {"duplicate_exact": 1}),
    ],
)


def check_law(rows: list[dict[str, Any]], _manifest: dict[str, Any]) -> None:
    for row in rows:  # the citation span is kept, and is where its offsets say
        assert row["context"][row["evidence_start"] : row["evidence_end"]] == row["evidence"]
        assert row["evidence"] in (shipped_root() / "recipes/law/documents" / row["doc_id"]).read_text()
    assert {row["doc_id"] for row in rows} == {
        "mutual_nda.md",
        "services_agreement.md",
        "tenancy_deposits_act.md",
    }


LAW.check = check_law

SCIENCE = Case(
    script=[
        {
            "match": "Why does ice float",
            "reply": "I'm sorry, but I can't help with that request. Please ask a teacher or look it up in a "
            "science book instead.",
        },
        {"match": "How does a rainbow form", "reply": "Light bends."},
        {
            "match": ".",
            "reply": "Here is the explanation. The {word} effect comes first: energy moves from one "
            "place to another, and the way it moves explains what we observe. Step by step, each part "
            "follows from the one before, which is why the result is the same every time.",
        },
    ],
    overrides=["steps.0.limit=6"],
    columns={"instruction", "system", "teacher_prompt", "response", "finish_reason"},
    funnel=[("load", 0, 6, {}), ("label", 6, 6, {}), ("filter", 6, 4, {"refusal": 1, "too_short": 1})],
)


def check_science(rows: list[dict[str, Any]], _manifest: dict[str, Any]) -> None:
    recipe = yaml.safe_load((shipped_root() / "recipes/science/explain.yaml").read_text())
    systems = recipe["steps"][1]["systems"]
    assert all(row["system"] in systems and row["messages"][0]["content"] == row["system"] for row in rows)
    assert len({row["system"] for row in rows}) >= 3  # levels of detail vary from row to row


SCIENCE.check = check_science

FIN_EXPR = "(?s){}.*Expression: <the expression>"
FIN_ANSWER = "(?s){}.*Final answer: <the answer>"
FINANCE = Case(
    script=[
        {"match": FIN_EXPR.format("gross margin"), "reply": "Expression: (4800 - 3120) / 4800 * 100"},
        {"match": FIN_EXPR.format("net income"), "reply": "Expression: 4800 - 3120 - 1050 - 90 - 135"},
        {"match": FIN_EXPR.format("current ratio"), "reply": "Expression: 1300 / 650"},
        {"match": FIN_EXPR.format("debt-to-equity"), "reply": "Expression: round((170 + 900) / 1750, 2)"},
        {
            "match": FIN_ANSWER.format("gross margin"),
            "reply": "Gross profit is 4,800 - 3,120 = 1,680; 1,680 / 4,800 = 0.35.\nFinal answer: 35%",
        },
        {  # planted: interest and tax forgotten; every sample agrees, the recomputation does not
            "match": FIN_ANSWER.format("net income"),
            "reply": "Net income is revenue less costs: 4,800 - 3,120 - 1,050 = 630.\nFinal answer: 630",
        },
        {
            "match": FIN_ANSWER.format("current ratio"),
            "reply": "Current assets 1,300 over current liabilities 650.\nFinal answer: 2.0",
        },
        {
            "match": FIN_ANSWER.format("increase or decrease"),
            "reply": "Cash went from 14.0 to 13.0 million dollars.\nFinal answer: It decreased.",
        },
        {
            "match": FIN_ANSWER.format("debt-to-equity"),
            "reply": "Debt is 170 + 900 = 1,070; 1,070 / 1,750 = 0.611.\nFinal answer: 0.61",
        },
    ],
    overrides=["steps.0.limit=5", "steps.1.n=3"],
    columns={
        "input",
        "instruction",
        "rationale",
        "answer",
        "agreement",
        "response",
        "expression",
        "recomputed",
    },
    funnel=[("load", 0, 5, {}), ("rationale", 5, 5, {}), ("recompute", 5, 4, {"recompute_mismatch": 1})],
)


def check_finance(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {"gross-margin", "current-ratio", "cash-position", "debt-to-equity"}
    assert by_id["gross-margin"]["recomputed"] == 35 and by_id["cash-position"]["recomputed"] is None
    details = manifest["steps"][2]["details"]
    assert (details["checked"], details["matched"], details["not_numeric"]) == (4, 3, 1)
    assert details["mismatches"][0]["id"] == "net-income" and details["mismatches"][0]["recomputed"] == 405


FINANCE.check = check_finance

TOOL_REQUEST = "(?s)Write one realistic message.*tool `{}`"
TOOL_CALLS = "(?s)User request:\n{}.*Decide which tool calls"
TOOL_RESULTS = "(?s)User request:\n{}.*The assistant made these calls"
TOOL_ANSWER = "(?s)A user wrote:\n{}.*To answer, you called tools"
TOOL_USE = Case(
    script=[
        # Requests, one per tool in turn (num_requests=4), as a chat model writes them.
        {"match": TOOL_REQUEST.format("get_weather"), "reply": "Will I need an umbrella in Lisbon tomorrow?"},
        {"match": TOOL_REQUEST.format("convert_currency"), "reply": '"How many yen do I get for 250 euros?"'},
        {
            "match": TOOL_REQUEST.format("list_calendar_events"),
            "reply": "What's on my calendar on Friday 14 March 2025?",
        },
        {
            "match": TOOL_REQUEST.format("create_calendar_event"),
            "reply": "Set up a 45-minute 'Q2 roadmap' review on 18 March 2025 at 2:30 pm with "
            "ana@example.com and li@example.com.",
        },
        # Calls: fenced JSON, OpenAI's wire form with arguments as a JSON string, and a planted invalid
        # call (a currency name where the schema wants an ISO code) whose re-ask is invalid again.
        {
            "match": TOOL_CALLS.format("Will I need an umbrella"),
            "reply": '```json\n[{"name": "get_weather", "arguments": {"city": "Lisbon, Portugal", '
            '"days_ahead": 1}}]\n```',
        },
        {
            "match": TOOL_CALLS.format("How many yen"),
            "reply": '[{"name": "convert_currency", "arguments": {"amount": 250, "from_currency": "euros", '
            '"to_currency": "JPY"}}]',
        },
        {
            "match": "'euros' does not match",
            "reply": '[{"name": "convert_currency", "arguments": {"amount": "250", "from_currency": "EUR", '
            '"to_currency": "JPY"}}]',
        },
        {
            "match": TOOL_CALLS.format("What's on my calendar"),
            "reply": '[{"name": "list_calendar_events", "arguments": {"date": "2025-03-14"}}]',
        },
        {
            "match": TOOL_CALLS.format("Set up a 45-minute"),
            "reply": json.dumps(
                [
                    {
                        "type": "function",
                        "function": {
                            "name": "create_calendar_event",
                            "arguments": json.dumps(
                                {
                                    "title": "Q2 roadmap review",
                                    "date": "2025-03-18",
                                    "start_time": "14:30",
                                    "duration_minutes": 45,
                                    "attendees": ["ana@example.com", "li@example.com"],
                                }
                            ),
                        },
                    }
                ]
            ),
        },
        {
            "match": TOOL_RESULTS.format("Will I need an umbrella"),
            "reply": '[{"city": "Lisbon", "date": "2025-03-15", "conditions": "rain showers", '
            '"temperature": 16, "unit": "celsius", "precipitation_chance": 0.8}]',
        },
        {
            "match": TOOL_RESULTS.format("What's on my calendar"),
            "reply": '```json\n[{"date": "2025-03-14", "events": [{"title": "Dentist", '
            '"start_time": "09:00", "duration_minutes": 30}, {"title": "Team lunch", "start_time": "12:30", '
            '"duration_minutes": 60, "location": "Porto"}]}]\n```',
        },
        # A second round (max_rounds: 3): the lunch is outdoors in Porto, so the weather there, a call
        # that needs the first round's result; then nothing more. The other conversations stop at once.
        {"match": "(?s)What's on my calendar.*already called tools.*get_weather\\(", "reply": "[]"},
        {
            "match": '(?s)What\'s on my calendar.*"location": "Porto".*Decide whether more',
            "reply": '[{"name": "get_weather", "arguments": {"city": "Porto, Portugal"}}]',
        },
        {"match": "Decide whether more", "reply": "[]"},
        {
            "match": "(?s)What's on my calendar.*Earlier calls and what they returned.*Then the",
            "reply": '{"city": "Porto", "conditions": "sunny", "temperature": 18}',
        },
        {
            "match": TOOL_RESULTS.format("Set up a 45-minute"),
            "reply": '{"event_id": "evt_8842", "status": "created", "invitations_sent": 2}',
        },
        {
            "match": TOOL_ANSWER.format("Will I need an umbrella"),
            "reply": "Yes, take one: Lisbon expects rain showers tomorrow (80% chance) and about 16 °C.",
        },
        {
            "match": TOOL_ANSWER.format("What's on my calendar"),
            "reply": "On Friday 14 March you have the dentist at 9:00 (30 minutes) and a team lunch at "
            "12:30.",
        },
        {
            "match": TOOL_ANSWER.format("Set up a 45-minute"),
            "reply": "Done: 'Q2 roadmap review' is in your calendar on 18 March at 14:30 for 45 minutes, and "
            "Ana and Li have been invited.",
        },
    ],
    overrides=[
        "steps.0.num_requests=4",
        "train.student={student}",
        "train.args.max_steps=1",
        "train.args.per_device_train_batch_size=2",
        "train.eval_max_new_tokens=4",
    ],
    train=True,
    # Renders the tool schemas and calls (as tests/test_tool_calls.py does), and refuses to render a
    # conversation without its tools: training and evaluation must pass the `tools` column through.
    student_template=(
        "{% if not tools %}{{ raise_exception('this template needs the tools') }}{% endif %}"
        "<|im_start|>system\nTools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}<|im_end|>\n"
        "{%- for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{%- if message.get('tool_calls') %}{% for call in message['tool_calls'] %}"
        "<tool_call>{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} "
        "| tojson }}</tool_call>{% endfor %}"
        "{%- elif message['role'] == 'tool' %}<tool_response>{{ message['content'] }}</tool_response>"
        "{%- else %}{{ message['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    columns={"request", "tools", "response", "tools_called"},
    funnel=[("tool_calls", 0, 3, {}), ("filter", 3, 3, {})],
)


def check_tool_use(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    tools = json.loads((shipped_root() / "recipes/tool_use/tools.json").read_text())
    assert all(json.loads(row["tools"]) == tools for row in rows)
    assert [row["tools_called"] for row in rows] == [
        ["get_weather"],
        ["list_calendar_events", "get_weather"],
        ["create_calendar_event"],
    ]
    calendar = rows[1]["messages"]  # two rounds: the weather call needed the event's location
    assert [m["role"] for m in calendar] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert calendar[4]["tool_calls"][0]["function"]["arguments"] == {"city": "Porto, Portugal"}
    assert manifest["steps"][0]["details"]["conversations_by_rounds"] == {"1": 2, "2": 1}
    event = rows[2]["messages"]
    assert [m["role"] for m in event] == ["system", "user", "assistant", "tool", "assistant"]
    assert event[2]["tool_calls"][0]["function"]["arguments"]["attendees"] == [
        "ana@example.com",
        "li@example.com",
    ]
    assert json.loads(event[3]["content"])["event_id"] == "evt_8842"


def check_tool_use_run(out: Path) -> None:
    [failure] = read_jsonl(out / "failures.jsonl")  # the planted invalid call, re-asked once
    assert (failure["id"], failure["reason"], failure["attempts"]) == ("tool-0001", "invalid_tool_call", 2)
    assert "'250' is not of type 'number'" in failure["error"]
    evaluation = json.loads((out / "student" / "eval.json").read_text())
    # The rows trained in SFTTrainer and were evaluated through a template that needs their tools.
    assert evaluation["method"] == "sft" and len(evaluation["train_losses"]) == 1
    assert evaluation["held_out_rows"] == 3 and evaluation["after"]["loss"] > 0


TOOL_USE.check = check_tool_use
TOOL_USE.check_run = check_tool_use_run

CLASSIFY = "(?s)Classify the text below.*Text:\n{}"
CLASSIFICATION = Case(
    script=[  # the first 6 tickets; replies as a chat model gives them, decorated or cased differently
        {"match": CLASSIFY.format("I was charged twice"), "reply": "Label: billing"},
        {"match": CLASSIFY.format("My parcel was supposed"), "reply": "**Label:** Shipping"},
        {"match": CLASSIFY.format("I can't log in"), "reply": "Label: account"},
        {"match": CLASSIFY.format("The jacket is too small"), "reply": "Label: returns."},
        {"match": CLASSIFY.format("Does the 65 W charger"), "reply": "Label: product"},
        # planted: a label outside the set, re-asked with the error, and outside it again
        {"match": CLASSIFY.format("Just wanted to say"), "reply": "Label: praise"},
        {"match": "'praise' is not one of the labels", "reply": "Label: compliment"},
    ],
    overrides=[
        "steps.0.limit=6",
        "train.student={student}",
        "train.args.max_steps=2",
        "train.args.per_device_train_batch_size=2",
        "train.eval_max_new_tokens=4",
    ],
    train=True,
    columns={"text", "gold", "label", "teacher_prompt", "response"},
    funnel=[("load", 0, 6, {}), ("classify", 6, 5, {})],
)


def check_classification(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    from synthkd.training.evaluation import SHORT_ANSWER_WORDS

    recipe = yaml.safe_load((shipped_root() / "recipes/classification/intents.yaml").read_text())
    labels = list(recipe["steps"][1]["labels"])
    # Every label is short enough that the evaluation compares the student's answer exactly: its
    # "agreement with teacher" is then accuracy against the teacher's labels.
    assert all(len(label.split()) <= SHORT_ANSWER_WORDS for label in labels)
    assert all(row["response"] == row["label"] and row["label"] in labels for row in rows)
    assert rows[1]["label"] == "shipping"  # '**Label:** Shipping' as spelled in the recipe
    details = manifest["steps"][1]["details"]
    assert details["label_counts"] == {
        "billing": 1,
        "shipping": 1,
        "account": 1,
        "returns": 1,
        "product": 1,
        "other": 0,
    }
    # t06's label failed: it counts as wrong.
    assert (details["gold_rows"], details["gold_rows_failed"], details["teacher_accuracy"]) == (6, 1, 0.8333)


def check_classification_run(out: Path) -> None:
    [failure] = read_jsonl(out / "failures.jsonl")
    assert (failure["id"], failure["reason"], failure["attempts"]) == ("t06", "invalid_label", 2)
    assert failure["error"].startswith("'compliment' is not one of the labels")
    evaluation = json.loads((out / "student" / "eval.json").read_text())
    assert evaluation["method"] == "sft" and len(evaluation["train_losses"]) == 2
    assert evaluation["held_out_rows"] == 1  # 20% of the 5 labelled rows, rounded up
    for stage in ("before", "after"):  # accuracy against the teacher's labels on the held-out row
        assert evaluation[stage]["accuracy"] == evaluation[stage]["agreement"] in (0.0, 1.0)
    assert "| accuracy against the teacher" in (out / "student" / "README.md").read_text()


CLASSIFICATION.check = check_classification
CLASSIFICATION.check_run = check_classification_run

CRITIQUE = "(?s)Critique the response against.*Response:\n"
REVISE = "(?s)and a critique of that response.*Response:\n"
ORIGINALS = {  # the label step's answers: harmful compliance, an over-refusal, a good answer, a risky one
    "ex-instagram": "You can try the 'Forgot password?' link with her email address; if you can still read "
    "her email, the reset code will arrive there. Otherwise try passwords she is likely to use, such as pet "
    "names and birthdays.",
    "kill-python": "I'm sorry, but I can't help with killing processes, as that could disrupt your system.",
    "rice": "Cool it quickly (within an hour), then refrigerate it in a shallow, covered container and eat "
    "it within a day; reheat it until it is steaming hot, and only once. Rice can carry Bacillus cereus "
    "spores, which survive cooking and multiply at room temperature.",
    "sleeping-pills": "Sleeping pills often make people drowsy, so letting her sleep it off is usually fine. "
    "Check on her in the morning.",
}
REVISIONS = {
    "ex-instagram": "I can't help you get into someone else's account: using it without her permission is "
    "illegal in most places and a breach of her privacy. If you need something back from her, ask her "
    "directly or through a friend; if she posted something about you, use Instagram's reporting tools.",
    "kill-python": "Use `pkill`: `pkill -f python` ends every process whose command line contains "
    '"python" (with `sudo` for other users\' processes). List them first with `pgrep -af python`. '
    "`pkill` sends SIGTERM, so programs can shut down cleanly; use `pkill -9 -f python` only for ones that "
    "do not stop. On a server this also stops system services written in Python, so check the list.",
    "sleeping-pills": "No, do not let her sleep it off. Call emergency services (112 or 911) now: a large "
    "dose of sleeping pills can slow breathing dangerously. While you wait, stay with her, keep her awake "
    "if you can, lay her on her side if she becomes unresponsive, and keep the packet for the paramedics.",
}
ALIGNMENT = Case(
    script=[
        # label: the request alone is the user message (critiques quote it too, so anchor at the start)
        {"match": "^How can I get into my ex", "reply": ORIGINALS["ex-instagram"]},
        {"match": "^How do I kill all the Python", "reply": ORIGINALS["kill-python"]},
        {"match": "^What's the safest way to store", "reply": ORIGINALS["rice"]},
        {"match": "^My friend took a lot of sleeping pills", "reply": ORIGINALS["sleeping-pills"]},
        {
            "match": CRITIQUE + "You can try the 'Forgot password",
            "reply": "1. The response helps the user break into another person's account, which is "
            "unauthorised access and could cause serious harm; it should decline and offer legitimate "
            "options.\n2. Not applicable.\n3. Not applicable.\n4. Accurate, but that is the problem.\n"
            "5. Not applicable.\n6. It helps with a harmful goal.\n\nNeeds revision: Yes",
        },
        {
            "match": CRITIQUE + "I'm sorry, but I can't help with killing",
            "reply": "1. Nothing harmful is asked.\n2. **Not followed.** Ending processes on one's own "
            "server is routine administration; refusing is unhelpful. Explain how to do it safely.\n"
            "3.-5. Not applicable.\n6. Not followed: the question is not answered.\n\n"
            "**Needs revision:** yes",
        },
        {
            "match": CRITIQUE + "Cool it quickly",
            "reply": "1.-3. Not applicable.\n4. Accurate, and the reason is explained.\n5. Not applicable.\n"
            "6. Answers the question completely.\n\nNeeds revision: no",
        },
        {
            "match": CRITIQUE + "Sleeping pills often make",
            "reply": "3. Not followed: a possible overdose of sleeping pills is an emergency; the response "
            "must say to call emergency services now and give immediate steps.\n4. It gives false "
            "reassurance.\n\nNeeds revision: yes",
        },
        # round 2: every revision passes its critique
        *(
            {
                "match": CRITIQUE + re.escape(revision[:30]),
                "reply": "All principles are followed.\nNeeds revision: no",
            }
            for revision in REVISIONS.values()
        ),
        {"match": REVISE + "You can try the 'Forgot password", "reply": REVISIONS["ex-instagram"]},
        {
            "match": REVISE + "I'm sorry, but I can't help with killing",
            "reply": "Revised response:\n" + REVISIONS["kill-python"],
        },
        {"match": REVISE + "Sleeping pills often make", "reply": REVISIONS["sleeping-pills"]},
    ],
    overrides=[
        "steps.0.limit=4",
        "train.student={student}",
        "train.args.max_steps=2",
        "train.args.per_device_train_batch_size=2",
        "train.eval_max_new_tokens=4",
    ],
    train=True,
    messages=False,  # DPO pairs
    columns={"instruction", "prompt", "chosen", "rejected", "critique", "revision", "revised"},
    funnel=[
        ("load", 0, 4, {}),
        ("label", 4, 4, {}),
        ("critique_revise", 4, 3, {"no_problem_found": 1}),  # the rice answer needed nothing
    ],
)


def check_alignment(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    assert [row["id"] for row in rows] == ["ex-instagram", "kill-python", "sleeping-pills"]
    for row in rows:
        assert row["prompt"] == [{"role": "user", "content": row["instruction"]}]
        assert row["chosen"] == [{"role": "assistant", "content": REVISIONS[row["id"]]}]
        assert row["rejected"] == [{"role": "assistant", "content": ORIGINALS[row["id"]]}]
        assert row["revised"] and row["revision"] == REVISIONS[row["id"]] and row["critique"]
    details = manifest["steps"][2]["details"]
    assert details["revised"] == 3 and details["revisions_per_round"] == [3, 0]


def check_alignment_run(out: Path) -> None:
    evaluation = json.loads((out / "student" / "eval.json").read_text())
    assert evaluation["method"] == "dpo" and len(evaluation["train_losses"]) == 2
    assert evaluation["held_out_rows"] == 3 and evaluation["after"]["loss"] > 0


ALIGNMENT.check = check_alignment
ALIGNMENT.check_run = check_alignment_run


def fenced(prose: str, code: str) -> str:
    return f"{prose}\n\n```python\n{code}```\n"


EVOLVED = {  # what the teacher makes of the first four seed tasks in round 1
    "is_palindrome": "Write a Python function `is_palindrome(s: str) -> bool` that ignores case, spaces and "
    "punctuation when deciding whether `s` reads the same forwards and backwards; an empty string counts as "
    "a palindrome.",
    "is_leap_year": "Write a Python function `is_leap_year(year: int) -> bool` that follows the Gregorian "
    "calendar's rules, including the exceptions for century years, and raises ValueError for years before "
    "1583.",
    "first_index": "Write a Python function `first_index(items: list[int], target: int) -> int` that uses "
    "binary search to return the index of the first occurrence of `target` in a sorted list that may contain "
    "duplicates, or -1 if it is absent.",
    "top_words": "Write a Python function `top_words(text: str, n: int) -> list[str]` that returns the `n` "
    "most frequent words of a text, lowercased and without punctuation, ties in alphabetical order; "
    "remember earlier results between calls so that repeated texts are fast.",
}
CODE_ANSWERS = {
    "is_palindrome": fenced(  # right
        "Keep only the letters and digits of the string, lowercased, and compare that sequence with its "
        "reverse. An empty string leaves an empty sequence, which equals its reverse, so it counts as a "
        "palindrome.",
        "def is_palindrome(s: str) -> bool:\n    cleaned = [c.lower() for c in s if c.isalnum()]\n"
        "    return cleaned == cleaned[::-1]\n",
    ),
    "is_leap_year": fenced(  # wrong: forgets that years divisible by 400 are leap years
        "A year is a leap year when it is divisible by 4, except for century years. Years before the "
        "Gregorian reform of 1582 are rejected with a ValueError.",
        "def is_leap_year(year: int) -> bool:\n    if year < 1583:\n"
        '        raise ValueError("the Gregorian calendar starts in 1583")\n'
        "    return year % 4 == 0 and year % 100 != 0\n",
    ),
    "first_index": fenced(  # loops forever: `lo = mid` never moves past a smaller element
        "Binary search keeps the half that can still hold the first occurrence: when the middle element is "
        "smaller than the target the answer is to its right, otherwise at it or to its left.",
        "def first_index(items: list[int], target: int) -> int:\n    lo, hi = 0, len(items) - 1\n"
        "    while lo < hi:\n        mid = (lo + hi) // 2\n        if items[mid] < target:\n"
        "            lo = mid\n        else:\n            hi = mid\n"
        "    return lo if items and items[lo] == target else -1\n",
    ),
    "top_words": fenced(  # writes its cache outside the sandbox's folder
        "Count the words with a Counter after lowercasing and stripping punctuation, sort by descending "
        "count and then alphabetically, and keep the results in a JSON file so that repeated texts are "
        "answered from the cache.",
        "import json\nimport os\nimport re\nfrom collections import Counter\n\n"
        'CACHE_FILE = "/tmp/top_words_cache.json"\n\n\n'
        "def top_words(text: str, n: int) -> list[str]:\n    cache = {}\n"
        "    if os.path.exists(CACHE_FILE):\n        with open(CACHE_FILE) as handle:\n"
        "            cache = json.load(handle)\n"
        '    key = f"{n}:{text}"\n    if key not in cache:\n'
        '        counts = Counter(re.findall(r"[a-z\']+", text.lower()))\n'
        "        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))\n"
        "        cache[key] = [word for word, _ in ranked[:n]]\n"
        '        with open(CACHE_FILE, "w") as handle:\n            json.dump(cache, handle)\n'
        "    return cache[key]\n",
    ),
}
CODE_TESTS = {  # as the teacher writes them: plain asserts or test_ functions in a python block
    "is_palindrome": 'assert is_palindrome("A man, a plan, a canal: Panama")\nassert is_palindrome("")\n'
    'assert not is_palindrome("hello")\n',
    "is_leap_year": "def test_leap_years():\n    assert is_leap_year(2024)\n    assert is_leap_year(2000)\n"
    "    assert not is_leap_year(1900)\n    assert not is_leap_year(2023)\n\n\n"
    "def test_before_the_reform():\n    try:\n        is_leap_year(1500)\n    except ValueError:\n"
    "        pass\n    else:\n        raise AssertionError('expected ValueError')\n",
    "first_index": "assert first_index([1, 2, 2, 3], 2) == 1\nassert first_index([1, 2, 2, 3], 4) == -1\n"
    "assert first_index([], 1) == -1\n",
    "top_words": 'assert top_words("b a b c a b", 2) == ["b", "a"]\n'
    'assert top_words("Hello, hello world!", 1) == ["hello"]\n',
}
CODE = Case(
    script=[
        *(
            {
                "match": f"(?s)^You are checking an answer.*Task:\nWrite a Python function `{name}",
                "reply": f"```python\n{tests}```",
            }
            for name, tests in CODE_TESTS.items()
        ),
        *(  # evol_instruct's rewrite (in depth or, rarer, in breadth) of each seed task
            {
                "match": f"(?s)^(?:Rewrite the instruction below|Write a brand-new instruction).*"
                f"Instruction:\nWrite a Python function `{name}",
                "reply": evolved,
            }
            for name, evolved in EVOLVED.items()
        ),
        # The answers: evol_instruct's own (the evolved task alone) and label's (with the system prompt).
        *({"match": f"^Write a Python function `{name}", "reply": CODE_ANSWERS[name]} for name in EVOLVED),
    ],
    overrides=[
        "steps.0.limit=4",
        "steps.1.rounds=1",
        "steps.1.keep_original=false",
        "steps.4.cpu_seconds=1",
        "steps.4.wall_seconds=3",
    ],
    columns={
        "instruction",
        "parent_id",
        "operation",
        "round",
        "system",
        "teacher_prompt",
        "response",
        "tests",
    },
    funnel=[
        ("load", 0, 4, {}),
        ("evol_instruct", 4, 4, {}),
        ("label", 4, 4, {}),
        ("filter", 4, 4, {}),
        ("code_check", 4, 1, {"sandbox_violation": 1, "tests_failed": 1, "timeout": 1}),
    ],
)


def check_code(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    [row] = rows  # the right answer is kept, with the tests it passed
    assert (row["id"], row["parent_id"], row["round"]) == ("palindrome-r1", "palindrome", 1)
    assert row["instruction"] == EVOLVED["is_palindrome"] and row["response"] == CODE_ANSWERS["is_palindrome"]
    assert row["tests"] == CODE_TESTS["is_palindrome"]
    details = manifest["steps"][4]["details"]
    assert (details["checked"], details["passed"]) == (4, 1)
    dropped = {example["id"]: example for example in details["dropped_examples"]}
    assert {key: example["reason"] for key, example in dropped.items()} == {
        "leap-year-r1": "tests_failed",  # 2000 is a leap year
        "first-index-r1": "timeout",  # stopped by the CPU limit; the run went on
        "top-words-r1": "sandbox_violation",
    }
    assert "AssertionError" in dropped["leap-year-r1"]["detail"]
    assert "/tmp/top_words_cache.json" in dropped["top-words-r1"]["detail"]


CODE.check = check_code

CASES: dict[str, Case] = {
    "recipes/medical/qa.yaml": MEDICAL,
    "recipes/law/doc_qa.yaml": LAW,
    "recipes/science/explain.yaml": SCIENCE,
    "recipes/finance/numerical.yaml": FINANCE,
    "recipes/code/python.yaml": CODE,
    "recipes/tool_use/function_calling.yaml": TOOL_USE,
    "recipes/classification/intents.yaml": CLASSIFICATION,
    "recipes/alignment/constitution.yaml": ALIGNMENT,
}


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_domain_recipe_end_to_end(recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    case = CASES[recipe]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "run"
    student = tmp_path / "student-model"
    if case.train:
        build_tiny_model(student)
        if case.student_template is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(student)
            tokenizer.chat_template = case.student_template
            tokenizer.save_pretrained(student)
    with FakeOpenAIServer(script=case.script) as server:
        args = ["run", recipe, "--output", str(out), "--set", f"teacher.base_url={server.base_url}"]
        for override in ["teacher.api_key_env=null", *case.overrides]:
            args += ["--set", override.replace("{student}", str(student))]
        assert main(args + ([] if case.train else ["--no-train"])) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = [(s["step"], s["rows_in"], s["rows_out"], s["rows_dropped"]) for s in manifest["steps"]]
    assert funnel == case.funnel
    rows = read_jsonl(out / "data.jsonl")
    assert rows and len(rows) == case.funnel[-1][2]
    from datasets import load_from_disk

    dataset = load_from_disk(str(out / "dataset"))
    assert dataset.num_rows == len(rows)
    assert case.columns | {"id"} | ({"messages"} if case.messages else set()) <= set(dataset.column_names)
    if case.messages:
        assert all(
            row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"] for row in rows
        )
    if case.check is not None:
        case.check(rows, manifest)
    if case.check_run is not None:
        case.check_run(out)


def test_label_systems_are_stable_per_row_and_exclusive_with_system(tmp_path: Path, capsys):
    """science's `systems:`: the same row always gets the same system prompt; `system` too is an error."""
    from synthkd.steps.label import LabelStep

    step = LabelStep(step="label", systems=["a", "b", "c"])
    picks = [step.system_for({"id": f"row-{i}"}) for i in range(30)]
    assert picks == [step.system_for({"id": f"row-{i}"}) for i in range(30)] and set(picks) == {"a", "b", "c"}
    (tmp_path / "q.jsonl").write_text('{"instruction": "Why?"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nsteps:\n  - {step: load, path: q.jsonl}\n  - {step: label, system: x, systems: [a, b]}\n"
    )
    assert main(["validate", str(recipe)]) == 2
    assert "r.yaml:4: steps.1.systems: set either system or systems, not both" in capsys.readouterr().err


def test_a_run_that_keeps_no_row_says_there_is_nothing_to_train(tmp_path: Path, capsys):
    """Every label off the set: the run fails (exit code 3) before training, and writes what it got
    beside the output folder; `synthkd train` on that folder stops with one clear message and exit
    code 2 instead of a crash inside `datasets`."""
    out = tmp_path / "run"
    student = build_tiny_model(tmp_path / "student-model")
    with FakeOpenAIServer(script=[{"match": ".", "reply": "Label: praise"}]) as server:
        args = ["run", "recipes/classification/intents.yaml", "--output", str(out)]
        for override in [
            f"teacher.base_url={server.base_url}",
            "teacher.api_key_env=null",
            "steps.0.limit=2",
            f"train.student={student}",
        ]:
            args += ["--set", override]
        assert main(args) == 3
    error = " ".join(capsys.readouterr().err.split())
    assert "the run produced no rows: step 1:classify kept none of 2 (2 failed)" in error
    assert "Traceback" not in error
    from datasets import load_from_disk

    aside = tmp_path / "run.incomplete"
    assert not out.exists() and load_from_disk(str(aside / "dataset")).num_rows == 0
    assert [f["reason"] for f in read_jsonl(aside / "failures.jsonl")] == ["invalid_label"] * 2
    assert not (aside / "student").exists()
    args = ["train", "recipes/classification/intents.yaml", "--output", str(aside)]
    assert main([*args, "--set", f"train.student={student}"]) == 2
    assert "has no rows to train on" in capsys.readouterr().err
