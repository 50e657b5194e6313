"""A student genuinely smaller than the teacher, made offline: `embedded:layers=N` keeps N of the
embedded model's 30 decoder layers with the teacher's own weights, its embeddings, head and
tokenizer, so it can be distilled from the teacher token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_cli, write_jsonl, write_recipe
from transformers import AutoModelForCausalLM, AutoTokenizer

from synthkd.teachers.embedded import embedded_model_dir, kept_layers, resolve_model_source
from synthkd.training.config import TrainConfig
from synthkd.training.run import train_student


def test_kept_layers_are_spread_from_the_first():
    assert kept_layers(30, 15) == list(range(0, 30, 2))  # every other one
    assert kept_layers(30, 10) == list(range(0, 30, 3))
    assert kept_layers(30, 30) == list(range(30))
    assert kept_layers(30, 1) == [0]


@pytest.mark.slow
def test_a_pruned_embedded_model_is_the_teachers_layers_and_runs():
    teacher_dir = embedded_model_dir()
    student_dir = Path(resolve_model_source("embedded:layers=15"))
    assert student_dir != teacher_dir and (student_dir / "config.json").is_file()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)

    assert student.config.num_hidden_layers == 15 and teacher.config.num_hidden_layers == 30
    student_size = sum(p.numel() for p in student.parameters())
    teacher_size = sum(p.numel() for p in teacher.parameters())
    assert 0.5 < student_size / teacher_size < 0.7  # 81M of 135M: the embeddings are shared
    teacher_weights, student_weights = teacher.state_dict(), student.state_dict()
    for position, index in enumerate(kept_layers(30, 15)):
        name = f"model.layers.{position}.mlp.down_proj.weight"
        assert torch.equal(
            student_weights[name], teacher_weights[name.replace(f".{position}.", f".{index}.")]
        )
    assert torch.equal(
        student_weights["model.embed_tokens.weight"], teacher_weights["model.embed_tokens.weight"]
    )
    assert (
        AutoTokenizer.from_pretrained(student_dir).get_vocab()
        == AutoTokenizer.from_pretrained(teacher_dir).get_vocab()
    )

    # It runs with a KV cache (each kept layer's index renumbered) and is made once.
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    generated = student.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    assert Path(resolve_model_source("embedded:layers=15")) == student_dir


@pytest.mark.slow
def test_a_pruned_student_trains(tmp_path: Path):
    write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Say {i}."},
                    {"role": "assistant", "content": f"{i}."},
                ]
            }
            for i in range(12)
        ],
    )
    from datasets import Dataset

    Dataset.from_json(str(tmp_path / "rows.jsonl")).save_to_disk(tmp_path / "dataset")
    config = TrainConfig(
        student="embedded:layers=6",
        eval_split=0.25,
        eval_max_rows=2,
        eval_max_new_tokens=2,
        args={"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-4},
    )
    result = train_student(config, tmp_path / "dataset", tmp_path, seed=0, run_name="pruned")
    assert AutoModelForCausalLM.from_pretrained(result.output_dir).config.num_hidden_layers == 6


def test_a_malformed_or_impossible_pruned_student_is_refused(tmp_path: Path, capsys):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Hi."}])
    recipe = {
        "name": "pruned",
        "steps": [{"step": "load", "path": "seeds.jsonl"}],
        "train": {"student": "embedded:layers=half"},
    }
    code, out = run_cli(["validate", str(write_recipe(tmp_path / "r.yaml", recipe))], capsys)
    assert code == 2 and "train.student" in out and "embedded:layers=N" in out
    from synthkd.errors import RecipeError

    with pytest.raises(RecipeError, match="has 30 decoder layers; keep 1 to 30"):
        resolve_model_source("embedded:layers=31")
