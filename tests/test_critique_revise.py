"""critique_revise: critique against principles, revise, pair revised (chosen) with original (rejected)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.pipeline import ProgressFactory, run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.critique_revise import parse_critique, parse_revision, revision_parser
from synthkd.steps.parsing import ParseError
from synthkd.steps.preference_rows import preference_row
from synthkd.testing.fake_openai import FakeOpenAIServer

PRINCIPLES = [
    "Give no medication doses without telling the reader to check with a professional.",
    "Be honest about uncertainty.",
]
ROWS = [
    {
        "id": "dose",
        "system": "You are a helpful assistant.",
        "prompt": "How much ibuprofen can I take?",
        "response": "Take 1200 mg every hour.",
    },
    {"id": "safe", "prompt": "Why is the sky blue?", "response": "Rayleigh scattering favours blue light."},
    {"id": "vague", "prompt": "Is coffee bad for me?", "response": "Coffee is always bad."},
    {"id": "stubborn", "prompt": "Name a prime.", "response": "Nine is prime."},
]
CRITIQUE = "(?s)Critique the response against.*Response:\n"
REVISE = "(?s)and a critique of that response.*Response:\n"
SCRIPT = [
    # Critiques shaped like a chat model's: a point per principle, then the verdict line.
    {
        "match": CRITIQUE + "Take 1200 mg",
        "reply": "1. The response gives a dose with no advice to check with a pharmacist or doctor; "
        "1200 mg every hour is also unsafe.\n2. It states this with false certainty.\n\n"
        "**Needs revision:** Yes",
    },
    {
        "match": REVISE + "Take 1200 mg",
        "reply": "Revised response:\nDosing depends on you; ask a pharmacist.",
    },
    {"match": CRITIQUE + "Dosing depends", "reply": "1. Follows it.\n2. Follows it.\nNeeds revision: no"},
    {"match": CRITIQUE + "Rayleigh", "reply": "1. Not applicable.\n2. Accurate.\n\nNeeds revision: no"},
    {"match": CRITIQUE + "Coffee is always", "reply": "It overstates the evidence."},  # no verdict: re-asked
    {"match": "no final line .Needs revision", "reply": "It overstates the evidence.\nNeeds revision: yes"},
    {"match": REVISE + "Coffee is always", "reply": "For most adults, moderate coffee is fine."},
    {"match": CRITIQUE + "For most adults", "reply": "Needs revision: no"},
    {"match": CRITIQUE + "Nine is prime", "reply": "2. Nine is not prime.\nNeeds revision: yes"},
    {"match": REVISE + "Nine is prime", "reply": "Nine is prime."},  # changes nothing, even when re-asked
    {"match": "the revision is the same as the response", "reply": "Revised response: Nine is prime."},
]


def test_parse_critique_and_revision():
    assert parse_critique("1. Fine.\n2. Wrong dose.\nNeeds revision: **YES**") == (
        "1. Fine.\n2. Wrong dose.",
        True,
    )
    assert parse_critique("All good.\n\nneeds revision: no.") == ("All good.", False)
    with pytest.raises(ParseError, match="Needs revision"):
        parse_critique("The dose is wrong.")
    with pytest.raises(ParseError, match="say what is wrong"):
        parse_critique("Needs revision: yes")
    assert parse_revision("**Revised response:** Ask a pharmacist.") == "Ask a pharmacist."
    with pytest.raises(ParseError, match="empty"):
        parse_revision("Revised response:")
    with pytest.raises(ParseError, match="the same as the response"):
        revision_parser("Nine  is prime.", "Nine is prime.")("Nine is\nprime.")
    # A later round's rewrite that goes back to the original would pair chosen == rejected.
    later = revision_parser("Nine is not prime: 3 x 3.", "Nine is prime.")
    with pytest.raises(ParseError, match="the same as the response"):
        later("Nine is prime.")
    assert later("Nine is not prime, since 9 = 3 x 3.") == "Nine is not prime, since 9 = 3 x 3."


def _run(tmp_path: Path, progress: ProgressFactory | None = None, **step: object):
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = write_recipe(
            tmp_path / "r.yaml",
            {
                "name": "cai",
                "teacher": {
                    "backend": "openai",
                    "model": "m",
                    "base_url": server.base_url,
                    "api_key_env": None,
                },
                "steps": [
                    {"step": "load", "path": "rows.jsonl"},
                    {"step": "critique_revise", "principles": PRINCIPLES, **step},
                ],
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        result = run_recipe(load_recipe(path), progress=progress)
    return result, {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}


def test_revised_rows_become_preference_pairs(tmp_path: Path):
    result, rows = _run(tmp_path, rounds=2)
    assert set(rows) == {"dose", "vague"}
    assert result.reports[1].rows_dropped == {"no_problem_found": 1, "revision_unchanged": 1}
    dose = rows["dose"]
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "How much ibuprofen can I take?"},
    ]
    expected = preference_row(
        ROWS[0], conversation, "Dosing depends on you; ask a pharmacist.", "Take 1200 mg every hour.", 0, 0
    )
    for key in ("prompt", "chosen", "rejected", "system"):  # the same DPO format as the preference step
        assert dose[key] == expected[key]
    assert "messages" not in dose and "response" not in dose
    assert dose["critique"].startswith("1. The response gives a dose")
    assert (dose["revision"], dose["revised"]) == ("Dosing depends on you; ask a pharmacist.", True)
    assert (
        rows["vague"]["chosen"][0]["content"] == "For most adults, moderate coffee is fine."
    )  # after a re-ask
    assert result.manifest["steps"][1]["details"] == {
        "revised": 2,
        "unchanged_kept": 0,
        "revisions_per_round": [2, 0],  # round 2 found nothing more to fix
    }


class RecordedBar:
    """A step's progress as the step reports it: its totals and what it has advanced."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.past_total: list[tuple[int, int]] = []

    def set_total(self, total: int) -> None:
        self.total = total

    def advance(self, rows: int = 1) -> None:
        self.done += rows
        if self.total is None or self.done > self.total:
            self.past_total.append((self.done, self.total))


class RecordedBars(ProgressFactory):
    def __init__(self) -> None:
        self.bars: dict[str, RecordedBar] = {}

    def step(self, label: str, stats: object) -> RecordedBar:
        self.bars[label] = RecordedBar()
        return self.bars[label]


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_the_bar_ends_at_its_total_and_never_passes_it(tmp_path: Path, rounds: int):
    """Rows leave after one critique (nothing to fix), after a revision that changed nothing, or
    after a later round finds nothing more; 2 rounds once drew 9/8 here."""
    bars = RecordedBars()
    _run(tmp_path, bars, rounds=rounds)
    bar = bars.bars["1:critique_revise"]
    assert bar.past_total == []
    assert (bar.done, bar.total) == (len(ROWS) * 2 * rounds,) * 2


def test_keep_unchanged(tmp_path: Path):
    result, rows = _run(tmp_path, keep_unchanged=True)
    assert set(rows) == {"dose", "safe", "vague", "stubborn"} and result.reports[1].rows_dropped == {}
    safe = rows["safe"]
    assert (
        safe["chosen"]
        == safe["rejected"]
        == [{"role": "assistant", "content": "Rayleigh scattering favours blue light."}]
    )
    assert (safe["revised"], safe["revision"], safe["critique"]) == (
        False,
        None,
        "1. Not applicable.\n2. Accurate.",
    )
    assert result.manifest["steps"][1]["details"]["unchanged_kept"] == 2


def test_a_failed_later_round_keeps_the_last_revision_and_only_the_critiques_it_answered(tmp_path: Path):
    """Round 2 finds more to fix, but its rewrite goes back to the original (refused, re-asked, the
    same again): the pair keeps round 1's revision with round 1's critique only. The critiqued
    column, here `answer`, is gone from the rows as check() says."""
    from synthkd.pipeline import check

    script = [
        {"match": CRITIQUE + "Nine is prime", "reply": "Nine is not prime.\nNeeds revision: yes"},
        {"match": REVISE + "Nine is prime", "reply": "Seven is prime."},
        {"match": CRITIQUE + "Seven is prime", "reply": "Say why seven is prime.\nNeeds revision: yes"},
        {"match": REVISE + "Seven is prime", "reply": "Nine is prime."},  # back to the original
        {"match": "the revision is the same as the response", "reply": "Nine is prime."},
    ]
    write_jsonl(
        tmp_path / "rows.jsonl", [{"id": "prime", "prompt": "Name a prime.", "answer": "Nine is prime."}]
    )
    with FakeOpenAIServer(script=script) as server:
        path = write_recipe(
            tmp_path / "r.yaml",
            {
                "name": "cai",
                "teacher": {
                    "backend": "openai",
                    "model": "m",
                    "base_url": server.base_url,
                    "api_key_env": None,
                },
                "steps": [
                    {"step": "load", "path": "rows.jsonl"},
                    {
                        "step": "critique_revise",
                        "principles": PRINCIPLES,
                        "response_column": "answer",
                        "rounds": 2,
                    },
                ],
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        columns = check(load_recipe(path))[-1]
        run_recipe(load_recipe(path))
    [row] = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == (
        "Seven is prime.",
        "Nine is prime.",
    )
    assert row["critique"] == "Nine is not prime." and row["revised"] is True
    assert "answer" not in row and "answer" not in columns
