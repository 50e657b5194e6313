"""Preference pairs: best against worst with a margin; ties and lone candidates dropped and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.errors import RunIncompleteError
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.preference import choose_pair
from synthkd.testing.fake_openai import FakeOpenAIServer

JUDGE = "(?s)impartial judge.*Response:\n"
SCRIPT = [
    {"match": JUDGE + "Answer:", "reply": '{"score": 8, "justification": "teacher"}'},
    {"match": JUDGE + "Weak student", "reply": '{"score": 3, "justification": "vague"}'},
    {"match": JUDGE + "Tied student", "reply": '{"score": 7.5, "justification": "close"}'},
    {"match": JUDGE + "Strong student", "reply": '{"score": 10, "justification": "best"}'},
]


def test_choose_pair():
    assert choose_pair([(8, "a"), (3, "b"), (5, "c")], 1.0) == ((8, "a"), (3, "b"))
    assert choose_pair([(8, "a"), (7.5, "b")], 1.0) == "tie"
    assert choose_pair([(6, "a"), (6, "b")], 0.0) == "tie"
    assert choose_pair([(9, "a")], 1.0) == "too_few_candidates"


def test_teacher_against_student_with_a_separate_judge(tmp_path: Path):
    write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"id": "weak", "instruction": "Explain tides.", "student": "Weak student"},
            {"id": "tied", "instruction": "Explain rain.", "student": "Tied student"},
            {"id": "strong", "instruction": "Explain wind.", "student": "Strong student"},
            {"id": "alone", "instruction": "Explain snow.", "student": ""},
        ],
    )
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = write_recipe(
            tmp_path / "r.yaml",
            {
                "name": "pref",
                "teacher": {
                    "backend": "openai",
                    "model": "teacher-m",
                    "base_url": server.base_url,
                    "api_key_env": None,
                },
                "steps": [
                    {"step": "load", "path": "rows.jsonl"},
                    {
                        "step": "preference",
                        "n": 1,
                        "candidate_columns": ["student"],
                        "min_margin": 1,
                        "judge_teacher": {"model": "judge-m"},
                    },
                ],
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        result = run_recipe(load_recipe(path))
        assert server.stats()["requests"] == 4 + 3 + 4  # 4 answers, 3 student answers and 4 own judged
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(rows) == {"weak", "strong"}
    assert result.reports[1].rows_dropped == {"tie": 1, "too_few_candidates": 1}
    weak = rows["weak"]
    assert weak["prompt"] == [{"role": "user", "content": "Explain tides."}]
    assert weak["chosen"] == [{"role": "assistant", "content": "Answer: Explain tides."}]
    assert weak["rejected"] == [{"role": "assistant", "content": "Weak student"}]
    assert (weak["chosen_score"], weak["rejected_score"]) == (8.0, 3.0)
    assert rows["strong"]["chosen"][0]["content"] == "Strong student"
    assert "messages" not in weak  # preference rows are not turned into SFT conversations
    models = [teacher["model"] for teacher in result.manifest["teachers"]]
    assert models == ["teacher-m", "judge-m"]


CANARY = "canary-secret-5f3a9c"


def test_judge_teacher_secrets_stay_out_of_provenance_and_manifest(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SYNTHKD_JUDGE_KEY", f"sk-{CANARY}")
    write_jsonl(
        tmp_path / "rows.jsonl", [{"id": "weak", "instruction": "Explain tides.", "student": "Weak student"}]
    )
    with FakeOpenAIServer(script=SCRIPT) as server:
        base_url = server.base_url
        judge_url = base_url + "/"  # another teacher than the generating one
        path = write_recipe(
            tmp_path / "r.yaml",
            {
                "name": "pref",
                "teacher": {
                    "backend": "openai",
                    "model": "teacher-m",
                    "base_url": server.base_url,
                    "api_key_env": None,
                },
                "steps": [
                    {"step": "load", "path": "rows.jsonl"},
                    {
                        "step": "preference",
                        "n": 1,
                        "candidate_columns": ["student"],
                        "judge_teacher": {
                            "model": "judge-m",
                            "api_key_env": "SYNTHKD_JUDGE_KEY",
                            "base_url": judge_url,
                            "max_attempts": 1,
                        },
                    },
                ],
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        loaded = load_recipe(path)
        run_recipe(loaded)
    provenance = json.dumps(loaded.recipe.steps[1].provenance())
    assert CANARY not in provenance and "judge-m" not in provenance and "SYNTHKD_JUDGE_KEY" not in provenance
    written = [file for file in (tmp_path / "out").rglob("*") if file.is_file()]
    assert {"manifest.json", "failures.jsonl"} <= {file.name for file in written}
    for file in written:
        assert CANARY.encode() not in file.read_bytes(), file
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    judge = manifest["recipe"]["steps"][1]["judge_teacher"]
    assert judge["model"] == "judge-m" and judge["api_key_env"] == "SYNTHKD_JUDGE_KEY"


def test_failed_samples_and_judgements_are_recorded_with_their_reason(tmp_path: Path):
    too_long = {"status": 400, "code": "context_length_exceeded", "message": "maximum context length"}
    script = [
        {"match": r"^Explain tides\.$", **too_long},  # the teacher's answer to this prompt
        {"match": JUDGE + "Weak student", **too_long},  # the judge's score of this candidate
        *SCRIPT,
    ]
    write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"id": "tides", "instruction": "Explain tides.", "student": "Strong student"},
            {"id": "rain", "instruction": "Explain rain.", "student": "Weak student"},
        ],
    )
    with FakeOpenAIServer(script=script) as server:
        path = write_recipe(
            tmp_path / "r.yaml",
            {
                "name": "pref",
                "teacher": {
                    "backend": "openai",
                    "model": "m",
                    "base_url": server.base_url,
                    "api_key_env": None,
                },
                "steps": [
                    {"step": "load", "path": "rows.jsonl"},
                    {"step": "preference", "n": 2, "candidate_columns": ["student"]},
                ],
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        with pytest.raises(RunIncompleteError, match="no rows") as failed:
            run_recipe(load_recipe(path))
    result = failed.value.result  # no pair could be made: the run failed, its failures are beside
    failures = read_jsonl(tmp_path / "out.incomplete" / "failures.jsonl")
    assert sorted((f["id"], f["reason"]) for f in failures) == [
        ("rain-candidate", "context_length_exceeded"),
        ("tides-sample0", "context_length_exceeded"),
        ("tides-sample1", "context_length_exceeded"),
    ]
    assert result.reports[1].rows_dropped == {"too_few_candidates": 2}
