"""Judge win rate of the trained student against the teacher on held-out prompts.

The pairwise `judge` step does the judging: each pair is shown twice with the order swapped, and
only a verdict that survives the swap counts as a win; anything else is a tie. This cancels the
position bias LLM judges are known to have (Zheng et al., 2023, "Judging LLM-as-a-judge").
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from synthkd.dispatch.pool import TeacherPool
from synthkd.steps.base import CheckContext, StepContext
from synthkd.steps.judge import JudgeStep
from synthkd.teachers import TeacherConfig
from synthkd.training.rewards import prompt_text


def judge_win_rate(
    judge: TeacherConfig,
    conversations: list[list[dict[str, str]]],
    student_answers: list[str],
    recipe_dir: Path,
    seed: int,
) -> dict[str, Any]:
    """Compare the student's answer with the teacher's (each conversation's last message)."""
    rows = [
        {
            "id": f"held-out-{index}",
            "instruction": prompt_text(messages[:-1]),
            "student": student,
            "teacher": messages[-1]["content"],
        }
        for index, (messages, student) in enumerate(zip(conversations, student_answers, strict=True))
    ]
    step = JudgeStep(step="judge", mode="pairwise", pair_columns=["student", "teacher"], teacher=judge)
    step.check(set(rows[0]) if rows else None, CheckContext(recipe_dir, lambda key: f"train.judge: {key}"))
    return asyncio.run(_judge(step, judge, rows, recipe_dir, seed))


async def _judge(
    step: JudgeStep, judge: TeacherConfig, rows: list[dict], recipe_dir: Path, seed: int
) -> dict[str, Any]:
    async with TeacherPool(seed=seed) as pool:
        result = await step.run(rows, StepContext(recipe_dir, seed, pool.dispatcher(judge)))
    winners = [row["winner"] for row in result.rows]
    judged = len(winners)
    wins, losses = winners.count("student"), winners.count("teacher")
    return {
        "judge": f"{judge.backend}:{judge.model}",
        "pairs": judged,
        "student_wins": wins,
        "teacher_wins": losses,
        "ties": judged - wins - losses,
        "failed": len(result.failures),
        # A tie counts half, as in AlpacaEval and MT-Bench's pairwise win rate.
        "win_rate": round((wins + 0.5 * (judged - wins - losses)) / judged, 4) if judged else None,
    }
