"""Small text helpers shared by the manifest, the report and `synthkd show`."""

from __future__ import annotations


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
