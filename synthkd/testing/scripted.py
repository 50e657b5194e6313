"""A teacher that answers from a script, in-process: for unit tests of a single step.

The end-to-end tests talk to a real HTTP server (`fake_openai`); a step's own logic (parsing,
re-asks, failures, ids) is quicker to pin down by running just that step against this object,
through the real Dispatcher and cache:

    teacher = ScriptedTeacher({r"capital of France": "Paris"}, default="I don't know")
    ctx = scripted_context(teacher)
    result = asyncio.run(step.run(rows, ctx))
    assert teacher.requests[0].messages[-1]["content"] == "What is the capital of France?"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from synthkd.cache import ResponseCache
from synthkd.dispatch.dispatcher import Dispatcher
from synthkd.steps.base import StepContext
from synthkd.teachers.base import ChatRequest, Completion, RateLimitHint, TeacherError
from synthkd.teachers.config import TeacherConfig

# An answer: text, a function of the request, or an error to raise (a TeacherError).
Reply = str | Callable[[ChatRequest], str] | TeacherError


class ScriptedTeacher:
    """Answers each request with the reply of the first rule whose regex matches the last
    message, else `default`. Every request it was sent is kept in `requests`, in order."""

    backend = "openai"  # the dispatcher asks the config's capabilities; these are an API's
    base_url = "scripted://teacher"

    def __init__(self, rules: dict[str, Reply] | None = None, default: Reply = "ok", model: str = "scripted"):
        self.model = model
        self._rules = [
            (re.compile(pattern, re.IGNORECASE | re.DOTALL), reply)
            for pattern, reply in (rules or {}).items()
        ]
        self._default = default
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        self.requests.append(request)
        last = request.messages[-1].get("content") or "" if request.messages else ""
        reply = next((reply for pattern, reply in self._rules if pattern.search(last)), self._default)
        if isinstance(reply, TeacherError):
            raise reply
        text = reply(request) if callable(reply) else reply
        return Completion(text, "stop", prompt_tokens=len(last) // 4, completion_tokens=len(text) // 4), None

    async def aclose(self) -> None:
        return None

    def config(self, **settings: object) -> TeacherConfig:
        """The TeacherConfig a step holding this teacher would have (for `step.teacher`)."""
        return TeacherConfig(
            backend="openai", model=self.model, base_url=self.base_url, api_key_env=None, **settings
        )


def scripted_context(
    teacher: ScriptedTeacher,
    *,
    cache: ResponseCache | None = None,
    recipe_dir: Path | None = None,
    seed: int = 0,
    max_attempts: int = 1,
) -> StepContext:
    """A StepContext whose dispatcher sends to `teacher` (no cache unless given one)."""
    config = teacher.config(max_attempts=max_attempts)
    dispatcher = Dispatcher(teacher, config, cache, price=None)
    return StepContext(recipe_dir or Path.cwd(), seed, dispatcher)
