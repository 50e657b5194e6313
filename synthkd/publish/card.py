"""The dataset card: `<run dir>/README.md`, Hub metadata plus prose generated from the manifest.

Everything in it comes from what the run recorded (manifest.json, the dataset's features), so the card
says what was done, not what a recipe meant to do. Nothing is assumed: without `output.license` the
card carries no license and says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from synthkd.atomic import atomic_write_text
from synthkd.hub_ids import is_hub_dataset_id
from synthkd.publish.card_sources import (
    citations_section,
    source_datasets,
    source_section,
    step_types,
)
from synthkd.publish.config import HUB_LICENSES, HUB_TASKS
from synthkd.publish.loop_table import loop_table, read_loop
from synthkd.publish.recipe_files import kept_path, read_names, repoint
from synthkd.publish.rundir import RunDir, open_run
from synthkd.publish.secrets import clean_recipe
from synthkd.shipped import resolve_path
from synthkd.teachers.registry import BACKENDS

CARD_FILE = "README.md"
RECIPE_FILE = "recipe.yaml"
REPO_PLACEHOLDER = "<this repository>"  # replaced by the repo id when the card is pushed


# What each step elicits from the teacher, in the taxonomy of Xu et al. (2024), "A Survey on
# Knowledge Distillation of Large Language Models", section 3.1. Filtering steps select among
# what was elicited, which the survey files under data curation; `load` elicits nothing. Each step
# class carries its category (`Step.taxonomy`).
def taxonomy() -> dict[str, str]:
    """Each step's category in the survey's taxonomy, by step name (`load` has none)."""
    return {name: cls.taxonomy for name, cls in step_types().items() if cls.taxonomy}


TAXONOMY_MEANING = {
    "labeling": "the teacher labels given inputs (answers, rationales)",
    "expansion": "the teacher grows new inputs from a few demonstrations",
    "curation": "data synthesised from meta-information, or selected by quality",
    "feature": "the teacher's internal signals (output distributions)",
    "feedback": "the teacher grades or ranks data",
    "self-knowledge": "a model refines its own outputs",
}

# The Hub's size buckets, upper bounds exclusive.
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]

EXAMPLE_CHARS = 300  # a string in the example record is clipped to this many characters
TEMPLATE_KEYS = ("prompt", "_prompt")  # step keys naming template files (prompt, judge_prompt, ...)


def size_category(rows: int) -> str:
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>1T" if rows > 10**12 else "1B<n<10B"


def build_card(run: RunDir, templates: dict[str, str] | None = None):
    """The DatasetCard of a run. `templates` (name -> text) defaults to the shipped templates whose
    hash matches the manifest's; a template that cannot be found is listed by its hash only."""
    from huggingface_hub import DatasetCard

    splits = run.splits()
    metadata = card_metadata(run, splits)
    templates = templates if templates is not None else find_templates(run.manifest, run.path)
    body = _prose(run, splits, templates)
    return DatasetCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}")


def write_card(run_dir: str | Path, templates: dict[str, str] | None = None) -> Path:
    """Write README.md (the card) and recipe.yaml (secrets removed) into the run folder."""
    run = open_run(run_dir)
    write_recipe(run, run.path / RECIPE_FILE)
    path = run.path / CARD_FILE
    # Not DatasetCard.save, which truncates the file first: a full disk must leave the old card whole.
    atomic_write_text(path, str(build_card(run, templates)), newline="", what="the dataset card")
    return path


def write_recipe(run: RunDir, path: Path, recipe: dict[str, Any] | None = None) -> Path:
    """The recipe as run (defaults filled in, teachers merged into steps), safe to publish; or
    `recipe`, the run's recipe as changed for a push."""
    header = (
        f"# The recipe that made this dataset (synthkd {run.manifest.get('synthkd_version', '?')}, "
        f"sha256 {run.manifest.get('recipe_sha256', '?')}).\n"
        "# Keys are named by their environment variables only. Rerun: synthkd run recipe.yaml\n"
    )
    text = yaml.safe_dump(clean_recipe(recipe or run.recipe), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, header + text, what="the recipe")
    return path


def card_metadata(run: RunDir, splits: dict[str, Any]):
    """The YAML header: what the Hub indexes and what `load_dataset` reads (configs, features)."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    output = run.output
    rows = sum(len(split) for split in splits.values())
    categories = taxonomy()
    kinds = sorted({categories[s["step"]] for s in run.steps if s.get("step") in categories})
    data = DatasetCardData(
        pretty_name=run.name,
        license=output.get("license"),  # None: left out, never assumed
        language=output.get("language") or _languages_from_steps(run),
        source_datasets=source_datasets(run) or None,  # none known: left out, never assumed
        task_categories=output.get("task_categories") or _infer_tasks(run),
        size_categories=[size_category(rows)],
        tags=["synthetic", "synthkd", "knowledge-distillation", *(f"kd-{kind}" for kind in kinds)],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"data/{name}-*"} for name in splits],
            }
        ],
    )
    first = next(iter(splits.values()))
    info = DatasetInfo(
        features=first.features,
        splits=SplitDict(
            {
                name: SplitInfo(name=name, num_examples=len(split), num_bytes=split.data.nbytes)
                for name, split in splits.items()
            }
        ),
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def validate_metadata(metadata: dict[str, Any]) -> list[str]:
    """What the Hub would reject or ignore in a dataset card's metadata, checked offline."""
    problems = []
    license_ = metadata.get("license")
    for value in license_ if isinstance(license_, list) else [license_] if license_ else []:
        if value not in HUB_LICENSES:
            problems.append(f"license {value!r} is not a Hub license id")
    for key in ("language", "task_categories", "size_categories", "tags"):
        value = metadata.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            problems.append(f"{key} must be a list of strings")
    problems += [f"unknown task {t!r}" for t in metadata.get("task_categories") or [] if t not in HUB_TASKS]
    known_sizes = {label for _, label in SIZE_CATEGORIES} | {"1B<n<10B", "n>1T"}
    problems += [f"bad size {s!r}" for s in metadata.get("size_categories") or [] if s not in known_sizes]
    for code in metadata.get("language") or []:
        if not (2 <= len(code) <= 3 and code.isalpha() and code.islower()):
            problems.append(f"language {code!r} is not an ISO 639 code")
    configs = metadata.get("configs")
    if not isinstance(configs, list) or not configs:
        problems.append("configs: missing")
    else:
        for config in configs:
            files = config.get("data_files") if isinstance(config, dict) else None
            if not isinstance(files, list) or not all("split" in f and "path" in f for f in files):
                problems.append(f"configs: {config!r} needs data_files with split and path")
    return problems


def _languages_from_steps(run: RunDir) -> list[str] | None:
    """The languages the quality step kept, if it checked any: what the rows are known to be in."""
    for step in run.recipe.get("steps") or []:
        if step.get("step") == "quality" and step.get("languages"):
            return list(step["languages"])
    return None


def _infer_tasks(run: RunDir) -> list[str]:
    names = {step.get("step") for step in run.recipe.get("steps") or []}
    return ["question-answering", "text-generation"] if "doc_qa" in names else ["text-generation"]


def find_templates(manifest: dict[str, Any], run_path: Path | None = None) -> dict[str, str]:
    """Template texts for the manifest's template hashes: those kept in the run folder
    (`recipe_files`), else the shipped prompts."""
    kept = read_names(run_path) if run_path is not None else {}
    found = {}
    for name, digest in (manifest.get("templates") or {}).items():
        candidates = [kept_path(run_path, kept[name])] if run_path is not None and name in kept else []
        candidates += [path] if (path := resolve_path(name, None)) is not None else []
        for path in candidates:
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                if hashlib.sha256(text.encode("utf-8")).hexdigest() == digest:
                    found[name] = text
                    break
    return found


# ---- prose ---------------------------------------------------------------------------------------


def _prose(run: RunDir, splits: dict[str, Any], templates: dict[str, str]) -> str:
    manifest = run.manifest
    rows = sum(len(split) for split in splits.values())
    split_text = ", ".join(f"`{name}` ({len(split)} rows)" for name, split in splits.items())
    parts = [
        f"# {run.name}",
        f"A synthetic knowledge-distillation dataset made by [synthkd](https://pypi.org/project/synthkd/) "
        f"{manifest.get('synthkd_version', '')} from the recipe `{run.name}`: {rows} rows ({split_text}), "
        f"generated {manifest.get('started', '?')} to {manifest.get('finished', '?')}. Every row was "
        "written or selected by the teacher models below; read this card before training on it.",
        f'```python\nfrom datasets import load_dataset\n\ndataset = load_dataset("{REPO_PLACEHOLDER}")\n```',
        source_section(run),
        _example_section(splits),
        _teachers_section(run),
        _taxonomy_section(run),
        _steps_section(run),
        _templates_section(manifest, templates),
        _funnel_section(run),
        _loop_section(run),
        _cost_section(run),
        _decontamination_section(run),
        _dedup_section(run),
        _license_section(run),
        "## Terms of use of the teachers\n\n"
        "The rows were generated by the teacher models listed above. Before you publish this dataset or "
        "train a model on it, check the terms of use of each teacher's provider (and the license of a "
        "local model's weights): some forbid using their outputs to develop competing models, or "
        "restrict commercial use. synthkd does not check this for you.",
        _reproduce_section(run),
        citations_section(run),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _teachers_section(run: RunDir) -> str:
    teachers = run.manifest.get("teachers") or []
    if not teachers:
        return "## Teachers\n\nNo teacher model was used: the rows come from the loaded data only."
    lines = ["## Teachers", "", "| model | backend | provider |", "|---|---|---|"]
    for teacher in teachers:
        lines.append(f"| `{teacher.get('model')}` | {teacher.get('backend')} | {_provider(teacher)} |")
    params = []
    for step in run.recipe.get("steps") or []:
        teacher = step.get("teacher")
        if isinstance(teacher, dict):
            params.append(f"- `{step['step']}`: `{json.dumps(teacher.get('params') or {}, sort_keys=True)}`")
    if params:
        lines += ["", "Generation parameters per step:", "", *params]
    return "\n".join(lines)


def _provider(teacher: dict[str, Any]) -> str:
    backend, model, url = str(teacher.get("backend")), str(teacher.get("model")), teacher.get("base_url")
    spec = BACKENDS.get(backend)
    return spec.describe_provider(model, url) if spec is not None else backend


def _taxonomy_section(run: RunDir) -> str:
    lines = [
        "## What was elicited from the teacher",
        "",
        "Each step in the knowledge-elicitation taxonomy of Xu et al. (2024), *A Survey on Knowledge "
        "Distillation of Large Language Models*:",
        "",
        "| step | category | meaning |",
        "|---|---|---|",
    ]
    categories = taxonomy()
    for step in run.steps:
        kind = categories.get(step.get("step", ""))
        if kind:
            lines.append(f"| {step['index']}:{step['step']} | {kind} | {TAXONOMY_MEANING[kind]} |")
    return "\n".join(lines) if len(lines) > 6 else ""


def _steps_section(run: RunDir) -> str:
    lines = ["## Steps and their parameters", ""]
    # Files under the names they have beside the pushed recipe, not their paths on this machine.
    recipe = repoint(clean_recipe(run.recipe), read_names(run.path))
    for index, step in enumerate(recipe.get("steps") or []):
        step_class = step_types().get(str(step.get("step")))
        teacher_keys = step_class.teacher_keys() if step_class is not None else ["teacher"]
        # A teacher section is named by backend:model; its params have a section of their own.
        shown = {k: v for k, v in step.items() if k != "step" and k not in teacher_keys}
        for key in teacher_keys:
            if isinstance(teacher := step.get(key), dict):
                shown[key] = f"{teacher.get('backend')}:{teacher.get('model')}"
        text = yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).strip() if shown else "{}"
        lines += [f"**{index}: {step.get('step')}**", "", "```yaml", text, "```", ""]
    return "\n".join(lines).strip()


def _templates_section(manifest: dict[str, Any], templates: dict[str, str]) -> str:
    hashes = manifest.get("templates") or {}
    if not hashes:
        return ""
    lines = ["## Prompt templates", ""]
    for name, digest in hashes.items():
        text = templates.get(name)
        lines.append(f"<details><summary><code>{name}</code> (sha256 {digest[:12]})</summary>\n")
        if text is None:
            lines.append("The text of this template was not available when the card was written.")
        else:
            fence = "````" if "```" in text else "```"
            lines += [f"{fence}jinja", text.rstrip("\n"), fence]
        lines += ["", "</details>", ""]
    return "\n".join(lines).strip()


def _funnel_section(run: RunDir) -> str:
    lines = [
        "## Funnel",
        "",
        "Rows into and out of each step; a failed row is one the step could not produce (kept in "
        "failures.jsonl), a dropped row one it removed, with the reason.",
        "",
        "| step | in | out | failed | dropped |",
        "|---|---:|---:|---:|---|",
    ]
    for step in run.steps:
        dropped = ", ".join(f"{reason}: {n}" for reason, n in (step.get("rows_dropped") or {}).items())
        lines.append(
            f"| {step['index']}:{step['step']} | {step.get('rows_in', 0)} | {step.get('rows_out', 0)} | "
            f"{step.get('rows_failed', 0)} | {dropped or '-'} |"
        )
    return "\n".join(lines)


def _loop_section(run: RunDir) -> str:
    """The recipe's loop, where it has one: the student's rounds after the dataset was made."""
    loop = read_loop(run.path)
    if loop is None:
        return ""
    headers, rows = loop_table(loop)
    lines = [
        "## The student in the loop",
        "",
        f"After these rows were made, the student trained in {len(loop['rounds'])} rounds: each round it "
        "answered prompts of this dataset, the teacher's feedback on those answers (the steps below) "
        "made its training data, and the next round started from the student it trained. Held-out "
        "figures are on the same rows for every student, none of them trained on.",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _cost_section(run: RunDir) -> str:
    lines = [
        "## Tokens and estimated cost",
        "",
        "| step | requests sent | cache hits | prompt tokens | completion tokens | est. cost |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    totals = [0, 0, 0, 0]
    for step in run.steps:
        values = [
            step.get(k, 0) for k in ("requests_sent", "cache_hits", "prompt_tokens", "completion_tokens")
        ]
        totals = [a + b for a, b in zip(totals, values, strict=True)]
        lines.append(
            f"| {step['index']}:{step['step']} | "
            + " | ".join(map(str, values))
            + f" | {_money(step.get('cost_usd'))} |"
        )
    lines.append(
        "| **total** | " + " | ".join(map(str, totals)) + f" | {_money(run.manifest.get('cost_usd'))} |"
    )
    lines += [
        "",
        "Costs are estimates from public per-token prices (litellm's price map) for the tokens the "
        "providers reported; answers replayed from synthkd's cache cost nothing again. Local models "
        "cost nothing here.",
    ]
    return "\n".join(lines)


def _decontamination_section(run: RunDir) -> str:
    reports = [s for s in run.steps if s.get("step") == "decontaminate"]
    if not reports:
        return (
            "## Decontamination\n\nNo decontamination step was run: the rows were not checked against "
            "any evaluation set. Check them before evaluating a student trained on this data."
        )
    lines = ["## Decontamination", ""]
    for step in reports:
        details = step.get("details") or {}
        removed = details.get("removed") or []
        checked = ", ".join(f"`{name}`" for name in details.get("checked") or []) or "(none)"
        lines.append(
            f"Step {step['index']} checked the rows against {checked} by {details.get('method', 'n-gram')} "
            f"overlap and removed {len(removed)} row(s)."
        )
        if removed:
            lines += ["", "| row id | evaluation set | overlap |", "|---|---|---|"]
            for item in removed[:50]:
                overlap = str(item.get("overlap", item.get("similarity", ""))).replace("|", "\\|")
                lines.append(f"| `{item.get('id')}` | {item.get('eval_set', '')} | {overlap} |")
            if len(removed) > 50:
                lines.append(f"\n... and {len(removed) - 50} more (manifest.json).")
        lines.append("")
    return "\n".join(lines).strip()


def _dedup_section(run: RunDir) -> str:
    lines = []
    for step in run.steps:
        if step.get("step") == "dedup":
            dropped = sum((step.get("rows_dropped") or {}).values())
            reasons = ", ".join(step.get("rows_dropped") or {}) or "none"
            lines.append(f"- step {step['index']}: {dropped} duplicate(s) dropped ({reasons})")
    if not lines:
        return ""
    return (
        "## Deduplication\n\n"
        + "\n".join(lines)
        + "\n\nmanifest.json lists each dropped row and the row it duplicated."
    )


def _license_section(run: RunDir) -> str:
    license_ = run.output.get("license")
    if license_:
        return f"## License\n\nThe recipe's author chose the license `{license_}` for this dataset."
    return (
        "## License\n\nNo license was chosen: the recipe has no `output.license`, and synthkd does not "
        "assume one. Until the author adds one, no rights to reuse this dataset are granted."
    )


def _install_target(run: RunDir) -> str:
    """`synthkd`, with the extras the run's recipe needed (as its checks found them) and the
    report's unless the recipe turned the report off."""
    report = (run.recipe.get("output") or {}).get("report", "basic") != "none"
    extras = sorted({*run.manifest.get("extras", []), *(["report"] if report else [])})
    if not extras:
        return "synthkd"
    return f"'synthkd[{','.join(extras)}]'"


def _reproduce_section(run: RunDir) -> str:
    return (
        "## Reproduce\n\n"
        f"`{RECIPE_FILE}`, beside the data, is the recipe as it ran (sha256 "
        f"`{run.manifest.get('recipe_sha256', '?')}`), with every default filled in, and the seed files "
        "and prompt templates it reads are beside it. It names API keys only by their environment "
        "variables; credentials and tokens are removed. Run it straight from the Hub:\n\n"
        f"```bash\npip install {_install_target(run)}\n"
        f"synthkd run hf://datasets/{REPO_PLACEHOLDER}/{RECIPE_FILE}\n```\n\n"
        "or, in a clone of this repository, `synthkd run recipe.yaml`. A rerun with the same teacher "
        "replays synthkd's request cache where present; a sampled (temperature > 0) API teacher may "
        "answer differently." + _eval_sets_note(run)
    )


def _eval_sets_note(run: RunDir) -> str:
    """What a rerun must be given again: the local evaluation sets `decontaminate` protected,
    which are not uploaded (published beside the training data, they would not be held out)."""
    sets = [
        (index, position)
        for index, step in enumerate(run.recipe.get("steps") or [])
        if step.get("step") == "decontaminate"
        for position, eval_set in enumerate(step.get("eval_sets") or [])
        if isinstance(eval_set, dict) and not is_hub_dataset_id(str(eval_set.get("path")))
    ]
    if not sets:
        return ""
    given = " ".join(f"--set steps.{index}.eval_sets.{position}.path=<file>" for index, position in sets)
    return (
        "\n\nThe evaluation sets the run was decontaminated against are not uploaded (published beside "
        "the training data, they would no longer be held out): give yours again to rerun, "
        f"`synthkd run hf://datasets/{REPO_PLACEHOLDER}/{RECIPE_FILE} {given}`."
    )


def _example_section(splits: dict[str, Any]) -> str:
    """The first row of each split, as JSON with long strings clipped: what a row looks like."""
    parts = ["## Example record", ""]
    for name, split in splits.items():
        if len(split) == 0:
            parts.append(f"The `{name}` split has no rows.")
            continue
        text = json.dumps(_clipped(split[0]), indent=2, ensure_ascii=False, default=str)
        parts += [f"The first row of `default`/`{name}`:", "", f"```json\n{text}\n```", ""]
    return "\n".join(parts).strip()


def _clipped(value: Any) -> Any:
    if isinstance(value, str) and len(value) > EXAMPLE_CHARS:
        return value[:EXAMPLE_CHARS] + f"... ({len(value) - EXAMPLE_CHARS} more characters)"
    if isinstance(value, dict):
        return {key: _clipped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clipped(item) for item in value]
    return value
