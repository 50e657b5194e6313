"""Checks of a run's environment made before any request: API keys present, endpoints reachable."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from synthkd.errors import RecipeError
from synthkd.extras import require
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import backend_spec, check_backend_installed

CONNECT_TIMEOUT_SECONDS = 5.0


def check_teacher_environment(teacher: TeacherConfig, where: Callable[[str], str], *, network: bool) -> None:
    """Raise RecipeError if the teacher cannot possibly work: its backend's packages not installed
    (`MissingExtraError`, naming the pip extra), a missing key, a dead endpoint.

    `where(key)` names the recipe line of a teacher key, for the message.
    """
    check_backend_installed(teacher, where)
    spec = backend_spec(teacher.backend)
    if spec.capabilities.needs_gpu and not _has_gpu():
        raise RecipeError(
            f"the {teacher.backend} backend needs a GPU and this machine has none", where=where("backend")
        )
    if spec.capabilities.local:
        return
    check_key(teacher, where)
    url = teacher.base_url or spec.default_base_url
    if network and url:
        check_reachable(url, where("base_url") if teacher.base_url else where("model"))


class MissingKeyError(RecipeError):
    """An API teacher's key variable is not set: the run could not send a request. `synthkd run`
    stops on it; `synthkd validate` too, unless told the key will be there (`--allow-missing-key`)."""

    def __init__(self, variable: str, *, where: str) -> None:
        self.variable = variable
        super().__init__(
            f"environment variable {variable} is not set; export it, or set teacher.api_key_env to the "
            "variable that holds the key (null for a server that needs none)",
            where=where,
        )


def check_key(teacher: TeacherConfig, where: Callable[[str], str]) -> None:
    """Raise MissingKeyError if an API teacher names a key variable that is not set."""
    if backend_spec(teacher.backend).capabilities.local:
        return
    if teacher.api_key_env and not os.environ.get(teacher.api_key_env):
        raise MissingKeyError(teacher.api_key_env, where=where("api_key_env"))


def _has_gpu() -> bool:
    # Only for a backend that needs a GPU; torch takes seconds to import.
    torch = require("torch", "local", "a backend that needs a GPU")
    return torch.cuda.is_available()


def check_reachable(url: str, where: str) -> None:
    """Open (and close) a TCP connection to the URL's host: no HTTP request is sent."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RecipeError(f"not an http(s) URL: {redact_url(url)}", where=where)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise RecipeError(f"cannot reach {redact_url(url)}: {reason}", where=where) from None


def redact_url(url: str | None) -> str | None:
    """The URL without any user:password part, for logs and manifests."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()
