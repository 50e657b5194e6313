"""`quality`: drop empty, truncated, refusing, repetitive, wrong-language or badly sized answers."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from synthkd.curate.heuristics import language_of, repeated_ngram_ratio, tokens
from synthkd.curate.refusals import REFUSAL_PATTERNS, REFUSAL_WINDOW_CHARS
from synthkd.extras import check_installed
from synthkd.steps.base import CheckContext, Columns, Row, Step, StepContext, StepResult, require_columns

_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)


class QualityStep(Step):
    """Heuristic quality checks on one text column; each drop reason is counted."""

    step: Literal["quality"] = "quality"
    taxonomy: ClassVar[str] = "curation"  # rows selected by heuristic quality signals
    column: str = Field("response", description="the text checked")
    min_tokens: int = Field(1, ge=0, description="fewer words than this: dropped")
    max_tokens: int | None = Field(None, ge=1, description="more words than this: dropped")
    languages: list[str] | None = Field(None, description="ISO 639-1 codes to keep, e.g. [en]; null: any")
    max_repeated_ngram_ratio: float = Field(
        0.3, ge=0, le=1, description="share of repeated word 3-grams allowed"
    )
    drop_refusals: bool = Field(True, description="refusals and 'as an AI language model' disclaimers")
    drop_truncated: bool = Field(True, description="rows whose finish_reason is 'length'")

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({self.column}, columns, ctx, "column", "quality")
        if self.languages:  # lingua comes with the `curate` extra
            check_installed(("lingua",), "curate", "language identification", ctx.at("languages"))
        return columns

    def drop_reason(self, row: Row) -> str | None:
        text = str(row.get(self.column) or "").strip()
        if not text:
            return "empty"
        if self.drop_truncated and row.get("finish_reason") == "length":
            return "truncated"
        count = len(tokens(text))
        if count < self.min_tokens:
            return "too_few_tokens"
        if self.max_tokens is not None and count > self.max_tokens:
            return "too_many_tokens"
        if self.drop_refusals and _REFUSAL.search(text[:REFUSAL_WINDOW_CHARS]):
            return "refusal"
        if repeated_ngram_ratio(text) > self.max_repeated_ngram_ratio:
            return "repetitive"
        if self.languages and language_of(text) not in self.languages:
            return "wrong_language"
        return None

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        ctx.progress.set_total(len(rows))
        result = StepResult([])
        for row in rows:
            reason = self.drop_reason(row)
            if reason is None:
                result.rows.append(row)
            else:
                result.dropped[reason] += 1
            ctx.progress.advance()
        return result
