"""The training steps on synthkd's progress display, instead of transformers' own output."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthkd.steps.base import Progress


def show_steps_on(trainer: Any, bar: Progress) -> None:
    """Show `trainer`'s optimizer steps on `bar` (done of max_steps). transformers' own progress
    callbacks go: its tqdm bar writes every log dict to stdout ({'loss': ..., 'grad_norm': ...}),
    and with `disable_tqdm` its printer prints them alone; the losses are in the result and the
    model card."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class StepsOnBar(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            bar.set_total(state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            bar.advance()

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepsOnBar())
