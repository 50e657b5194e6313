"""`pair`: preference rows from two answers a row already holds, with no judge: the first is
preferred by construction. With the teacher's answer as `chosen` and the student's own as
`rejected` this is the pairing of SPIN (Chen et al., 2024, self-play fine-tuning): the student is
trained away from what it writes and towards what the teacher writes, round after round (`loop:`).
Rows come out in the `preference` step's format (TRL's conversational preference rows)."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, Literal

from pydantic import Field

from synthkd.steps.base import CheckContext, Columns, Row, Step, StepContext, StepResult, require_columns
from synthkd.steps.preference_rows import preference_row


class PairStep(Step):
    """Pair `chosen_column` (preferred) with `rejected_column` for every row."""

    step: Literal["pair"] = "pair"
    taxonomy: ClassVar[str] = "feedback"  # the teacher's answer is set against the student's
    citation: ClassVar[str] = """\
@inproceedings{chen2024spin,
  title = {Self-Play Fine-Tuning Converts Weak Language Models to Strong Language Models},
  author = {Chen, Zixiang and Deng, Yihe and Yuan, Huizhuo and Ji, Kaixuan and Gu, Quanquan},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  year = {2024}
}
"""
    row_wise: ClassVar[bool] = True
    chosen_column: str = Field("response", description="the preferred answer (e.g. the teacher's)")
    rejected_column: str = Field("student_response", description="the other (e.g. the student's own)")

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({self.chosen_column}, columns, ctx, "chosen_column", "pair")
        require_columns({self.rejected_column}, columns, ctx, "rejected_column", "pair")
        added = {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
        return None if columns is None else (columns - {"messages", "response"}) | added

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        ctx.progress.set_total(len(rows))
        kept, dropped = [], Counter()
        for row in rows:
            chosen, rejected = (
                str(row.get(self.chosen_column) or ""),
                str(row.get(self.rejected_column) or ""),
            )
            if not chosen.strip() or not rejected.strip():
                dropped["empty_answer"] += 1
            elif chosen.strip() == rejected.strip():
                dropped["identical_answers"] += 1  # nothing to prefer: DPO learns nothing from it
            else:
                kept.append(preference_row(row, conversation_of(row), chosen, rejected, 1.0, 0.0))
        ctx.progress.advance(len(rows))
        return StepResult(kept, dropped=dropped)


def conversation_of(row: Row) -> list[dict[str, str]]:
    """The prompt the answers were written to: the row's system message, then its user message
    (the rendered `prompt`, else instruction and input)."""
    user = row.get("prompt")
    if not isinstance(user, str):
        user = "\n\n".join(str(part) for part in (row.get("instruction"), row.get("input")) if part)
    system = [{"role": "system", "content": str(row["system"])}] if row.get("system") else []
    return [*system, {"role": "user", "content": user}]
