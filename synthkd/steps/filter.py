"""`filter`: drop rows by length, regular expression, refusal wording or truncation."""

from __future__ import annotations

import re
from collections import Counter
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.curate.refusals import REFUSAL_PATTERNS, REFUSAL_WINDOW_CHARS
from synthkd.errors import RecipeError
from synthkd.steps.base import CheckContext, Columns, Row, Step, StepContext, StepResult, require_columns


class FilterStep(Step):
    """Keep only rows that pass every check given; the funnel records why each row was dropped."""

    step: Literal["filter"] = "filter"
    taxonomy: ClassVar[str] = "curation"  # rows selected by rules
    row_wise: ClassVar[bool] = True
    column: str = Field("response", description="the text column the checks look at")
    min_chars: int | None = Field(None, ge=0, description="drop shorter texts (after stripping)")
    max_chars: int | None = Field(None, ge=1, description="drop longer texts")
    keep_regex: str | None = Field(None, description="keep only texts this pattern matches (re.search)")
    drop_regex: str | None = Field(None, description="drop texts this pattern matches (re.search)")
    drop_refusals: bool = Field(False, description="drop refusals and 'as an AI model' disclaimers")
    drop_truncated: bool = Field(False, description="drop rows whose finish_reason is 'length'")

    _keep: re.Pattern | None = PrivateAttr(None)
    _drop: re.Pattern | None = PrivateAttr(None)
    _refusal: re.Pattern = PrivateAttr(re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE))

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({self.column}, columns, ctx, "column", "filter")
        if self.drop_truncated:
            require_columns({"finish_reason"}, columns, ctx, "drop_truncated", "drop_truncated")
        self._keep = _compile(self.keep_regex, ctx, "keep_regex")
        self._drop = _compile(self.drop_regex, ctx, "drop_regex")
        return columns

    def drop_reason(self, row: Row) -> str | None:
        """Why `row` is dropped, or None to keep it. Checks run cheapest first."""
        text = str(row.get(self.column) or "").strip()
        if self.drop_truncated and row.get("finish_reason") == "length":
            return "truncated"
        if self.min_chars is not None and len(text) < self.min_chars:
            return "too_short"
        if self.max_chars is not None and len(text) > self.max_chars:
            return "too_long"
        if self._keep is not None and not self._keep.search(text):
            return "keep_regex_unmatched"
        if self._drop is not None and self._drop.search(text):
            return "drop_regex_matched"
        if self.drop_refusals and self._refusal.search(text[:REFUSAL_WINDOW_CHARS]):
            return "refusal"
        return None

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        ctx.progress.set_total(len(rows))
        kept, dropped = [], Counter()
        for row in rows:
            reason = self.drop_reason(row)
            if reason is None:
                kept.append(row)
            else:
                dropped[reason] += 1
        ctx.progress.advance(len(rows))
        return StepResult(kept, dropped=dropped)


def _compile(pattern: str | None, ctx: CheckContext, key: str) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RecipeError(f"invalid regular expression {pattern!r}: {exc}", where=ctx.at(key)) from None
