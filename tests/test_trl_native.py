"""A written dataset goes into TRL's own SFTTrainer as it is, with no column selection: from
`load_from_disk` and from the parquet files a push uploads."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_jsonl, write_recipe
from tiny_model import build_tiny_model, one_trl_step

from synthkd.pipeline import run_recipe
from synthkd.publish.push import stage
from synthkd.publish.rundir import open_run
from synthkd.recipe import load_recipe
from synthkd.testing.fake_openai import FakeOpenAIServer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sft-run")
    write_jsonl(folder / "seeds.jsonl", [{"instruction": f"Explain item {i} briefly."} for i in range(6)])
    with FakeOpenAIServer() as server:
        teacher = {"backend": "openai", "model": "m", "base_url": server.base_url, "api_key_env": None}
        recipe = {
            "name": "sft",
            "teacher": teacher,
            "steps": [
                {"step": "load", "path": str(folder / "seeds.jsonl")},
                {"step": "label", "system": "Be brief."},
            ],
            "output": {"dir": str(folder / "out")},
        }
        run_recipe(load_recipe(write_recipe(folder / "r.yaml", recipe)))
    return folder / "out"


def one_sft_step(dataset, tmp_path: Path) -> float:
    model_dir = build_tiny_model(tmp_path / "model")
    trainer = one_trl_step(dataset, "sft", model_dir, tmp_path / "trained", max_length=64)
    return trainer.state.log_history[-1]["train_loss"]


def test_the_dataset_folder_trains_in_trls_sft_trainer_as_it_is(run_dir: Path, tmp_path: Path):
    from datasets import load_from_disk

    dataset = load_from_disk(str(run_dir / "dataset"))
    # The text the teacher was sent is there, under a name no TRL format claims.
    assert "prompt" not in dataset.column_names and "teacher_prompt" in dataset.column_names
    assert dataset[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert one_sft_step(dataset, tmp_path) > 0  # before: KeyError: 'completion'


def test_the_pushed_parquet_trains_in_trls_sft_trainer_as_it_is(run_dir: Path, tmp_path: Path):
    from datasets import load_dataset

    files = stage(open_run(run_dir), tmp_path / "push")
    parquet = [str(tmp_path / "push" / name) for name in files if name.endswith(".parquet")]
    dataset = load_dataset("parquet", data_files=parquet, split="train")
    assert one_sft_step(dataset, tmp_path) > 0


JUDGE = "(?s)impartial judge.*Response:\n"


def test_preference_pairs_train_in_trls_dpo_trainer_as_they_are(tmp_path: Path):
    from datasets import load_from_disk

    rows = [{"id": f"r{i}", "instruction": f"Explain item {i}.", "student": "Weak student"} for i in range(4)]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    script = [
        {"match": JUDGE + "Answer:", "reply": '{"score": 9, "justification": "teacher"}'},
        {"match": JUDGE + "Weak student", "reply": '{"score": 2, "justification": "vague"}'},
    ]
    with FakeOpenAIServer(script=script) as server:
        teacher = {"backend": "openai", "model": "m", "base_url": server.base_url, "api_key_env": None}
        steps = [
            {"step": "load", "path": "rows.jsonl"},
            {"step": "preference", "n": 1, "candidate_columns": ["student"]},
        ]
        recipe = {"name": "dpo", "teacher": teacher, "steps": steps, "output": {"dir": str(tmp_path / "out")}}
        run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", recipe)))
    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert dataset[0]["chosen"][-1]["content"].startswith("Answer:")
    trainer = one_trl_step(dataset, "dpo", build_tiny_model(tmp_path / "model"), tmp_path / "trained", 64)
    assert trainer.state.log_history[-1]["train_loss"] > 0
