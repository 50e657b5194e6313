"""What `synthkd run` does after the dataset is written: recipe.yaml, the card, the report, the push.

It takes plain values, not the recipe: publishing sits below the recipe loader (which imports
`publish.config`). `synthkd.api.publish_run` works them out of a loaded recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from synthkd.errors import MissingExtraError, SynthkdError
from synthkd.publish.card import write_card
from synthkd.publish.config import HubConfig
from synthkd.publish.push import PushResult, push
from synthkd.publish.recipe_files import FILES_DIR, keep_recipe_files
from synthkd.publish.report import REPORT_FILE, write_report
from synthkd.teachers.config import TeacherConfig


def url_passwords(teachers: Iterable[TeacherConfig]) -> list[str]:
    """Passwords in teachers' base_url: searched for in what is pushed, besides the key variables."""
    found = []
    for teacher in teachers:
        password = urlsplit(teacher.base_url).password if teacher.base_url else None
        if password:
            found.append(password)
    return found


def finishing_words(report: str, hub: HubConfig | None) -> str:
    """What `finish_run` is about to do, in words, for the line shown while it works."""
    what = "writing the dataset card" + (f" and {REPORT_FILE}" if report != "none" else "")
    return what + (f", then pushing to {hub.repo_id}" if hub is not None else "")


def finish_run(
    run_dir: Path,
    templates: dict[str, str],
    hub: HubConfig | None,
    extra_secrets: list[str],
    warn: Callable[[str], None] = print,
    report: str = "basic",
    data_files: dict[str, Path] | None = None,
    map_encoder: str = "transformer",
) -> tuple[list[Path], PushResult | None]:
    """Write recipe.yaml, README.md and report.html into the run folder, then push if `hub`.

    `templates`: the prompt templates' texts as the run used them (file as named -> source; the
    card shows them, the manifest has their hashes). `extra_secrets`: values that must not be
    pushed besides the key variables (see `url_passwords`). `report`: basic, full (with the
    instruction map, embedded by `map_encoder`: `output.report_encoder`) or none (`output.report`).
    `data_files`: the files the steps read (as named -> where found), kept with the templates in
    the run folder for a push to upload beside the recipe; None leaves those kept earlier (a loop
    rewriting its card).

    The dataset is already safely written: a card or report that fails is a warning, not a failed run.
    A report whose instruction map needs an extra this install lacks (`report: full` without
    the `report` extra) is written without its map, with one line saying which pip install
    gives it. A push that fails is an error: the user asked for it.
    """
    written = []
    writers = [("dataset card", lambda: write_card(run_dir, templates))]
    if data_files is not None:  # first: a push (below, or later) uploads them
        writers.insert(0, ("the recipe's files", lambda: _keep_files(run_dir, data_files, templates)))
    if report != "none":
        writers.append(("report", lambda: _write_report(run_dir, report == "full", map_encoder, warn)))
    for what, writer in writers:
        try:
            written.append(writer())
        except MissingExtraError as exc:  # a core install: the dataset is what the run is for
            warn(f"{REPORT_FILE if what == 'report' else what} skipped: {exc}")
        except SynthkdError as exc:  # a full disk: its message says where and what to do
            warn(f"{what} not written: {exc}")
        except Exception as exc:  # see the docstring: the dataset is written already
            warn(f"{what} not written: {exc.__class__.__name__}: {exc}")
    result = None
    if hub is not None:
        result = push(
            run_dir,
            hub.repo_id,
            private=hub.private,
            token_env=hub.token_env,
            extra_secrets=extra_secrets,
        )
    return written, result


def _write_report(run_dir: Path, with_map: bool, encoder: str, warn: Callable[[str], None]) -> Path:
    """The report, with its instruction map if asked for and installed; else without it."""
    try:
        return write_report(run_dir, with_map=with_map, map_encoder=encoder)
    except MissingExtraError as exc:
        if not with_map:
            raise
        warn(f"{REPORT_FILE} written without its instruction map: {exc}")
        return write_report(run_dir)


def _keep_files(run_dir: Path, data_files: dict[str, Path], templates: dict[str, str]) -> Path:
    keep_recipe_files(run_dir, data_files, templates)
    return run_dir / FILES_DIR
