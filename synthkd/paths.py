"""Where synthkd keeps what it writes outside a run folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$SYNTHKD_CACHE_DIR`, else `$XDG_CACHE_HOME/synthkd`, else `~/.cache/synthkd`."""
    if os.environ.get("SYNTHKD_CACHE_DIR"):
        return Path(os.environ["SYNTHKD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synthkd"
