"""The `loop:` section of a recipe: rounds in which the student answers, the teacher gives feedback
on those answers, and the student trains on what that feedback makes."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator

from synthkd.config_base import StrictModel

# A step's teacher key set to this names the round's student: the checkpoint the round starts from.
STUDENT = "student"


class LoopConfig(StrictModel):
    """Each round: `steps` run on the round's rows with `student` standing for the round's checkpoint
    (the recipe's `train.student` in round 1, then the student the round before trained), then the
    recipe's `train:` section trains that checkpoint on what the steps kept."""

    rounds: int = Field(2, ge=1, le=100, description="rounds, each one answer-feedback-train cycle")
    rows_per_round: int | None = Field(
        None,
        ge=1,
        description="rows each round's steps get: the next slice of the run's rows (wrapping round), "
        "so each round sees new prompts; unset: every row, every round",
    )
    student_params: dict[str, Any] = Field(
        default_factory=lambda: {"temperature": 0.8, "max_tokens": 128},
        description="how the student answers: generation params of its local (transformers) model",
    )
    steps: list[dict[str, Any]] = Field(
        min_length=1,
        description="steps (as in steps:) run on each round's rows; a teacher key set to `student` "
        "(e.g. label's teacher, preference's teacher) is the round's checkpoint",
    )

    @field_validator("steps")
    @classmethod
    def _steps_are_steps(cls, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each step's keys checked when the recipe loads, not at round 1 after the data is made;
        `student` stands in as a local model here (the round gives it the checkpoint)."""
        from synthkd.steps import STEP_TYPES

        for index, step in enumerate(steps):
            step_class = STEP_TYPES.get(str(step.get("step")))
            if step_class is None:
                raise ValueError(
                    f"steps.{index}: no step named {step.get('step')!r}; known: {sorted(STEP_TYPES)}"
                )
            stand_in = {"backend": "transformers", "model": STUDENT}
            given = {key: stand_in if value == STUDENT else value for key, value in step.items()}
            try:
                step_class.model_validate(given)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"steps.{index}.{where}: {first['msg']}") from None
        return steps
