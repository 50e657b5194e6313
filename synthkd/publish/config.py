"""Recipe keys for publishing: `output.hub:`, and the card metadata values the Hub accepts.

The Hub rejects a dataset card whose `license` is not one of its identifiers, so a recipe's license
is checked when the recipe is loaded, not when the push fails at the end of a long run.
"""

from __future__ import annotations

from pydantic import Field

from synthkd.config_base import StrictModel
from synthkd.hub_ids import HUB_LICENSES, HUB_TASKS, HubLicense, HubRepoId, HubTask

__all__ = ["HUB_LICENSES", "HUB_TASKS", "HubConfig", "HubLicense", "HubTask"]


class HubConfig(StrictModel):
    """The Hub dataset repository a finished run is pushed to."""

    repo_id: HubRepoId = Field(
        description="dataset repository on the Hub, namespace/name; created if it does not exist",
    )
    private: bool = Field(False, description="create the repository private (ignored if it exists)")
    # The NAME of the variable, like teacher.api_key_env: a token never belongs in a recipe.
    token_env: str | None = Field(
        None, description="variable holding the Hub token; default: HF_TOKEN or the saved `hf auth login`"
    )
