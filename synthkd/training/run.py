"""Thin TRL glue: load the run's dataset and the student, train, evaluate before and after, save.

The recipe's `train.args` go to TRL's own config class as they are, so a renamed or unknown TRL
field surfaces as a clear error rather than being silently dropped.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthkd.atomic import atomic_write_text
from synthkd.errors import RecipeError
from synthkd.kd.topk import KD_COLUMNS
from synthkd.output import load_run_dataset
from synthkd.publish.model_card import write_model_card
from synthkd.publish.push_model import push_student
from synthkd.training.config import TrainConfig
from synthkd.training.evaluation import evaluate
from synthkd.training.memory import DEFAULT_MAX_LENGTH, MemoryEstimate
from synthkd.training.steps_bar import show_steps_on

if TYPE_CHECKING:
    from synthkd.steps.base import Progress

REQUIRED_COLUMNS = {
    "sft": ["messages"],
    "dpo": ["prompt", "chosen", "rejected"],
    "distill": ["messages"],
    "kd": ["messages", *KD_COLUMNS],
    "reward": ["prompt", "chosen", "rejected"],
    "grpo": ["messages"],  # the prompts; the student writes the answers (and a verifier's gold column)
}
PAIR_METHODS = ("dpo", "reward")  # trained on preference pairs rather than conversations
DIVERGENCE_BETA = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": 0.5}


@dataclass
class TrainResult:
    output_dir: Path
    before: dict[str, Any]
    after: dict[str, Any]
    train_losses: list[float]
    train_tokens: int = 0  # tokens the student trained on (padding aside)
    train_seconds: float = 0.0
    train_rewards: list[float] = field(default_factory=list)  # grpo: the mean reward of each step


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
    if method in PAIR_METHODS:
        return [list(row["prompt"]) + list(row["chosen"]) for row in rows]
    return [list(row["messages"]) for row in rows]


def train_student(
    config: TrainConfig,
    dataset_dir: Path,
    run_dir: Path,
    seed: int,
    run_name: str,
    recipe_dir: Path | None = None,
    evaluate: bool = True,
    progress: Progress | None = None,
) -> TrainResult:
    """Train, evaluate and save the student; returns where it is and the before/after metrics.
    `recipe_dir` is where a judge's prompt templates are looked for first (then the shipped ones).
    Without `evaluate` every row trains and no before/after metrics are made (an experiment
    evaluates on prompts of its own). `progress`, if given, shows the training steps in place of
    transformers' own bar and printed logs."""
    _check_before_loading(config, dataset_dir)
    dataset = _load_dataset(config, dataset_dir)
    train_rows, held_out = _split(config, dataset, seed) if evaluate else (dataset, dataset.select([]))
    student = _load_student(config)
    evaluation = _held_out_set(config, held_out, recipe_dir or Path.cwd(), seed)
    before = _evaluate(config, student.model, student.tokenizer, evaluation) if evaluate else {}
    output_dir = Path(config.output_dir) if config.output_dir else run_dir / "student"
    values = _trainer_values(config, output_dir, seed, student)
    trainer = _build_trainer(config, student, train_rows, values, recipe_dir or Path.cwd())
    progress = _train(trainer, progress)
    trained = trainer.model.merge_and_unload() if config.lora is not None else trainer.model
    after = _evaluate_trained(config, trained, student.tokenizer, evaluation) if evaluate else {}
    _save(trained, student.tokenizer, output_dir)
    metrics = _metrics(
        config, student, progress, len(train_rows), len(evaluation.conversations), before, after
    )
    if evaluate:  # what the card and eval.json are written from
        _write_eval(output_dir, metrics)
        write_model_card(output_dir, run_name, metrics)
    if config.push_to_hub:
        push_student(output_dir, config.push_to_hub, run_name)
    return TrainResult(
        output_dir, before, after, progress.losses, progress.tokens, progress.seconds, progress.rewards
    )


@dataclass
class _Student:
    """The student as loaded, with the device settings it was loaded for and the memory estimate
    that allowed it."""

    model: Any
    tokenizer: Any
    device: dict[str, Any]
    memory: MemoryEstimate


@dataclass
class _HeldOut:
    """The held-out conversations (each ending in the teacher's answer), their tool schemas, and
    the rows themselves (a reward model's pairs, a verifier's gold answers); where a judge's
    templates are looked for, and its seed."""

    conversations: list[list[dict[str, str]]]
    tools: list[list[dict] | None] | None
    rows: list[dict[str, Any]]
    recipe_dir: Path
    seed: int


@dataclass
class _Progress:
    """What one `trainer.train()` did: its logged losses, how long it took, the tokens it saw."""

    losses: list[float]
    seconds: float
    tokens: int
    rewards: list[float]  # an RL trainer's mean reward per logged step


def _check_before_loading(config: TrainConfig, dataset_dir: Path) -> None:
    """Refuse what would fail later, before minutes of loading and training are spent on it."""
    config.check_installed(lambda *key: ".".join(("train", *key)))
    if not dataset_dir.is_dir():
        raise RecipeError(f"no dataset at {dataset_dir}: run the recipe first", where="train")
    if config.push_to_hub:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            raise RecipeError(
                "HF_HUB_OFFLINE is set: unset it to push the student, or drop push_to_hub",
                where="train.push_to_hub",
            )
    if config.method == "distill":
        _distill_teacher_source(config)


def _distill_teacher_source(config: TrainConfig) -> str:
    """Where distill's teacher loads from. TRL's DistillationTrainer runs the teacher in this
    process and compares its token distributions with the student's, so it must be a local model
    (an API returns at most a few log-probabilities per token, not a distribution)."""
    from synthkd.teachers import capabilities_of
    from synthkd.teachers.embedded import resolve_model_source

    if config.teacher is None:
        raise RecipeError("method distill needs a local teacher model (train.teacher)", where="train.teacher")
    if not capabilities_of(config.teacher).local:
        raise RecipeError(
            f"method distill needs a local model that shares the student's tokenizer, not the "
            f"{config.teacher.backend} teacher {config.teacher.model!r}: give a local folder or Hub id "
            "(backend: transformers), or store an API teacher's log-probabilities with a `logits` step "
            "and train with method kd",
            where="train.teacher",
        )
    return resolve_model_source(config.teacher.model)


def _load_dataset(config: TrainConfig, dataset_dir: Path) -> Any:
    """The run's dataset, reduced to the columns the method trains on."""
    dataset = load_run_dataset(dataset_dir)
    if len(dataset) == 0:
        raise RecipeError(
            f"the run's dataset ({dataset_dir}) has no rows to train on: see failures.jsonl and the funnel "
            "for why every row was dropped, or run with --no-train",
            where="train",
        )
    required = [*REQUIRED_COLUMNS[config.method], *_gold_column(config)]
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        hint = (
            " (add a `logits` step to store the teacher's log-probabilities)" if config.method == "kd" else ""
        )
        raise RecipeError(
            f"method {config.method} needs column(s) {missing}{hint}; the dataset has {dataset.column_names}",
            where="train.method",
        )
    # TRL's SFTTrainer renders a `tools` column (function schemas) into the chat template.
    kept = [*required, *(["tools"] if config.method == "sft" else [])]
    return dataset.select_columns([column for column in kept if column in dataset.column_names])


def _gold_column(config: TrainConfig) -> list[str]:
    """The column of gold answers a verifier reward checks the student against, if any."""
    verifier = config.reward.verifier if config.reward is not None else None
    return [verifier.column] if verifier is not None else []


def _split(config: TrainConfig, dataset: Any, seed: int) -> tuple[Any, Any]:
    """Training rows and held-out rows. A dataset too small to split is evaluated on (some of) the
    rows it trains on: the before/after comparison still shows whether training did anything."""
    if config.eval_split > 0 and len(dataset) >= 4:
        parts = dataset.train_test_split(test_size=config.eval_split, seed=seed)
        return parts["train"], parts["test"]
    return dataset, dataset.select(range(min(len(dataset), config.eval_max_rows)))


def _load_student(config: TrainConfig) -> _Student:
    """The student and its tokenizer, on the GPU in bf16 where there is one; the memory check runs
    between reading the tokenizer and loading the weights, so what cannot fit never loads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from synthkd.teachers.embedded import resolve_model_source

    source = resolve_model_source(config.student)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = _device_settings()
    memory = _check_memory(
        config, source, bytes_per_value=2 if device["bf16"] else 4, on_gpu=not device["use_cpu"]
    )
    dtype = torch.bfloat16 if device["bf16"] else torch.float32
    if config.method == "reward":  # the student's body with a score head: one number per answer
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=dtype)
        model.config.pad_token_id = tokenizer.pad_token_id  # a batch's scores are read at each end
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if not device["use_cpu"]:
        model = model.to("cuda")
    return _Student(model, tokenizer, device, memory)


def _held_out_set(config: TrainConfig, held_out: Any, recipe_dir: Path, seed: int) -> _HeldOut:
    limit = config.eval_max_rows
    return _HeldOut(
        _conversations(held_out, config.method, limit),
        _tools(held_out, limit),
        list(held_out.select(range(min(limit, len(held_out))))),
        recipe_dir,
        seed,
    )


def _evaluate(
    config: TrainConfig, model: Any, tokenizer: Any, held_out: _HeldOut, answers: list[str] | None = None
) -> dict[str, Any]:
    """Held-out metrics of `model`; its generated answers are appended to `answers` if given. A
    reward model is measured on pairs; an RL student also by the mean reward of its answers."""
    from synthkd.training.rewards import held_out_reward, pair_accuracy

    if config.method == "reward":
        return pair_accuracy((model, tokenizer), held_out.rows)
    written = [] if answers is None else answers
    metrics = evaluate(
        model, tokenizer, held_out.conversations, config.eval_max_new_tokens, written, held_out.tools
    )
    if config.reward is not None:
        golds = [row[column] for row in held_out.rows for column in _gold_column(config)] or None
        prompts = [conversation[:-1] for conversation in held_out.conversations]
        metrics["reward"] = held_out_reward(
            config.reward, prompts, written, golds, held_out.recipe_dir, held_out.seed
        )
    return metrics


def _evaluate_trained(config: TrainConfig, model: Any, tokenizer: Any, held_out: _HeldOut) -> dict[str, Any]:
    """The trained student's held-out metrics, with the judge's verdicts when `train.judge` is set."""
    answers: list[str] = []
    after = _evaluate(config, model, tokenizer, held_out, answers)
    if config.judge is not None:
        from synthkd.training.win_rate import judge_win_rate

        after["judge"] = judge_win_rate(
            config.judge, held_out.conversations, answers, held_out.recipe_dir, held_out.seed
        )
    return after


def _trainer_values(config: TrainConfig, output_dir: Path, seed: int, student: _Student) -> dict[str, Any]:
    """The TRL config's fields: synthkd's few settings, then the recipe's `train.args` over them."""
    return {
        "output_dir": str(output_dir),
        "seed": seed,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        **student.device,
        **config.args,
    }


def _peft_config(config: TrainConfig) -> Any:
    """peft's LoRA config for `train.lora`, or None to train every weight."""
    if config.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="SEQ_CLS" if config.method == "reward" else "CAUSAL_LM",
    )


def _build_trainer(
    config: TrainConfig, student: _Student, rows: Any, values: dict[str, Any], recipe_dir: Path
) -> Any:
    """The TRL trainer of the recipe's method (`recipe_dir`: where a judge reward's templates are)."""
    builders = {
        "sft": _sft_trainer,
        "dpo": _dpo_trainer,
        "distill": _distillation_trainer,
        "kd": _kd_trainer,
        "reward": _reward_trainer,
        "grpo": functools.partial(_grpo_trainer, recipe_dir=recipe_dir),
    }
    return builders[config.method](
        config, student.model, student.tokenizer, rows, values, _peft_config(config)
    )


def _sft_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any) -> Any:
    from trl import SFTConfig, SFTTrainer

    # Train only on the teacher's answers when the chat template marks them.
    values.setdefault("assistant_only_loss", "{% generation %}" in (tokenizer.chat_template or ""))
    return _plain_trainer(SFTTrainer, SFTConfig, model, tokenizer, rows, values, peft)


def _dpo_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any) -> Any:
    from trl import DPOConfig, DPOTrainer

    return _plain_trainer(DPOTrainer, DPOConfig, model, tokenizer, rows, values, peft)


def _plain_trainer(
    trainer_class: type, config_class: type, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any
) -> Any:
    """A TRL trainer that takes the rows as they are (SFT, DPO, reward)."""
    return trainer_class(
        model=model,
        args=_trl_config(config_class, values),
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=peft,
    )


def _train(trainer: Any, bar: Progress | None = None) -> _Progress:
    if bar is not None:
        show_steps_on(trainer, bar)
    clock = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - clock
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    # Tokens the student saw (padding aside), as TRL counts them; on-policy trainers count their
    # own, in the logs (`num_tokens`, prompts and the completions they generated).
    logged = max((int(entry.get("num_tokens", 0)) for entry in history), default=0)
    return _Progress(losses, seconds, int(getattr(trainer, "_total_train_tokens", 0)) or logged, rewards)


def _save(model: Any, tokenizer: Any, output_dir: Path) -> None:
    """Save weights and tokenizer together, so the folder loads (and pushes) as one model."""
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


def _metrics(
    config: TrainConfig,
    student: _Student,
    progress: _Progress,
    train_rows: int,
    held_out_rows: int,
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    """What eval.json records, and the model card is written from."""
    return {
        "method": config.method,
        "student": config.student,
        "train_rows": train_rows,
        "memory_estimate_gib": round(student.memory.total / 2**30, 3),
        "held_out_rows": held_out_rows,
        "before": before,
        "after": after,
        "train_losses": progress.losses,
        **({"train_rewards": progress.rewards} if progress.rewards else {}),
        "train_seconds": round(progress.seconds, 3),
        "train_tokens": progress.tokens,
        "train_tokens_per_second": round(progress.tokens / progress.seconds, 1) if progress.seconds else None,
    }


def _write_eval(output_dir: Path, metrics: dict[str, Any]) -> None:
    atomic_write_text(output_dir / "eval.json", json.dumps(metrics, indent=2) + "\n", what="eval.json")


def _distillation_trainer(
    config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any
) -> Any:
    """On-policy distillation (TRL's DistillationTrainer): the student generates, the teacher scores."""
    from transformers import AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer

    teacher_source = _distill_teacher_source(config)
    teacher_vocabulary = AutoTokenizer.from_pretrained(teacher_source).get_vocab()
    if teacher_vocabulary != tokenizer.get_vocab():
        raise RecipeError(
            f"the student {config.student!r} and the teacher {config.teacher.model!r} have different "
            "vocabularies; distill compares their token distributions, so they must share a tokenizer",
            where="train.teacher",
        )
    tokenizer.padding_side = "left"  # the student generates from left-padded prompts
    prompts = _prompts(rows)
    values.setdefault("beta", DIVERGENCE_BETA[config.divergence])
    return DistillationTrainer(
        model=model,
        teacher_model=teacher_source,
        args=_trl_config(DistillationConfig, values),
        train_dataset=prompts,
        processing_class=tokenizer,
        peft_config=peft,
    )


def _prompts(rows: Any, keep: list[str] | None = None) -> Any:
    """The rows as prompts for an on-policy trainer: each conversation without its final answer,
    which the student writes itself; `keep` columns go along (TRL hands them to reward functions)."""
    kept = keep or []
    return rows.map(
        lambda row: {"prompt": list(row["messages"])[:-1]},
        remove_columns=[column for column in rows.column_names if column not in kept],
    )


def _reward_trainer(
    config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any
) -> Any:
    """A reward model (TRL's RewardTrainer): the student with a score head, trained so that each
    chosen answer scores above its rejected one (Bradley-Terry)."""
    from trl import RewardConfig, RewardTrainer

    return _plain_trainer(RewardTrainer, RewardConfig, model, tokenizer, rows, values, peft)


def _grpo_trainer(
    config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any, recipe_dir: Path
) -> Any:
    """RL on the student's own answers (TRL's GRPOTrainer): it samples a group of answers per prompt,
    `train.reward` scores each, and each answer is pushed up or down by how it beats its group."""
    from trl import GRPOConfig, GRPOTrainer

    from synthkd.teachers.embedded import resolve_model_source
    from synthkd.training.rewards import JudgeReward, verifier_reward

    source = config.reward
    assert source is not None  # TrainConfig refuses grpo without one
    tokenizer.padding_side = "left"  # the student generates from left-padded prompts
    if source.verifier is not None:
        reward: Any = verifier_reward(source.verifier)
    elif source.judge is not None:
        reward = JudgeReward(source, recipe_dir, int(values["seed"]))
    else:  # a reward model's folder is loaded by TRL itself, as a sequence classifier
        reward = resolve_model_source(str(source.model))
    return GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=_trl_config(GRPOConfig, values),
        train_dataset=_prompts(rows, _gold_column(config)),
        processing_class=tokenizer,
        peft_config=peft,
    )


def _check_memory(config: TrainConfig, source: str, *, bytes_per_value: int, on_gpu: bool) -> MemoryEstimate:
    """Estimate what training needs before loading anything; refuse what cannot fit."""
    from synthkd.training.memory import estimate_training_memory, free_memory

    estimate = estimate_training_memory(
        source,
        bytes_per_value=bytes_per_value,
        lora=config.lora is not None,
        batch_size=int(config.args.get("per_device_train_batch_size", 8)),
        max_length=config.args.get("max_length", DEFAULT_MAX_LENGTH),
        teacher_source=_distill_teacher_source(config) if config.method == "distill" else None,
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


def _kd_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: Any, values: dict, peft: Any) -> Any:
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
