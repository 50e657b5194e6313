"""Keep secrets out of everything that is shared: the recipe written beside the data, the card.

A recipe holds only the NAMES of the variables with keys, and the manifest already strips
user:password from URLs; this is the second line of defence, applied to what is uploaded: secret-looking
keys are blanked, URLs lose credentials, and the bytes of every file are searched for the values of
the variables the recipe names before anything leaves the machine.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from synthkd.errors import SynthkdError
from synthkd.preflight import redact_url

REDACTED = "<redacted>"
# Keys whose values are secrets. `*_env` keys hold variable NAMES and stay.
SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization|credential)", re.I)
SECRET_QUERY = re.compile(r"(key|token|secret|sig|signature|password|auth)", re.I)


class SecretInUpload(SynthkdError):
    """A secret was found in a file about to be shared; nothing was uploaded."""

    exit_code = 1


def clean_url(url: str) -> str:
    """The URL without user:password and without secret-looking query parameters."""
    url = redact_url(url) or url
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, REDACTED if SECRET_QUERY.search(k) else v) for k, v in parse_qsl(parts.query, True)]
    return parts._replace(query=urlencode(query, safe="<>")).geturl()


def clean_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """A copy of a recipe mapping that is safe to publish."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, str):
            if SECRET_KEY.search(key) and not key.endswith("_env"):
                return REDACTED
            if "://" in value:
                return clean_url(value)
        return value

    return walk(copy.deepcopy(recipe))


def secret_values(recipe: dict[str, Any], extra: Iterable[str | None] = ()) -> list[str]:
    """The values of every key variable the recipe names (api_key_env, token_env), plus `extra`."""
    names = {"HF_TOKEN"}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if str(key).endswith("_env") and isinstance(item, str):
                    names.add(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(recipe)
    values = [os.environ.get(name) for name in sorted(names)] + list(extra)
    # Very short values ("1", "x") would match by chance and say nothing about a leak.
    return sorted({value for value in values if value and len(value) >= 8})


def assert_no_secret(files: Iterable[Path], secrets: list[str]) -> None:
    """Raise if any of `secrets` occurs in any file; the message names the file, never the secret."""
    needles = [secret.encode("utf-8") for secret in secrets]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            if needle in data:
                raise SecretInUpload(
                    f"{path}: contains the value of a key variable the recipe names (or the Hub token); "
                    "refusing to upload it"
                )
