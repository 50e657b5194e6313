"""The student's model card: `<student dir>/README.md`, written from the metrics in its eval.json.

The dataset's card (`publish.card`) describes a run; this one describes what training made of it,
so everything in it comes from the measured metrics rather than from the recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthkd.atomic import atomic_write_text

CARD_FILE = "README.md"


# The held-out figures a trained student may have (which ones depends on the method), in the order
# they are shown: (key in eval.json, the card's label, the terminal table's short label).
HELD_OUT_METRICS = (
    ("loss", "loss on the teacher's answers", "loss"),
    ("perplexity", "perplexity", "perplexity"),
    ("agreement", "agreement with the teacher (exact / ROUGE-L)", "agreement with teacher"),
    ("accuracy", "accuracy against the teacher (every answer compared exactly)", "accuracy against teacher"),
    ("reward", "mean reward of its greedy answers", "reward"),
    ("pair_accuracy", "pairs whose chosen answer it scores above the rejected one", "pair accuracy"),
    ("mean_margin", "mean score of chosen minus rejected", "mean margin"),
)


def shown_metrics(after: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The HELD_OUT_METRICS that `after` (a student's held-out figures) has."""
    return [metric for metric in HELD_OUT_METRICS if after.get(metric[0]) is not None]


def write_model_card(output_dir: Path, run_name: str, metrics: dict[str, Any]) -> Path:
    """Write the card beside the saved student; `metrics` is what eval.json holds (method, student,
    train_rows, and the held-out metrics before and after, with the judge's verdicts if any)."""
    path = output_dir / CARD_FILE
    atomic_write_text(path, model_card(run_name, metrics), what="the model card")
    return path


def model_card(run_name: str, metrics: dict[str, Any]) -> str:
    """The card's text: Hub metadata, what was trained on what, and the before/after table."""
    before, after = metrics["before"], metrics["after"]
    lines = [
        "---",
        "library_name: transformers",
        "tags: [synthkd, knowledge-distillation, trl]",
        "---",
        "",
        f"# {run_name} student",
        "",
        f"Distilled with synthkd: `{metrics['method']}` of `{metrics['student']}` on the dataset of the "
        f"`{run_name}` run ({metrics['train_rows']} training rows).",
        "",
        "| held-out metric | before | after |",
        "|---|---:|---:|",
        *(f"| {label} | {before.get(key)} | {after[key]} |" for key, label, _ in shown_metrics(after)),
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
    return "\n".join(lines)
