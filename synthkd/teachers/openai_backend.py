"""Teacher behind any OpenAI-compatible endpoint: `POST {base_url}/chat/completions` over aiohttp.

Why not the official `openai` SDK for this one call:
- `import openai` costs ~0.65 s of a run's startup (it builds hundreds of pydantic types, the
  Responses and Evals APIs included), more than all of synthkd's own modules; without it a run's
  first request leaves in ~1.2 s instead of ~1.9 s (bench/startup.py, bench/core_install.sh).
- The SDK was used only as a transport already: the request body is built here and the answer is
  read as JSON, because the SDK's param transformation and response models cost CPU per request
  at hundreds of requests per second (bench/throughput.py).
What the SDK did besides is kept: the bearer key, `OPENAI_ORG_ID` / `OPENAI_PROJECT_ID` headers,
the proxy variables (read once per teacher: aiohttp's `trust_env` looks them up, and netrc, in a
thread for every request, which more than doubled the client's CPU per request), certifi's CA
bundle, a timeout per request, and errors that carry the status, headers and JSON body, classified
by `http_errors` as the SDK's were. The one
retry loop stays synthkd's dispatcher. The SDK itself stays a dependency (litellm is built on it)
and is what the tests use to check the fake server against the real client.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from synthkd.teachers.base import ChatRequest, Completion, RateLimitHint, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.http_errors import (
    classify_status_error,
    connection_error,
    is_connection_failure,
    rate_limit_hint,
)
from synthkd.version import __version__


class HTTPStatusFailure(Exception):
    """A non-2xx answer: its status, headers and body (parsed when it is JSON), worded like the
    SDK's "Error code: 429 - {...}" so logs read the same as before."""

    def __init__(self, status: int, headers: Mapping[str, str], text: str) -> None:
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        super().__init__(f"Error code: {status} - {body}")
        self.status = status
        self.headers = headers
        self.body = body


# The headers the openai SDK sends from these variables when they are set.
_SDK_HEADER_VARIABLES = {"OPENAI_ORG_ID": "OpenAI-Organization", "OPENAI_PROJECT_ID": "OpenAI-Project"}


def _ssl_context() -> ssl.SSLContext:
    """certifi's CA bundle when it is installed (as httpx, and so the SDK, use), else the system's."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _api_key(config: TeacherConfig) -> str:
    """The key from the variable the recipe names; a server that needs none still gets a bearer."""
    api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
    return api_key or "not-needed"


def _env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url`, as httpx and aiohttp's trust_env read them."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


def _headers(api_key: str) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"synthkd/{__version__}",
    }
    for variable, header in _SDK_HEADER_VARIABLES.items():
        if os.environ.get(variable):
            headers[header] = os.environ[variable]
    return headers


class OpenAITeacher:
    backend = "openai"

    def __init__(self, config: TeacherConfig) -> None:
        self.model = config.model
        self.base_url = config.base_url
        self._url = f"{(config.base_url or '').rstrip('/')}/chat/completions"
        self._api_key = _api_key(config)
        self._headers = _headers(self._api_key)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        # Loading a CA bundle takes tens of ms: done here, not on the event loop at the first request.
        self._ssl: ssl.SSLContext | bool = _ssl_context() if self._url.startswith("https:") else True
        # Made on the first request: an aiohttp session belongs to the event loop it was made in.
        self._proxy, self._proxy_auth = _env_proxy(self._url)
        self._session: aiohttp.ClientSession | None = None
        self._batches: Any = None  # OpenAIBatchJobs, made (with the SDK) only when a recipe batches

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # limit=0: the dispatcher already bounds the requests in flight (teacher.concurrency).
            connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        return self._session

    @property
    def batches(self) -> Any:
        """OpenAI's batch API for this teacher's endpoint and key (`teacher.batch: true`)."""
        if self._batches is None:
            from synthkd.teachers.openai_batches import OpenAIBatchJobs

            self._batches = OpenAIBatchJobs(self.model, self.base_url, self._api_key, self._timeout.total)
        return self._batches

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        body = request_body(self.model, request)
        session = self._open_session()
        try:
            async with session.post(
                self._url, data=json.dumps(body).encode(), proxy=self._proxy, proxy_auth=self._proxy_auth
            ) as response:
                raw = await response.read()
                headers = response.headers
                if response.status >= 300:
                    failure = HTTPStatusFailure(response.status, headers, raw.decode("utf-8", "replace"))
                    raise classify_status_error(failure, response.status, headers) from failure
            completion = completion_from(json.loads(raw))
        except TeacherError:
            raise
        except TimeoutError as exc:  # aiohttp's total timeout
            raise TeacherError("the request timed out", retryable=True, reason="timeout") from exc
        except aiohttp.ClientError as exc:
            if is_connection_failure(exc):
                raise connection_error(exc) from exc
            raise TeacherError(f"connection failed: {exc}", retryable=True, reason="connection") from exc
        except MALFORMED as exc:
            # A body that is not a chat completion: a proxy's error page, a truncated answer.
            raise malformed(exc) from exc
        return completion, rate_limit_hint(headers)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._batches is not None:
            await self._batches.aclose()
            self._batches = None


# What reading a body that is not a chat completion raises.
MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)


def malformed(exc: Exception) -> TeacherError:
    return TeacherError(f"malformed response: {exc!r}", retryable=True, reason="malformed")


def request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The JSON body of a chat completion request (online, or a line of a batch file)."""
    body: dict[str, Any] = {"model": model, "messages": list(request.messages), **request.params}
    if request.response_format:
        body["response_format"] = request.response_format
    return body


def completion_from(data: dict[str, Any]) -> Completion:
    """A chat completion's JSON as a Completion; raises one of MALFORMED if it is not one."""
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return Completion(
        text=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        logprobs=(choice.get("logprobs") or {}).get("content"),
    )
