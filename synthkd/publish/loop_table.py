"""A recipe's loop (`loop:`), as its rounds' files hold it: read once here, shown as one table by the
report (HTML) and the dataset card (Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthkd.publish.model_card import shown_metrics

LOOP_DIR = "rounds"  # a loop writes each round here, and loop.json with all of them
LOOP_FILE = "loop.json"


def read_loop(run_dir: Path) -> dict[str, Any] | None:
    """The run's loop.json (every round, the first checkpoint's held-out figures), if it has one."""
    path = run_dir / LOOP_DIR / LOOP_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def loop_table(loop: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per round: the model that answered, the student it trained, the rows the feedback steps
    kept of those given (and why they dropped the rest), the mean reward of its training steps (RL)
    and the trained student's held-out figures; the first checkpoint's figures first."""
    shown = shown_metrics(loop["after"])
    headers = ["round", "answered by", "trained", "rows kept", "feedback", "train reward"]
    headers += [label for _, _, label in shown]
    rows: list[list[Any]] = [
        ["start", "-", "-", "-", "-", "-", *(loop["before"].get(key) for key, _, _ in shown)]
    ]
    for done in loop["rounds"]:
        rewards = done.get("train_rewards") or []
        rows.append(
            [
                done["number"],
                Path(done["checkpoint"]).name,
                Path(done["trained"]).name,
                f"{done['rows_out']} of {done['rows_in']}",
                "; ".join(funnel_line(step) for step in done["steps"]),
                round(sum(rewards) / len(rewards), 4) if rewards else "-",
                *(done["after"].get(key) for key, _, _ in shown),
            ]
        )
    return headers, rows


def funnel_line(step: dict[str, Any]) -> str:
    """One step of a round: rows in -> out, and the reasons it dropped rows."""
    dropped = ", ".join(f"{reason} {count}" for reason, count in (step.get("rows_dropped") or {}).items())
    line = f"{step['step']} {step['rows_in']}→{step['rows_out']}"
    return f"{line} ({dropped})" if dropped else line
