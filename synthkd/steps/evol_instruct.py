"""`evol_instruct`: make instructions harder, round by round (Xu et al., 2023, "WizardLM").

Each round rewrites every instruction with one operation drawn at random: in depth (add a
constraint, deepen, concretize, increase reasoning steps, complicate the input) or, less often, in
breadth (a new instruction on a rarer topic of the same domain). The teacher then answers the
evolved instruction. As in the paper, an evolution is eliminated when it adds no information over
its parent (a similarity test, or the teacher is asked), when the answer is a refusal or very
short, or when it copies words of the rewriting prompt; the parent then goes on to the next round
unchanged. Every row keeps its lineage: parent id, operation, round.

The operation of a row in a round comes from a generator seeded by (recipe seed, row id, round),
so a rerun replays the cache and reaches the same dataset.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
from synthkd.curate.refusals import REFUSAL_PATTERNS, REFUSAL_WINDOW_CHARS
from synthkd.errors import RecipeError
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Failure,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    estimate_plan,
    require_columns,
)
from synthkd.steps.parsing import ParseError, ask_parsed, failure_of, parse_yes_no, reask_prompt_field
from synthkd.teachers.base import ChatRequest

DEPTH_OPERATIONS = ["add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input"]
OPERATIONS = [*DEPTH_OPERATIONS, "breadth"]
# Words of the rewriting prompts that must not leak into an evolved instruction.
PROMPT_WORDS = re.compile(
    r"#?\s*(?:rewritten|given|created|new)\s+(?:prompt|instruction)\s*#?\s*:|rewritten prompt|given prompt",
    re.IGNORECASE,
)
_HEADING = re.compile(
    r"^\s*(?:#+\s*)?(?:\*\*)?(?:rewritten|new|evolved)?\s*(?:instruction|prompt)\s*(?:\*\*)?\s*:\s*",
    re.IGNORECASE,
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
# A parent's columns that belong to its own instruction (its input, prompt, answer, conversation):
# an evolved row does not inherit them, or it would pair the new instruction with a stale answer.
PARENT_ONLY_COLUMNS = ("prompt", "input", "output", "messages", "system", "response", "finish_reason")


class EvolInstructStep(TeacherStep):
    """Evolve instructions for `rounds` rounds, eliminating failed evolutions as WizardLM does."""

    step: Literal["evol_instruct"] = "evol_instruct"
    taxonomy: ClassVar[str] = "expansion"  # instructions rewritten into harder ones
    citation: ClassVar[str] = """\
@article{xu2023wizardlm,
  title = {WizardLM: Empowering Large Language Models to Follow Complex Instructions},
  author = {Xu, Can and Sun, Qingfeng and Zheng, Kai and Geng, Xiubo and Zhao, Pu and Feng, Jiazhan and
    Tao, Chongyang and Jiang, Daxin},
  journal = {arXiv preprint arXiv:2304.12244},
  year = {2023}
}
"""
    rounds: int = Field(3, ge=1, description="rounds of evolution")
    operations: list[str] = Field(
        default_factory=lambda: list(OPERATIONS), description="operations drawn from"
    )
    breadth_probability: float = Field(0.2, ge=0, le=1, description="chance of the in-breadth operation")
    elimination: Literal["similarity", "teacher"] = Field(
        "similarity", description="how 'adds no information' is judged: ROUGE-L with the parent, or asking"
    )
    similarity_threshold: float = Field(
        0.9, gt=0, le=1, description="ROUGE-L F1 at which a child equals its parent"
    )
    min_answer_words: int = Field(
        20, ge=0, description="an answer shorter than this eliminates the evolution"
    )
    keep_original: bool = Field(False, description="also output the round-0 instructions")
    depth_prompt: str = Field(
        "prompts/evol_instruct/depth.jinja",
        description="Jinja template of the in-depth rewrites (the operation's instruction is filled in)",
    )
    breadth_prompt: str = Field(
        "prompts/evol_instruct/breadth.jinja",
        description="Jinja template of the in-breadth rewrite: a new instruction in the same domain",
    )
    equal_prompt: str = Field(
        "prompts/evol_instruct/equal.jinja",
        description="with elimination: teacher, Jinja template asking whether an evolution adds "
        "nothing to its parent",
    )
    reask_prompt: str = reask_prompt_field()

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({"instruction"}, columns, ctx, "step", "evol_instruct")
        unknown = sorted(set(self.operations) - set(OPERATIONS))
        if unknown or not self.operations:
            raise RecipeError(
                f"unknown operation(s) {unknown}; valid: {', '.join(OPERATIONS)}", where=ctx.at("operations")
            )
        added = {"id", "instruction", "response", "finish_reason", "parent_id", "operation", "round"}
        if columns is None:
            return None
        kept = columns if self.keep_original else columns - set(PARENT_ONLY_COLUMNS)
        return kept | added

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """Each round rewrites every row, (with teacher elimination) asks whether it gained
        information, and answers it; a rewrite or a question may be re-asked once. The operation
        drawn depends on the recipe seed, which a plan does not know, so no request is looked up
        in the cache and the prompts shown use the first operation."""
        asks = 3 if self.elimination == "teacher" else 2
        reasked = asks - 1  # the rewrite and the equality question are parsed, the answer is not
        operation = self.operations[0]
        template = "breadth_prompt" if operation == "breadth" else "depth_prompt"
        rewrites = [
            self._ask(template, instruction=str(row.get("instruction", "")), operation=operation)
            for row in rows
        ]
        total = self.rounds * len(rows) * asks
        plan = estimate_plan(
            self.teacher_config, total, rewrites, None, requests_max=total + self.rounds * len(rows) * reasked
        )
        placeholder = list(rows) if self.keep_original else []
        for round_number in range(1, self.rounds + 1):
            placeholder += [
                {
                    **{k: v for k, v in row.items() if k not in PARENT_ONLY_COLUMNS},
                    "id": f"{row.get('id')}-r{round_number}",
                    "instruction": f"[instruction evolved from {row.get('id')} in round {round_number}]",
                    "parent_id": row.get("id"),
                    "operation": operation,
                    "round": round_number,
                    "response": "",
                    "finish_reason": None,
                }
                for row in rows
            ]
        return placeholder, plan

    def choose_operation(self, seed: int, row_id: str, round_number: int) -> str:
        rng = random.Random(f"{seed}:{row_id}:{round_number}")
        depth = [op for op in self.operations if op != "breadth"]
        if "breadth" in self.operations and (not depth or rng.random() < self.breadth_probability):
            return "breadth"
        return rng.choice(depth)

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        result = StepResult(list(rows) if self.keep_original else [])
        ctx.progress.set_total(len(rows) * self.rounds)
        current = [{**row, "round": 0} for row in rows]
        for round_number in range(1, self.rounds + 1):
            evolved = await self._evolve(current, round_number, ctx, result)
            survivors = {row["parent_id"]: row for row in evolved}
            result.rows += evolved
            # A parent whose evolution was eliminated goes on to the next round as it was.
            current = [survivors.get(row["id"], row) for row in current]
            ctx.progress.advance(len(current))
        return result

    async def _evolve(
        self, parents: list[Row], round_number: int, ctx: StepContext, result: StepResult
    ) -> list[Row]:
        operations = [self.choose_operation(ctx.seed, row["id"], round_number) for row in parents]
        requests = [
            self._ask(
                "breadth_prompt" if operation == "breadth" else "depth_prompt",
                instruction=row["instruction"],
                operation=operation,
            )
            for row, operation in zip(parents, operations, strict=True)
        ]
        children = await ask_parsed(
            ctx.dispatcher, requests, parse_instruction, self.template("reask_prompt")
        )
        candidates = []
        for parent, operation, child in zip(parents, operations, children, strict=True):
            child_id = f"{parent['id']}-r{round_number}"
            if not child.ok:
                result.failures.append(failure_of(parent, child, row_id=child_id))
                continue
            if PROMPT_WORDS.search(child.value):
                result.dropped["copied_prompt_words"] += 1
                continue
            row = {
                **{key: value for key, value in parent.items() if key not in PARENT_ONLY_COLUMNS},
                "id": child_id,
                "instruction": child.value,
                "parent_id": parent["id"],
                "operation": operation,
                "round": round_number,
            }
            candidates.append((parent, row))
        candidates = await self._drop_no_gain(candidates, ctx, result)
        answers = await ctx.dispatcher.run([self.chat(row["instruction"]) for _, row in candidates])
        evolved = []
        for (_, row), outcome in zip(candidates, answers, strict=True):
            if outcome.completion is None:
                result.failures.append(Failure.from_outcome(row, outcome))
                continue
            text = outcome.completion.text.strip()
            if _REFUSAL.search(text[:REFUSAL_WINDOW_CHARS]) or len(text.split()) < self.min_answer_words:
                result.dropped["refusal_or_short_answer"] += 1
                continue
            evolved.append({**row, "response": text, "finish_reason": outcome.completion.finish_reason})
        return evolved

    async def _drop_no_gain(self, candidates: list, ctx: StepContext, result: StepResult) -> list:
        """Drop children that ask for the same thing as their parent."""
        from synthkd.curate.rouge import RougeLPool  # numpy, imported when used: faster starts

        if self.elimination == "similarity":
            kept = []
            for parent, child in candidates:
                same = RougeLPool([parent["instruction"]]).is_near_duplicate(
                    child["instruction"], self.similarity_threshold
                )
                if same:
                    result.dropped["no_information_gain"] += 1
                else:
                    kept.append((parent, child))
            return kept
        questions = [
            self._ask("equal_prompt", parent=p["instruction"], child=c["instruction"]) for p, c in candidates
        ]
        verdicts = await ask_parsed(ctx.dispatcher, questions, parse_yes_no, self.template("reask_prompt"))
        kept = []
        for pair, verdict in zip(candidates, verdicts, strict=True):
            if verdict.ok and verdict.value:
                result.dropped["no_information_gain"] += 1
            else:  # an unanswered question does not eliminate an evolution
                kept.append(pair)
        return kept

    def _ask(self, template: str, **values: str) -> ChatRequest:
        """A request whose user message is the template rendered with `values`."""
        return self.chat(self.template(template).render(values))


def parse_instruction(text: str) -> str:
    """The rewritten instruction, without a heading the model may have put before it."""
    cleaned = _HEADING.sub("", text.strip(), count=1).strip().strip('"').strip()
    if not cleaned:
        raise ParseError("the answer was empty; write only the rewritten instruction")
    return cleaned
