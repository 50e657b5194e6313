"""The teachers one run talks to, built once each and closed together.

A recipe's steps, a step's judge and the trained student's judge may all name the same model with
different generation params; loading a local model (or opening a client) per config would load it
again for each. The pool keys built teachers by everything but their params, so those share one,
while each `dispatcher()` call gets its own `Dispatcher` (own params, limits and stats).
Spending caps are the pool's too: the run's `max_cost_usd` one budget for every dispatcher, and a
teacher's own `max_cost_usd` one budget for every dispatcher of that teacher.
"""

from __future__ import annotations

import json
from types import TracebackType

from synthkd.cache import ResponseCache
from synthkd.dispatch.budget import Budget
from synthkd.dispatch.dispatcher import Dispatcher
from synthkd.pricing import price_for
from synthkd.teachers import Teacher, TeacherConfig, build_teacher
from synthkd.teachers.registry import teacher_label


def teacher_id(config: TeacherConfig) -> str:
    """Teachers whose configs differ only in params share one client or loaded model."""
    return json.dumps(config.model_dump(exclude={"params"}), sort_keys=True)


class TeacherPool:
    """Builds each teacher on first use and hands out dispatchers in front of them.

    Use it as an async context manager: leaving it closes every teacher it built and the response
    cache, whether the run finished or failed."""

    def __init__(
        self,
        *,
        seed: int,
        cache: ResponseCache | None = None,
        use_cache: bool = True,
        max_cost_usd: float | None = None,
    ) -> None:
        """`cache` is taken over (closed with the pool); without one, `use_cache` opens the default.
        `max_cost_usd` caps what every teacher of the pool may spend together."""
        self.seed = seed
        self.cache = cache if cache is not None else (ResponseCache.default() if use_cache else None)
        self._teachers: dict[str, Teacher] = {}
        self.budget = Budget(max_cost_usd) if max_cost_usd is not None else None
        self._teacher_budgets: dict[str, Budget] = {}

    def dispatcher(self, config: TeacherConfig) -> Dispatcher:
        """A new dispatcher for `config`, on the teacher already built for an equal config if any."""
        key = teacher_id(config)
        teacher = self._teachers.get(key)
        if teacher is None:
            teacher = self._teachers[key] = build_teacher(config, seed=self.seed)
        return Dispatcher(teacher, config, self.cache, price_for(config), self._budgets_of(key, config))

    def _budgets_of(self, key: str, config: TeacherConfig) -> list[Budget]:
        budgets = [self.budget] if self.budget is not None else []
        if config.max_cost_usd is not None:
            if key not in self._teacher_budgets:
                self._teacher_budgets[key] = Budget(config.max_cost_usd, teacher=teacher_label(config))
            budgets.append(self._teacher_budgets[key])
        return budgets

    async def aclose(self) -> None:
        try:
            for teacher in self._teachers.values():
                await teacher.aclose()
        finally:
            self._teachers.clear()
            if self.cache is not None:
                self.cache.close()
                self.cache = None

    async def __aenter__(self) -> TeacherPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
