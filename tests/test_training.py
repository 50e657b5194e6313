"""SFT, DPO and on-policy distillation of a tiny random student on CPU: the loss goes down, the
student reloads and generates; the memory check and the judge win rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import build_tiny_model

from synthkd.errors import RecipeError
from synthkd.training.config import TrainConfig
from synthkd.training.evaluation import agreement
from synthkd.training.run import train_student

QUESTIONS = [f"What is {a} plus {b}?" for a in range(4) for b in range(4)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def save_dataset(path: Path, rows: list[dict]) -> Path:
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))
    return path


def reloads_and_generates(folder: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**encoded, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > encoded["input_ids"].shape[1]
    return tokenizer.decode(output[0])


@pytest.mark.slow
def test_sft_lowers_the_loss_and_saves_a_student(tmp_path: Path, tiny_model: Path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": "The answer is four."},
            ]
        }
        for q in QUESTIONS
    ]
    dataset = save_dataset(tmp_path / "dataset", rows)
    config = TrainConfig(
        method="sft",
        student=str(tiny_model),
        eval_split=0.25,
        eval_max_new_tokens=8,
        args={"max_steps": 12, "learning_rate": 3e-3, "per_device_train_batch_size": 4},
    )
    result = train_student(config, dataset, tmp_path, seed=0, run_name="tiny")
    assert result.train_losses[-1] < result.train_losses[0]
    assert result.after["loss"] < result.before["loss"]  # on held-out rows
    metrics = json.loads((result.output_dir / "eval.json").read_text())
    assert metrics["held_out_rows"] == 4 and metrics["train_rows"] == 12
    assert "| perplexity |" in (result.output_dir / "README.md").read_text()
    reloads_and_generates(result.output_dir)


@pytest.mark.slow
def test_dpo_lowers_the_loss_and_saves_a_student(tmp_path: Path, tiny_model: Path):
    rows = [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": "Four."}],
            "rejected": [{"role": "assistant", "content": "I do not know, sorry."}],
        }
        for q in QUESTIONS
    ]
    dataset = save_dataset(tmp_path / "dataset", rows)
    config = TrainConfig(
        method="dpo",
        student=str(tiny_model),
        eval_split=0.25,
        eval_max_new_tokens=4,
        args={"max_steps": 8, "learning_rate": 1e-3, "per_device_train_batch_size": 4},
    )
    result = train_student(config, dataset, tmp_path, seed=0, run_name="tiny")
    assert result.train_losses[-1] < result.train_losses[0]
    reloads_and_generates(result.output_dir)


# `train.teacher` is a teacher mapping like every other teacher key; a plain model string still
# means a local model, and both must train the same way.
@pytest.mark.slow
@pytest.mark.parametrize("as_mapping", [False, True], ids=["model string", "teacher mapping"])
def test_on_policy_distillation_from_a_live_teacher(tmp_path: Path, tiny_model: Path, as_mapping: bool):
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Four."}]}
        for q in QUESTIONS
    ]
    dataset = save_dataset(tmp_path / "dataset", rows)
    # Same tokenizer, other weights: the student has something to learn from this teacher.
    teacher = build_tiny_model(tmp_path / "teacher", seed=1)
    config = TrainConfig(
        method="distill",
        student=str(tiny_model),
        teacher={"backend": "transformers", "model": str(teacher)} if as_mapping else str(teacher),
        divergence="jsd",
        eval_split=0.25,
        eval_max_new_tokens=4,
        args={
            "max_steps": 12,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 4,
            "max_completion_length": 8,
        },
    )
    result = train_student(config, dataset, tmp_path, seed=0, run_name="tiny")
    losses = result.train_losses
    assert len(losses) == 12 and all(loss >= 0 for loss in losses)
    # On-policy losses are noisy (the student writes new completions each step): compare thirds.
    assert sum(losses[-4:]) < sum(losses[:4])
    reloads_and_generates(result.output_dir)


def test_distill_refuses_a_teacher_with_another_vocabulary(tmp_path: Path, tiny_model: Path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4
    dataset = save_dataset(tmp_path / "dataset", rows)
    with pytest.raises(RecipeError, match="different vocabularies"):
        train_student(
            TrainConfig(method="distill", student=str(tiny_model), teacher="embedded"),
            dataset,
            tmp_path,
            0,
            "t",
        )


def test_a_model_string_teacher_is_the_local_teacher_mapping(tiny_model: Path):
    by_string = TrainConfig(method="distill", student=str(tiny_model), teacher="some/model")
    by_mapping = TrainConfig(
        method="distill", student=str(tiny_model), teacher={"backend": "transformers", "model": "some/model"}
    )
    assert by_string == by_mapping and by_string.teacher.backend == "transformers"


def test_distill_refuses_an_api_teacher_at_train_teacher(tmp_path: Path, tiny_model: Path):
    """On-policy distillation runs the teacher next to the student; an API teacher cannot be, and is
    refused before anything is loaded, in a recipe as from Python."""
    from helpers import write_recipe

    from synthkd.recipe import load_recipe

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4
    dataset = save_dataset(tmp_path / "dataset", rows)
    recipe = {
        "name": "api-distill",
        "steps": [{"step": "load", "path": "rows.jsonl"}],
        "train": {
            "method": "distill",
            "student": str(tiny_model),
            "teacher": {"backend": "openai", "model": "gpt-4o-mini"},
        },
    }
    config = load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe)).recipe.train
    with pytest.raises(RecipeError, match="needs a local model that shares the student's tokenizer") as err:
        train_student(config, dataset, tmp_path, 0, "t")
    assert err.value.where == "train.teacher" and "'gpt-4o-mini'" in str(err.value)
    assert not (tmp_path / "student").exists()


def test_wrong_columns_and_unknown_trl_fields_are_recipe_errors(tmp_path: Path, tiny_model: Path):
    dataset = save_dataset(tmp_path / "dataset", [{"instruction": "x", "response": "y"}] * 4)
    with pytest.raises(RecipeError, match="method sft needs column"):
        train_student(TrainConfig(student=str(tiny_model)), dataset, tmp_path, 0, "t")
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4
    dataset = save_dataset(tmp_path / "dataset2", rows)
    with pytest.raises(RecipeError, match="max_seq_length: not a field of TRL's SFTConfig"):
        train_student(
            TrainConfig(student=str(tiny_model), args={"max_seq_length": 64}), dataset, tmp_path, 0, "t"
        )


def test_an_empty_dataset_from_an_older_run_is_a_clear_error(tmp_path: Path, tiny_model: Path):
    """`datasets` saves a 0-row dataset without any arrow file (as runs did before they saved one
    shard) and cannot load it back; training says there is nothing to train on instead."""
    from datasets import Dataset

    Dataset.from_dict({"id": []}).save_to_disk(str(tmp_path / "dataset"))
    config = TrainConfig(method="sft", student=str(tiny_model))
    with pytest.raises(RecipeError, match="has no rows to train on"):
        train_student(config, tmp_path / "dataset", tmp_path, seed=0, run_name="empty")


def test_trl_configs_get_checkpointing_under_its_current_name():
    """TRL's default (checkpointing on) reaches transformers as `activation_checkpointing`, so no
    deprecation warning for a setting the user never wrote; the user's own value is kept."""
    import warnings

    from trl import DPOConfig, SFTConfig

    from synthkd.training.run import _trl_config

    for config_class in (SFTConfig, DPOConfig):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            made = _trl_config(config_class, {"output_dir": "unused", "use_cpu": True})
        assert made.activation_checkpointing is True and made.gradient_checkpointing is True
    made = _trl_config(
        SFTConfig, {"output_dir": "unused", "use_cpu": True, "activation_checkpointing": False}
    )
    assert made.activation_checkpointing is False


def test_agreement_measure():
    assert agreement("Four.", "four.") == 1.0 and agreement("Five", "Four") == 0.0
    long_answer = "The moon pulls the oceans toward it and makes the tides rise and fall."
    assert agreement(long_answer, long_answer) == 1.0
    assert 0 < agreement("The moon pulls the oceans.", long_answer) < 1


def test_accuracy_is_reported_only_when_every_answer_is_compared_exactly(tiny_model: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthkd.training.evaluation import evaluate

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    def asked(answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": "Label this."}, {"role": "assistant", "content": answer}]

    labels = evaluate(model, tokenizer, [asked("billing"), asked("shipping")], max_new_tokens=3)
    assert labels["accuracy"] == labels["agreement"] and labels["rows"] == 2
    long_answer = "The moon pulls the oceans toward it and makes the tides rise and fall."
    mixed = evaluate(model, tokenizer, [asked("billing"), asked(long_answer)], max_new_tokens=3)
    assert "accuracy" not in mixed and mixed["agreement"] is not None


def test_an_impossible_configuration_fails_before_loading(tmp_path: Path, tiny_model: Path):
    from synthkd.training.memory import count_parameters, estimate_training_memory

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4
    dataset = save_dataset(tmp_path / "dataset", rows)
    # Millions of 32k-token sequences per batch cannot fit in any machine's memory.
    huge = {"per_device_train_batch_size": 4_000_000, "max_length": 32_768}
    with pytest.raises(RecipeError, match=r"needs ~[0-9.]+ GiB \(weights .*activations .*\) but only"):
        train_student(TrainConfig(student=str(tiny_model), args=huge), dataset, tmp_path, 0, "t")
    assert not (tmp_path / "student").exists()
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
    assert count_parameters(str(tiny_model))[0] == real
    full = estimate_training_memory(
        str(tiny_model), bytes_per_value=4, lora=False, batch_size=1, max_length=8
    )
    lora = estimate_training_memory(str(tiny_model), bytes_per_value=4, lora=True, batch_size=1, max_length=8)
    assert full.weights == 4 * real and full.optimizer == 2 * full.gradients
    assert lora.gradients < full.gradients / 10


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        # The judge prefers the teacher's answer in either position: the student loses every pair.
        (
            [
                {"match": "(?s)Response A:\nThe answer is four", "reply": '{"winner": "A"}'},
                {"match": "(?s)Response B:\nThe answer is four", "reply": '{"winner": "B"}'},
            ],
            {"student_wins": 0, "teacher_wins": 4, "ties": 0, "win_rate": 0.0},
        ),
        # A judge that always picks the first response is caught by the swap: all ties, 0.5.
        ([{"match": ".", "reply": '{"winner": "A"}'}], {"student_wins": 0, "teacher_wins": 0, "ties": 4}),
    ],
)
def test_judge_win_rate_of_the_student(tmp_path: Path, tiny_model: Path, script: list, expected: dict):
    from synthkd.teachers.config import TeacherConfig
    from synthkd.testing.fake_openai import FakeOpenAIServer

    rows = [
        {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": "The answer is four."},
            ]
        }
        for q in QUESTIONS
    ]
    dataset = save_dataset(tmp_path / "dataset", rows)
    with FakeOpenAIServer(script=script) as server:
        judge = TeacherConfig(backend="openai", model="judge", base_url=server.base_url, api_key_env=None)
        config = TrainConfig(
            student=str(tiny_model),
            eval_split=0.25,
            eval_max_new_tokens=4,
            judge=judge,
            args={"max_steps": 1, "per_device_train_batch_size": 4},
        )
        result = train_student(config, dataset, tmp_path, seed=0, run_name="tiny")
        assert server.stats()["requests"] == 8  # four held-out pairs, each judged in both orders
    judged = result.after["judge"]
    assert {key: judged[key] for key in expected} == expected and judged["pairs"] == 4
    if "win_rate" not in expected:
        assert judged["win_rate"] == 0.5
    saved = json.loads((result.output_dir / "eval.json").read_text())
    assert saved["after"]["judge"] == judged
    assert f"win rate {judged['win_rate']}" in (result.output_dir / "README.md").read_text()


@pytest.mark.slow
def test_push_to_hub_uploads_the_student_in_one_commit(tmp_path: Path, tiny_model: Path, monkeypatch):
    from fake_hub import FakeHub

    canary = "hf_canary_token_0123456789"
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Four."}]}
        for q in QUESTIONS
    ]
    dataset = save_dataset(tmp_path / "dataset", rows)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", canary)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # pushing is the point
        config = TrainConfig(
            student=str(tiny_model),
            push_to_hub="me/tiny-student",
            eval_max_new_tokens=2,
            args={"max_steps": 1},
        )
        train_student(config, dataset, tmp_path, seed=0, run_name="tiny")
    assert [commit["repo"] for commit in hub.commits] == ["models/me/tiny-student"]
    uploaded = hub.repos["models/me/tiny-student"]["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "eval.json"} <= set(uploaded)
    assert all(auth == f"Bearer {canary}" for method, _, auth in hub.requests if method == "POST")
    assert not any(canary.encode() in data for data in uploaded.values())


def test_push_to_hub_while_offline_fails_before_training(tmp_path: Path, tiny_model: Path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4
    dataset = save_dataset(tmp_path / "dataset", rows)
    config = TrainConfig(student=str(tiny_model), push_to_hub="me/tiny-student", args={"max_steps": 1})
    with pytest.raises(RecipeError, match="HF_HUB_OFFLINE is set"):
        train_student(config, dataset, tmp_path, seed=0, run_name="tiny")
    assert not (tmp_path / "student").exists()


@pytest.mark.slow
def test_sft_keeps_the_tool_schemas_for_the_chat_template(tmp_path: Path, tiny_model: Path):
    """Rows of a tool_calls step carry a `tools` column; training and evaluation must pass it to the
    chat template (this one refuses to render without it)."""
    import shutil

    from transformers import AutoTokenizer

    student = tmp_path / "tool-student"
    shutil.copytree(tiny_model, student)
    tokenizer = AutoTokenizer.from_pretrained(student)
    tokenizer.chat_template = (
        "{% if not tools %}{{ raise_exception('this template needs the tools') }}{% endif %}"
        "<|im_start|>system\n{% for tool in tools %}{{ tool['function']['name'] }} {% endfor %}<|im_end|>\n"
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message.get('tool_calls') %}{% for call in message['tool_calls'] %}"
        "{{ call['function']['name'] }}({{ call['function']['arguments'] | tojson }}){% endfor %}"
        "{% else %}{{ message['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer.save_pretrained(student)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Weather in city {i}?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": {"city": f"c{i}"}},
                        }
                    ],
                },
                {"role": "tool", "content": "sunny"},
                {"role": "assistant", "content": "It is sunny."},
            ],
            "tools": json.dumps(tools),
        }
        for i in range(8)
    ]
    dataset = save_dataset(tmp_path / "dataset", rows)
    config = TrainConfig(
        student=str(student),
        eval_split=0.25,
        eval_max_new_tokens=2,
        args={"max_steps": 2, "per_device_train_batch_size": 2},
    )
    result = train_student(config, dataset, tmp_path, seed=0, run_name="tools")
    assert len(result.train_losses) == 2 and result.before["rows"] == 2 and result.after["loss"] > 0
