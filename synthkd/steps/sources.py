"""Where a step's seed data comes from, for the dataset card: `source:` and `license:` keys.

A step that reads rows or documents the teacher builds on (`load`, `doc_qa`) takes them, so the
card can name the data its rows derive from (`source_datasets`) and that data's own licence, which
the dataset's `output.license` must respect. Neither is guessed: a file with no `source:` is
listed by its name only.
"""

from __future__ import annotations

from pydantic import Field

from synthkd.config_base import StrictModel
from synthkd.hub_ids import HubLicense


class SeedSource(StrictModel):
    source: str | None = Field(
        None,
        description="where the seed data comes from: a Hub dataset id, a URL, or `original` (written "
        "for this recipe); the card's source_datasets. A Hub id given as `path` needs none",
    )
    license: HubLicense | None = Field(
        None, description="the seed data's own license, a Hub license id (the card states it)"
    )
