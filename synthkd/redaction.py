"""Keep secret values out of every message printed and every file written.

A recipe holds only the NAMES of the variables with keys, but their values still travel: a server's
error body may quote the key it refused, a teacher may echo it, an SDK may put it in an exception.
Every place that prints or writes text from outside passes it through `redact`, which replaces the
value of every variable a recipe names for a key (registered with `register_secret_variables`) and
of every environment variable named like a credential (OPENAI_API_KEY, HF_TOKEN, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

REDACTED = "<redacted>"
# Shorter values ("1", "x") would match by chance and hide ordinary text.
MIN_SECRET_CHARS = 8
CREDENTIAL_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)

_named_variables: set[str] = set()


def register_secret_variables(names: Iterable[str | None]) -> None:
    """Treat the values of these environment variables as secrets from now on (a recipe's
    api_key_env and token_env names, whatever they are called)."""
    _named_variables.update(name for name in names if name)


def secret_values() -> list[str]:
    """The secret values known now, longest first (so a key that contains another goes whole)."""
    names = _named_variables | {name for name in os.environ if CREDENTIAL_NAME.search(name)}
    values = {os.environ.get(name, "") for name in names}
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str, secrets: Sequence[str] | None = None) -> str:
    """`text` with every secret value replaced by <redacted>. `secrets`: what `secret_values`
    returned, for a caller that redacts often (reading the environment each time costs more than
    the replacing)."""
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any, secrets: Sequence[str] | None = None) -> Any:
    """A copy of a JSON-like value with every string redacted; `value` itself when no secret is
    known."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: redact_value(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item, secrets) for item in value)
    return value
