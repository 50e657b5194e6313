"""What `synthkd run` does after the dataset is written: recipe.yaml, the card, the report, the push."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from synthkd.publish.card import write_card
from synthkd.publish.push import PushResult, push
from synthkd.publish.report import write_report
from synthkd.recipe import LoadedRecipe


def _step_templates(loaded: LoadedRecipe) -> dict[str, str]:
    """The prompt templates' texts as the run used them (the card shows them; the manifest has hashes)."""
    templates: dict[str, str] = {}
    for step in loaded.recipe.steps:
        templates.update(step.template_sources())
    return templates


def _url_passwords(loaded: LoadedRecipe) -> list[str]:
    """Passwords in teachers' base_url: searched for in what is pushed, besides the key variables."""
    found = []
    for step in loaded.recipe.steps:
        for teacher in (step.step_teacher(), getattr(step, "judge_teacher", None)):
            if teacher is not None and teacher.base_url:
                password = urlsplit(teacher.base_url).password
                if password:
                    found.append(password)
    return found


def finish_run(
    loaded: LoadedRecipe, run_dir: Path, warn: Callable[[str], None] = print
) -> tuple[list[Path], PushResult | None]:
    """Write recipe.yaml, README.md and report.html into the run folder, then push if output.hub.

    The dataset is already safely written: a card or report that fails is a warning, not a failed run.
    A push that fails is an error: the user asked for it.
    """
    written = []
    for what, writer in (
        ("dataset card", lambda: write_card(run_dir, _step_templates(loaded))),
        ("report", lambda: write_report(run_dir)),
    ):
        try:
            written.append(writer())
        except Exception as exc:  # see the docstring: the dataset is written already
            warn(f"{what} not written: {exc.__class__.__name__}: {exc}")
    hub = loaded.recipe.output.hub
    result = None
    if hub is not None:
        result = push(
            run_dir,
            hub.repo_id,
            private=hub.private,
            token_env=hub.token_env,
            extra_secrets=_url_passwords(loaded),
        )
    return written, result
