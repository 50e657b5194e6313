"""Thin TRL glue: load the run's dataset and the student, train, evaluate before and after, save.

The recipe's `train.args` go to TRL's own config class as they are, so a renamed or unknown TRL
field surfaces as a clear error rather than being silently dropped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from synthkd.errors import RecipeError
from synthkd.output import load_run_dataset
from synthkd.training.config import TrainConfig
from synthkd.training.evaluation import evaluate
from synthkd.training.memory import DEFAULT_MAX_LENGTH

KD_COLUMNS = [
    "kd_input_ids",
    "kd_prompt_length",
    "kd_top_ids",
    "kd_top_logprobs",
    "kd_teacher",
    "kd_vocab_sha256",
    "kd_template_sha256",
]
REQUIRED_COLUMNS = {
    "sft": ["messages"],
    "dpo": ["prompt", "chosen", "rejected"],
    "distill": ["messages"],
    "kd": ["messages", *KD_COLUMNS],
}
DIVERGENCE_BETA = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": 0.5}


@dataclass
class TrainResult:
    output_dir: Path
    before: dict[str, Any]
    after: dict[str, Any]
    train_losses: list[float]


def _device_settings() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"use_cpu": True, "bf16": False}


def _trl_config(config_class: type, values: dict[str, Any]) -> Any:
    known = {field.name for field in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(
            f"{', '.join(unknown)}: not a field of TRL's {config_class.__name__}", where="train.args"
        )
    defaults = {field.name: field.default for field in fields(config_class)}
    if "activation_checkpointing" in known and not {
        "activation_checkpointing",
        "gradient_checkpointing",
    } & set(values):
        # TRL's configs default the old name, `gradient_checkpointing`, which transformers 5 has
        # renamed: passing TRL's default under the new name gives the same behaviour without a
        # FutureWarning on every run that the user can do nothing about.
        values = {**values, "activation_checkpointing": defaults["gradient_checkpointing"]}
    return config_class(**values)


def _tools(dataset: Any, limit: int) -> list[list[dict] | None] | None:
    """Each held-out row's tool schemas (TRL's `tools` column, a list or its JSON), if any."""
    if "tools" not in dataset.column_names:
        return None
    values = dataset.select(range(min(limit, len(dataset))))["tools"]
    return [json.loads(value) if isinstance(value, str) else value for value in values]


def _conversations(dataset: Any, method: str, limit: int) -> list[list[dict[str, str]]]:
    """Held-out conversations ending in the answer the student should give."""
    rows = dataset.select(range(min(limit, len(dataset))))
    if method in ("sft", "distill", "kd"):
        return [list(row["messages"]) for row in rows]
    return [list(row["prompt"]) + list(row["chosen"]) for row in rows]


def train_student(
    config: TrainConfig,
    dataset_dir: Path,
    run_dir: Path,
    seed: int,
    run_name: str,
    recipe_dir: Path | None = None,
) -> TrainResult:
    """Train, evaluate and save the student; returns where it is and the before/after metrics.
    `recipe_dir` is where a judge's prompt templates are looked for first (then the shipped ones)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthkd.teachers.transformers_backend import resolve_model_source

    if not dataset_dir.is_dir():
        raise RecipeError(f"no dataset at {dataset_dir}: run the recipe first", where="train")
    if config.push_to_hub:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            raise RecipeError(
                "HF_HUB_OFFLINE is set: unset it to push the student, or drop push_to_hub",
                where="train.push_to_hub",
            )
    dataset = load_run_dataset(dataset_dir)
    if len(dataset) == 0:
        raise RecipeError(
            f"the run's dataset ({dataset_dir}) has no rows to train on: see failures.jsonl and the funnel "
            "for why every row was dropped, or run with --no-train",
            where="train",
        )
    missing = [c for c in REQUIRED_COLUMNS[config.method] if c not in dataset.column_names]
    if missing:
        hint = (
            " (add a `logits` step to store the teacher's log-probabilities)" if config.method == "kd" else ""
        )
        raise RecipeError(
            f"method {config.method} needs column(s) {missing}{hint}; the dataset has {dataset.column_names}",
            where="train.method",
        )
    # TRL's SFTTrainer renders a `tools` column (function schemas) into the chat template.
    kept = [*REQUIRED_COLUMNS[config.method], *(["tools"] if config.method == "sft" else [])]
    dataset = dataset.select_columns([column for column in kept if column in dataset.column_names])
    if config.eval_split > 0 and len(dataset) >= 4:
        parts = dataset.train_test_split(test_size=config.eval_split, seed=seed)
        train_rows, held_out = parts["train"], parts["test"]
    else:
        train_rows, held_out = dataset, dataset.select(range(min(len(dataset), config.eval_max_rows)))

    source = resolve_model_source(config.student)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = _device_settings()
    import torch

    dtype = torch.bfloat16 if device["bf16"] else torch.float32
    memory = _check_memory(
        config, source, bytes_per_value=2 if device["bf16"] else 4, on_gpu=not device["use_cpu"]
    )
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if not device["use_cpu"]:
        model = model.to("cuda")
    evaluation_rows = _conversations(held_out, config.method, config.eval_max_rows)
    evaluation_tools = _tools(held_out, config.eval_max_rows)
    before = evaluate(model, tokenizer, evaluation_rows, config.eval_max_new_tokens, tools=evaluation_tools)

    output_dir = Path(config.output_dir) if config.output_dir else run_dir / "student"
    values = {
        "output_dir": str(output_dir),
        "seed": seed,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        **device,
        **config.args,
    }
    peft_config = None
    if config.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    if config.method == "distill":
        trainer = _distillation_trainer(config, model, tokenizer, train_rows, values, peft_config)
    elif config.method == "kd":
        trainer = _kd_trainer(config, model, tokenizer, train_rows, values, peft_config)
    elif config.method == "sft":
        from trl import SFTConfig, SFTTrainer

        # Train only on the teacher's answers when the chat template marks them.
        values.setdefault("assistant_only_loss", "{% generation %}" in (tokenizer.chat_template or ""))
        trainer = SFTTrainer(
            model=model,
            args=_trl_config(SFTConfig, values),
            train_dataset=train_rows,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model,
            args=_trl_config(DPOConfig, values),
            train_dataset=train_rows,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    clock = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - clock
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # Tokens the student saw (padding aside), as TRL counts them; on-policy trainers count their own.
    train_tokens = int(getattr(trainer, "_total_train_tokens", 0))
    student = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    student_answers: list[str] = []
    after = evaluate(
        student, tokenizer, evaluation_rows, config.eval_max_new_tokens, student_answers, evaluation_tools
    )
    if config.judge is not None:
        from synthkd.training.win_rate import judge_win_rate

        after["judge"] = judge_win_rate(
            config.judge, evaluation_rows, student_answers, recipe_dir or Path.cwd(), seed
        )
    student.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    metrics = {
        "method": config.method,
        "student": config.student,
        "train_rows": len(train_rows),
        "memory_estimate_gib": round(memory.total / 2**30, 3),
        "held_out_rows": len(evaluation_rows),
        "before": before,
        "after": after,
        "train_losses": losses,
        "train_seconds": round(train_seconds, 3),
        "train_tokens": train_tokens,
        "train_tokens_per_second": round(train_tokens / train_seconds, 1) if train_seconds else None,
    }
    (output_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_card(output_dir, config, run_name, metrics)
    if config.push_to_hub:
        _push_student(output_dir, config.push_to_hub, run_name)
    return TrainResult(output_dir, before, after, losses)


def _distillation_trainer(
    config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any
):
    """On-policy distillation (TRL's DistillationTrainer): the student generates, the teacher scores."""
    from trl import DistillationConfig, DistillationTrainer

    from synthkd.teachers.transformers_backend import resolve_model_source

    if not config.teacher:
        raise RecipeError("method distill needs a local teacher model (train.teacher)", where="train.teacher")
    teacher_source = resolve_model_source(config.teacher)
    from transformers import AutoTokenizer

    teacher_vocabulary = AutoTokenizer.from_pretrained(teacher_source).get_vocab()
    if teacher_vocabulary != tokenizer.get_vocab():
        raise RecipeError(
            f"the student {config.student!r} and the teacher {config.teacher!r} have different vocabularies; "
            "distill compares their token distributions, so they must share a tokenizer",
            where="train.teacher",
        )
    tokenizer.padding_side = "left"  # the student generates from left-padded prompts
    # The student answers each prompt itself (on-policy); the teacher's answer is not used.
    prompts = rows.map(lambda row: {"prompt": list(row["messages"])[:-1]}, remove_columns=rows.column_names)
    values.setdefault("beta", DIVERGENCE_BETA[config.divergence])
    return DistillationTrainer(
        model=model,
        teacher_model=teacher_source,
        args=_trl_config(DistillationConfig, values),
        train_dataset=prompts,
        processing_class=tokenizer,
        peft_config=peft,
    )


def _push_student(output_dir: Path, repo_id: str, run_name: str) -> str:
    """Upload the saved student (weights, tokenizer, card, eval.json) as one commit of a model repo."""
    import os

    from huggingface_hub import HfApi

    # HF_ENDPOINT is read here, not when huggingface_hub was imported, so a late setting counts.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(output_dir),
        commit_message=f"synthkd: student of the {run_name} run",
    )
    return str(commit)


def _check_memory(config: TrainConfig, source: str, *, bytes_per_value: int, on_gpu: bool):
    """Estimate what training needs before loading anything; refuse what cannot fit."""
    from synthkd.teachers.transformers_backend import resolve_model_source
    from synthkd.training.memory import estimate_training_memory, free_memory

    estimate = estimate_training_memory(
        source,
        bytes_per_value=bytes_per_value,
        lora=config.lora is not None,
        batch_size=int(config.args.get("per_device_train_batch_size", 8)),
        max_length=config.args.get("max_length", DEFAULT_MAX_LENGTH),
        teacher_source=resolve_model_source(config.teacher)
        if config.method == "distill" and config.teacher
        else None,
    )
    free, device_name = free_memory(on_gpu)
    if estimate.total > free:
        raise RecipeError(
            f"training {config.student!r} needs {estimate.describe()} but only "
            f"{free / 2**30:.2f} GiB is free on {device_name}; lower per_device_train_batch_size or "
            "max_length in train.args, or train LoRA adapters (train.lora)",
            where="train",
        )
    return estimate


def _kd_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any):
    """Offline logit distillation: TRL's SFTTrainer with the loss from `synthkd.training.kd`."""
    from trl import SFTConfig

    from synthkd.training.kd import KDCollator, KDTrainer, check_student_vocabulary, kd_example

    for warning in check_student_vocabulary(rows, tokenizer, config.student):
        print(f"warning: {warning}")
    args = _trl_config(SFTConfig, values)
    # The rows are tokenized here (the teacher's token ids are stored), so TRL's own preparation,
    # which would drop the teacher's columns, is skipped.
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    args.remove_unused_columns = False
    top_k = max((len(ids[0]) for ids in rows["kd_top_ids"] if ids), default=1)
    examples = rows.map(
        kd_example,
        fn_kwargs={"tokenizer": tokenizer, "max_length": args.max_length},
        remove_columns=rows.column_names,
    )
    return KDTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        processing_class=tokenizer,
        data_collator=KDCollator(tokenizer.pad_token_id, top_k),
        peft_config=peft,
        kd_weight=config.kd_weight,
        kd_temperature=config.kd_temperature,
    )


def _write_card(output_dir: Path, config: TrainConfig, run_name: str, metrics: dict[str, Any]) -> None:
    before, after = metrics["before"], metrics["after"]
    lines = [
        "---",
        "library_name: transformers",
        "tags: [synthkd, knowledge-distillation, trl]",
        "---",
        "",
        f"# {run_name} student",
        "",
        f"Distilled with synthkd: `{config.method}` of `{config.student}` on the dataset of the "
        f"`{run_name}` run ({metrics['train_rows']} training rows).",
        "",
        "| held-out metric | before | after |",
        "|---|---:|---:|",
        f"| loss on the teacher's answers | {before['loss']} | {after['loss']} |",
        f"| perplexity | {before['perplexity']} | {after['perplexity']} |",
        f"| agreement with the teacher (exact / ROUGE-L) | {before['agreement']} | {after['agreement']} |",
        *(
            [
                f"| accuracy against the teacher (every answer compared exactly) | {before['accuracy']} | "
                f"{after['accuracy']} |"
            ]
            if "accuracy" in after
            else []
        ),
        "",
    ]
    if "judge" in after:
        judged = after["judge"]
        lines += [
            f"Judged by `{judged['judge']}` on {judged['pairs']} held-out prompts (both orders): the student "
            f"won {judged['student_wins']}, the teacher {judged['teacher_wins']}, {judged['ties']} ties; "
            f"win rate {judged['win_rate']}.",
            "",
        ]
    (output_dir / "README.md").write_text("\n".join(lines))
