"""The openai backend's own HTTP client honours the proxy variables as the SDK (httpx) did: a
request to the teacher goes through HTTP_PROXY unless NO_PROXY names the host. The fake server
plays the proxy: it answers a request whose line carries the absolute URL of another host."""

from __future__ import annotations

import asyncio

import pytest

from synthkd.teachers.base import ChatRequest, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.openai_backend import OpenAITeacher
from synthkd.testing.fake_openai import FakeOpenAIServer

# A host that cannot resolve: only a proxy can answer for it.
UNREACHABLE = "http://teacher.invalid/v1"


@pytest.fixture(scope="module")
def proxy():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def proxy_variables(proxy, monkeypatch):
    proxy.reset()
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1"))


def ask(text: str) -> str:
    teacher = OpenAITeacher(
        TeacherConfig(backend="openai", model="m", base_url=UNREACHABLE, api_key_env=None)
    )

    async def once() -> str:
        try:
            completion, _ = await teacher.complete(ChatRequest(({"role": "user", "content": text},)))
            return completion.text
        finally:
            await teacher.aclose()

    return asyncio.run(once())


def test_requests_go_through_the_proxy_the_environment_names(proxy):
    assert ask("Say hi.") == "Answer: Say hi."
    assert proxy.stats()["requests"] == 1


def test_no_proxy_sends_the_request_straight_to_the_host(proxy, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "teacher.invalid")
    with pytest.raises(TeacherError) as failed:
        ask("Say hi.")
    assert failed.value.reason == "connection" and failed.value.retryable
    assert proxy.stats()["requests"] == 0
