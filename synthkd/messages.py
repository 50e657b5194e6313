"""The conversational `messages` column (TRL's format) built from a row's flat columns."""

from __future__ import annotations

from typing import Any

# What the teacher was sent, as text, in a written dataset. A string column named `prompt` beside
# `messages` makes TRL's SFTTrainer take the rows for its prompt/completion format and fail
# (KeyError: 'completion'). A `prompt` that is a message list (a preference pair's) is TRL's own.
TEACHER_PROMPT = "teacher_prompt"


def with_messages(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add TRL's conversational `messages` column; the flat columns stay."""
    result = []
    for row in rows:
        if "messages" in row or "response" not in row:
            result.append(row)
            continue
        user = row.get("prompt")
        if user is None:
            user = "\n\n".join(part for part in (row.get("instruction"), row.get("input")) if part)
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}]
        result.append({**row, "messages": messages})
    return result


def for_trl(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as written for TRL's trainers to take as they are: a text `prompt` beside
    `messages` becomes `teacher_prompt` (see TEACHER_PROMPT), in the same column position."""
    return [
        {(TEACHER_PROMPT if key == "prompt" else key): value for key, value in row.items()}
        if isinstance(row.get("prompt"), str) and "messages" in row
        else row
        for row in rows
    ]
