"""The conversational `messages` column (TRL's format) built from a row's flat columns."""

from __future__ import annotations

from typing import Any


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
