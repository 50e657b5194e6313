"""TRL's conversational preference rows (prompt, chosen, rejected), as every step that makes
pairs writes them: `preference`, `pair` and `critique_revise`."""

from __future__ import annotations

from typing import Any

from synthkd.steps.base import Row


def preference_row(
    row: Row,
    conversation: list[dict[str, str]],
    chosen: str,
    rejected: str,
    chosen_score: float,
    rejected_score: float,
) -> dict[str, Any]:
    """TRL's conversational preference format, plus the flat columns."""
    return {
        **{key: value for key, value in row.items() if key not in ("messages", "response")},
        "prompt": conversation,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "chosen_score": chosen_score,
        "rejected_score": rejected_score,
    }
