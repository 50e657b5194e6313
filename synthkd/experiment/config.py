"""The `experiment:` section of a recipe: which student, which ways of training it, how much."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from synthkd.config_base import StrictModel
from synthkd.teachers.config import TeacherConfig

# What an arm trains on, of the rows the recipe's steps made (less the held-out ones):
#   all         every row
#   curated     the rows the `curate:` steps keep
#   raw_rows    as many rows as `curated` has, drawn at random from all (same row count)
#   raw_tokens  rows drawn at random from all until they hold as many answer tokens as `curated`
DATA_KINDS = ("all", "curated", "raw_rows", "raw_tokens")


class ExperimentArm(StrictModel):
    """One way of training the student."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="names the arm in the table")
    method: Literal["sft", "kd", "distill"] = Field(
        description="sft: the teacher's text; kd: its stored top-k; distill: on-policy, the live teacher"
    )
    data: Literal["all", "curated", "raw_rows", "raw_tokens"] = Field(
        "all", description=", ".join(DATA_KINDS)
    )
    kd_weight: float = Field(0.5, ge=0, description="kd: weight of the KL term")
    kd_temperature: float = Field(1.0, gt=0, description="kd: temperature of both distributions")
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field("jsd", description="distill's divergence")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="TRL arguments of this arm only, over the experiment's (e.g. distill's "
        "max_completion_length); the budget (steps, batch) belongs in the experiment's args",
    )


class ExperimentConfig(StrictModel):
    """Train `student` once per arm and seed, every run with the same TRL `args` (the same steps
    and batch: the same budget), and evaluate each on `held_out` prompts none of them trained on."""

    student: str = Field(description="a local model sharing the teacher's tokenizer, e.g. embedded:layers=15")
    held_out: int = Field(48, ge=1, description="rows set aside before training, for the evaluation")
    seeds: list[int] = Field([1, 2, 3], min_length=1, description="each arm is trained once per seed")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="TRL arguments of every arm, e.g. max_steps, per_device_train_batch_size, learning_rate",
    )
    arms: list[ExperimentArm] = Field(min_length=1, description="the ways of training compared")
    curate: list[dict[str, Any]] = Field(
        default_factory=list,
        description="steps (as in steps:) that make the `curated` rows from the training rows",
    )
    max_new_tokens: int = Field(64, ge=1, description="tokens a student may write for the agreement metric")
    keep_students: bool = Field(
        False,
        description="keep every trained student's weights (one model per arm and seed) after its evaluation",
    )
    judge: TeacherConfig | None = Field(
        None,
        description="a teacher that judges each student's held-out answers against the teacher's (win rate)",
    )

    @field_validator("arms")
    @classmethod
    def _names_differ(cls, arms: list[ExperimentArm]) -> list[ExperimentArm]:
        names = [arm.name for arm in arms]
        if len(set(names)) != len(names):
            raise ValueError(f"two arms share a name: {names}")
        return arms

    def needs_curation(self) -> bool:
        return any(arm.data != "all" for arm in self.arms)
