"""The Hub's identifiers: repository ids, what names a Hub dataset rather than a local file, and
the dataset card's metadata ids (licenses, task categories), as pydantic types where a recipe
holds them.

In the base layer so a step (`load`'s `license:`, the licence of its seeds) and the recipe's
`output:` check the same ids at load time, not when a push fails at the end of a long run; and so
that `push`, `output.hub`, `hf://` addresses, `load`, `decontaminate` and the card share one rule each.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated

from pydantic import AfterValidator

from synthkd.data_files import FILE_SUFFIXES

# The Hub's rule for repository ids: namespace/name, letters, digits, - _ . (no -- or .. inside,
# not ending in . or .git), each part at most 96 characters.
_REPO_PART = r"[A-Za-z0-9][\w.-]{0,95}"
REPO_ID_PATTERN = rf"{_REPO_PART}/{_REPO_PART}"
_REPO_ID = re.compile(rf"^{REPO_ID_PATTERN}$")
# A dataset a step reads from the Hub: name or namespace/name (the older datasets have no
# namespace), not a file name (a missing seeds.jsonl is a missing file, not a Hub id).
_DATASET_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def is_repo_id(value: str) -> bool:
    """Whether `value` is a Hub repository id the Hub accepts (namespace/name)."""
    return (
        bool(_REPO_ID.match(value))
        and "--" not in value
        and ".." not in value
        and not value.endswith((".git", "."))
    )


def repo_id_error(value: str) -> str:
    return (
        f"{value!r} is not a Hub repository id: give namespace/name (letters, digits, - _ .), "
        "e.g. my-user/my-dataset"
    )


def is_hub_dataset_id(name: str) -> bool:
    """Whether a data path a step was given that is not a local file names a Hub dataset."""
    return bool(_DATASET_ID.match(name)) and not name.endswith(FILE_SUFFIXES)


def _repo_id(value: str) -> str:
    if not is_repo_id(value):
        raise ValueError(repo_id_error(value))
    return value


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
HubRepoId = Annotated[str, AfterValidator(_repo_id)]
