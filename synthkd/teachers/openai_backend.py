"""Teacher behind any OpenAI-compatible endpoint, through the official `openai` SDK.

Two choices keep the client's CPU per request low (see bench/throughput.py), which matters
because at hundreds of requests per second a busy event loop delays every answer:
- the SDK's aiohttp transport (`DefaultAioHttpClient`) instead of its default httpx pool, whose
  connection bookkeeping grows with the number of connections;
- `client.post` with a body we built ourselves, which skips the SDK's recursive transformation
  of the request params and its model construction of the response. The SDK still provides
  the endpoint, authentication, timeouts and typed errors.
"""

from __future__ import annotations

import json
import os
from typing import Any

import openai

from synthkd.teachers.base import ChatRequest, Completion, RateLimitHint, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.http_errors import (
    classify_status_error,
    connection_error,
    is_connection_failure,
    rate_limit_hint,
)


def _http_client(timeout: float) -> Any:
    aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)  # openai >= 1.80
    if aiohttp_client is None:
        return None
    try:
        return aiohttp_client(timeout=timeout)
    except RuntimeError:  # the SDK was installed without its aiohttp extra
        return None


def _raw_response_type() -> type:
    """The HTTP library's Response class (httpx or httpx2, by SDK version): `post` returns it as is."""
    import importlib

    base = next(cls for cls in openai.DefaultAsyncHttpxClient.__mro__ if cls.__name__ == "AsyncClient")
    return importlib.import_module(base.__module__.split(".")[0]).Response


class OpenAITeacher:
    backend = "openai"

    def __init__(self, config: TeacherConfig) -> None:
        self.model = config.model
        self.base_url = config.base_url
        api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        # max_retries=0: synthkd's dispatcher is the one retry loop, so backoff and accounting agree.
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout,
            http_client=_http_client(config.timeout),
        )
        self._response_type = _raw_response_type()

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        body: dict[str, Any] = {"model": self.model, "messages": list(request.messages), **request.params}
        if request.response_format:
            body["response_format"] = request.response_format
        try:
            response = await self._client.post("/chat/completions", body=body, cast_to=self._response_type)
            data = json.loads(response.content)
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            completion = Completion(
                text=choice["message"].get("content") or "",
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                logprobs=(choice.get("logprobs") or {}).get("content"),
            )
        except openai.APIStatusError as exc:
            raise classify_status_error(exc, exc.status_code, exc.response.headers) from exc
        except openai.APIConnectionError as exc:  # APITimeoutError included
            if is_connection_failure(exc):
                raise connection_error(exc) from exc
            if isinstance(exc, openai.APITimeoutError):
                raise TeacherError("the request timed out", retryable=True, reason="timeout") from exc
            raise TeacherError(f"connection failed: {exc}", retryable=True, reason="connection") from exc
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # A body that is not a chat completion: a proxy's error page, a truncated answer.
            raise TeacherError(f"malformed response: {exc!r}", retryable=True, reason="malformed") from exc
        return completion, rate_limit_hint(response.headers)

    async def aclose(self) -> None:
        await self._client.close()
