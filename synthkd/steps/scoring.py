"""Reading a judge's answers: pointwise JSON scores (optionally per aspect) and pairwise verdicts.

Shared by the steps that ask a judge (`judge`, `preference`): a score that is not a number within
the scale, or a verdict that is not A, B or tie, is a ParseError, so the judge is re-asked instead
of the answer counting as the lowest or highest score.
"""

from __future__ import annotations

import json
from typing import Any

from synthkd.steps.parsing import ParseError, strip_code_fence


def score_parser(scale: tuple[int, int], aspects: list[str] | None):
    """A parser of the judge's JSON that checks every score is a number within the scale."""
    low, high = scale

    def check(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParseError(f"{what} must be a number from {low} to {high}")
        if not low <= value <= high:
            raise ParseError(f"{what} {value} is outside the scale {low}-{high}")
        return float(value)

    def parse(text: str) -> tuple[float, str, dict[str, float]]:
        try:
            data = json.loads(strip_code_fence(text))
        except json.JSONDecodeError as exc:
            raise ParseError(f"not a JSON object ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ParseError("expected a JSON object")
        if not aspects:
            return check(data.get("score"), "score"), str(data.get("justification") or ""), {}
        per_aspect, reasons = {}, []
        for aspect in aspects:
            entry = data.get(aspect)
            if not isinstance(entry, dict):
                raise ParseError(f'missing "{aspect}": {{"score": ..., "justification": ...}}')
            per_aspect[aspect] = check(entry.get("score"), f"{aspect} score")
            reasons.append(f"{aspect}: {entry.get('justification') or ''}")
        return sum(per_aspect.values()) / len(per_aspect), " ".join(reasons), per_aspect

    return parse


def parse_winner(text: str) -> str:
    try:
        data = json.loads(strip_code_fence(text))
    except json.JSONDecodeError as exc:
        raise ParseError(f"not a JSON object ({exc.msg})") from None
    winner = str(data.get("winner", "")).strip().upper() if isinstance(data, dict) else ""
    if winner not in ("A", "B", "TIE"):
        raise ParseError('"winner" must be "A", "B" or "tie"')
    return winner.lower() if winner == "TIE" else winner


def agreed_winner(as_given: str, swapped: str, columns: tuple[str, str]) -> str:
    """The winning column when both orders agree (A first = B when swapped), else 'tie'."""
    first, second = columns
    if as_given == "A" and swapped == "B":
        return first
    if as_given == "B" and swapped == "A":
        return second
    return "tie"
