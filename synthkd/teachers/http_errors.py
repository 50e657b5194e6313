"""Classify SDK exceptions and read rate-limit headers; shared by the openai and litellm backends."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from synthkd.errors import causes
from synthkd.teachers.base import RateLimitHint, TeacherError

# Statuses that a later attempt may get past; everything else 4xx is the caller's fault.
RETRYABLE_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
# Statuses that reject one request for what it contains (too long, refused by a content policy):
# that row fails and the run goes on. 401, 403, 404 and any other 4xx stop the run.
REQUEST_REJECTED_STATUSES = {400, 413, 422}
# Error codes worth naming as a failure's reason (OpenAI's, and litellm's exception names).
_REJECTION_REASONS = {
    "context_length_exceeded": "context_length_exceeded",
    "contextwindowexceedederror": "context_length_exceeded",
    "string_above_max_length": "context_length_exceeded",
    "content_policy_violation": "content_policy_violation",
    "contentpolicyviolationerror": "content_policy_violation",
    "content_filter": "content_policy_violation",
}
# Exceptions of the HTTP stacks (aiohttp, httpx) that mean the connection itself failed: refused,
# reset, closed before an answer. Matched by name, since each SDK version wraps its own stack.
_CONNECTION_FAILURES = {
    "ClientConnectorError",
    "ClientOSError",
    "ServerDisconnectedError",
    "ClientConnectionResetError",
    "ConnectError",
    "ReadError",
    "WriteError",
    "RemoteProtocolError",
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# Reasons a request ends with when every attempt failed for a cause outside the request itself.
_TRANSIENT_REASONS = {"timeout", "connection", "malformed"}


def is_transient_reason(reason: str) -> bool:
    """Whether a failure with this reason was the teacher's or the network's passing trouble (a
    rerun may get the answer), rather than a verdict on the request or the answer."""
    if reason in _TRANSIENT_REASONS:
        return True
    status = reason.removeprefix("http_")
    return status.isdigit() and int(status) in RETRYABLE_STATUSES


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc` (or anything it wraps) is a failed connection rather than a slow answer.

    The openai SDK reports a refused connection as `APITimeoutError` and litellm as an HTTP 500,
    so the SDK's own class says nothing; the exception it wraps does.
    """
    return any(
        isinstance(cause, ConnectionError) or type(cause).__name__ in _CONNECTION_FAILURES
        for cause in causes(exc)
    )


def connection_error(exc: BaseException) -> TeacherError:
    """The retryable error for a connection that failed (see `is_connection_failure`), told in
    the words of the innermost exception ("Connect call failed ...")."""
    *_, root = causes(exc)
    return TeacherError(f"connection failed: {root}", retryable=True, reason="connection")


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI-style duration ("1s", "6m0s", "20ms") or a plain number."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait according to `retry-after-ms`, `Retry-After` (seconds or HTTP date)."""
    if not headers:
        return None
    lower = {key.lower(): value for key, value in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def rate_limit_hint(headers: Mapping[str, str] | None) -> RateLimitHint | None:
    """Read `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` if the server sent them."""
    if not headers:
        return None
    lower = {key.lower(): value for key, value in headers.items() if key[:12].lower() == "x-ratelimit-"}
    if not lower:
        return None

    def as_int(name: str) -> int | None:
        try:
            return int(float(lower[name]))
        except (KeyError, ValueError):
            return None

    return RateLimitHint(
        remaining_requests=as_int("x-ratelimit-remaining-requests"),
        remaining_tokens=as_int("x-ratelimit-remaining-tokens"),
        reset_requests_seconds=parse_duration(lower.get("x-ratelimit-reset-requests")),
        reset_tokens_seconds=parse_duration(lower.get("x-ratelimit-reset-tokens")),
    )


def _error_codes(exc: Any) -> set[str]:
    """The error `code` and `type` strings an SDK exception carries (litellm's `code` is the status)."""
    codes = set()
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            codes |= {str(inner[key]) for key in ("code", "type") if inner.get(key)}
    if getattr(exc, "code", None):
        codes.add(str(exc.code))
    return codes


def classify_status_error(exc: Exception, status: int, headers: Mapping[str, str] | None) -> TeacherError:
    """Turn an HTTP error from an SDK into a TeacherError that says whether to retry."""
    message = str(exc).strip() or exc.__class__.__name__
    if "insufficient_quota" in _error_codes(exc) or "insufficient_quota" in message:
        return TeacherError(
            f"the account has no quota left (HTTP {status} insufficient_quota): {message}",
            retryable=False,
            reason="insufficient_quota",
            status=status,
        )
    if status in RETRYABLE_STATUSES:
        return TeacherError(
            message,
            retryable=True,
            reason=f"http_{status}",
            status=status,
            retry_after=retry_after_seconds(headers),
        )
    if status in REQUEST_REJECTED_STATUSES:
        markers = {code.lower() for code in _error_codes(exc)} | {exc.__class__.__name__.lower()}
        lowered = message.lower()
        reason = next(
            (name for marker, name in _REJECTION_REASONS.items() if marker in markers or marker in lowered),
            f"http_{status}",
        )
        return TeacherError(
            f"HTTP {status}: the request was rejected ({message})",
            retryable=False,
            fatal=False,
            reason=reason,
            status=status,
        )
    hint = {
        401: "the API key was refused; check the variable named by teacher.api_key_env",
        403: "the key is not allowed to use this model or endpoint",
        404: "the model or endpoint does not exist; check teacher.model and teacher.base_url",
    }.get(status, "the request was refused; check teacher.params and the model name")
    return TeacherError(
        f"HTTP {status}: {hint} ({message})", retryable=False, reason=f"http_{status}", status=status
    )


def response_headers(exc: Exception) -> Mapping[str, str] | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        headers = getattr(exc, "litellm_response_headers", None)
    return headers
