"""`self_instruct`: grow new tasks from a seed pool (Wang et al., 2022, "Self-Instruct").

Each request shows the teacher a few tasks sampled from the seeds and from tasks already made, and
asks for new ones. A new task is kept unless it is too short or long, names something a text-only
model cannot serve (images, files, ...), starts with punctuation or a non-English character, or has
a ROUGE-L F1 of 0.7 or more with any task already in the pool. Rounds repeat until
`num_instructions` are kept. Each kept task is then classified (classification or not) and given
input/output instances; classification tasks get theirs label first, as in the paper, so that the
labels are not all the same.

Every request's examples come from a generator seeded by (recipe seed, round, request), and the
pool is filtered in request order, so a rerun replays the cache and reaches the same dataset.
"""

from __future__ import annotations

import random
import re
import string
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    estimate_plan,
    require_columns,
)
from synthkd.steps.parsing import (
    ParseError,
    ask_parsed,
    failure_of,
    parse_numbered_list,
    parse_yes_no,
    reask_prompt_field,
)
from synthkd.teachers.base import ChatRequest

if TYPE_CHECKING:
    from synthkd.curate.rouge import RougeLPool

# Words that ask for something a text-only model cannot see or produce (the paper's list, extended).
DEFAULT_BLOCKED_KEYWORDS = [
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
]
_INSTANCE = re.compile(
    r"^\W*input\s*:\s*(.*?)\s*\n\W*output\s*:\s*(.*?)\s*(?=\n\W*input\s*:|\Z)",
    re.IGNORECASE | re.DOTALL | re.MULTILINE,
)
_LABELLED = re.compile(
    r"^\W*class label\s*:\s*(.*?)\s*\n\W*input\s*:\s*(.*?)\s*(?=\n\W*class label\s*:|\Z)",
    re.IGNORECASE | re.DOTALL | re.MULTILINE,
)
_NO_INPUT = {"", "<none>", "none", "n/a", "<noinput>", "no input"}


class SelfInstructStep(TeacherStep):
    """New tasks from a seed pool, with Self-Instruct's filters, then instances for each."""

    step: Literal["self_instruct"] = "self_instruct"
    taxonomy: ClassVar[str] = "expansion"  # new instructions grown from seed demonstrations
    citation: ClassVar[str] = """\
@inproceedings{wang2023selfinstruct,
  title = {Self-Instruct: Aligning Language Models with Self-Generated Instructions},
  author = {Wang, Yizhong and Kordi, Yeganeh and Mishra, Swaroop and Liu, Alisa and Smith, Noah A. and
    Khashabi, Daniel and Hajishirzi, Hannaneh},
  booktitle = {Proceedings of the 61st Annual Meeting of the Association for Computational Linguistics},
  year = {2023}
}
"""
    num_instructions: int = Field(100, ge=1, description="new tasks to keep")
    seed_examples: int = Field(6, ge=0, description="seed tasks shown per request (paper: 6)")
    generated_examples: int = Field(2, ge=0, description="generated tasks shown per request (paper: 2)")
    new_per_request: int = Field(8, ge=1, description="new tasks asked for per request")
    requests_per_round: int = Field(8, ge=1, description="requests sent together before filtering")
    max_rounds: int = Field(50, ge=1, description="give up after this many rounds")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="drop a task at this ROUGE-L F1 to the pool")
    min_words: int = Field(3, ge=1, description="drop a new instruction with fewer words (too_short)")
    max_words: int = Field(150, ge=1, description="drop a new instruction with more words (too_long)")
    blocked_keywords: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_KEYWORDS),
        description="drop an instruction naming one of these words, which a text model cannot do "
        "(unsupported_keyword: image, file, draw, ...)",
    )
    instances: bool = Field(True, description="generate input/output instances for each new task")
    max_instances: int = Field(1, ge=1, description="instances asked for per task")
    keep_seeds: bool = Field(False, description="also output the seed rows")
    prompt: str = Field(
        "prompts/self_instruct/generate.jinja",
        description="Jinja template asking for new tasks from examples",
    )
    classify_prompt: str = Field(
        "prompts/self_instruct/is_classification.jinja",
        description="Jinja template asking whether a task is a classification task",
    )
    instances_prompt: str = Field(
        "prompts/self_instruct/instances.jinja",
        description="Jinja template asking for a task's input/output instances",
    )
    classification_instances_prompt: str = Field(
        "prompts/self_instruct/classification_instances.jinja",
        description="Jinja template asking for a classification task's instances, the label first",
    )
    reask_prompt: str = reask_prompt_field()

    _blocked: re.Pattern | None = PrivateAttr(None)

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({"instruction"}, columns, ctx, "step", "self_instruct (the seed tasks)")
        words = [re.escape(word) for word in self.blocked_keywords]
        self._blocked = re.compile(rf"\b(?:{'|'.join(words)})\b", re.IGNORECASE) if words else None
        produced = {"id", "instruction", "round"}
        if self.instances:
            produced |= {"input", "output", "is_classification"}
        if not self.keep_seeds:
            return produced
        return None if columns is None else columns | produced  # the seed rows come out as they are

    def drop_reason(self, instruction: str, pool: RougeLPool) -> str | None:
        """Why a new task is not kept (the paper's filters, cheapest first), or None to keep it."""
        words = len(instruction.split())
        if words < self.min_words:
            return "too_short"
        if words > self.max_words:
            return "too_long"
        if self._blocked is not None and self._blocked.search(instruction):
            return "unsupported_keyword"
        if instruction[0] in string.punctuation:
            return "starts_with_punctuation"
        if not instruction[0].isascii():
            return "non_english_start"
        if pool.is_near_duplicate(instruction, self.rouge_threshold):
            return "near_duplicate"
        return None

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        from synthkd.curate.rouge import RougeLPool  # numpy, imported when used: faster starts

        seeds = list(dict.fromkeys(row["instruction"].strip() for row in rows if row.get("instruction")))
        pool = RougeLPool()
        for seed_task in seeds:
            pool.add(seed_task)
        kept: list[tuple[str, int]] = []  # (task, round)
        result = StepResult([])
        ctx.progress.set_total(self.num_instructions * (3 if self.instances else 1))
        for round_number in range(self.max_rounds):
            if len(kept) >= self.num_instructions:
                break
            requests = [
                self._generation_request(seeds, kept, ctx.seed, round_number, index)
                for index in range(self.requests_per_round)
            ]
            answers = await ask_parsed(ctx.dispatcher, requests, parse_tasks, self.template("reask_prompt"))
            for index, answer in enumerate(answers):
                if not answer.ok:
                    result.failures.append(
                        failure_of(None, answer, row_id=f"round{round_number}-request{index}")
                    )
                    continue
                for task in answer.value:
                    if len(kept) >= self.num_instructions:
                        result.dropped["over_target"] += 1
                        continue
                    reason = self.drop_reason(task, pool)
                    if reason is not None:
                        result.dropped[reason] += 1
                        continue
                    pool.add(task)
                    kept.append((task, round_number))
                    ctx.progress.advance()
        tasks = [
            {"id": f"self-instruct-{number:05d}", "instruction": task, "round": round_number}
            for number, (task, round_number) in enumerate(kept)
        ]
        new_rows = await self._add_instances(tasks, ctx, result) if self.instances else tasks
        result.rows = (list(rows) if self.keep_seeds else []) + new_rows
        return result

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """Rounds of `requests_per_round` until `num_instructions` are kept: at least enough rounds
        if every new task were kept, at most `max_rounds`; then, with instances, a classification
        question and an instances request per task. Any parsed answer may be re-asked once. The
        examples each request shows depend on the recipe seed, so none is looked up in the cache;
        the prompt shown is an example."""
        seeds = list(dict.fromkeys(str(row["instruction"]).strip() for row in rows if row.get("instruction")))
        per_round = self.requests_per_round * self.new_per_request
        rounds = min(self.max_rounds, -(-self.num_instructions // per_round))
        follow_ups = 2 * self.num_instructions if self.instances else 0
        example = self.template("prompt").render(
            {
                "examples": seeds[: self.seed_examples + self.generated_examples],
                "num_new": self.new_per_request,
            }
        )
        known = [self.chat(example)]
        plan = estimate_plan(
            self.teacher_config,
            rounds * self.requests_per_round + follow_ups,
            known,
            None,
            requests_max=2 * (self.max_rounds * self.requests_per_round + follow_ups),
        )
        new_rows = []
        for number in range(self.num_instructions):
            row_id = f"self-instruct-{number:05d}"
            new_row = {"id": row_id, "instruction": f"[task {row_id} written by self_instruct]", "round": 0}
            if self.instances:
                new_row |= {"input": "", "output": f"[output of {row_id}]", "is_classification": False}
            new_rows.append(new_row)
        return (list(rows) if self.keep_seeds else []) + new_rows, plan

    def _generation_request(
        self, seeds: list[str], kept: list, seed: int, round_number: int, index: int
    ) -> ChatRequest:
        rng = random.Random(f"{seed}:{round_number}:{index}")
        generated = [task for task, _ in kept]
        machine = rng.sample(generated, min(self.generated_examples, len(generated)))
        human_count = self.seed_examples + self.generated_examples - len(machine)
        human = rng.sample(seeds, min(human_count, len(seeds)))
        examples = human + machine
        rng.shuffle(examples)
        prompt = self.template("prompt").render({"examples": examples, "num_new": self.new_per_request})
        # The round and index are part of the cache key, so two rounds that happen to sample the
        # same examples still get two different answers.
        return self.chat(prompt, sample=round_number * 10_000 + index)

    async def _add_instances(self, tasks: list[Row], ctx: StepContext, result: StepResult) -> list[Row]:
        """Classify each task, then ask for its instances (label first for classification tasks)."""
        reask = self.template("reask_prompt")

        def ask(template: str, task: Row, **values: Any) -> ChatRequest:
            return self.chat(self.template(template).render({"instruction": task["instruction"], **values}))

        verdicts = await ask_parsed(
            ctx.dispatcher,
            [ask("classify_prompt", t) for t in tasks],
            parse_yes_no,
            reask,
            progress=ctx.progress,
        )
        requests = []
        for task, verdict in zip(tasks, verdicts, strict=True):
            # An unanswered classification question is not worth losing the task over.
            task["is_classification"] = bool(verdict.value) if verdict.ok else False
            template = "classification_instances_prompt" if task["is_classification"] else "instances_prompt"
            requests.append(ask(template, task, count=self.max_instances))
        answers = await ask_parsed(
            ctx.dispatcher, requests, parse_any_instances, reask, progress=ctx.progress
        )
        rows = []
        for task, answer in zip(tasks, answers, strict=True):
            if not answer.ok:
                result.failures.append(failure_of(dict(task), answer))
                continue
            instances = answer.value[: self.max_instances]
            for number, (instance_input, output) in enumerate(instances):
                row_id = task["id"] if len(instances) == 1 else f"{task['id']}-{number}"
                rows.append({**task, "id": row_id, "input": instance_input, "output": output})
        return rows


def parse_tasks(text: str) -> list[str]:
    """The tasks in a numbered list ("Task 9: ...", "9. ..."); a ParseError if there are none."""
    try:
        return parse_numbered_list(text, "tasks")
    except ParseError:
        raise ParseError("no numbered tasks found; write one per line as 'Task N: <the task>'") from None


def parse_any_instances(text: str) -> list[tuple[str, str]]:
    """(input, output) pairs from either format: 'Input/Output' or 'Class label/Input'."""
    pairs = [(_clean_input(i), o.strip()) for i, o in _INSTANCE.findall(text) if o.strip()]
    if not pairs:
        # Label first: the label is the output of the instance.
        pairs = [(_clean_input(i), label.strip()) for label, i in _LABELLED.findall(text) if label.strip()]
    if not pairs:
        raise ParseError(
            "no examples found; write 'Input: ...' then 'Output: ...' "
            "(or 'Class label: ...' then 'Input: ...')"
        )
    return pairs


def _clean_input(text: str) -> str:
    text = text.strip()
    return "" if text.lower() in _NO_INPUT else text
