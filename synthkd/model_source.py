"""How a model, tokenizer or encoder name in a recipe becomes what `from_pretrained` is given.

The one rule: a local folder when the name (with `~` expanded) exists, else the name as a Hub id.
The special name `embedded` is resolved by its owner before this (the teachers' SmolLM2 in
`synthkd.teachers.embedded`, the dedup encoder in `synthkd.curate.embeddings`).
"""

from __future__ import annotations

from pathlib import Path


def local_or_hub(name: str) -> str:
    """The local folder `name` names (`~` expanded) when it exists, else `name` as a Hub id."""
    local = Path(name).expanduser()
    return str(local) if local.exists() else name
