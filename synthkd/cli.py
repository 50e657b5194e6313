"""The `synthkd` command: run, validate, train, push, report, show, cache."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import synthkd
from synthkd.errors import SynthkdError
from synthkd.redaction import redact
from synthkd.reporter import Reporter

if TYPE_CHECKING:  # imported when used: `synthkd --help` stays fast
    from synthkd.publish.push import PushResult
    from synthkd.recipe import LoadedRecipe

console = Console(stderr=True)
if not console.is_terminal:
    console.width = 120  # logs and CI: the 80-column default squeezes the tables


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SynthkdError as exc:
        # markup=False for the message: a path or a server's text may hold [brackets].
        console.print("[bold red]error:[/] ", end="")
        console.print(redact(str(exc)), markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted: completed responses are cached; run the same command to resume[/]"
        )
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthkd", description=synthkd.__doc__)
    parser.add_argument("--version", action="version", version=f"synthkd {synthkd.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a recipe and write its dataset")
    _recipe_arguments(run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="render the first prompts, count requests, estimate tokens and cost; send nothing",
    )
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the request cache")
    run.add_argument("--output", metavar="DIR", help="run folder (overrides output.dir)")
    run.add_argument("--no-train", action="store_true", help="skip the recipe's train: section")
    run.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="where the row-wise steps run: this process, or a Ray cluster (overrides engine.name)",
    )
    run.add_argument(
        "--address", metavar="ADDR", help="a running Ray cluster, e.g. auto (overrides engine.address)"
    )
    run.set_defaults(handler=_run)

    train = commands.add_parser("train", help="train the recipe's student on its finished run's dataset")
    _recipe_arguments(train)
    train.add_argument("--output", metavar="DIR", help="run folder (overrides output.dir)")
    train.set_defaults(handler=_train)

    experiment = commands.add_parser(
        "experiment",
        help="train the recipe's experiment: arms at one budget and compare them on held-out rows",
    )
    _recipe_arguments(experiment)
    experiment.add_argument("--output", metavar="DIR", help="run folder (overrides output.dir)")
    experiment.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the request cache"
    )
    experiment.add_argument("--docs", metavar="DIR", help="also copy results.md and kl.svg there")
    experiment.set_defaults(handler=_experiment)

    recipes = commands.add_parser("recipes", help="list the shipped recipes, a line each")
    recipes.set_defaults(handler=_recipes)

    init = commands.add_parser(
        "init", help="copy a recipe and the files it names (seeds, templates) into a folder of your own"
    )
    init.add_argument(
        "recipe", help="a shipped recipe as `synthkd recipes` lists it (e.g. quickstart), or a file"
    )
    init.add_argument(
        "dest",
        nargs="?",
        metavar="DEST",
        help="a folder (default ./<recipe name>), or the new recipe's .yaml path; nothing is overwritten",
    )
    init.set_defaults(handler=_init)

    validate = commands.add_parser(
        "validate", help="check a recipe's keys, files and templates; send nothing"
    )
    _recipe_arguments(validate)
    validate.add_argument(
        "--allow-missing-key",
        action="store_true",
        help="a teacher's API key variable may be unset here (only a warning): the run will have it",
    )
    validate.set_defaults(handler=_validate)

    _publish_parsers(commands)

    cache = commands.add_parser("cache", help="manage the request cache")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    clear = cache_commands.add_parser(
        "clear", help="delete every cached teacher response (a damaged cache is set aside for a new one)"
    )
    clear.set_defaults(handler=_cache_clear)
    info = cache_commands.add_parser("info", help="where the cache is and how many responses it holds")
    info.set_defaults(handler=_cache_info)
    return parser


def _recipes(args: argparse.Namespace) -> int:
    """The shipped recipes on stdout (the command's answer): the path to run, and what it makes."""
    from synthkd.shipped import shipped_recipes

    found = shipped_recipes()
    width = max(len(path) for path, _ in found)
    for path, summary in found:
        print(f"{path:<{width}}  {summary}")
    return 0


def _init(args: argparse.Namespace) -> int:
    """The copy, then the commands that check and run it."""
    from synthkd.recipe_copy import copy_recipe

    copied = copy_recipe(args.recipe, args.dest)
    shown = _as_typed(copied.recipe)
    console.print(f"wrote {shown}", highlight=False, markup=False)
    for _, target in copied.files:
        console.print(f"  {_as_typed(target)}", highlight=False, markup=False)
    console.print(
        f"next: synthkd validate {shown}, then synthkd run {shown} (edit it first: it is yours)",
        highlight=False,
        markup=False,
    )
    return 0


def _as_typed(path: Path) -> str:
    """A path as a user would type it: relative to the working directory where it is below it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file (or a shipped one, e.g. recipes/quickstart.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set teacher.model=gpt-4o-mini --set steps.1.n=2",
    )


def _validate(args: argparse.Namespace) -> int:
    from synthkd.errors import MissingExtraError, RecipeError
    from synthkd.pipeline import check, preflight
    from synthkd.recipe import load_recipe

    loaded = load_recipe(args.recipe, args.overrides)
    flow = check(loaded)
    if not args.allow_missing_key:
        _check_keys(loaded)
    try:
        preflight(loaded, network=False)
    except MissingExtraError:
        raise  # an error wherever it is found, as a step's own check reports it
    except RecipeError as exc:  # the recipe is fine; this machine is not ready to run it yet
        console.print(f"[yellow]warning:[/] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True)
    for index, (step, columns) in enumerate(zip(loaded.recipe.steps, flow, strict=True)):
        shown = ", ".join(sorted(columns)) if columns is not None else "(known at run time)"
        console.print(f"  {index}: [bold]{step.step}[/] -> {shown}", highlight=False)
    console.print(f"[green]ok[/] {loaded.path}: {len(loaded.recipe.steps)} steps valid", highlight=False)
    return 0


def _check_keys(loaded: LoadedRecipe) -> None:
    """Every API teacher's key variable is set, as `synthkd run` will need it (each teacher's,
    not only the first's: another environment problem, a GPU missing, is only a warning here)."""
    from synthkd.errors import RecipeError
    from synthkd.pipeline import teacher_where
    from synthkd.preflight import MissingKeyError, check_key
    from synthkd.recipe import recipe_teachers

    for use in recipe_teachers(loaded.recipe):
        try:
            check_key(use.config, lambda key, u=use: teacher_where(loaded, u.key, key))
        except MissingKeyError as exc:
            raise RecipeError(f"{exc}; to validate the recipe without it, add --allow-missing-key") from None


def _run(args: argparse.Namespace) -> int:
    from synthkd.api import RunSettings, load_recipe, run_loaded
    from synthkd.pipeline import check, plan, preflight
    from synthkd.progress import RichProgressFactory, quiet_library_progress_bars

    loaded = load_recipe(args.recipe, overrides=args.overrides)
    with_engine_flags(loaded, args.engine, args.address)
    if loaded.from_hub:  # someone else's recipe: say where it sends prompts and keys, before it does
        _print_hub_teachers(loaded)
    check(loaded)
    if args.dry_run:
        _print_plan(plan(loaded, use_cache=not args.no_cache), loaded)
        return 0
    preflight(loaded, training=not args.no_train)
    quiet_library_progress_bars()  # the step bars say it all
    with RichProgressFactory(console) as progress:
        settings = RunSettings(
            out_dir=Path(args.output) if args.output else None,
            use_cache=not args.no_cache,
            progress=progress,
            train=not args.no_train,
            reporter=ConsoleReporter(progress),
        )
        run_loaded(loaded, settings=settings)
    return 0


def _print_hub_teachers(loaded: Any) -> None:
    """One line per teacher of a recipe from the Hub: backend, model, the endpoint it sends the
    prompts to and the variable whose key it sends there (its author chose them)."""
    from synthkd.preflight import redact_url
    from synthkd.recipe import recipe_teachers
    from synthkd.teachers.registry import backend_spec

    console.print(
        "this recipe comes from the Hub; its teachers (override with --set ...base_url=, ...api_key_env=):",
        highlight=False,
        markup=False,
    )
    seen = set()
    for use in recipe_teachers(loaded.recipe):
        config = use.config
        spec = backend_spec(config.backend)
        # A provider chosen by the model's name (litellm's anthropic/...) is named, never taken
        # for this machine: only a local backend keeps the prompts here.
        endpoint = (
            "this machine"
            if spec.capabilities.local
            else redact_url(config.base_url)
            or spec.default_base_url
            or spec.describe_provider(config.model, None)
        )
        key = f"${config.api_key_env}" if config.api_key_env else "no key"
        line = f"{config.backend} {config.model} -> {endpoint} (key: {key})"
        if line not in seen:
            seen.add(line)
            where = ".".join(str(part) for part in use.key)
            console.print(f"  {where}: {line}", highlight=False, markup=False, soft_wrap=True)


def _experiment(args: argparse.Namespace) -> int:
    from synthkd.api import load_recipe
    from synthkd.experiment.run import check_experiment, run_experiment
    from synthkd.pipeline import hold_output
    from synthkd.progress import RichProgressFactory, quiet_library_progress_bars
    from synthkd.publish.report import EXPERIMENT_DIR

    loaded = load_recipe(args.recipe, overrides=args.overrides)
    check_experiment(loaded)
    quiet_library_progress_bars()
    out_dir = Path(args.output) if args.output else None
    with hold_output(loaded, out_dir), RichProgressFactory(console) as progress:
        result = run_experiment(
            loaded,
            out_dir=out_dir,
            use_cache=not args.no_cache,
            progress=progress,
            say=lambda line: console.print(line, highlight=False, markup=False),
            docs=Path(args.docs) if args.docs else None,
        )
    folder = result.run_dir / EXPERIMENT_DIR
    console.print((folder / "results.md").read_text(encoding="utf-8"), markup=False)
    console.print(f"results -> {folder}", highlight=False, markup=False)
    return 0


def with_engine_flags(loaded: LoadedRecipe, name: str | None, address: str | None) -> None:
    """`--engine` and `--address` over the recipe's `engine:` (an address means Ray)."""
    if name is None and address is None:
        return
    engine = loaded.recipe.engine
    update = {"name": name or ("ray" if address else engine.name)}
    if address is not None:
        update["address"] = address
    loaded.recipe.engine = engine.model_copy(update=update)


def _train(args: argparse.Namespace) -> int:
    from synthkd.api import load_recipe, train_run
    from synthkd.errors import RecipeError
    from synthkd.pipeline import hold_output, preflight
    from synthkd.progress import quiet_library_progress_bars

    loaded = load_recipe(args.recipe, overrides=args.overrides)
    if loaded.recipe.train is None:
        raise RecipeError("the recipe has no train: section", where=loaded.origin)
    quiet_library_progress_bars()
    preflight(loaded, data=False)  # the judge's key and endpoint, before the student is trained
    out_dir = Path(args.output) if args.output else None
    reporter = ConsoleReporter()
    with hold_output(loaded, out_dir):
        run_dir = out_dir or loaded.recipe.output_dir()
        reporter.training(loaded, run_dir / "dataset")
        reporter.trained(train_run(loaded, run_dir, reporter))
    return 0


class ConsoleReporter(Reporter):
    """What `synthkd run` prints as the run goes: the funnel, the files written, the student's
    before/after table. The step bars stop before the summary."""

    def __init__(self, progress: Any = None) -> None:
        self._progress = progress
        self._publish_seconds: float | None = None

    def generated(self, result: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
        _print_summary(result)

    @contextlib.contextmanager
    def publishing(self, what: str) -> Iterator[None]:
        """A spinner while the card and report are written (on a terminal); `published` says
        how long it took."""
        started = time.perf_counter()
        with console.status(f"{what}...", spinner="dots"):
            yield
        self._publish_seconds = time.perf_counter() - started

    def published(self, written: list[Path], pushed: PushResult | None) -> None:
        took = f" ({self._publish_seconds:.1f} s)" if self._publish_seconds is not None else ""
        if written:
            run_dir = written[0].parent
            console.print(f"{', '.join(path.name for path in written)} -> {run_dir}{took}", highlight=False)
        if pushed is not None:
            console.print(
                f"pushed {len(pushed.files)} files to {pushed.repo_id}: {pushed.commit_url}", highlight=False
            )

    def training(self, loaded: LoadedRecipe, dataset_dir: Path) -> None:
        config = loaded.recipe.train
        console.print(f"training {config.method} of {config.student} on {dataset_dir}", highlight=False)

    def trained(self, result: Any) -> None:
        table = Table(title=f"student -> {result.output_dir} (held-out rows)", title_justify="left")
        from synthkd.publish.model_card import shown_metrics

        shown = shown_metrics(result.after)
        table.add_column("", justify="left")
        for _, _, short_label in shown:
            table.add_column(short_label, justify="right")
        for label, metrics in (("before", result.before), ("after", result.after)):
            table.add_row(label, *(str(metrics.get(key)) for key, _, _ in shown))
        console.print(table)
        if "judge" in result.after:
            judged = result.after["judge"]
            console.print(
                f"judge {judged['judge']}: student won {judged['student_wins']}, teacher "
                f"{judged['teacher_wins']}, ties {judged['ties']} of {judged['pairs']} "
                f"(win rate {judged['win_rate']})",
                highlight=False,
            )

    @contextlib.contextmanager
    def training_bar(self) -> Iterator[Any]:
        """The training steps on a bar like the steps' (not transformers' printed log dicts)."""
        from synthkd.progress import RichProgressFactory

        with RichProgressFactory(console) as factory:
            yield factory.step("training", None)

    def round_finished(self, line: str) -> None:
        console.print(line, highlight=False, markup=False)

    def warn(self, message: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(redact(message))}", highlight=False, soft_wrap=True)


def _print_plan(plans: list, loaded) -> None:
    """The dry run, on stdout (it is the command's answer): the first prompts, then a line per step
    and the total, then what the numbers assume."""
    from synthkd.dry_run import estimate_steps, time_assumptions, totals

    out = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"dry run: {loaded.recipe.name}", title_justify="left")
    for column in (
        "step",
        "requests",
        "cached",
        "to send",
        "prompt tok (est.)",
        "completion tok (max)",
        "cost (max, USD)",
        "time (min, est.)",
    ):
        table.add_column(column, justify="right" if column != "step" else "left")
    estimates = estimate_steps(plans)
    for estimate in estimates:
        plan = estimate.plan
        if not estimate.estimated:  # a teacher step that cannot count its requests in advance
            table.add_row(estimate.label, "not estimated", "-", "-", "-", "-", "-", "-")
            continue
        about = "~" if estimate.approximate else ""
        requests = f"{about}{plan.requests}" + (f" (max {plan.requests_max})" if plan.requests_max else "")
        table.add_row(
            estimate.label,
            requests,
            str(plan.cached),
            f"{about}{estimate.to_send}",
            f"{about}{plan.prompt_tokens}",
            f"{about}{plan.max_completion_tokens}",
            "-" if not estimate.has_teacher else _money(estimate.cost_usd, about),
            _minutes(estimate.minutes, about, estimate.time_unknown is not None),
        )
    total = totals(estimates)
    about = "~" if total.approximate else ""
    table.add_section()
    table.add_row(
        "total",
        "",
        "",
        f"{about}{total.to_send}",
        f"{about}{total.prompt_tokens}",
        f"{about}{total.completion_tokens}",
        _money(total.cost_usd, about),
        _minutes(total.minutes, about, bool(total.untimed)),
    )
    for estimate in estimates:
        for number, messages in enumerate(estimate.plan.sample_prompts, start=1):
            kind = "example prompt" if estimate.approximate else "prompt"
            out.rule(f"step {estimate.label}, {kind} {number}", align="left")
            for message in messages:
                out.print(  # the content is text, not markup: "[1, 2]" must print as it is
                    f"[bold]{message['role']}:[/] {escape(message['content'])}", highlight=False, markup=True
                )
    out.print(table)
    notes = [
        "Token counts are estimates (4 characters a token); completion tokens assume every answer "
        "uses max_tokens. Later steps' counts assume no row is dropped before them. ~: a "
        "data-dependent step's estimate (every answer parses, nothing is eliminated; max: with "
        "re-asks and every round); its cached count covers only the requests known in advance."
    ]
    if total.not_estimated:
        notes.append(
            "not estimated: a teacher step that cannot count its requests before running; later steps "
            f"count its input rows as its output. The total leaves out {', '.join(total.not_estimated)}."
        )
    if total.cost_usd is None:
        notes.append("price unknown: the model is not in litellm's price list, so neither is the total's.")
    notes.append(time_assumptions(estimates))
    for label, reason in total.untimed.items():
        notes.append(f"The time of {label} is not estimated: {reason}; the total time leaves it out.")
    out.print(" ".join(notes), highlight=False)


def _minutes(minutes: float | None, about: str, unknown: bool) -> str:
    """A step's or the total's time; without one, "not estimated" where it could not be (`unknown`)."""
    if minutes is None:
        return "not estimated" if unknown else "-"
    return f"{about}{minutes:.1f}"


def _money(cost: float | None, about: str) -> str:
    return "price unknown" if cost is None else f"{about}{cost:.4f}"


def _print_summary(result) -> None:
    table = Table(title=f"run {result.manifest['name']} -> {result.out_dir}", title_justify="left")
    for column in (
        "step",
        "in",
        "out",
        "failed",
        "dropped",
        "sent",
        "cached",
        "retries",
        "tokens",
        "cost",
        "seconds",
    ):
        table.add_column(column, justify="left" if column in ("step", "dropped") else "right")
    for report in result.reports:
        dropped = ", ".join(f"{reason} {count}" for reason, count in report.rows_dropped.items()) or "-"
        cost = "?" if report.cost_usd is None else f"${report.cost_usd:.4f}"
        table.add_row(
            f"{report.index}:{report.step}",
            str(report.rows_in),
            str(report.rows_out),
            str(report.rows_failed),
            dropped,
            str(report.requests_sent),
            str(report.cache_hits),
            str(sum(report.retries.values())),
            str(report.prompt_tokens + report.completion_tokens),
            cost,
            f"{report.seconds:.1f}",
        )
    console.print(table)
    console.print(
        f"{len(result.rows)} rows -> {result.out_dir}/dataset, data.jsonl; "
        f"{len(result.failures)} failures -> failures.jsonl; manifest.json",
        highlight=False,
    )


def _publish_parsers(commands) -> None:
    push = commands.add_parser(
        "push",
        help="upload a run's parquet data, dataset card and recipe to the Hub in one commit",
        # --dry-run takes an optional folder: written first, it would take RUN_DIR as that folder.
        usage="synthkd push RUN_DIR REPO_ID [--dry-run [DIR]] [--private] [--token-env VAR] [--license ID]",
    )
    push.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (output.dir)")
    push.add_argument("repo_id", metavar="REPO_ID", help="dataset repository, namespace/name")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--token-env", metavar="VAR", help="variable holding the Hub token (default HF_TOKEN)")
    push.add_argument(
        "--dry-run",
        nargs="?",
        const=True,
        metavar="DIR",
        help="write the folder that would be uploaded (default RUN_DIR/push-dry-run; the merge with a "
        "card already on the Hub is left out) and send nothing; give it after RUN_DIR REPO_ID, as "
        "`--dry-run RUN_DIR REPO_ID` reads RUN_DIR as DIR",
    )
    push.add_argument(
        "--license", metavar="ID", help="the dataset's Hub license id, for a run whose recipe set none"
    )
    push.set_defaults(handler=_push)

    report = commands.add_parser("report", help="write a run's self-contained HTML report with plots")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (output.dir)")
    report.add_argument("--output", metavar="FILE", help="where to write it (default RUN_DIR/report.html)")
    report.add_argument(
        "--map",
        action="store_true",
        help="add the instruction map: every instruction embedded, clustered, projected (tens of "
        "seconds); the page then carries plotly.js (about 4.6 MB; the basic report is tens of KB)",
    )
    report.add_argument(
        "--encoder",
        choices=("transformer", "static"),
        default="transformer",
        help="the map's encoder: the embedded MiniLM, or the static encoder distilled from it (faster)",
    )
    report.set_defaults(handler=_report)

    show = commands.add_parser("show", help="print a run's rows as a table, filtered")
    show.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (output.dir)")
    show.add_argument(
        "--columns", metavar="A,B", help="columns to show (default id, instruction, response, score)"
    )
    show.add_argument(
        "--where", action="append", default=[], metavar="COL=VAL", help="keep rows whose column equals VAL"
    )
    show.add_argument("--min-score", type=float, metavar="X", help="keep rows scoring at least X")
    show.add_argument(
        "--score-column", default="score", metavar="COL", help="the score column (default score)"
    )
    show.add_argument("--step", metavar="NAME", help="keep rows that step NAME made (their provenance)")
    show.add_argument("--limit", type=int, default=20, metavar="N", help="rows shown (default 20)")
    show.set_defaults(handler=_show)


def _push(args: argparse.Namespace) -> int:
    import datasets

    from synthkd.publish.push import push

    datasets.disable_progress_bars()  # writing parquet draws a bar per split
    result = push(
        args.run_dir,
        args.repo_id,
        private=args.private,
        token_env=args.token_env,
        dry_run=args.dry_run,
        license=args.license,
    )
    if result.folder is not None:
        console.print(
            f"dry run: {result.folder} holds what would be uploaded to {result.repo_id}:", highlight=False
        )
    else:
        console.print(f"pushed to {result.repo_id} in one commit: {result.commit_url}", highlight=False)
    for name in result.files:
        console.print(f"  {name}", highlight=False)
    return 0


def _report(args: argparse.Namespace) -> int:
    from synthkd.progress import quiet_library_progress_bars
    from synthkd.publish.report import write_report

    quiet_library_progress_bars()
    path = write_report(args.run_dir, args.output, with_map=args.map, map_encoder=args.encoder)
    # The size says what the map costs: plotly.js (~4.6 MB) is inlined only for it.
    size = f"{path.stat().st_size / 1024:,.0f} KB" + (", with plotly.js for the map" if args.map else "")
    console.print(f"report -> {path} ({size})", highlight=False, soft_wrap=True)  # a path whole
    return 0


def _show(args: argparse.Namespace) -> int:
    from synthkd.publish.rundir import open_run
    from synthkd.publish.show import RowFilter, parse_where, show_table

    run = open_run(args.run_dir)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    row_filter = RowFilter(parse_where(args.where), args.min_score, args.score_column, args.step)
    # Rows go to stdout (pipe-able); messages stay on stderr like every other command's.
    summary, table = show_table(run, columns, row_filter, args.limit)
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(summary, highlight=False, soft_wrap=True)
    out.print(table)
    return 0


def _cache_clear(args: argparse.Namespace) -> int:
    from synthkd.cache import ResponseCache, clear_cache
    from synthkd.engines.ray_engine import shard_folder_root

    path = ResponseCache.default_path()
    removed, set_aside = clear_cache(path)
    shutil.rmtree(shard_folder_root(), ignore_errors=True)  # engine: ray's shards of unfinished runs
    if set_aside:
        kept = ", ".join(str(moved) for moved in set_aside)
        console.print(
            f"the request cache {path} was damaged: kept it as {kept} and started a new, empty one",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(f"removed {removed} cached responses from {path}", highlight=False, markup=False)
    return 0


def _cache_info(args: argparse.Namespace) -> int:
    from synthkd.cache import ResponseCache

    cache = ResponseCache.default()  # a damaged cache: CacheDamagedError says so and how to fix it (exit 2)
    try:
        print(json.dumps({"path": str(cache.path), "responses": cache.count()}))
    finally:
        cache.close()
    return 0


def console_main() -> None:
    """The `synthkd` command: `main`, then an exit without the interpreter's last full collections
    of every object the run made (0.4 s once `datasets` is loaded). Not for library callers, whose
    objects must stay collectable."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_main()
