"""Offline logit distillation: the `logits` step stores what the teacher really predicts, the KD loss
is the one written down, and training with it lowers the loss of a tiny student."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import write_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.errors import RecipeError
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.training.config import TrainConfig
from synthkd.training.run import train_student

TOP_K = 5
ANSWERS = ["The answer is four.", "Knowledge distillation trains a small student.", "The quick brown fox."]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("teacher") / "model", seed=1)


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("student") / "model", seed=2)


def run_logits_recipe(tmp_path: Path, teacher: Path, rows: int = 12):
    write_jsonl(
        tmp_path / "seeds.jsonl",
        [
            {"prompt": f"Question {i}: what is {i} plus {i}?", "response": ANSWERS[i % len(ANSWERS)]}
            for i in range(rows)
        ],
    )
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "kd",
            "teacher": {"backend": "transformers", "model": str(teacher)},
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "logits", "top_k": TOP_K}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    return run_recipe(load_recipe(recipe))


def test_stored_top_k_matches_a_direct_forward_pass_of_the_teacher(tmp_path: Path, teacher: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run_logits_recipe(tmp_path, teacher, rows=6)
    model = AutoModelForCausalLM.from_pretrained(teacher)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    assert len(result.rows) == 6
    for row in result.rows:
        ids, start = row["kd_input_ids"], row["kd_prompt_length"]
        # The stored ids are this row's conversation in the teacher's chat template.
        rendered = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        assert tokenizer.decode(ids) == rendered
        assert tokenizer.decode(ids[start:]).startswith(row["response"])
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        assert len(row["kd_top_ids"]) == len(ids) - start
        for j, (top_ids, top_logprobs) in enumerate(
            zip(row["kd_top_ids"], row["kd_top_logprobs"], strict=True)
        ):
            expected = logits[start + j - 1].log_softmax(-1).topk(TOP_K)
            assert top_ids == expected.indices.tolist()
            assert top_logprobs == pytest.approx(expected.values.tolist(), abs=1e-4)
    # The fingerprint names the teacher's tokenizer, and the run's dataset keeps the columns.
    assert {row["kd_teacher"] for row in result.rows} == {str(teacher)}
    from datasets import load_from_disk

    dataset = load_from_disk(str(result.out_dir / "dataset"))
    assert dataset[0]["kd_top_ids"] == result.rows[0]["kd_top_ids"]
    assert dataset[0]["kd_top_logprobs"] == [
        pytest.approx(top, abs=1e-6) for top in result.rows[0]["kd_top_logprobs"]
    ]
    # Stored compactly: int32 ids, float32 log-probabilities (inference would give 64-bit types).
    table = dataset.data.table
    assert str(table.schema.field("kd_input_ids").type) == "list<item: int32>"
    assert str(table.schema.field("kd_top_ids").type) == "list<item: list<item: int32>>"
    assert str(table.schema.field("kd_top_logprobs").type) == "list<item: list<item: float>>"


def test_a_rerun_takes_the_scores_from_the_cache(tmp_path: Path, teacher: Path):
    """Scoring goes through the dispatcher like every teacher call: a rerun does no forward pass and
    stores the very same distributions."""
    first = run_logits_recipe(tmp_path, teacher, rows=6)
    second = run_logits_recipe(tmp_path, teacher, rows=6)
    first_logits, second_logits = first.reports[1], second.reports[1]
    assert (first_logits.requests_sent, first_logits.cache_hits) == (6, 0)
    assert (second_logits.requests_sent, second_logits.cache_hits) == (0, 6)
    columns = ["kd_input_ids", "kd_prompt_length", "kd_top_ids", "kd_top_logprobs", "kd_vocab_sha256"]
    assert [[row[c] for c in columns] for row in second.rows] == [
        [row[c] for c in columns] for row in first.rows
    ]


def reference_kd_loss(logits, example: dict, weight: float, temperature: float) -> tuple[float, float]:
    """The loss written out token by token in plain Python: CE on the answer tokens plus
    weight * T^2 * KL(teacher buckets || student buckets), buckets = stored top-k + tail."""
    ids, start = example["input_ids"], example["kd_start"]
    ce_terms, kl_terms = [], []
    for position in range(start, len(ids)):
        row = [float(value) for value in logits[position - 1]]
        top = max(row)
        norm = top + math.log(sum(math.exp(value - top) for value in row))
        ce_terms.append(norm - row[ids[position]])
        scaled = [value / temperature for value in row]
        top_scaled = max(scaled)
        norm_scaled = top_scaled + math.log(sum(math.exp(value - top_scaled) for value in scaled))
        j = position - start
        token_ids, token_logprobs = example["kd_top_ids"][j], example["kd_top_logprobs"][j]
        student = [math.exp(scaled[token] - norm_scaled) for token in token_ids]
        student.append(max(1 - sum(student), 1e-6))
        teacher = [math.exp(value) for value in token_logprobs]
        teacher.append(max(1 - sum(teacher), 1e-6))
        softened = [value ** (1 / temperature) for value in teacher]
        teacher = [value / sum(softened) for value in softened]
        kl_terms.append(sum(t * (math.log(t) - math.log(s)) for t, s in zip(teacher, student, strict=True)))
    return ce_terms, kl_terms


def test_kd_loss_equals_a_reference_computation(tmp_path: Path, teacher: Path, student: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthkd.training.kd import KDCollator, distillation_loss, kd_example

    result = run_logits_recipe(tmp_path, teacher, rows=3)
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student)
    examples = [kd_example(row, tokenizer, max_length=None) for row in result.rows]
    batch = KDCollator(tokenizer.pad_token_id, TOP_K)(examples)  # rows of different lengths: padded
    weight, temperature = 0.7, 2.0
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss, ce, kl = distillation_loss(
            logits,
            batch["labels"],
            batch["teacher_ids"],
            batch["teacher_logprobs"],
            batch["kd_mask"],
            weight,
            temperature,
        )
    ce_terms, kl_terms = [], []
    for example in examples:
        with torch.no_grad():
            own = model(input_ids=torch.tensor([example["input_ids"]])).logits[0]
        row_ce, row_kl = reference_kd_loss(own, example, weight, temperature)
        ce_terms += row_ce
        kl_terms += row_kl
    expected_ce = sum(ce_terms) / len(ce_terms)
    expected_kl = sum(kl_terms) / len(kl_terms)
    assert float(ce) == pytest.approx(expected_ce, rel=1e-4)
    assert float(kl) == pytest.approx(expected_kl, rel=1e-4)
    assert float(loss) == pytest.approx(expected_ce + weight * temperature**2 * expected_kl, rel=1e-4)
    assert expected_kl > 0  # two different random models disagree


def test_kd_training_lowers_the_loss_and_the_student_reloads(tmp_path: Path, teacher: Path, student: Path):
    from test_training import reloads_and_generates

    run = run_logits_recipe(tmp_path, teacher, rows=16)
    config = TrainConfig(
        method="kd",
        student=str(student),
        kd_weight=1.0,
        eval_split=0.25,
        eval_max_new_tokens=4,
        args={"max_steps": 10, "learning_rate": 3e-3, "per_device_train_batch_size": 4},
    )
    result = train_student(config, run.out_dir / "dataset", tmp_path, seed=0, run_name="kd")
    assert result.train_losses[-1] < result.train_losses[0]
    assert result.after["loss"] < result.before["loss"]
    reloads_and_generates(result.output_dir)


def test_kd_refuses_a_student_with_another_vocabulary(tmp_path: Path, teacher: Path):
    other = build_tiny_model(tmp_path / "other", vocab_size=300)
    run = run_logits_recipe(tmp_path, teacher, rows=4)
    config = TrainConfig(method="kd", student=str(other), args={"max_steps": 1})
    with pytest.raises(RecipeError) as error:
        train_student(config, run.out_dir / "dataset", tmp_path, seed=0, run_name="kd")
    assert str(other) in str(error.value) and str(teacher) in str(error.value)


def test_kd_without_a_logits_step_says_what_to_add(tmp_path: Path, student: Path):
    from datasets import Dataset

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "dataset"))
    with pytest.raises(RecipeError, match="add a `logits` step"):
        train_student(TrainConfig(method="kd", student=str(student)), tmp_path / "dataset", tmp_path, 0, "t")


def test_logits_with_an_api_teacher_needs_its_tokenizer(tmp_path: Path):
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "q", "response": "a"}])
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "kd",
            "teacher": {"backend": "openai", "model": "gpt-4o-mini"},
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "logits"}],
        },
    )
    from synthkd.pipeline import check

    with pytest.raises(RecipeError, match="needs `tokenizer:`") as error:
        check(load_recipe(recipe))
    assert "steps.1.tokenizer" in str(error.value)


@pytest.mark.parametrize("backend", ["openai", "litellm"])
def test_logits_from_an_api_teacher_map_to_token_ids_and_train(
    tmp_path: Path, teacher: Path, student: Path, backend: str, monkeypatch: pytest.MonkeyPatch
):
    """An OpenAI-compatible server's logprobs, mapped through the teacher's tokenizer; an answer
    with a token the vocabulary lacks is kept without distributions and counted."""
    import json

    from transformers import AutoTokenizer

    from synthkd.testing.fake_openai import FakeOpenAIServer

    script = [
        {"match": "odd", "reply": "Zyxqvw jumps."},  # " Zyxqvw" is no token of the tiny vocabulary
        {"match": "short", "reply": "The fox."},  # 3 distinct tokens: fewer alternatives than top_k
        {"match": ".", "reply": "The quick brown fox jumps over the lazy dog."},
    ]
    prompts = [f"Question {i}: tell me about the fox." for i in range(9)]
    prompts += ["A short question.", "Another short one.", "An odd question."]
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": p, "response": "old answer"} for p in prompts])
    monkeypatch.setenv("SYNTHKD_TEST_KEY", "sk-test")
    with FakeOpenAIServer(script=script) as server:
        recipe = write_recipe(
            tmp_path / "r.yaml",
            {
                "name": "kd-api",
                "teacher": {
                    "backend": backend,
                    "model": "m" if backend == "openai" else "openai/m",
                    "base_url": server.base_url,
                    "api_key_env": "SYNTHKD_TEST_KEY",
                },
                "steps": [
                    {"step": "load", "path": "seeds.jsonl"},
                    {"step": "logits", "top_k": 4, "tokenizer": str(teacher)},
                ],
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        result = run_recipe(load_recipe(recipe))
        # A rerun answers from the cache, log-probabilities included: the same distributions, none
        # of the rows silently reduced to cross-entropy.
        again = run_recipe(load_recipe(recipe))
    assert (again.reports[1].requests_sent, again.reports[1].cache_hits) == (0, 12)
    kd_columns = ["response", "kd_input_ids", "kd_prompt_length", "kd_top_ids", "kd_top_logprobs"]
    assert [[row[c] for c in kd_columns] for row in again.rows] == [
        [row[c] for c in kd_columns] for row in result.rows
    ]
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    mapped = [row for row in result.rows if row["kd_input_ids"]]
    assert len(result.rows) == 12 and len(mapped) == 11
    short = [row for row in mapped if row["response"] == "The fox."]
    assert len(short) == 2 and all(len(top) == 3 for top in short[0]["kd_top_ids"] if top)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["steps"][1]["details"]["unmappable_rows"] == 1
    for row in mapped:
        # The API's answer replaced the old one, and the stored ids spell the whole conversation.
        if row in short:
            continue
        assert row["response"] == "The quick brown fox jumps over the lazy dog."
        ids, start = row["kd_input_ids"], row["kd_prompt_length"]
        assert tokenizer.decode(ids) == tokenizer.apply_chat_template(row["messages"], tokenize=False)
        answer_tokens = [top for top in row["kd_top_ids"] if top]
        assert len(answer_tokens) == 10  # "The", " quick", ..., " dog", "."
        for j, top in enumerate(answer_tokens):
            assert top[0] == ids[start + j]  # the server ranks the sampled token first
            assert len(top) == 4 and row["kd_top_logprobs"][j][0] == pytest.approx(-0.05 * (1 + j % 3))
    config = TrainConfig(
        method="kd",
        student=str(student),
        kd_weight=1.0,
        eval_split=0.25,
        eval_max_new_tokens=4,
        args={"max_steps": 8, "learning_rate": 3e-3, "per_device_train_batch_size": 4},
    )
    trained = train_student(config, tmp_path / "out" / "dataset", tmp_path, seed=0, run_name="kd")
    assert all(math.isfinite(loss) for loss in trained.train_losses)
    assert trained.train_losses[-1] < trained.train_losses[0]
