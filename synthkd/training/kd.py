"""Offline logit distillation (`method: kd`): cross-entropy on the teacher's answer plus a KL term
between the teacher's stored top-k distribution and the student's, at every answer token.

The teacher's distribution is known only on its k likeliest tokens; the rest of its mass is one
"tail" bucket. The student's full distribution is folded onto the same k + 1 buckets, so the KL is
exact over what was stored. With a temperature T both sides are softened over those buckets (for
the teacher, the tail counts as one token there), and the KL is scaled by T^2 (Hinton et al.).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import SFTTrainer

from synthkd.errors import RecipeError
from synthkd.kd.topk import template_sha256, tokenize_conversation, vocabulary_sha256

IGNORE = -100
# Keeps log(1 - sum p) finite where the stored top-k holds (almost) all of the mass.
TAIL_FLOOR = 1e-6


def check_student_vocabulary(dataset: Any, tokenizer: Any, student: str) -> list[str]:
    """Refuse a student whose token ids mean something else than the teacher's; return warnings."""
    hashes = {value for value in dataset["kd_vocab_sha256"] if value}
    if not hashes:
        raise RecipeError(
            "no row has stored teacher log-probabilities: add a `logits` step before training with kd",
            where="train.method",
        )
    teachers = sorted({value for value in dataset["kd_teacher"] if value})
    if hashes != {vocabulary_sha256(tokenizer)}:
        raise RecipeError(
            f"the student {student!r} has another vocabulary than the teacher {', '.join(teachers)!s} whose "
            "log-probabilities were stored; kd compares distributions token by token, so they must share "
            "a tokenizer",
            where="train.student",
        )
    templates = {value for value in dataset["kd_template_sha256"] if value}
    if templates != {template_sha256(tokenizer)}:
        return [
            "the student's chat template differs from the teacher's; kd trains on the teacher's "
            "rendering of each conversation (the stored token ids)"
        ]
    return []


def kd_example(row: dict[str, Any], tokenizer: Any, max_length: int | None) -> dict[str, Any]:
    """Token ids, labels (answer tokens only) and the teacher's top-k per answer token for one row.
    A row without stored log-probabilities (an API teacher's unmappable answer) trains by CE only."""
    if row.get("kd_input_ids"):
        input_ids, prompt_length = list(row["kd_input_ids"]), int(row["kd_prompt_length"])
        top_ids, top_logprobs = list(row["kd_top_ids"]), list(row["kd_top_logprobs"])
    else:
        input_ids, prompt_length = tokenize_conversation(tokenizer, list(row["messages"]))
        top_ids, top_logprobs = [], []
    if max_length is not None:
        input_ids = input_ids[:max_length]
    answer_tokens = max(0, len(input_ids) - prompt_length)
    return {
        "input_ids": input_ids,
        "labels": [IGNORE] * min(prompt_length, len(input_ids)) + input_ids[prompt_length:],
        "kd_start": prompt_length,
        "kd_top_ids": top_ids[:answer_tokens],
        "kd_top_logprobs": top_logprobs[:answer_tokens],
    }


@dataclass
class KDCollator:
    """Pads a batch and lays the teacher's top-k out on the student's prediction positions: the
    logits at position t predict token t + 1, so answer token p's distribution goes to t = p - 1."""

    pad_token_id: int
    top_k: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in examples)
        batch = len(examples)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), IGNORE, dtype=torch.long)
        teacher_ids = torch.zeros((batch, width - 1, self.top_k), dtype=torch.long)
        teacher_logprobs = torch.zeros((batch, width - 1, self.top_k), dtype=torch.float32)
        kd_mask = torch.zeros((batch, width - 1), dtype=torch.bool)
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            input_ids[row, :length] = torch.tensor(example["input_ids"])
            attention_mask[row, :length] = 1
            labels[row, :length] = torch.tensor(example["labels"])
            stored = [
                (example["kd_start"] + j - 1, ids[: self.top_k], logprobs[: self.top_k])
                for j, (ids, logprobs) in enumerate(
                    zip(example["kd_top_ids"], example["kd_top_logprobs"], strict=True)
                )
                if ids and example["kd_start"] + j - 1 < width - 1  # tokens with a stored distribution
            ]
            if not stored:
                continue
            positions = torch.tensor([position for position, _, _ in stored])
            if all(len(ids) == self.top_k for _, ids, _ in stored):  # the usual case: one tensor copy
                teacher_ids[row, positions] = torch.tensor([ids for _, ids, _ in stored])
                teacher_logprobs[row, positions] = torch.tensor([logprobs for _, _, logprobs in stored])
            else:  # fewer stored at some positions: the missing slots get no mass
                for position, ids, logprobs in stored:
                    teacher_ids[row, position, : len(ids)] = torch.tensor(ids)
                    teacher_logprobs[row, position, : len(ids)] = torch.tensor(logprobs)
                    teacher_logprobs[row, position, len(ids) :] = float("-inf")
            kd_mask[row, positions] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "teacher_ids": teacher_ids,
            "teacher_logprobs": teacher_logprobs,
            "kd_mask": kd_mask,
        }


def with_tail(top_logprobs: torch.Tensor) -> torch.Tensor:
    """Top-k log-probabilities plus the tail bucket holding the rest of the mass: (..., k + 1)."""
    tail_mass = (1 - top_logprobs.exp().sum(-1, keepdim=True)).clamp(min=TAIL_FLOOR)
    return torch.cat([top_logprobs, tail_mass.log()], dim=-1)


def bucket_log_probs(log_probs: torch.Tensor, top_ids: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Fold full-vocabulary log-probabilities onto [top-k ..., tail]. Slots where nothing was
    stored (`stored` False) get no mass, which stays in the tail."""
    return with_tail(log_probs.gather(-1, top_ids).masked_fill(~stored, float("-inf")))


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    kd_mask: torch.Tensor,
    weight: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CE + weight * T^2 * KL(teacher || student), CE, KL), each a mean over answer tokens."""
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    answer = targets != IGNORE
    ce = (
        torch.nn.functional.cross_entropy(logits[answer], targets[answer])
        if answer.any()
        else logits.sum() * 0
    )
    if not kd_mask.any():
        zero = logits.sum() * 0
        return ce, ce, zero
    stored_logprobs = teacher_logprobs[kd_mask]
    student = bucket_log_probs(
        (logits[kd_mask] / temperature).log_softmax(-1), teacher_ids[kd_mask], stored_logprobs.isfinite()
    )
    teacher = with_tail(stored_logprobs)
    if temperature != 1.0:
        teacher = (teacher / temperature).log_softmax(-1)
    # Slots with no stored token (-inf) carry no mass; 0 * (-inf) must not become NaN.
    kl_terms = torch.where(teacher.isfinite(), teacher.exp() * (teacher - student), torch.zeros_like(teacher))
    kl = kl_terms.sum(-1).mean()
    return ce + weight * temperature**2 * kl, ce, kl


class KDTrainer(SFTTrainer):
    """TRL's SFTTrainer with the loss replaced by `distillation_loss`; everything else is TRL's."""

    def __init__(self, *args: Any, kd_weight: float, kd_temperature: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        # The loss is a per-batch mean: let Trainer divide it over gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        loss, ce, kl = distillation_loss(
            outputs.logits,
            inputs["labels"],
            inputs["teacher_ids"],
            inputs["teacher_logprobs"],
            inputs["kd_mask"],
            self.kd_weight,
            self.kd_temperature,
        )
        mode = "train" if model.training else "eval"
        if mode == "train":  # TRL's own compute_loss counts these; this one replaces it
            self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        self._metrics[mode]["ce_loss"].append(ce.item())
        self._metrics[mode]["kd_loss"].append(kl.item())
        return (loss, outputs) if return_outputs else loss
