"""Recipe keys for publishing: `output.hub:`, and the card metadata values the Hub accepts.

The Hub rejects a dataset card whose `license` is not one of its identifiers, so a recipe's license
is checked when the recipe is loaded, not when the push fails at the end of a long run.
"""

from __future__ import annotations

import difflib
from typing import Annotated

from pydantic import AfterValidator, Field

from synthkd.config_base import StrictModel

# The Hub's license identifiers (huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset(
    """
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear
    c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0
    cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
    cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl
    ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
    lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0
    odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
    deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2
    llama3.3 llama4 gemma unknown other
    """.split()  # noqa: SIM905 (a word list reads better than 80 quoted strings)
)

# The Hub's task ids (the `task_categories` of a dataset card).
HUB_TASKS = frozenset(
    """
    text-classification token-classification table-question-answering question-answering
    zero-shot-classification translation summarization feature-extraction text-generation fill-mask
    sentence-similarity text-ranking text-retrieval multiple-choice table-to-text tabular-to-text
    text-to-speech text-to-audio automatic-speech-recognition audio-to-audio audio-classification
    audio-text-to-text voice-activity-detection depth-estimation image-classification
    object-detection image-segmentation text-to-image image-to-text image-to-image image-to-video
    unconditional-image-generation video-classification reinforcement-learning robotics
    tabular-classification tabular-regression time-series-forecasting text-to-video
    image-text-to-text image-text-to-image image-text-to-video visual-question-answering
    document-question-answering zero-shot-image-classification graph-ml mask-generation
    zero-shot-object-detection text-to-3d image-to-3d image-feature-extraction video-text-to-text
    keypoint-detection visual-document-retrieval any-to-any video-to-video other
    """.split()  # noqa: SIM905 (a word list reads better than 80 quoted strings)
)


def _one_of(known: frozenset[str], what: str):
    def check(value: str) -> str:
        if value not in known:
            close = difflib.get_close_matches(value, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{value!r} is not a Hub {what} id{hint}; use `other` for one the Hub lacks")
        return value

    return check


HubLicense = Annotated[str, AfterValidator(_one_of(HUB_LICENSES, "license"))]
HubTask = Annotated[str, AfterValidator(_one_of(HUB_TASKS, "task"))]


class HubConfig(StrictModel):
    """The Hub dataset repository a finished run is pushed to."""

    repo_id: str = Field(
        pattern=r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$",
        description="dataset repository on the Hub, namespace/name; created if it does not exist",
    )
    private: bool = Field(False, description="create the repository private (ignored if it exists)")
    # The NAME of the variable, like teacher.api_key_env: a token never belongs in a recipe.
    token_env: str | None = Field(
        None, description="variable holding the Hub token; default: HF_TOKEN or the saved `hf auth login`"
    )
