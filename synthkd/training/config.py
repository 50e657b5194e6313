"""The `train:` section of a recipe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from synthkd.config_base import StrictModel
from synthkd.extras import TRAINING, check_installed
from synthkd.teachers.config import (
    DEFAULT_LOCAL_BACKEND,
    EMBEDDED_MODEL,
    TeacherConfig,
    embedded_layers,
    is_embedded,
)


class LoraSettings(StrictModel):
    """LoRA adapters (peft), merged into the saved model."""

    r: int = Field(16, ge=1, description="rank of the adapters")
    alpha: int = Field(32, ge=1, description="scaling: the adapters' update is multiplied by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | str = Field("all-linear", description="modules adapted (peft's names)")


class VerifierReward(StrictModel):
    """Reward 1 where the student's answer matches the row's gold answer, else 0."""

    column: str = Field(description="the column holding each row's gold answer, e.g. answer_gold")
    match: Literal["final_answer", "exact", "contains", "regex"] = Field(
        "final_answer",
        description="final_answer: the answer's last 'Final answer: ...' line equals the gold (as the "
        "rationale step compares: case, spacing, number format aside); exact: the whole answer equals "
        "it; contains: the gold appears in the answer as a word; regex: the gold is a regular "
        "expression found in the answer (a format check)",
    )


class RewardSource(StrictModel):
    """What scores the student's own answers in RL (`train.method: grpo`): one of these."""

    verifier: VerifierReward | None = Field(None, description="a gold-answer check, no model needed")
    model: str | None = Field(
        None,
        description="a reward model: the folder a `train.method: reward` run wrote (its student "
        "folder), another local folder or a Hub id of a sequence-classification model",
    )
    judge: TeacherConfig | None = Field(
        None,
        description="a teacher that scores each answer pointwise (the judge step's rubric), through "
        "the dispatcher and its cache; the reward is the score scaled to 0..1",
    )
    scale: tuple[int, int] = Field((1, 10), description="judge: the lowest and highest score it gives")

    @model_validator(mode="after")
    def _exactly_one(self) -> RewardSource:
        given = [name for name in ("verifier", "model", "judge") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of verifier, model or judge, not {given or 'none'}")
        return self


class TrainConfig(StrictModel):
    """Which student, which method, and TRL's own arguments passed through as they are."""

    method: Literal["sft", "dpo", "distill", "kd", "reward", "grpo"] = Field(
        "sft",
        description="sft on `messages`; dpo on prompt/chosen/rejected; distill: on-policy, live teacher; "
        "kd: offline, from the top-k log-probabilities a `logits` step stored; reward: a reward model "
        "from prompt/chosen/rejected; grpo: RL on the student's own answers, scored by `reward`",
    )
    student: str = Field(
        description="a Hub id, a local folder, `embedded` (SmolLM2-135M-Instruct), or a smaller model "
        "cut from it: `embedded:layers=N` keeps N of its 30 decoder layers (15: every other one)"
    )
    teacher: TeacherConfig | None = Field(
        None,
        description="distill: a local (transformers) teacher sharing the student's tokenizer; a teacher "
        "mapping like any other, or a plain model string (a local folder, a Hub id or `embedded`)",
    )
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "jsd", description="distill: the generalised JSD's beta 0, 1 or 0.5 (args.beta overrides)"
    )
    kd_weight: float = Field(0.5, ge=0, description="kd: weight of the KL term added to the cross-entropy")
    kd_temperature: float = Field(1.0, gt=0, description="kd: softens both distributions; KL scaled by T^2")
    reward: RewardSource | None = Field(
        None, description="grpo: what scores the student's answers (a verifier, a reward model, a judge)"
    )
    lora: LoraSettings | None = Field(
        None, description="train LoRA adapters through peft instead of all weights"
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of TRL's SFTConfig/DPOConfig, e.g. num_train_epochs, learning_rate",
    )
    eval_split: float = Field(0.05, ge=0, lt=1, description="share of rows held out for evaluation")
    eval_max_rows: int = Field(32, ge=1, description="held-out rows used for the before/after evaluation")
    eval_max_new_tokens: int = Field(64, ge=1, description="tokens the student may generate when evaluated")
    judge: TeacherConfig | None = Field(
        None, description="a teacher that judges the student's held-out answers against the teacher's"
    )
    output_dir: str | None = Field(None, description="where the student is saved; default <run dir>/student")
    push_to_hub: str | None = Field(None, description="a Hub repo id to push the student to")

    @field_validator("student")
    @classmethod
    def _pruned_embedded_is_well_formed(cls, value: str) -> str:
        if value.startswith(f"{EMBEDDED_MODEL}:") and embedded_layers(value) is None:
            raise ValueError(f"{value!r}: a model cut from the embedded one is written embedded:layers=N")
        return value

    @model_validator(mode="after")
    def _reward_goes_with_grpo(self) -> TrainConfig:
        if self.method == "grpo" and self.reward is None:
            raise ValueError("method grpo needs a reward: {verifier: {column: ...}} or {model: FOLDER}")
        if self.method != "grpo" and self.reward is not None:
            raise ValueError(f"reward scores the student's answers in method grpo, not in {self.method}")
        return self

    @field_validator("teacher", mode="before")
    @classmethod
    def _model_string_is_local(cls, value: Any) -> Any:
        # `teacher: <model>` predates teacher mappings here; distill loads the teacher next to the
        # student, so a bare model string has always meant a local model.
        return {"backend": DEFAULT_LOCAL_BACKEND, "model": value} if isinstance(value, str) else value

    def check_installed(self, where: Callable[..., str]) -> None:
        """Raise `MissingExtraError` (exit 2) if what training needs is not installed (the `train`
        extra), before any request or weight is loaded. Imports nothing. `where(*key)` names a key
        of the train: section in messages (`where()` the section itself)."""
        # The embedded student is read from a GGUF file, which transformers reads with gguf.
        modules = (*TRAINING, "gguf") if is_embedded(self.student) else TRAINING
        check_installed(modules, "train", f"training a student (train.method {self.method})", where())
        if self.lora is not None:
            check_installed(("peft",), "train", "LoRA adapters", where("lora"))
