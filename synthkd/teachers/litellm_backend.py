"""Teacher behind any provider litellm knows (Anthropic, Gemini, Bedrock, Ollama, ...)."""

from __future__ import annotations

import os
import re
from typing import Any

from synthkd.teachers.anthropic_batches import AnthropicBatchJobs
from synthkd.teachers.anthropic_params import is_anthropic_model
from synthkd.teachers.base import ChatRequest, Completion, RateLimitHint, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.http_errors import (
    classify_status_error,
    connection_error,
    is_connection_failure,
    rate_limit_hint,
    response_headers,
)


def _import_litellm() -> Any:
    import litellm  # slow to import (about 3 s), so only when a recipe asks for it

    litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners in our logs
    litellm.drop_params = True  # a param one provider lacks is dropped, not an error mid-run
    return litellm


ANTHROPIC_KEY_VARIABLE = "ANTHROPIC_API_KEY"  # where litellm (and Anthropic's SDK) look for the key
_MISSING_KEY = re.compile(r"missing credentials|api_key client option must be set|no api key", re.IGNORECASE)


class LiteLLMTeacher:
    backend = "litellm"

    def __init__(self, config: TeacherConfig) -> None:
        self._litellm = _import_litellm()
        self.model = config.model
        self.base_url = config.base_url
        self._timeout = config.timeout
        self._api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        # Anthropic's Message Batches API for `batch: true` (preflight refused it for other models);
        # None otherwise, so nothing else changes.
        self.batches = _anthropic_batches(config, self._api_key) if config.batch else None

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        litellm = self._litellm
        extra: dict[str, Any] = {}
        if request.response_format:
            extra["response_format"] = request.response_format
        if self.base_url:
            extra["api_base"] = self.base_url
        if self._api_key:
            extra["api_key"] = self._api_key
        try:
            response = await litellm.acompletion(
                model=self.model,
                messages=list(request.messages),
                timeout=self._timeout,
                num_retries=0,  # synthkd's dispatcher is the one retry loop
                max_retries=0,
                **request.params,
                **extra,
            )
        except Exception as exc:
            # litellm reports a refused connection as its own HTTP 500 (or a Timeout): the
            # exception it wraps tells a dead server from an erroring one.
            if is_connection_failure(exc):
                raise connection_error(exc) from exc
            if isinstance(exc, litellm.exceptions.Timeout):
                raise TeacherError("the request timed out", retryable=True, reason="timeout") from exc
            if isinstance(exc, litellm.exceptions.APIConnectionError):
                # What reaches here is no failed connection (see above): a body litellm cannot
                # parse. Its reason stays `connection`, as litellm names it.
                raise TeacherError(f"connection failed: {exc}", retryable=True, reason="connection") from exc
            if _MISSING_KEY.search(str(exc)):
                # litellm reports a provider SDK's missing-key error as its own HTTP 500; retrying
                # cannot help, and every other request would fail the same way.
                raise TeacherError(
                    f"the provider needs an API key: name the variable holding it in api_key_env "
                    f"(for a server that checks none, any non-empty value works). {exc}",
                    retryable=False,
                    reason="auth",
                    status=401,
                ) from exc
            status = getattr(exc, "status_code", None)
            if isinstance(status, int):
                raise classify_status_error(exc, status, response_headers(exc)) from exc
            raise TeacherError(
                f"{exc.__class__.__name__}: {exc}", retryable=True, reason="malformed"
            ) from exc
        try:
            choice = response.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError) as exc:
            raise TeacherError(f"malformed response: {exc}", retryable=True, reason="malformed") from exc
        usage = getattr(response, "usage", None)
        headers = (getattr(response, "_hidden_params", None) or {}).get("additional_headers")
        completion = Completion(
            text=text,
            finish_reason=choice.finish_reason,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            logprobs=_logprobs_content(getattr(choice, "logprobs", None)),
        )
        return completion, _litellm_rate_hint(headers)

    async def aclose(self) -> None:
        if self.batches is not None:
            await self.batches.aclose()


def _anthropic_batches(config: TeacherConfig, api_key: str | None) -> AnthropicBatchJobs | None:
    """The batch jobs of an `anthropic/` model, with the key litellm would send it online: the
    variable api_key_env names, else ANTHROPIC_API_KEY."""
    if not is_anthropic_model(config.model):
        return None
    key = api_key or os.environ.get(ANTHROPIC_KEY_VARIABLE)
    return AnthropicBatchJobs(config.model, config.base_url, key, config.timeout)


def _litellm_rate_hint(headers: dict[str, Any] | None) -> RateLimitHint | None:
    if not headers:
        return None
    # litellm prefixes the provider's headers with "llm_provider-".
    plain = {key.removeprefix("llm_provider-"): str(value) for key, value in headers.items()}
    return rate_limit_hint(plain)


def _logprobs_content(logprobs: Any) -> list[dict[str, Any]] | None:
    """litellm's logprobs object (or dict) as OpenAI's plain `content` list."""
    if logprobs is None:
        return None
    data = logprobs if isinstance(logprobs, dict) else logprobs.model_dump()
    return data.get("content")
