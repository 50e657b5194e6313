"""How a failed call to the Hub is described: its HTTP status, or that the Hub was not reached.

Shared by `push` (creating the repository, the commit) and `synthkd run hf://...` (downloading a
recipe), so both classify huggingface_hub's errors alike.
"""

from __future__ import annotations

from typing import Any


def http_status(exc: Any) -> str:
    """The status of a huggingface_hub HfHubHTTPError, '?' when it carries no response."""
    response = getattr(exc, "response", None)
    return str(response.status_code) if response is not None else "?"


def is_unreachable(exc: BaseException) -> bool:
    """A Hub that could not be reached (connection refused, DNS, TLS): an OSError, or an error of
    the HTTP client huggingface_hub uses (httpx's errors are not OSErrors)."""
    return isinstance(exc, OSError) or exc.__class__.__module__.split(".")[0] in (
        "httpx",
        "httpx2",
        "requests",
    )


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
