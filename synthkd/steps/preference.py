"""`preference`: prompt/chosen/rejected rows for DPO, from sampled answers scored by a judge.

For each prompt the teacher writes `n` answers (or the judge compares the teacher's against
existing `candidate_columns`, e.g. a student's). A judge, which may be another teacher, scores
each pointwise; the best becomes `chosen` and the worst `rejected` when their scores differ by at
least `min_margin`. Prompts whose candidates tie, or that have fewer than two scored candidates,
are dropped and counted. Rows follow TRL's conversational preference format.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
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
from synthkd.steps.parsing import ask_parsed, reask_prompt_field
from synthkd.steps.preference_rows import preference_row
from synthkd.steps.scoring import score_parser
from synthkd.teachers.base import ChatRequest
from synthkd.teachers.config import TeacherConfig


class PreferenceStep(TeacherStep):
    """Sample, judge, and pair the best answer with the worst one."""

    step: Literal["preference"] = "preference"
    taxonomy: ClassVar[str] = "feedback"  # the teacher ranks candidates into preference pairs
    citation: ClassVar[str] = """\
@article{cui2023ultrafeedback,
  title = {UltraFeedback: Boosting Language Models with High-quality Feedback},
  author = {Cui, Ganqu and Yuan, Lifan and Ding, Ning and Yao, Guanming and Zhu, Wei and Ni, Yuan and
    Xie, Guotong and Liu, Zhiyuan and Sun, Maosong},
  journal = {arXiv preprint arXiv:2310.01377},
  year = {2023}
}
"""
    n: int = Field(4, ge=1, description="answers sampled per prompt from the teacher")
    candidate_columns: list[str] = Field(
        default_factory=list, description="existing answers that also compete"
    )
    min_margin: float = Field(1.0, ge=0, description="chosen must beat rejected by at least this score")
    system: str | None = Field(None, description="system prompt for the sampled answers")
    scale: tuple[int, int] = Field((1, 10), description="the judge's lowest and highest score")
    prompt: str = Field("prompts/label.jinja", description="template of the user message")
    judge_prompt: str = Field(
        "prompts/judge/pointwise.jinja", description="Jinja template the judge scores each candidate with"
    )
    reask_prompt: str = reask_prompt_field()
    teacher: TeacherConfig | None = Field(None, description="writes the candidates")
    judge_teacher: TeacherConfig | None = Field(None, description="scores them (default: the same teacher)")

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        needed = set(self.template("prompt").variables) - {"input"}
        require_columns(needed, columns, ctx, "prompt", f"preference template {self.prompt}")
        require_columns(set(self.candidate_columns), columns, ctx, "candidate_columns", "preference")
        added = {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
        return None if columns is None else columns | added

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """The samples are known; the judge then scores each distinct answer (at most n plus the
        candidate columns a row), each may be re-asked once."""
        prompts = self._prompts(rows)
        samples = self._samples(prompts)
        judged = len(rows) * (self.n + len(self.candidate_columns))
        plan = estimate_plan(
            self.teacher_config,
            len(samples) + judged,
            samples,
            cache,
            requests_max=len(samples) + 2 * judged,
        )
        placeholder = [
            preference_row(row, self._conversation(prompt), "", "", 0.0, 0.0)
            for row, prompt in zip(rows, prompts, strict=True)
        ]
        return placeholder, plan

    def _prompts(self, rows: list[Row]) -> list[str]:
        return [self.template("prompt").render({"input": "", **row}) for row in rows]

    def _conversation(self, prompt: str) -> list[dict[str, str]]:
        """The prompt as the rows' `prompt` column holds it: the system message, then the user's."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": prompt}]

    def _samples(self, prompts: list[str]) -> list[ChatRequest]:
        """The teacher's `n` answers to every prompt, in order."""
        return [self.chat(prompt, system=self.system, sample=k) for prompt in prompts for k in range(self.n)]

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        judge = ctx.dispatcher_of(self.judge_teacher)
        prompts = self._prompts(rows)
        conversations = [self._conversation(prompt) for prompt in prompts]
        samples = await ctx.dispatcher.run(self._samples(prompts))
        result = StepResult([])
        candidates: list[list[str]] = []
        for index, row in enumerate(rows):
            outcomes = samples[index * self.n : (index + 1) * self.n]
            for k, outcome in enumerate(outcomes):
                if outcome.completion is None:  # the row may still pair its other answers
                    sample_id = f"{row['id']}-sample{k}"
                    result.failures.append(Failure.from_outcome(row, outcome, row_id=sample_id))
            own = [o.completion.text for o in outcomes if o.completion]
            given = [str(row[column]) for column in self.candidate_columns if row.get(column)]
            candidates.append(list(dict.fromkeys(own + given)))  # identical answers compete once
        low, high = self.scale
        judge_params = dict((self.judge_teacher or self.teacher_config).params)
        questions, owners = [], []
        for index, answers in enumerate(candidates):
            for answer in answers:
                content = self.template("judge_prompt").render(
                    {
                        "instruction": prompts[index],
                        "response": answer,
                        "low": low,
                        "high": high,
                        "aspects": None,
                    }
                )
                questions.append(ChatRequest(({"role": "user", "content": content},), judge_params))
                owners.append((index, answer))
        ctx.progress.set_total(len(questions))
        verdicts = await ask_parsed(
            judge,
            questions,
            score_parser(self.scale, None),
            self.template("reask_prompt"),
            progress=ctx.progress,
        )
        scored: list[list[tuple[float, str]]] = [[] for _ in rows]
        for (index, answer), verdict in zip(owners, verdicts, strict=True):
            if verdict.ok:
                scored[index].append((verdict.value[0], answer))
            else:
                result.failures.append(
                    Failure(
                        f"{rows[index]['id']}-candidate",
                        "unparseable_score" if verdict.outcome.completion is not None else verdict.reason,
                        verdict.outcome.attempts,
                        verdict.error,
                        raw=verdict.raw,
                    )
                )
        for row, conversation, ranked in zip(rows, conversations, scored, strict=True):
            pair = choose_pair(ranked, self.min_margin)
            if isinstance(pair, str):
                result.dropped[pair] += 1
                continue
            (chosen_score, chosen), (rejected_score, rejected) = pair
            result.rows.append(
                preference_row(row, conversation, chosen, rejected, chosen_score, rejected_score)
            )
        return result


def choose_pair(
    scored: list[tuple[float, str]], min_margin: float
) -> tuple[tuple[float, str], tuple[float, str]] | str:
    """(best, worst) by score, or why there is no pair: 'too_few_candidates' or 'tie'.

    Equal scores keep the order the answers were written in, so the choice is reproducible.
    """
    if len(scored) < 2:
        return "too_few_candidates"
    ranked = sorted(enumerate(scored), key=lambda item: (-item[1][0], item[0]))
    best, worst = ranked[0][1], ranked[-1][1]
    if best[0] - worst[0] < min_margin or best[0] == worst[0]:
        return "tie"
    return best, worst
