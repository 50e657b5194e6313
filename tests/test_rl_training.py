"""Reward models and RL on the student's own answers (train.method reward and grpo), on tiny random
models on CPU: the verifier's matching rules, a reward model that learns to rank held-out pairs, and
GRPO whose reward rises on a toy task, with a verifier and with the trained reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tiny_model import build_tiny_model

from synthkd.errors import RecipeError
from synthkd.training.config import TrainConfig
from synthkd.training.rewards import answer_text, verify
from synthkd.training.run import train_student

QUESTIONS = [f"What is {a} plus {b}?" for a in range(4) for b in range(4)]
# The toy RL task: answers are rewarded for containing the letter x (a regex verifier). A random
# tiny model writes one now and then, so its groups of answers differ in reward, and GRPO can make
# it write one every time.
TOY_PATTERN = "x"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", vocab_size=300)


def save_dataset(path: Path, rows: list[dict]) -> Path:
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))
    return path


def pair_rows() -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": "Four."}],
            "rejected": [{"role": "assistant", "content": "I do not know, sorry."}],
        }
        for q in QUESTIONS
    ]


def prompt_rows() -> list[dict]:
    # The assistant turn is the teacher's answer, which GRPO drops: the student writes its own.
    return [
        {
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "x"}],
            "gold": TOY_PATTERN,
        }
        for q in QUESTIONS
    ]


GRPO_ARGS = {
    "max_steps": 16,
    "per_device_train_batch_size": 8,
    "num_generations": 8,
    "max_completion_length": 12,
    "learning_rate": 3e-2,
}


@pytest.mark.parametrize(
    ("answer", "gold", "match", "expected"),
    [
        ("First 3 + 4 = 7.\nFinal answer: 7", "7", "final_answer", 1.0),
        ("Final answer: 1,000.", "1000", "final_answer", 1.0),  # number format aside
        ("Final answer: 8\nno wait. Final answer: 7", "7", "final_answer", 1.0),  # the last line counts
        ("It is 7.", "7", "final_answer", 0.0),  # no final-answer line: nothing to check
        ("Final answer: 17", "7", "final_answer", 0.0),
        ("  Paris. ", "paris", "exact", 1.0),
        ("Paris, France", "paris", "exact", 0.0),
        ("I think it is 7 apples", "7", "contains", 1.0),
        ("I think it is 17 apples", "7", "contains", 0.0),  # a word, not a substring
        ('{"answer": 7}', r"^\{.*\}$", "regex", 1.0),
        ("answer: 7", r"^\{.*\}$", "regex", 0.0),
    ],
)
def test_the_verifier_matches_the_gold_answer(answer: str, gold: str, match: str, expected: float):
    assert verify(answer, gold, match) == expected


def test_answers_come_as_text_or_as_the_last_chat_message():
    assert answer_text("plain") == "plain"
    assert answer_text([{"role": "assistant", "content": "from chat"}]) == "from chat"


def test_a_reward_goes_with_grpo_and_grpo_needs_one(tiny_model: Path):
    with pytest.raises(ValidationError, match="method grpo needs a reward"):
        TrainConfig(method="grpo", student=str(tiny_model))
    with pytest.raises(ValidationError, match="not in sft"):
        TrainConfig(student=str(tiny_model), reward={"verifier": {"column": "gold"}})
    with pytest.raises(ValidationError, match="exactly one of verifier, model or judge"):
        TrainConfig(
            method="grpo", student=str(tiny_model), reward={"verifier": {"column": "gold"}, "model": "m"}
        )


def test_a_missing_gold_column_is_a_recipe_error_before_training(tmp_path: Path, tiny_model: Path):
    rows = [{key: value for key, value in row.items() if key != "gold"} for row in prompt_rows()]
    dataset = save_dataset(tmp_path / "dataset", rows)
    config = TrainConfig(method="grpo", student=str(tiny_model), reward={"verifier": {"column": "gold"}})
    with pytest.raises(RecipeError, match=r"needs column\(s\) \['gold'\]"):
        train_student(config, dataset, tmp_path, 0, "t")


def test_a_reward_model_learns_to_rank_held_out_pairs(tmp_path: Path, tiny_model: Path):
    from transformers import AutoModelForSequenceClassification

    dataset = save_dataset(tmp_path / "dataset", pair_rows())
    config = TrainConfig(
        method="reward",
        student=str(tiny_model),
        eval_split=0.25,
        args={"max_steps": 10, "learning_rate": 3e-3, "per_device_train_batch_size": 4},
    )
    result = train_student(config, dataset, tmp_path, seed=0, run_name="tiny")
    assert result.train_losses[-1] < result.train_losses[0]
    # Held-out pairs: before, the untrained score head ranks them as it happens to; after, every
    # chosen answer scores above its rejected one, by a wider margin.
    assert result.before["rows"] == result.after["rows"] == 4
    assert result.after["pair_accuracy"] == 1.0
    assert result.after["mean_margin"] > result.before["mean_margin"]
    metrics = json.loads((result.output_dir / "eval.json").read_text())
    assert metrics["method"] == "reward" and metrics["after"]["pair_accuracy"] == 1.0
    assert (
        "| pairs whose chosen answer it scores above the rejected one |"
        in (result.output_dir / "README.md").read_text()
    )
    reloaded = AutoModelForSequenceClassification.from_pretrained(result.output_dir)
    assert reloaded.config.num_labels == 1


def run_grpo(tmp_path: Path, student: Path, reward: dict) -> Any:
    """GRPO of the tiny student on the toy prompts (a quarter held out); checks a reward per step."""
    dataset = save_dataset(tmp_path / "prompts", prompt_rows())
    config = TrainConfig(
        method="grpo",
        student=str(student),
        reward=reward,
        eval_split=0.25,
        eval_max_new_tokens=12,
        args=GRPO_ARGS,
    )
    result = train_student(config, dataset, tmp_path, seed=0, run_name="toy")
    assert len(result.train_rewards) == GRPO_ARGS["max_steps"]
    return result


@pytest.mark.slow
def test_grpo_with_a_verifier_raises_the_reward(tmp_path: Path, tiny_model: Path):
    result = run_grpo(tmp_path, tiny_model, {"verifier": {"column": "gold", "match": "regex"}})
    rewards = result.train_rewards
    assert max(rewards[:2]) < 0.5 and min(rewards[-3:]) > 0.9  # rare at first, then every time
    # On held-out prompts the student's greedy answer now has an x, which it did not before.
    assert result.before["reward"] == 0.0 and result.after["reward"] == 1.0
    metrics = json.loads((result.output_dir / "eval.json").read_text())
    assert metrics["after"]["reward"] == 1.0 and metrics["train_rewards"] == rewards


@pytest.mark.slow
def test_grpo_with_a_trained_reward_model_raises_its_score(tmp_path: Path, tiny_model: Path):
    """Reward-model distillation then RL: the reward model learns the preference pairs, then GRPO
    trains the student towards what it scores high."""
    pairs = save_dataset(tmp_path / "pairs", pair_rows())
    reward_config = TrainConfig(
        method="reward",
        student=str(tiny_model),
        output_dir=str(tmp_path / "reward-model"),
        args={"max_steps": 10, "learning_rate": 3e-3, "per_device_train_batch_size": 4},
    )
    reward_model = train_student(reward_config, pairs, tmp_path, seed=0, run_name="rm").output_dir
    result = run_grpo(tmp_path, tiny_model, {"model": str(reward_model)})
    rewards = result.train_rewards
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3  # the reward model's score rises
    assert result.after["reward"] > result.before["reward"]  # on held-out prompts, greedy answers


# A judge that likes answers with an x in them: the toy task again, scored by a teacher over HTTP.
JUDGE_SCRIPT = [
    {"match": "(?s)Response:\n(?:(?!Reply with only).)*x", "reply": '{"score": 10, "justification": "x"}'},
    {"match": "(?s)Rate the response", "reply": '{"score": 1, "justification": "no x"}'},
]


@pytest.mark.slow
def test_grpo_with_a_teacher_judge_raises_the_reward_and_caches_its_scores(tmp_path: Path, tiny_model: Path):
    from synthkd.testing.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(script=JUDGE_SCRIPT) as server:
        judge = {"backend": "openai", "model": "judge", "base_url": server.base_url, "api_key_env": None}
        result = run_grpo(tmp_path / "first", tiny_model, {"judge": judge})
        asked = server.stats()["requests"]
        # The same training again: the same answers, every score from the cache, none asked again.
        again = run_grpo(tmp_path / "again", tiny_model, {"judge": judge})
        assert server.stats()["requests"] == asked
    rewards = result.train_rewards
    assert max(rewards[:2]) < 0.5 and min(rewards[-3:]) > 0.9  # scores 1 and 10, scaled to 0..1
    assert result.before["reward"] == 0.0 and result.after["reward"] == 1.0
    assert again.train_rewards == rewards
