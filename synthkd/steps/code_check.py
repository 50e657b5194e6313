"""`code_check`: keep only answers whose code passes tests, run in a sandbox the code cannot fool.

For every row the Python code blocks of the answer are joined into a module `solution`; tests come
from a column or are written by the teacher from the task and the code (plain asserts, `test_*`
functions or unittest cases; re-asked once when they are not valid Python). Each check runs in
`synthkd.sandbox`: the answer in one process, the tests in another that sees the answer only
through proxies and alone can report a pass (so an answer cannot forge its verdict), both under
bubblewrap (no network, read-only system, a size-limited scratch folder, unprivileged uids) and
rlimits, with a wall-clock kill. Rows whose code fails are dropped and counted by reason; the run
goes on.

`isolation` chooses the OS isolation: `auto` (bubblewrap when it works here), `bwrap` (required),
or `none` (rlimits and an audit hook only). Without bubblewrap, `auto` refuses to run as root at
check time (before any request is sent): running teacher-written code as root with no isolation
has to be asked for with `isolation: none`. As another user it runs and warns.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from synthkd.cache import ResponseCache
from synthkd.errors import RecipeError
from synthkd.sandbox import IsolationError, Limits, SandboxResult, check_solution, choose_isolation
from synthkd.steps.base import (
    SAMPLE_PROMPTS_SHOWN,
    CheckContext,
    Columns,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    exact_plan,
    prompt_tokens,
    require_columns,
)
from synthkd.steps.parsing import ParseError, ask_parsed, failure_of, reask_prompt_field
from synthkd.teachers.base import ChatRequest, max_completion_tokens
from synthkd.teachers.config import TeacherConfig

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
PYTHON_TAGS = {"python", "py", "python3", "py3"}
UNTESTABLE = "UNTESTABLE"
# A dry run's stand-in for the code of an answer an earlier step has not written yet.
UNWRITTEN_CODE = "[the answer's code, written by an earlier step]"
EXAMPLES_KEPT = 20  # dropped rows described in the manifest's details
# sandbox status -> the reason a row is dropped
DROP_REASONS = {
    "failed": "tests_failed",
    "timeout": "timeout",
    "memory": "memory",
    "sandbox_violation": "sandbox_violation",
    "output_limit": "output_limit",
    "crashed": "crashed",
}


class CodeCheckStep(TeacherStep):
    """Execute each answer's code against tests; drop the answers that fail."""

    step: Literal["code_check"] = "code_check"
    taxonomy: ClassVar[str] = "curation"  # answers selected by running their code against tests
    response_column: str = Field("response", description="the answer holding ```python code blocks")
    task_column: str = Field("instruction", description="the task, shown to the teacher writing tests")
    tests_column: str | None = Field(None, description="column with the tests; then no teacher is asked")
    prompt: str = Field("prompts/code_check/tests.jinja", description="asks the teacher for tests")
    reask_prompt: str = reask_prompt_field()
    cpu_seconds: float = Field(10.0, gt=0, description="CPU time per check")
    wall_seconds: float | None = Field(None, gt=0, description="wall-clock limit (default 2 x CPU + 5 s)")
    memory_mb: int = Field(512, ge=64, description="address space per check")
    file_size_mb: int = Field(16, ge=1, description="largest file (and output) a check may write")
    max_processes: int = Field(8, ge=0, description="tasks (threads, processes) each sandboxed process adds")
    disk_mb: int = Field(64, ge=1, description="size of the scratch folder the code may write (bubblewrap)")
    isolation: Literal["auto", "bwrap", "none"] = Field(
        "auto",
        description="OS isolation of the code: bwrap (bubblewrap, required), none (rlimits and an audit "
        "hook only; needed to run as root without bubblewrap), auto (bwrap when it works here)",
    )
    workers: int = Field(4, ge=1, description="checks run at the same time")
    teacher: TeacherConfig | None = Field(None, description="writes the tests (unless tests_column)")

    @model_validator(mode="after")
    def _no_teacher_with_given_tests(self) -> CodeCheckStep:
        """With a tests column nothing is asked: hold no teacher, so none is checked or listed."""
        if self.tests_column:
            self.teacher = None
        return self

    @property
    def limits(self) -> Limits:
        return Limits(
            self.cpu_seconds,
            self.wall_seconds,
            self.memory_mb,
            self.file_size_mb,
            self.max_processes,
            self.disk_mb,
        )

    def template_keys(self) -> list[str]:
        """With a tests column no teacher is asked, so no template is loaded."""
        return [] if self.tests_column else super().template_keys()

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        if not sys.platform.startswith("linux"):
            raise RecipeError("code_check's sandbox needs Linux (rlimits, /proc)", where=ctx.at("step"))
        try:
            choose_isolation(self.isolation)
        except IsolationError as exc:
            raise RecipeError(str(exc), where=ctx.at("isolation")) from None
        require_columns({self.response_column}, columns, ctx, "response_column", "code_check")
        if self.tests_column:
            require_columns({self.tests_column}, columns, ctx, "tests_column", "code_check")
            return columns
        needed = set(self.template("prompt").variables) - {"task", "code"}
        require_columns(needed | {self.task_column}, columns, ctx, "prompt", f"template {self.prompt}")
        return None if columns is None else columns | {"tests"}

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        result = StepResult([])
        try:
            isolation = choose_isolation(self.isolation)
        except IsolationError as exc:  # checked before the run; the machine changed since
            raise RecipeError(str(exc), where="code_check.isolation") from None
        if isolation.warning:
            print(f"warning: code_check: {isolation.warning}", file=sys.stderr, flush=True)
        codes = [extract_code(str(row.get(self.response_column) or "")) for row in rows]
        with_code = [index for index, code in enumerate(codes) if code]
        result.dropped["no_code"] += len(rows) - len(with_code)
        tests: dict[int, str | None] = {}
        if self.tests_column:
            for index in with_code:
                tests[index] = _as_text(rows[index].get(self.tests_column))
        else:
            tests = await self._ask_for_tests(rows, codes, with_code, ctx, result)
        untestable = [index for index, text in tests.items() if not text]
        result.dropped["untestable"] += len(untestable)
        runnable = [index for index in with_code if tests.get(index)]
        ctx.progress.set_total(len(runnable))
        pairs = [(codes[i], tests[i]) for i in runnable]
        outcomes = await self._execute(pairs, isolation.mode, ctx)  # type: ignore[arg-type]
        verdicts = dict(zip(runnable, outcomes, strict=True))
        examples = []
        for index, row in enumerate(rows):
            verdict = verdicts.get(index)
            if verdict is None:
                continue
            if verdict.ok:
                result.rows.append(row if self.tests_column else {**row, "tests": tests[index]})
                continue
            reason = DROP_REASONS.get(verdict.status, "tests_failed")
            result.dropped[reason] += 1
            if len(examples) < EXAMPLES_KEPT:
                examples.append({"id": row["id"], "reason": reason, "detail": verdict.detail})
        result.dropped = +result.dropped  # no zero counts
        result.details = {
            "checked": len(runnable),
            "passed": len(result.rows),
            "isolation": isolation.mode,
            "limits": {
                "cpu_seconds": self.cpu_seconds,
                "wall_seconds": self.limits.wall,
                "memory_mb": self.memory_mb,
                "file_size_mb": self.file_size_mb,
                "disk_mb": self.disk_mb,
            },
            "dropped_examples": examples,
        }
        if isolation.warning:
            result.details["warning"] = isolation.warning
        return result

    async def _ask_for_tests(
        self,
        rows: list[Row],
        codes: list[str | None],
        indices: list[int],
        ctx: StepContext,
        result: StepResult,
    ) -> dict[int, str | None]:
        requests = [self._tests_request(rows[index], codes[index] or "") for index in indices]
        ctx.progress.set_total(len(requests))
        answers = await ask_parsed(
            ctx.dispatcher, requests, parse_tests, self.template("reask_prompt"), progress=ctx.progress
        )
        tests: dict[int, str | None] = {}
        for index, answer in zip(indices, answers, strict=True):
            if answer.ok:
                tests[index] = answer.value
            else:
                result.failures.append(failure_of(rows[index], answer, reason="unparseable_tests"))
        return tests

    def _tests_request(self, row: Row, code: str) -> ChatRequest:
        """The request for tests of one answer's code, as the run sends it (and the plan looks up)."""
        values = {**row, "task": str(row.get(self.task_column) or ""), "code": code}
        return self.chat(self.template("prompt").render(values))

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """With a tests column nothing is asked (rows without code or tests are dropped, as the
        run drops them). Otherwise one request for tests per answer with code, each re-asked once
        at most when its tests do not parse.

        An answer already written is read as the run reads it: without code it gets no request
        (and is dropped, `no_code`); with code its request is rendered and looked up in the cache.
        An empty answer stands for one an earlier step has not written yet (a dry run's
        placeholder): it is assumed to hold code, of unknown length, counted as this teacher's
        max_tokens in the prompt. Rows stand for every answer with code passing its tests. Every
        answer with code (and tests) is assumed to be run in the sandbox: the step's time adds
        the most those runs may take (`sandbox_plan`)."""
        if self.tests_column:
            tested = [row for row in rows if self._has_code(row) and _as_text(row.get(self.tests_column))]
            return tested, self.sandbox_plan(StepPlan(), len(tested))
        texts = [str(row.get(self.response_column) or "") for row in rows]
        codes = [extract_code(text) for text in texts]
        written = [self._tests_request(row, code) for row, code in zip(rows, codes, strict=True) if code]
        unwritten = [
            self._tests_request(row, UNWRITTEN_CODE)
            for row, text in zip(rows, texts, strict=True)
            if not text.strip()
        ]
        kept = [
            {**row, "tests": ""}
            for row, text, code in zip(rows, texts, codes, strict=True)
            if code or not text.strip()
        ]
        if not kept:  # no answer holds code: nothing to ask, nothing to re-ask, nothing to run
            return [], StepPlan()
        plan, _ = exact_plan(self.teacher_config, written, cache)
        max_tokens = max_completion_tokens(self.teacher_config.params)  # also the unwritten code's
        requests = len(written) + len(unwritten)
        plan = replace(
            plan,
            requests=requests,
            prompt_tokens=plan.prompt_tokens + sum(prompt_tokens(r) + max_tokens for r in unwritten),
            max_completion_tokens=requests * max_tokens,
            sample_prompts=[list(r.messages) for r in [*written, *unwritten][:SAMPLE_PROMPTS_SHOWN]],
            count="estimate",
            requests_max=2 * requests,
        )
        return kept, self.sandbox_plan(plan, len(kept))

    def _has_code(self, row: Row) -> bool:
        """Whether a dry run counts the row's answer as holding code: it does, or it is not
        written yet (empty)."""
        text = str(row.get(self.response_column) or "")
        return not text.strip() or extract_code(text) is not None

    def sandbox_plan(self, plan: StepPlan, checks: int) -> StepPlan:
        """`plan` with the sandbox's time: `checks` runs, `workers` at a time, each killed after
        `wall_seconds` at the latest. Waves of `workers` runs of that length bound it from above
        (the run's thread pool starts a check as soon as a worker is free); most checks take far
        less, so it is an upper bound, and said to be one."""
        if not checks:
            return plan
        waves = math.ceil(checks / self.workers)
        seconds = waves * self.limits.wall
        note = (
            f"{checks} sandboxed check(s), {self.workers} at a time (`workers`), each killed after "
            f"{self.limits.wall:g} s (`wall_seconds`): at most {seconds / 60:.1f} min, added in full "
            "(most checks take far less)."
        )
        return replace(plan, local_seconds_max=seconds, time_note=note)

    async def _execute(
        self, pairs: list[tuple[str, str]], isolation: str, ctx: StepContext
    ) -> list[SandboxResult]:
        """Run the checks on `workers` threads (each waits on one sandbox), in order."""
        loop = asyncio.get_running_loop()
        run = functools.partial(check_solution, limits=self.limits, isolation=isolation)

        async def one(code: str, tests: str, pool: ThreadPoolExecutor) -> SandboxResult:
            outcome = await loop.run_in_executor(pool, run, code, tests)
            ctx.progress.advance()
            return outcome

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="synthkd-sandbox") as pool:
            return list(await asyncio.gather(*(one(code, tests, pool) for code, tests in pairs)))


def extract_code(text: str) -> str | None:
    """The Python in an answer's fenced code blocks, joined in order; None when there is none.

    Blocks tagged python/py are used when there are any; else untagged blocks. Blocks in other
    languages (shell, output) are skipped. A later block defining a name again wins, as in a module.
    """
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    chosen = [body for tag, body in blocks if tag in PYTHON_TAGS] or [body for tag, body in blocks if not tag]
    code = "\n\n".join(body.rstrip() for body in chosen if body.strip())
    return code + "\n" if code else None


def parse_tests(text: str) -> str | None:
    """The tests in the teacher's answer; None when it says the code is UNTESTABLE."""
    code = extract_code(text)
    if code is None:
        if UNTESTABLE in text.upper():
            return None
        raise ParseError(f"no ```python code block with tests found (or reply {UNTESTABLE})")
    if not re.search(r"\bassert\b|\bdef test|TestCase", code):
        raise ParseError("the tests contain no assert statement and no test_ function")
    try:
        compile(code, "tests.py", "exec")
    except SyntaxError as exc:
        raise ParseError(f"the tests are not valid Python: {exc.msg} (line {exc.lineno})") from None
    return code


def _as_text(value: object) -> str | None:
    if isinstance(value, list):
        return "\n".join(str(item) for item in value) or None
    return str(value) if value not in (None, "") else None
