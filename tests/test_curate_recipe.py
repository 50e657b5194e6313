"""The shipped curation recipe end to end on the local server: the funnel in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import read_jsonl

from synthkd.cli import main
from synthkd.testing.fake_openai import FakeOpenAIServer

JUDGE = "(?s)impartial judge.*Response:\n"
SCRIPT = [
    {"match": JUDGE + "GOOD", "reply": '{"score": 9, "justification": "thorough"}'},
    {"match": JUDGE + "BAD", "reply": '{"score": 2, "justification": "wrong"}'},
    {"match": JUDGE + "Answer: Explain why the sea", "reply": '{"score": 4, "justification": "thin"}'},
    {"match": JUDGE, "reply": '{"score": 7, "justification": "fine"}'},
]


def test_curate_recipe_funnel(tmp_path: Path):
    with FakeOpenAIServer(script=SCRIPT) as server:
        args = [
            "run",
            "recipes/curate.yaml",
            "--output",
            str(tmp_path / "run"),
            "--set",
            f"teacher.base_url={server.base_url}",
            "--set",
            "teacher.api_key_env=null",
        ]
        assert main(args) == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    funnel = [(s["step"], s["rows_in"], s["rows_out"], s["rows_dropped"]) for s in manifest["steps"]]
    assert funnel == [
        ("load", 0, 10, {}),
        ("label", 10, 10, {}),
        ("quality", 10, 10, {}),
        ("dedup", 10, 9, {"duplicate_exact": 1}),  # tides-copy
        ("dedup", 9, 8, {"duplicate_minhash": 1}),  # bread-edit
        ("dedup", 8, 7, {"duplicate_embedding": 1}),  # budget-paraphrase
        ("decontaminate", 7, 6, {"contaminated": 1}),  # the train question of the eval set
        ("judge", 6, 5, {"below_min_score": 1}),  # tides scored 4
        ("preference", 5, 5, {}),
    ]
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "run" / "data.jsonl")}
    assert rows["bread"]["chosen"][0]["content"].startswith("Answer:")  # 7 beats the BAD reference's 2
    assert rows["sql"]["chosen"][0]["content"].startswith("GOOD")  # the reference's 9 beats 7
    (duplicate,) = manifest["steps"][5]["details"]["duplicates"]
    assert (duplicate["id"], duplicate["duplicate_of"]) == ("budget-paraphrase", "budget")
    assert duplicate["similarity"] >= 0.95
