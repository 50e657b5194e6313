"""Merge a run's card into the card a Hub repository already has, as `synthkd push` does.

The metadata is merged, the prose replaced: a repository's own keys (`annotations_creators`, a
`configs` entry for other files) stay; every key the run sets wins, since it describes the data
this push uploads, except `pretty_name`, where the run only offers its recipe's name and a name
the repository's author chose stays. Three keys are merged deeper: `configs` and
`dataset_info` by config name (the run's `default` replaces the old one, other configs stay) and
`tags` (the union, the repository's first). The prose below the metadata describes the pushed data,
so the run's replaces the old one.
"""

from __future__ import annotations

from typing import Any

BY_CONFIG_NAME = ("configs", "dataset_info")
OFFERED = ("pretty_name",)  # the run's value only where the repository has none


def merge_metadata(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """`existing` with `ours` over it (see the module's docstring); neither is changed."""
    merged = {**existing, **ours}
    for key in OFFERED:
        if existing.get(key):
            merged[key] = existing[key]
    for key in BY_CONFIG_NAME:
        if key in existing and key in ours:
            merged[key] = _by_config_name(existing[key], ours[key])
    if isinstance(existing.get("tags"), list) and isinstance(ours.get("tags"), list):
        merged["tags"] = list(dict.fromkeys([*existing["tags"], *ours["tags"]]))
    return merged


def _entries(value: Any) -> list[Any]:
    # dataset_info is a mapping for a single config, a list of mappings for several
    return value if isinstance(value, list) else [value]


def _by_config_name(existing: Any, ours: Any) -> Any:
    new = _entries(ours)
    names = {_config_name(entry) for entry in new}
    kept = [entry for entry in _entries(existing) if _config_name(entry) not in names]
    if not kept:
        return ours
    return [*kept, *new]


def _config_name(entry: Any) -> str:
    return str(entry.get("config_name", "default")) if isinstance(entry, dict) else ""


def other_config_paths(metadata: dict[str, Any], ours: str = "default") -> list[str]:
    """The data file patterns of the configs a merged card keeps besides the run's: a push does
    not delete the files they name."""
    paths = []
    for config in _entries(metadata.get("configs") or []):
        if not isinstance(config, dict) or _config_name(config) == ours:
            continue
        files = config.get("data_files") or []
        for entry in files if isinstance(files, list) else [files]:
            path = entry.get("path") if isinstance(entry, dict) else entry
            paths += path if isinstance(path, list) else [str(path)]
    return paths
