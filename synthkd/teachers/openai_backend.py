"""Teacher behind any OpenAI-compatible endpoint, through the official `openai` SDK."""

from __future__ import annotations

import json
import os

import openai

from synthkd.teachers.base import ChatRequest, Completion, RateLimitHint, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.http_errors import classify_status_error, rate_limit_hint


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
        )

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        extra = {"response_format": request.response_format} if request.response_format else {}
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=list(request.messages), **request.params, **extra
            )
            response = raw.parse()
            choice = response.choices[0]
        except openai.APIStatusError as exc:
            raise classify_status_error(exc, exc.status_code, exc.response.headers) from exc
        except openai.APITimeoutError as exc:
            raise TeacherError("the request timed out", retryable=True, reason="timeout") from exc
        except openai.APIConnectionError as exc:
            raise TeacherError(f"connection failed: {exc}", retryable=True, reason="connection") from exc
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError, AttributeError,
                IndexError, TypeError) as exc:
            # A body that is not a chat completion: a proxy error page, a truncated answer.
            raise TeacherError(f"malformed response: {exc}", retryable=True, reason="malformed") from exc
        usage = response.usage
        completion = Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
        return completion, rate_limit_hint(raw.headers)

    async def aclose(self) -> None:
        await self._client.close()
