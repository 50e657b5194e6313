"""Iterative distillation: rounds in which the student answers, the teacher gives feedback on those
answers, and the student trains on what the feedback makes (a recipe's `loop:` section; `synthkd run`
runs the rounds in place of a single training).

Round r, in `<run folder>/rounds/round-<r>/`:

1. The checkpoint: `train.student` in round 1, else the student round r - 1 trained.
2. The round's rows (the next `rows_per_round` of the run's rows, or all of them, less the held-out
   ones) go through `loop.steps`, run as a recipe of their own into `data/`, with `student` standing
   for the checkpoint as a local (transformers) teacher: the student answers, the teacher judges,
   revises or verifies. Requests are cached as in any run.
3. The recipe's `train:` section trains the checkpoint on that data. The trained student is saved as
   `student-<digest of its weights>/`: the folder's name is the model name in the cache key of every
   request the next round sends it, so an answer is only ever replayed for the weights that wrote it.
4. Every student (the first checkpoint, then each round's) is evaluated on the same held-out rows of
   the run, which no round trains on: loss and agreement against the teacher's answers, and the mean
   reward of its greedy answers where `train.reward` is set.
5. `round.json`, written last and atomically, marks the round finished. A rerun after a crash or
   kill -9 skips every finished round and replays the unfinished one's requests from the cache.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthkd.atomic import atomic_write_text
from synthkd.errors import RecipeError, RunIncompleteError
from synthkd.loop.config import STUDENT, LoopConfig
from synthkd.output import load_run_dataset
from synthkd.pipeline import run_recipe
from synthkd.publish.finish import finish_run
from synthkd.publish.loop_table import LOOP_DIR, LOOP_FILE
from synthkd.recipe import LoadedRecipe, recipe_from_data
from synthkd.steps import STEP_TYPES
from synthkd.training.config import TrainConfig

if TYPE_CHECKING:
    from synthkd.steps.base import Progress

ROUND_FILE = "round.json"
HELD_OUT_FILE = "held_out.json"  # the ids of the rows every student is evaluated on, none trained on
# What round.json keeps of each step's report: what the feedback did to the round's rows.
STEP_FIGURES = (
    "index",
    "step",
    "rows_in",
    "rows_out",
    "rows_dropped",
    "rows_failed",
    "requests_sent",
    "cache_hits",
)


@dataclass
class RoundResult:
    """One finished round, as round.json holds it."""

    number: int
    checkpoint: str  # the model that answered this round's prompts
    trained: str  # the student this round trained: the next round's checkpoint
    rows_in: int  # rows the round's steps were given
    rows_out: int  # rows they kept: the round's training data
    steps: list[dict[str, Any]]  # per step: rows in, out, dropped by reason, requests sent, cache hits
    after: dict[str, Any]  # the trained student on the held-out rows
    train_losses: list[float] = field(default_factory=list)
    train_rewards: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class LoopResult:
    """Every round, and the held-out figures of the first checkpoint (`before`) and of the last
    round's student (`after`, saved at `output_dir`)."""

    output_dir: Path
    before: dict[str, Any]
    after: dict[str, Any]
    rounds: list[RoundResult]


def run_loop(
    loaded: LoadedRecipe,
    run_dir: Path,
    say: Callable[[str], None] = print,
    training_bar: Callable[[], AbstractContextManager[Progress | None]] = nullcontext,
) -> LoopResult:
    """Run the rounds of `loaded`'s loop on the rows its steps wrote to `run_dir` (see the module)."""
    config, train = _check_loop(loaded)
    rows = [dict(row) for row in load_run_dataset(run_dir / "dataset")]
    held_out, pool = _split(rows, train, loaded.recipe.seed)
    if not pool:
        raise RecipeError(
            f"the run made {len(rows)} rows, all of them held out for the evaluation: lower "
            "train.eval_split or make more rows",
            where=loaded.at("loop"),
        )
    rounds_dir = run_dir / LOOP_DIR
    rounds_dir.mkdir(parents=True, exist_ok=True)
    ids = json.dumps([row.get("id") for row in held_out], indent=1) + "\n"
    atomic_write_text(rounds_dir / HELD_OUT_FILE, ids, what=HELD_OUT_FILE)
    evaluation = HeldOutEvaluation(held_out, train)
    before = evaluation.of(train.student)
    rounds: list[RoundResult] = []
    checkpoint = train.student
    for number in range(1, config.rounds + 1):
        folder = rounds_dir / f"round-{number}"
        finished = read_round(folder)
        if finished is None or finished.checkpoint != checkpoint:
            finished = _run_round(
                loaded, config, train, number, checkpoint, pool, folder, evaluation, training_bar
            )
        else:
            say(f"round {number}: finished before, kept ({finished.trained})")
        rounds.append(finished)
        say(_round_line(finished))
        checkpoint = finished.trained
    result = LoopResult(Path(checkpoint), before, rounds[-1].after, rounds)
    atomic_write_text(rounds_dir / LOOP_FILE, json.dumps(asdict(result), indent=2, default=str) + "\n")
    # The card and report again, now with their loop sections (read from the files above).
    finish_run(
        run_dir,
        loaded.recipe.template_sources(),
        None,
        [],
        say,
        loaded.recipe.output.report,
        map_encoder=loaded.recipe.output.report_encoder,
    )
    if train.push_to_hub:
        from synthkd.publish.push_model import push_student

        push_student(Path(checkpoint), train.push_to_hub, loaded.recipe.name)
    return result


def _check_loop(loaded: LoadedRecipe) -> tuple[LoopConfig, TrainConfig]:
    recipe = loaded.recipe
    if recipe.loop is None:
        raise RecipeError("the recipe has no loop: section", where=loaded.origin)
    if recipe.train is None:
        raise RecipeError(
            "a loop trains the student every round: add a train: section (its method trains on what "
            "the loop's steps make, e.g. dpo on preference pairs)",
            where=loaded.at("loop"),
        )
    if recipe.train.method in ("distill", "reward"):
        raise RecipeError(
            f"a loop trains the student on what its steps make: method sft, dpo, kd or grpo, not "
            f"{recipe.train.method}",
            where=loaded.at("train", "method"),
        )
    if recipe.output.format != "messages":
        raise RecipeError(
            "a loop evaluates every round's student against the teacher's answers (`messages`): keep "
            "output.format: messages",
            where=loaded.at("output", "format"),
        )
    return recipe.loop, recipe.train


def _split(
    rows: list[dict[str, Any]], train: TrainConfig, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(held-out rows, the rest): `train.eval_split` of the rows, at most `eval_max_rows`, drawn
    with the recipe's seed. No round's steps see the held-out rows."""
    order = random.Random(seed).sample(range(len(rows)), len(rows))
    count = min(train.eval_max_rows, round(len(rows) * train.eval_split)) if train.eval_split else 0
    held = set(order[:count])
    return [rows[i] for i in sorted(held)], [row for i, row in enumerate(rows) if i not in held]


def round_rows(pool: list[dict[str, Any]], number: int, per_round: int | None) -> list[dict[str, Any]]:
    """Round `number`'s rows: the next `per_round` of `pool`, wrapping round; all of them if unset."""
    if per_round is None or per_round >= len(pool):
        return pool
    start = (number - 1) * per_round
    return [pool[(start + offset) % len(pool)] for offset in range(per_round)]


def student_steps(
    steps: list[dict[str, Any]], checkpoint: str, params: dict[str, Any], teacher: dict[str, Any]
) -> list[dict[str, Any]]:
    """The loop's steps with every teacher key set to `student` made the checkpoint, as a local
    model. A step the student answers in judges with the recipe's teacher unless it names a judge:
    in a loop the feedback is the teacher's, never the student's on itself."""
    student = {
        "backend": "transformers",
        "model": checkpoint,
        "params": params,
        # The recipe's teacher may be an API: none of its endpoint settings apply to a local model.
        "base_url": None,
        "api_key_env": None,
    }
    made = []
    for step in steps:
        step = dict(step)
        step_class = STEP_TYPES.get(str(step.get("step")))
        keys = step_class.teacher_keys() if step_class is not None else []
        answered_by_student = step.get("teacher") == STUDENT
        for key in keys:
            if step.get(key) == STUDENT:
                step[key] = student
            elif answered_by_student and key != "teacher" and not step.get(key):
                step[key] = teacher
        made.append(step)
    return made


def weights_digest(folder: Path) -> str:
    """A digest of a saved model's weight files: what makes two checkpoints the same model."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")):
        digest.update(path.name.encode())
        with path.open("rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_round(folder: Path) -> RoundResult | None:
    """The finished round in `folder`, or None if it has not finished (no round.json, or its student
    is gone)."""
    marker = folder / ROUND_FILE
    if not marker.is_file():
        return None
    finished = RoundResult(**json.loads(marker.read_text(encoding="utf-8")))
    untrained = finished.trained == finished.checkpoint  # the round kept no rows to train on
    return finished if untrained or Path(finished.trained).is_dir() else None


def _run_round(
    loaded: LoadedRecipe,
    config: LoopConfig,
    train: TrainConfig,
    number: int,
    checkpoint: str,
    pool: list[dict[str, Any]],
    folder: Path,
    evaluation: HeldOutEvaluation,
    training_bar: Callable[[], AbstractContextManager[Progress | None]],
) -> RoundResult:
    from synthkd.training.run import train_student

    clock = time.perf_counter()
    (folder / ROUND_FILE).unlink(missing_ok=True)  # a round redone is not finished until it is
    rows = round_rows(pool, number, config.rows_per_round)
    teacher = loaded.recipe.teacher.model_dump(exclude_unset=True)
    recipe = recipe_from_data(
        {
            "name": f"{loaded.recipe.name}-round-{number}",
            "seed": loaded.recipe.seed,
            "teacher": teacher,
            "steps": student_steps(config.steps, checkpoint, config.student_params, teacher),
            "output": {
                "dir": str(folder / "data"),
                "format": loaded.recipe.output.format,
                "report": "none",
                # Feedback steps drop and fail answers as their job (a wrong final answer is a
                # failed row of `rationale`): the round trains on what is left, and its funnel
                # in round.json says what was lost and why.
                "max_failure_ratio": 1.0,
            },
        },
        base_dir=loaded.base_dir,
    )
    given = [{key: value for key, value in row.items() if key != "messages"} for row in rows]
    try:
        made = run_recipe(recipe, rows=given)
    except RunIncompleteError as incomplete:  # no row kept: an ordinary round (every answer wrong)
        made = incomplete.result
    losses: list[float] = []
    rewards: list[float] = []
    if made.rows:
        staging = folder / "student.partial"
        shutil.rmtree(staging, ignore_errors=True)
        round_train = train.model_copy(
            update={"student": checkpoint, "output_dir": str(staging), "push_to_hub": None, "eval_split": 0}
        )
        with training_bar() as bar:  # the round's training steps on a bar, when the caller has one
            trained = train_student(
                round_train,
                made.out_dir / "dataset",
                folder,
                loaded.recipe.seed + number,
                recipe.recipe.name,
                loaded.base_dir,
                evaluate=False,
                progress=bar,
            )
        losses, rewards = trained.train_losses, trained.train_rewards
        student = folder / f"student-{weights_digest(staging)[:16]}"
        shutil.rmtree(student, ignore_errors=True)
        staging.rename(student)
        next_checkpoint = str(student)
    else:  # the feedback kept nothing to learn from (every answer wrong, say): the student stays
        next_checkpoint = checkpoint
    result = RoundResult(
        number=number,
        checkpoint=checkpoint,
        trained=next_checkpoint,
        rows_in=len(rows),
        rows_out=len(made.rows),
        steps=[_step_summary(step) for step in made.manifest.get("steps", [])],
        after=evaluation.of(next_checkpoint),
        train_losses=losses,
        train_rewards=rewards,
        seconds=round(time.perf_counter() - clock, 1),
    )
    atomic_write_text(folder / ROUND_FILE, json.dumps(asdict(result), indent=2) + "\n", what=ROUND_FILE)
    return result


def _step_summary(step: dict[str, Any]) -> dict[str, Any]:
    return {key: step.get(key) for key in STEP_FIGURES}


def _round_line(result: RoundResult) -> str:
    shown = ", ".join(
        f"{key} {value}"
        for key, value in result.after.items()
        if isinstance(value, int | float) and key != "rows"
    )
    if result.trained == result.checkpoint:
        kept = "none kept to train on, the student is unchanged"
    else:
        kept = f"{result.rows_out} to train on; student {Path(result.trained).name}"
    return f"round {result.number}: {result.rows_in} rows -> {kept}: {shown}"


class HeldOutEvaluation:
    """The same held-out rows for every student of the loop: loss, perplexity and agreement against
    the teacher's answers, and with `train.reward` the mean reward of the student's greedy answers."""

    def __init__(self, rows: list[dict[str, Any]], train: TrainConfig) -> None:
        self.rows = rows
        self.train = train

    def of(self, model: str) -> dict[str, Any]:
        if not self.rows:
            return {}
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from synthkd.teachers.embedded import resolve_model_source
        from synthkd.training.evaluation import evaluate
        from synthkd.training.rewards import held_out_reward

        source = resolve_model_source(model)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        student = AutoModelForCausalLM.from_pretrained(source)
        conversations = [list(row["messages"]) for row in self.rows]
        answers: list[str] = []
        metrics = evaluate(student, tokenizer, conversations, self.train.eval_max_new_tokens, answers)
        if self.train.reward is not None:
            verifier = self.train.reward.verifier
            golds = [row[verifier.column] for row in self.rows] if verifier is not None else None
            prompts = [conversation[:-1] for conversation in conversations]
            metrics["reward"] = held_out_reward(self.train.reward, prompts, answers, golds)
        return metrics
