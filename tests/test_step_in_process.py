"""A single teacher step run in-process against a scripted teacher, through the real Dispatcher.

The end-to-end tests go through HTTP; these pin down one step's own logic (prompts, re-asks, ids,
failures) in milliseconds, and show how a new step can be tested.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from synthkd.cache import ResponseCache
from synthkd.steps.base import CheckContext
from synthkd.steps.label import LabelStep
from synthkd.teachers.base import TeacherError
from synthkd.testing.scripted import ScriptedTeacher, scripted_context

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def checked(step: LabelStep, columns: set[str]) -> LabelStep:
    step.check(columns, CheckContext(Path.cwd(), lambda key: key))
    return step


def test_label_reasks_an_answer_that_fails_its_schema_and_fails_what_never_parses():
    teacher = ScriptedTeacher(
        {
            r"'city' is a required property": '{"city": "Paris"}',  # the re-ask, naming the missing key
            r"capital of France": '{"town": "Paris"}',  # first answer: valid JSON, wrong shape
            r"capital of Atlantis": "somewhere under the sea",  # never JSON, asked twice
        },
        default="unexpected",
    )
    step = checked(
        LabelStep(step="label", schema=SCHEMA, reask=1, teacher=teacher.config()), {"id", "instruction"}
    )
    rows = [
        {"id": "fr", "instruction": "What is the capital of France?"},
        {"id": "atl", "instruction": "What is the capital of Atlantis?"},
    ]

    result = asyncio.run(step.run(rows, scripted_context(teacher)))

    assert [row["id"] for row in result.rows] == ["fr"]
    assert json.loads(result.rows[0]["response"]) == {"city": "Paris"}
    assert result.rows[0]["prompt"] == "What is the capital of France?"
    [failure] = result.failures
    assert (failure.id, failure.reason, failure.raw) == ("atl", "invalid_json", "unexpected")
    # Two first questions, then one re-ask each; a re-ask carries the conversation so far.
    assert len(teacher.requests) == 4
    reask = next(r for r in teacher.requests if len(r.messages) == 3 and "France" in r.messages[0]["content"])
    assert reask.messages[1] == {"role": "assistant", "content": '{"town": "Paris"}'}
    assert "'city' is a required property" in reask.messages[2]["content"]
    assert all(r.response_format["json_schema"]["schema"] == SCHEMA for r in teacher.requests)


def test_label_samples_get_their_own_ids_and_a_refused_request_fails_only_its_row(tmp_path: Path):
    refused = TeacherError("content policy", retryable=False, fatal=False, reason="content_policy")
    teacher = ScriptedTeacher({r"forbidden": refused}, default="an answer")
    step = checked(
        LabelStep(step="label", n=2, system="Be brief.", teacher=teacher.config()), {"id", "instruction"}
    )
    rows = [{"id": "a", "instruction": "Say hi."}, {"id": "b", "instruction": "Something forbidden."}]
    cache = ResponseCache(tmp_path / "cache.sqlite")

    result = asyncio.run(step.run(rows, scripted_context(teacher, cache=cache)))

    assert [(row["id"], row["sample"], row["system"]) for row in result.rows] == [
        ("a-0", 0, "Be brief."),
        ("a-1", 1, "Be brief."),
    ]
    assert sorted((f.id, f.reason) for f in result.failures) == [
        ("b-0", "content_policy"),
        ("b-1", "content_policy"),
    ]
    assert teacher.requests[0].messages[0] == {"role": "system", "content": "Be brief."}

    # The answers were cached: the same step again sends only the refused requests.
    sent = len(teacher.requests)
    again = asyncio.run(step.run(rows, scripted_context(teacher, cache=cache)))
    assert [row["response"] for row in again.rows] == [row["response"] for row in result.rows]
    assert len(teacher.requests) - sent == 2
