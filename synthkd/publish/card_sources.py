"""What a run's rows are built on, and whose methods built them: the card's source data and citations.

Read from the recipe as run (manifest.json): the seed data each `load`/`doc_qa` step read, with
the `source:` and `license:` its author gave it, and the BibTeX each step class carries
(`Step.citation`). Nothing is guessed: a local file with no `source:` is named, not attributed.
"""

from __future__ import annotations

from typing import Any

from synthkd.hub_ids import is_hub_dataset_id
from synthkd.publish.recipe_files import read_names
from synthkd.publish.rundir import RunDir

# The Hub's `source_datasets` value for data derived from no published dataset.
ORIGINAL = "original"
# The keys naming the seed data of the steps that read it.
SEED_KEYS = {"load": "path", "doc_qa": "documents"}

SURVEY_CITATION = """\
@article{xu2024survey,
  title = {A Survey on Knowledge Distillation of Large Language Models},
  author = {Xu, Xiaohan and Li, Ming and Tao, Chongyang and Shen, Tao and Cheng, Reynold and Li, Jinyang and
    Xu, Can and Tao, Dacheng and Zhou, Tianyi},
  journal = {arXiv preprint arXiv:2402.13116},
  year = {2024}
}
"""


def step_types() -> dict[str, Any]:
    """The step classes by name. Imported when a card is written, not with this module: the steps
    bring their libraries (datasketch, scipy; about a second), which `synthkd push` and `show`
    otherwise never need."""
    from synthkd.steps import STEP_TYPES

    return STEP_TYPES


def seed_sources(run: RunDir) -> list[dict[str, Any]]:
    """Each step that read seed data: {index, step, data (as named), source, license}. A `load`
    from the Hub is its own source."""
    local = run.manifest.get("data_files")  # names found on disk; absent in older manifests
    # A local file is shown under the name it has beside the pushed recipe (files/seeds.jsonl),
    # never as the recipe named it (/home/alice/clients/acme/seeds.jsonl: a path on the machine).
    stored = read_names(run.path)
    found = []
    for index, step in enumerate(run.recipe.get("steps") or []):
        key = SEED_KEYS.get(str(step.get("step")))
        if key is None or not step.get(key):
            continue
        data = str(step[key])
        source = step.get("source")
        if source is None and step.get("step") == "load" and _is_hub_id(data, local):
            source = data
        found.append(
            {
                "index": index,
                "step": step["step"],
                "data": stored.get(data, data),
                "source": source,
                "license": step.get("license"),
            }
        )
    return found


def _is_hub_id(path: str, local: list[str] | None) -> bool:
    if local is not None:
        return path not in local
    return is_hub_dataset_id(path)


def source_datasets(run: RunDir) -> list[str]:
    """The card's `source_datasets`: the seeds' sources, or `original` for a recipe that reads no
    seed data (its rows come from its prompts alone); empty when a seed file's source is not given."""
    sources = seed_sources(run)
    if not sources:
        return [ORIGINAL]
    if any(item["source"] is None for item in sources):
        return []  # one unattributed file: a partial list would read as complete
    return list(dict.fromkeys(str(item["source"]) for item in sources))


def source_section(run: RunDir) -> str:
    sources = seed_sources(run)
    if not sources:
        return (
            "## Source data\n\nNo seed data was read: every row was written by the teachers from the "
            "recipe's prompts (`source_datasets: original`)."
        )
    lines = [
        "## Source data",
        "",
        "The rows are built on this data; its license binds this dataset too.",
        "",
        "| step | data | source | its license |",
        "|---|---|---|---|",
    ]
    for item in sources:
        source = item["source"] or "not stated (the step has no `source:`)"
        license_ = item["license"] or "not stated"
        lines.append(f"| {item['index']}:{item['step']} | `{item['data']}` | {source} | {license_} |")
    return "\n".join(lines)


def citations(run: RunDir) -> list[str]:
    """BibTeX of the survey whose taxonomy the card uses, then of each method a step implements,
    in the order the steps ran, each once."""
    types = step_types()
    found = [SURVEY_CITATION]
    for step in run.recipe.get("steps") or []:
        cls = types.get(str(step.get("step")))
        if cls is not None and cls.citation and cls.citation not in found:
            found.append(cls.citation)
    return found


def citations_section(run: RunDir) -> str:
    entries = "\n".join(entry.strip() + "\n" for entry in citations(run))
    return (
        "## Citations\n\nThe methods this dataset was made with, and the taxonomy the card uses:\n\n"
        f"```bibtex\n{entries}```"
    )
