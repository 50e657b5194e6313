"""Run an experiment (`synthkd experiment RECIPE`): does distillation work here, and which kind?

1. The recipe's steps make the rows, as `synthkd run` would (cached: a second experiment on the
   same rows asks the teacher nothing). The rows are written to the run folder as usual.
2. `held_out` rows, drawn with the recipe's seed, are set aside: no arm trains on them.
3. Each arm trains the student on its share of the other rows (all of them; the rows the `curate:`
   steps keep; or a random draw of as many rows, or as many answer tokens, as those), once per
   seed, every time with the same TRL `args` (the same steps and batch: the same budget).
4. Every trained student, and the student before training, is evaluated on the held-out prompts
   against the teacher: KL(teacher || student) over the whole vocabulary on the teacher's answers,
   the NLL and perplexity of those answers, and the ROUGE-L agreement of the student's greedy
   answers with them. Each arm's figures are the mean over seeds with a 95% confidence interval.
5. Written to `<run folder>/experiment/`: results.json (every run), results.md (the table) and
   kl.svg (the plot); with `docs`, results.md and kl.svg are copied there too. The run folder's
   report.html shows the table and the plot (unless `output.report: none`).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synthkd.atomic import atomic_write_text
from synthkd.errors import RecipeError
from synthkd.experiment.config import ExperimentArm, ExperimentConfig
from synthkd.output import load_run_dataset
from synthkd.pipeline import ProgressFactory, check, execute, preflight
from synthkd.publish.finish import finish_run
from synthkd.publish.report import EXPERIMENT_DIR
from synthkd.publish.svg_charts import Series, bar_chart
from synthkd.recipe import LoadedRecipe, recipe_from_data
from synthkd.teachers.registry import capabilities_of
from synthkd.training.config import TrainConfig

# Two-sided 95% quantiles of Student's t by degrees of freedom (n - 1 seeds); 1.96 past 10.
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
METRICS = ("kl", "loss", "perplexity", "agreement")
BEFORE = "student before training"


@dataclass
class TrainedRun:
    """One arm trained with one seed, and its held-out figures."""

    arm: str
    seed: int
    rows: int
    tokens: int
    seconds: float
    metrics: dict[str, Any]


@dataclass
class ExperimentResult:
    run_dir: Path
    sizes: dict[str, int]  # parameters of the teacher and the student
    rows: dict[str, int]  # rows of each kind of data (all, curated, ...) and held out
    before: dict[str, Any]
    held_out_ids: list[str] = field(default_factory=list)  # the rows no arm trained on
    runs: list[TrainedRun] = field(default_factory=list)

    def summary(self, config: ExperimentConfig) -> list[dict[str, Any]]:
        """Per arm: the mean and 95% CI half-width of every metric over its seeds."""
        lines = []
        for arm in config.arms:
            runs = [run for run in self.runs if run.arm == arm.name]
            line: dict[str, Any] = {
                "arm": arm.name,
                "method": arm.method,
                "data": arm.data,
                "seeds": len(runs),
            }
            line["rows"] = round(statistics.mean(run.rows for run in runs))
            line["tokens"] = round(statistics.mean(run.tokens for run in runs))
            for metric in (*METRICS, *(["win_rate"] if config.judge is not None else [])):
                line[metric] = mean_and_interval([run.metrics[metric] for run in runs])
            lines.append(line)
        return lines


def mean_and_interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95% confidence interval; 0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    t = T_95.get(len(values) - 1, 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def check_experiment(loaded: LoadedRecipe) -> ExperimentConfig:
    """The recipe's experiment section, refused with one line where it cannot run: none, or a
    teacher that is not a local model (the KL and on-policy distillation need its weights here)."""
    config = loaded.recipe.experiment
    if config is None:
        raise RecipeError("the recipe has no experiment: section", where=loaded.origin)
    teacher = loaded.recipe.teacher
    if not capabilities_of(teacher).scores_text:
        raise RecipeError(
            f"an experiment compares the student with the teacher token by token, so the teacher must be "
            f"a local model (backend transformers), not {teacher.backend}",
            where=loaded.at("teacher", "backend"),
        )
    return config


def run_experiment(
    loaded: LoadedRecipe,
    *,
    out_dir: Path | None = None,
    use_cache: bool = True,
    progress: ProgressFactory | None = None,
    say: Callable[[str], None] = print,
    docs: Path | None = None,
) -> ExperimentResult:
    """Make the rows, train every arm once per seed, evaluate, write the results (see the module)."""
    config = check_experiment(loaded)
    check(loaded)
    preflight(loaded)  # the experiment's judge too
    made = asyncio.run(execute(loaded, use_cache=use_cache, progress=progress, out_dir=out_dir))
    dataset = load_run_dataset(made.out_dir / "dataset")
    if "messages" not in dataset.column_names:
        raise RecipeError(
            "an experiment trains on `messages`: keep output.format: messages", where=loaded.origin
        )
    if len(dataset) <= config.held_out + 1:
        raise RecipeError(
            f"the steps made {len(dataset)} rows, too few to hold out {config.held_out} and train on the "
            "rest",
            where=loaded.at("experiment", "held_out"),
        )
    order = random.Random(loaded.recipe.seed).sample(range(len(dataset)), len(dataset))
    held_out, pool = sorted(order[: config.held_out]), sorted(order[config.held_out :])
    work = made.out_dir / EXPERIMENT_DIR
    subsets = _subsets(loaded, config, dataset, pool, work)
    conversations = [dataset[index]["messages"] for index in held_out]
    evaluator = Evaluator(loaded, config, conversations)
    say(f"experiment: {len(pool)} training rows, {len(held_out)} held out; evaluating the untrained student")
    result = ExperimentResult(
        made.out_dir,
        evaluator.sizes,
        {**{kind: len(rows) for kind, rows in subsets.items()}, "held_out": len(held_out)},
        evaluator.evaluate(config.student),
        [dataset[index]["id"] for index in held_out],
    )
    folders = {kind: _save_subset(dataset, rows, work / "data" / kind) for kind, rows in subsets.items()}
    for arm in config.arms:
        for seed in config.seeds:
            trained = _train(loaded, config, arm, seed, folders[arm.data], work, progress)
            student_dir = work / arm.name / f"seed-{seed}"
            trained.metrics = evaluator.evaluate(str(student_dir))
            if not config.keep_students:  # a model per arm and seed adds up (0.3 GB each here)
                shutil.rmtree(student_dir, ignore_errors=True)
            result.runs.append(trained)
            say(
                f"  {arm.name} seed {seed}: {trained.rows} rows, {trained.tokens} tokens in "
                f"{trained.seconds:.0f} s; "
                f"KL {trained.metrics['kl']:.4f}, NLL {trained.metrics['loss']:.4f}, "
                f"agreement {trained.metrics['agreement']:.4f}"
            )
    write_results(result, config, work, docs)
    # The run folder's card, and its report with the experiment's table and chart (`output.report`).
    # Nothing is pushed: an experiment compares ways of training, it does not publish its rows.
    finish_run(
        made.out_dir,
        loaded.recipe.template_sources(),
        None,
        [],
        say,
        loaded.recipe.output.report,
        map_encoder=loaded.recipe.output.report_encoder,
    )
    return result


def _subsets(
    loaded: LoadedRecipe, config: ExperimentConfig, dataset: Any, pool: list[int], work: Path
) -> dict[str, list[int]]:
    """The dataset rows each kind of data an arm may ask for trains on."""
    kinds = {arm.data for arm in config.arms}
    subsets = {"all": pool}
    if kinds == {"all"}:
        return subsets
    curated = _curated(loaded, config, dataset, pool, work)
    if not curated:
        raise RecipeError("the curate: steps kept no row", where=loaded.at("experiment", "curate"))
    subsets["curated"] = curated
    draw = random.Random(loaded.recipe.seed + 1)
    subsets["raw_rows"] = sorted(draw.sample(pool, len(curated)))
    budget = sum(_answer_tokens(dataset[index]) for index in curated)
    shuffled, raw_tokens, tokens = draw.sample(pool, len(pool)), [], 0
    for index in shuffled:
        if tokens >= budget:
            break
        raw_tokens.append(index)
        tokens += _answer_tokens(dataset[index])
    subsets["raw_tokens"] = sorted(raw_tokens)
    return {kind: rows for kind, rows in subsets.items() if kind in kinds | {"all"}}


def _answer_tokens(row: dict[str, Any]) -> int:
    """The answer's length in words: a tokenizer-free measure, the same for every kind of data."""
    return len(str(row["messages"][-1]["content"]).split())


def _curated(
    loaded: LoadedRecipe, config: ExperimentConfig, dataset: Any, pool: list[int], work: Path
) -> list[int]:
    """The training rows the `curate:` steps keep, run as a recipe of their own on those rows
    (with the recipe's teacher, for a judge)."""
    from synthkd.pipeline import run_recipe

    recipe = recipe_from_data(
        {
            "name": f"{loaded.recipe.name}-curated",
            "seed": loaded.recipe.seed,
            "teacher": loaded.recipe.teacher,
            "steps": config.curate,
            "output": {"dir": str(work / "curated"), "format": "flat", "report": "none"},
        },
        base_dir=loaded.base_dir,
    )
    rows = [dict(dataset[index]) for index in pool]
    kept = {row["id"] for row in run_recipe(recipe, rows=rows).rows}
    return [index for index, row in zip(pool, rows, strict=True) if row["id"] in kept]


def _save_subset(dataset: Any, rows: list[int], folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    dataset.select(rows).save_to_disk(str(folder))
    return folder


def _train(
    loaded: LoadedRecipe,
    config: ExperimentConfig,
    arm: ExperimentArm,
    seed: int,
    data: Path,
    work: Path,
    progress: ProgressFactory | None,
) -> TrainedRun:
    from synthkd.training.run import train_student

    output = work / arm.name / f"seed-{seed}"
    train = TrainConfig(
        method=arm.method,
        student=config.student,
        teacher=loaded.recipe.teacher if arm.method == "distill" else None,
        divergence=arm.divergence,
        kd_weight=arm.kd_weight,
        kd_temperature=arm.kd_temperature,
        args={**config.args, **arm.args},
        eval_split=0,
        output_dir=str(output),
    )
    # Each training on a bar of its own, as the steps are, not transformers' printed log dicts.
    bar = progress.step(f"train {arm.name} seed {seed}", None) if progress is not None else None
    trained = train_student(
        train, data, work, seed, f"{loaded.recipe.name}-{arm.name}", evaluate=False, progress=bar
    )
    if bar is not None:
        bar.finish()
    return TrainedRun(
        arm.name, seed, len(load_run_dataset(data)), trained.train_tokens, trained.train_seconds, {}
    )


class Evaluator:
    """The held-out evaluation, with the teacher loaded once."""

    def __init__(self, loaded: LoadedRecipe, config: ExperimentConfig, conversations: list[Any]) -> None:
        import torch
        from transformers import AutoTokenizer

        from synthkd.teachers.embedded import resolve_model_source

        self.config = config
        self.conversations = conversations
        self.recipe_dir = loaded.base_dir
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.teacher = self._load(loaded.recipe.teacher.model)
        student_source = resolve_model_source(config.student)
        self.tokenizer = AutoTokenizer.from_pretrained(student_source)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.sizes = {
            "teacher": _parameters(self.teacher),
            "student": _parameters(self._load(config.student)),
        }

    def _load(self, model: str) -> Any:
        """A model as the evaluation runs it: float32 (bfloat16 on a GPU, as it trained there)."""
        import torch
        from transformers import AutoModelForCausalLM

        from synthkd.teachers.embedded import resolve_model_source

        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        return AutoModelForCausalLM.from_pretrained(resolve_model_source(model), dtype=dtype).to(self.device)

    def evaluate(self, model: str) -> dict[str, Any]:
        """A student's held-out figures: KL to the teacher, NLL and perplexity of its answers,
        agreement of greedy answers."""
        from synthkd.training.evaluation import evaluate, forward_kl

        student = self._load(model)
        answers: list[str] = []
        metrics = evaluate(student, self.tokenizer, self.conversations, self.config.max_new_tokens, answers)
        metrics["kl"] = round(forward_kl(self.teacher, student, self.tokenizer, self.conversations), 5)
        if self.config.judge is not None:
            from synthkd.training.win_rate import judge_win_rate

            metrics["judge"] = judge_win_rate(
                self.config.judge, self.conversations, answers, self.recipe_dir, 0
            )
            metrics["win_rate"] = metrics["judge"]["win_rate"]
        return metrics


def _parameters(model: Any) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def write_results(result: ExperimentResult, config: ExperimentConfig, work: Path, docs: Path | None) -> None:
    """results.json, results.md and kl.svg in `work` (and the last two in `docs`)."""
    summary = result.summary(config)
    record = {
        "sizes": result.sizes,
        "rows": result.rows,
        "seeds": config.seeds,
        "args": config.args,
        "before": result.before,
        "held_out_ids": result.held_out_ids,
        "summary": summary,
        "table": results_cells(result, config, summary),
        "runs": [asdict(run) for run in result.runs],
    }
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "results.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(work / "results.md", results_table(result, config, summary))
    atomic_write_text(work / "kl.svg", kl_chart(result, summary))
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("results.md", "kl.svg"):
            shutil.copyfile(work / name, docs / name)


def _shown(value: tuple[float, float], digits: int) -> str:
    mean, interval = value
    return f"{mean:.{digits}f} ± {interval:.{digits}f}"


def results_cells(
    result: ExperimentResult, config: ExperimentConfig, summary: list[dict[str, Any]]
) -> dict[str, Any]:
    """The table once, as text cells: results.md renders it as Markdown, and the run's report as
    HTML from results.json (the report reads files, it does not import the experiment)."""
    sizes = result.sizes
    judged = config.judge is not None
    caption = (
        f"Student: {config.student}, {sizes['student'] / 1e6:.1f}M parameters "
        f"({sizes['student'] / sizes['teacher']:.0%} of the teacher's {sizes['teacher'] / 1e6:.1f}M). "
        f"Held out: {result.rows['held_out']} rows; trained on: "
        + ", ".join(f"{kind} {count} rows" for kind, count in result.rows.items() if kind != "held_out")
        + f". Every run: {json.dumps(config.args)}; seeds {config.seeds}. Mean ± 95% CI over the seeds."
    )
    headers = ["arm", "method", "data", "rows", "tokens seen", "KL(teacher ‖ student)", "NLL"]
    headers += ["perplexity", "agreement", *(["judge win rate"] if judged else [])]
    before = result.before
    rows = [
        [BEFORE, "-", "-", "0", "0", f"{before['kl']:.4f}", f"{before['loss']:.4f}"]
        + [f"{before['perplexity']:.3f}", f"{before['agreement']:.4f}"]
        + ([f"{before['win_rate']:.4f}"] if judged else [])
    ]
    for line in summary:
        rows.append(
            [line["arm"], line["method"], line["data"], str(line["rows"]), str(line["tokens"])]
            + [_shown(line["kl"], 4), _shown(line["loss"], 4), _shown(line["perplexity"], 3)]
            + [_shown(line["agreement"], 4), *([_shown(line["win_rate"], 4)] if judged else [])]
        )
    return {"caption": caption, "headers": headers, "rows": rows, "numeric_from": 3}


def results_table(result: ExperimentResult, config: ExperimentConfig, summary: list[dict[str, Any]]) -> str:
    """The experiment as a Markdown table: per arm, mean ± 95% CI over the seeds."""
    cells = results_cells(result, config, summary)
    headers = cells["headers"]
    align = ["---" if index < cells["numeric_from"] else "---:" for index in range(len(headers))]
    lines = [cells["caption"], "", _markdown_row(headers), _markdown_row(align)]
    lines += [_markdown_row(row) for row in cells["rows"]]
    return "\n".join(lines) + "\n"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def kl_chart(result: ExperimentResult, summary: list[dict[str, Any]]) -> str:
    """KL(teacher || student) per arm (lower is closer to the teacher), the untrained student first."""
    categories = [BEFORE, *(line["arm"] for line in summary)]
    values = [result.before["kl"], *(line["kl"][0] for line in summary)]
    labels = [[f"{result.before['kl']:.3f}"], *([_shown(line["kl"], 3)] for line in summary)]
    return bar_chart(
        "experiment-kl",
        "KL(teacher || student) on held-out answers, lower is better",
        categories,
        [Series("KL", values, "#4c78a8")],
        stacked=False,
        y_label="nats per token",
        top_labels=labels,
        errors=[0.0, *(line["kl"][1] for line in summary)],  # the 95% CI over the seeds
    )
