"""`recompute`: check a numeric answer by recomputing it from one arithmetic expression.

Self-consistency catches an unstable answer, not one that is wrong the same way every time. For
numerical reasoning (a financial statement and a question about it) this step asks the teacher,
without showing it the answer, for a single arithmetic expression over the numbers in the row,
evaluates it with a small evaluator of its own (numbers, + - * / ** %, unary minus, parentheses,
round, abs, min and max: nothing else, and never Python's eval), and compares the result with the
row's answer. A row whose answer is not one number passes through unchecked; a mismatch is dropped
and counted (`recompute_mismatch`); an expression the evaluator refuses is re-asked once with the
reason, then the row is a failure (`invalid_expression`).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    exact_plan,
    require_columns,
)
from synthkd.steps.parsing import ParseError, ask_parsed, failure_of, reask_prompt_field, strip_code_fence
from synthkd.teachers.base import ChatRequest

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000  # 1.05 ** 30 is compounding; 10 ** 10 ** 10 is not
MAX_ROUND_DIGITS = 15
MISMATCHES_LISTED = 20

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
# name -> (fewest, most) arguments
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "round": (round, 1, 2),
    "abs": (abs, 1, 1),
    "min": (min, 2, 64),  # min(x) with one number is an error in Python: it wants an iterable
    "max": (max, 2, 64),
}


class ExpressionError(ValueError):
    """The expression is not one the evaluator accepts; the message says why."""


def safe_eval(expression: str) -> float:
    """The value of an arithmetic expression, or an ExpressionError; nothing else is ever run.

    The expression is parsed with `ast.parse(mode="eval")` and walked node by node; any node other
    than a number, a binary or unary operator of the allowed set, or a call of round/abs/min/max by
    name (positional arguments only) is refused before anything is evaluated. Arithmetic is done in
    floats, so an exponent tower overflows at once instead of building a huge integer.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not an arithmetic expression ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("not an arithmetic expression (too deeply nested)") from None
    _refuse_unsafe(tree)
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        raise ExpressionError("the expression divides by zero") from None
    except OverflowError:
        raise ExpressionError("the expression's value is too large") from None
    except RecursionError:
        raise ExpressionError("the expression is too deeply nested") from None
    except (TypeError, ValueError) as exc:  # e.g. round() of a value that overflowed to nan
        raise ExpressionError(f"the expression cannot be evaluated ({exc})") from None
    if not math.isfinite(value):
        raise ExpressionError("the expression's value is not a finite number")
    return value


def _refuse_unsafe(tree: ast.AST) -> None:
    """Raise an ExpressionError at the first node the evaluator does not allow."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.Load | ast.operator | ast.unaryop):
            if isinstance(node, ast.operator) and type(node) not in _BINARY:
                raise ExpressionError(f"the operator {type(node).__name__} is not allowed")
            if isinstance(node, ast.unaryop) and type(node) not in _UNARY:
                raise ExpressionError(f"the operator {type(node).__name__} is not allowed")
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExpressionError(f"only numbers are allowed, not {node.value!r}")
        elif isinstance(node, ast.BinOp | ast.UnaryOp):
            continue
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in _FUNCTIONS:
                shown = name or ast.unparse(node.func)
                raise ExpressionError(
                    f"calling {shown!r} is not allowed; the only functions are round, abs, min and max"
                )
            if node.keywords:
                raise ExpressionError(f"{name}() takes positional arguments only")
            _, fewest, most = _FUNCTIONS[name]
            if not fewest <= len(node.args) <= most:
                raise ExpressionError(f"{name}() takes {fewest} to {most} arguments, got {len(node.args)}")
        elif isinstance(node, ast.Name):
            if node.id not in _FUNCTIONS:
                raise ExpressionError(f"names such as {node.id!r} are not allowed; write the numbers")
        elif isinstance(node, ast.Tuple):
            raise ExpressionError("write one expression, with no commas in numbers (1250, not 1,250)")
        else:
            raise ExpressionError(
                f"{type(node).__name__} is not allowed; use only numbers, + - * / ** %, parentheses "
                "and round, abs, min, max"
            )


def _evaluate(node: ast.expr) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ExpressionError(f"exponents above {MAX_EXPONENT} are not allowed")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex):  # a negative number to a fractional power
            raise ExpressionError("the expression's value is not a real number")
        return float(value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = _FUNCTIONS[node.func.id][0]
        args = [_evaluate(arg) for arg in node.args]
        if function is round and len(args) == 2:
            if not args[1].is_integer() or abs(args[1]) > MAX_ROUND_DIGITS:
                raise ExpressionError(f"round()'s digits must be a whole number up to {MAX_ROUND_DIGITS}")
            return float(round(args[0], int(args[1])))
        return float(function(*args))
    if isinstance(node, ast.Name):
        raise ExpressionError(f"{node.id} must be called, as in {node.id}(...)")
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # _refuse_unsafe stops the rest first


_EXPRESSION_LINE = re.compile(r"^\W*expression[\s*_]*[:=][\s*_]*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_SYMBOLS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "$": None, "€": None, "£": None, "`": None})


def parse_expression(text: str) -> tuple[str, float]:
    """(expression, value) from an answer with an 'Expression: ...' line (or only the expression).

    Currency signs and backticks are removed and × ÷ − read as * / -; a trailing '= <result>' the
    teacher may add is ignored. A ParseError says what to fix.
    """
    body = strip_code_fence(text)
    lines = _EXPRESSION_LINE.findall(body)
    if lines:
        expression = lines[-1]
    else:
        nonempty = [line.strip() for line in body.splitlines() if line.strip()]
        if len(nonempty) != 1:
            raise ParseError("no 'Expression: <arithmetic expression>' line found")
        expression = nonempty[0]
    expression = expression.translate(_SYMBOLS).split("=", 1)[0].strip().rstrip(".").strip()
    if not expression:
        raise ParseError("the expression is empty")
    try:
        return expression, safe_eval(expression)
    except ExpressionError as exc:
        raise ParseError(str(exc)) from None


# A number as financial answers write it: an optional sign, currency and scale or percent, and
# "(1,250)" for a negative. A number in exponent notation ("1e6") matches nothing: not checked.
_ANSWER_NUMBER = re.compile(
    r"(?<![\w.])(?P<open>\(\s*)?(?P<sign>[-+−])?\s*(?:[$€£]|usd\b|eur\b|gbp\b)?\s*"
    r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?![eE][-+]?\d)"
    r"\s*(?P<unit>%|percent\b|per cent\b|k\b|thousand\b|m\b|mn\b|million\b|bn\b|b\b|billion\b)?"
    r"(?P<close>\s*\))?",
    re.IGNORECASE,
)
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "million": 1e6, "bn": 1e9, "b": 1e9, "billion": 1e9}


def answer_targets(answer: str) -> list[tuple[float, float]] | None:
    """The values an answer may stand for, each with the rounding its written form allows.

    None when the answer is not exactly one number. "12.5%" may be 12.5 or 0.125; "1.2 million"
    may be 1.2 or 1,200,000 (with half of 0.1 million allowed for rounding); "1,250" is 1250;
    "($300)" is -300.
    """
    found = list(_ANSWER_NUMBER.finditer(answer))
    if len(found) != 1:
        return None
    match = found[0]
    digits = match.group("number").replace(",", "")
    value = float(digits)
    if match.group("sign") in ("-", "−"):
        value = -value
    if match.group("open") and match.group("close"):  # accounting notation: (300) is -300
        value = -value
    decimals = len(digits.split(".", 1)[1]) if "." in digits else 0
    allowance = 0.5 * 10.0**-decimals
    targets = [(value, allowance)]
    unit = (match.group("unit") or "").lower()
    if unit in ("%", "percent", "per cent"):
        targets.append((value / 100, allowance / 100))
    elif unit in _SCALE:
        targets.append((value * _SCALE[unit], allowance * _SCALE[unit]))
    return targets


def matches(value: float, targets: list[tuple[float, float]], rel_tolerance: float) -> bool:
    """Whether `value` equals one of the targets within its rounding allowance or `rel_tolerance`."""
    for target, allowance in targets:
        slack = max(allowance, rel_tolerance * abs(target)) + 1e-9 * max(1.0, abs(target))
        if abs(value - target) <= slack:
            return True
    return False


class RecomputeStep(TeacherStep):
    """Recompute numeric answers from a teacher-written arithmetic expression; drop mismatches."""

    step: Literal["recompute"] = "recompute"
    taxonomy: ClassVar[str] = "curation"  # numeric answers selected by recomputing them from an expression
    answer_column: str = Field("answer", description="the answer checked (e.g. rationale's voted answer)")
    prompt: str = Field(
        "prompts/recompute/expression.jinja",
        description="asks for one arithmetic expression; reads the row's columns (input optional)",
    )
    system: str | None = Field(None, description="system prompt sent with every request")
    rel_tolerance: float = Field(
        0.001, ge=0, description="relative difference allowed beyond the rounding of the answer as written"
    )
    drop_non_numeric: bool = Field(False, description="drop rows whose answer is not one number")
    reask: int = Field(1, ge=0, description="times a refused expression is asked again")
    reask_prompt: str = reask_prompt_field()

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        needed = set(self.template("prompt").variables) - {"input"}
        require_columns(needed, columns, ctx, "prompt", f"template {self.prompt}")
        require_columns({self.answer_column}, columns, ctx, "answer_column", "recompute")
        return None if columns is None else columns | {"expression", "recomputed"}

    def _expression_request(self, row: Row) -> ChatRequest:
        """The request for one row's expression, as the run sends it (and the plan looks up). The
        shipped prompt does not show the answer, so the request is known before the answer is."""
        return self.chat(self.template("prompt").render({"input": "", **row}), system=self.system)

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """One request per row whose answer is one number, each looked up in the cache and
        re-asked up to `reask` times when its expression is refused; rows whose answer is not a
        number send nothing. An empty answer stands for one an earlier step has not written yet
        (a dry run's placeholder) and is assumed to be a number. The count is exact when every
        answer is known and nothing can be re-asked. Rows stand for every checked answer matching."""
        answers = [str(row.get(self.answer_column) or "") for row in rows]
        unwritten = [not answer.strip() for answer in answers]
        checks = [
            blank or answer_targets(answer) is not None
            for answer, blank in zip(answers, unwritten, strict=True)
        ]
        checked = [row for row, check in zip(rows, checks, strict=True) if check]
        plan, _ = exact_plan(self.teacher_config, [self._expression_request(row) for row in checked], cache)
        if checked and (self.reask or any(unwritten)):
            reasked = (1 + self.reask) * len(checked)
            plan = replace(plan, count="estimate", requests_max=reasked if self.reask else None)
        kept = [
            {**row, "expression": "", "recomputed": None} if check else row
            for row, check in zip(rows, checks, strict=True)
            if check or not self.drop_non_numeric
        ]
        return kept, plan

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        targets = [answer_targets(str(row.get(self.answer_column) or "")) for row in rows]
        checked = [index for index, target in enumerate(targets) if target is not None]
        requests = [self._expression_request(rows[i]) for i in checked]
        ctx.progress.set_total(len(requests))
        answers = await ask_parsed(
            ctx.dispatcher,
            requests,
            parse_expression,
            self.template("reask_prompt"),
            reask=self.reask,
            progress=ctx.progress,
        )
        by_row = dict(zip(checked, answers, strict=True))
        result = StepResult([])
        mismatches: list[dict[str, Any]] = []
        not_numeric = matched = 0
        for index, row in enumerate(rows):
            answer = by_row.get(index)
            if answer is None:  # not one number: nothing to recompute
                not_numeric += 1
                if self.drop_non_numeric:
                    result.dropped["not_numeric"] += 1
                else:
                    result.rows.append(row)
                continue
            if not answer.ok:
                result.failures.append(failure_of(row, answer, reason="invalid_expression"))
                continue
            expression, value = answer.value
            target = targets[index]
            assert target is not None
            if not matches(value, target, self.rel_tolerance):
                result.dropped["recompute_mismatch"] += 1
                if len(mismatches) < MISMATCHES_LISTED:
                    mismatches.append(
                        {
                            "id": row["id"],
                            "answer": row.get(self.answer_column),
                            "expression": expression,
                            "recomputed": value,
                        }
                    )
                continue
            matched += 1
            result.rows.append({**row, "expression": expression, "recomputed": value})
        result.details = {
            "checked": len(checked),
            "matched": matched,
            "not_numeric": not_numeric,
            "mismatches": mismatches,
        }
        return result
