"""Every domain recipe end to end at the smallest scale, on the local server with scripted answers.

One entry of CASES per recipe: the server's script (regex on the last user message -> a reply
shaped like a real teacher's), `--set` overrides that cut the recipe down, the columns every output
row must have, the funnel the manifest must show, and optionally a check of its own. To cover a
new recipe, add an entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import read_jsonl

from synthkd.cli import main
from synthkd.shipped import shipped_root
from synthkd.testing.fake_openai import FakeOpenAIServer

Funnel = list[tuple[str, int, int, dict[str, int]]]  # (step, rows_in, rows_out, rows_dropped)


@dataclass
class Case:
    script: list[dict[str, str]]  # FakeOpenAIServer rules: the first whose `match` is found answers
    funnel: Funnel
    columns: set[str]  # every output row has these (besides id and messages)
    overrides: list[str] = field(default_factory=list)  # `--set` values, beyond pointing at the server
    train: bool = False  # run the recipe's train: section too
    check: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None  # (rows, manifest)


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
    columns={"instruction", "system", "prompt", "response", "finish_reason"},
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

CASES: dict[str, Case] = {
    "recipes/medical/qa.yaml": MEDICAL,
    "recipes/law/doc_qa.yaml": LAW,
    "recipes/science/explain.yaml": SCIENCE,
    "recipes/finance/numerical.yaml": FINANCE,
}


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_domain_recipe_end_to_end(recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    case = CASES[recipe]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "run"
    with FakeOpenAIServer(script=case.script) as server:
        args = ["run", recipe, "--output", str(out), "--set", f"teacher.base_url={server.base_url}"]
        for override in ["teacher.api_key_env=null", *case.overrides]:
            args += ["--set", override]
        assert main(args + ([] if case.train else ["--no-train"])) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = [(s["step"], s["rows_in"], s["rows_out"], s["rows_dropped"]) for s in manifest["steps"]]
    assert funnel == case.funnel
    rows = read_jsonl(out / "data.jsonl")
    assert rows and len(rows) == case.funnel[-1][2]
    from datasets import load_from_disk

    dataset = load_from_disk(str(out / "dataset"))
    assert dataset.num_rows == len(rows)
    assert case.columns | {"id", "messages"} <= set(dataset.column_names)
    assert all(row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"] for row in rows)
    if case.check is not None:
        case.check(rows, manifest)


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
