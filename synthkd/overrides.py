"""`--set a.b.c=value` overrides applied to a recipe's raw data before validation."""

from __future__ import annotations

from typing import Any

import yaml

from synthkd.errors import RecipeError


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply each `dotted.key=value` in order; the value is parsed as YAML (so 2 is an int)."""
    for assignment in assignments:
        key, sep, raw_value = assignment.partition("=")
        if not sep or not key.strip():
            raise RecipeError(
                f"expected KEY=VALUE, e.g. teacher.model=gpt-4o-mini; got {assignment!r}", where="--set"
            )
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else ""
        except yaml.YAMLError:
            value = raw_value
        _assign(data, key.strip().split("."), value, assignment)
    return data


def _assign(data: Any, parts: list[str], value: Any, assignment: str) -> None:
    where = f"--set {assignment}"
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise RecipeError(f"{'.'.join(parts[:depth])} is a list; index it with a number", where=where)
            index = int(part)
            if not -len(node) <= index < len(node):
                raise RecipeError(
                    f"{'.'.join(parts[:depth])} has {len(node)} items (indices 0-{len(node) - 1}); "
                    f"there is no item {index}",
                    where=where,
                )
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise RecipeError(f"{'.'.join(parts[:depth])} is a value, not a mapping or list", where=where)
