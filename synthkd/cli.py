"""The `synthkd` command: run, validate, cache clear."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import synthkd
from synthkd.errors import SynthkdError

console = Console(stderr=True)
if not console.is_terminal:
    console.width = 120  # logs and CI: the 80-column default squeezes the tables


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SynthkdError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
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
    run.set_defaults(handler=_run)

    train = commands.add_parser("train", help="train the recipe's student on its finished run's dataset")
    _recipe_arguments(train)
    train.add_argument("--output", metavar="DIR", help="run folder (overrides output.dir)")
    train.set_defaults(handler=_train)

    validate = commands.add_parser(
        "validate", help="check a recipe's keys, files and templates; send nothing"
    )
    _recipe_arguments(validate)
    validate.set_defaults(handler=_validate)

    cache = commands.add_parser("cache", help="manage the request cache")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    clear = cache_commands.add_parser("clear", help="delete every cached teacher response")
    clear.set_defaults(handler=_cache_clear)
    info = cache_commands.add_parser("info", help="where the cache is and how many responses it holds")
    info.set_defaults(handler=_cache_info)
    return parser


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
    from synthkd.errors import RecipeError
    from synthkd.pipeline import check, preflight
    from synthkd.recipe import load_recipe

    loaded = load_recipe(args.recipe, args.overrides)
    flow = check(loaded)
    try:
        preflight(loaded, network=False)
    except RecipeError as exc:  # the recipe is fine; this machine is not ready to run it yet
        console.print(f"[yellow]warning:[/] {exc}", highlight=False, soft_wrap=True)
    for index, (step, columns) in enumerate(zip(loaded.recipe.steps, flow, strict=True)):
        shown = ", ".join(sorted(columns)) if columns is not None else "(known at run time)"
        console.print(f"  {index}: [bold]{step.step}[/] -> {shown}", highlight=False)
    console.print(f"[green]ok[/] {loaded.path}: {len(loaded.recipe.steps)} steps valid", highlight=False)
    return 0


def _run(args: argparse.Namespace) -> int:
    from synthkd.pipeline import check, execute, plan, preflight
    from synthkd.recipe import load_recipe

    loaded = load_recipe(args.recipe, args.overrides)
    check(loaded)
    if args.dry_run:
        _print_plan(plan(loaded, use_cache=not args.no_cache), loaded)
        return 0
    preflight(loaded)
    from synthkd.progress import RichProgressFactory, quiet_library_progress_bars

    quiet_library_progress_bars()

    with RichProgressFactory(console) as progress:
        result = asyncio.run(
            execute(
                loaded,
                use_cache=not args.no_cache,
                progress=progress,
                out_dir=Path(args.output) if args.output else None,
            )
        )
    _print_summary(result)
    if loaded.recipe.train is not None and not args.no_train:
        _train_and_report(loaded, result.out_dir)
    return 0


def _train(args: argparse.Namespace) -> int:
    from synthkd.errors import RecipeError
    from synthkd.recipe import load_recipe

    loaded = load_recipe(args.recipe, args.overrides)
    if loaded.recipe.train is None:
        raise RecipeError("the recipe has no train: section", where=str(loaded.path))
    _train_and_report(loaded, Path(args.output) if args.output else loaded.recipe.output_dir())
    return 0


def _train_and_report(loaded, run_dir: Path) -> None:
    from synthkd.progress import quiet_library_progress_bars
    from synthkd.training.run import train_student

    quiet_library_progress_bars()
    config = loaded.recipe.train
    console.print(f"training {config.method} of {config.student} on {run_dir / 'dataset'}", highlight=False)
    result = train_student(config, run_dir / "dataset", run_dir, loaded.recipe.seed, loaded.recipe.name)
    table = Table(title=f"student -> {result.output_dir} (held-out rows)", title_justify="left")
    for column in ("", "loss", "perplexity", "agreement with teacher"):
        table.add_column(column, justify="right" if column else "left")
    for label, metrics in (("before", result.before), ("after", result.after)):
        table.add_row(label, str(metrics["loss"]), str(metrics["perplexity"]), str(metrics["agreement"]))
    console.print(table)


def _print_plan(plans: list, loaded) -> None:
    from synthkd.pricing import price_of

    table = Table(title=f"dry run: {loaded.recipe.name}", title_justify="left")
    for column in (
        "step",
        "requests",
        "cached",
        "to send",
        "prompt tok (est.)",
        "completion tok (max)",
        "cost (max, USD)",
    ):
        table.add_column(column, justify="right" if column != "step" else "left")
    for index, (step, step_plan) in enumerate(plans):
        teacher = step.step_teacher()
        price = price_of(teacher.backend, teacher.model) if teacher is not None else None
        to_send = step_plan.requests - step_plan.cached
        share = to_send / step_plan.requests if step_plan.requests else 0
        cost = (
            "-"
            if teacher is None
            else "unknown"
            if price is None
            else f"{share * price.cost(step_plan.prompt_tokens, step_plan.max_completion_tokens):.4f}"
        )
        table.add_row(
            f"{index}:{step.step}",
            str(step_plan.requests),
            str(step_plan.cached),
            str(to_send),
            str(step_plan.prompt_tokens),
            str(step_plan.max_completion_tokens),
            cost,
        )
    for index, (step, step_plan) in enumerate(plans):
        for number, messages in enumerate(step_plan.sample_prompts, start=1):
            console.rule(f"step {index}:{step.step}, prompt {number}", align="left")
            for message in messages:
                console.print(
                    f"[bold]{message['role']}:[/] {message['content']}", highlight=False, markup=True
                )
    console.print(table)
    console.print(
        "Token counts are estimates (4 characters a token); completion tokens assume every answer "
        "uses max_tokens. Later steps' counts assume no row is dropped before them."
    )


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


def _cache_clear(args: argparse.Namespace) -> int:
    from synthkd.cache import ResponseCache

    cache = ResponseCache.default()
    removed = cache.clear()
    cache.close()
    console.print(f"removed {removed} cached responses from {cache.path}", highlight=False)
    return 0


def _cache_info(args: argparse.Namespace) -> int:
    from synthkd.cache import ResponseCache

    cache = ResponseCache.default()
    print(json.dumps({"path": str(cache.path), "responses": cache.count()}))
    cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
