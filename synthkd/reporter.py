"""What a run tells as it goes: the hooks `synthkd run` prints through, and Python callers may
pass their own (`synthkd.run(..., reporter=...)`). Light to import: the command line subclasses it
before it knows whether it will run anything."""

from __future__ import annotations

import contextlib
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from synthkd.redaction import redact

if TYPE_CHECKING:
    from synthkd.loop.run import LoopResult
    from synthkd.pipeline import RunResult
    from synthkd.publish.push import PushResult
    from synthkd.recipe import LoadedRecipe
    from synthkd.steps.base import Progress
    from synthkd.training.run import TrainResult


class Reporter:
    """What a run tells as it goes; the command line prints tables, Python callers get nothing
    but warnings (on stderr) unless they pass their own."""

    def generated(self, result: RunResult) -> None:
        """The dataset is written (or, on `RunIncompleteError`, set aside): its funnel and cost."""

    def publishing(self, what: str) -> AbstractContextManager[None]:
        """Around writing the card and the report (and the push), which can take a minute:
        `what` says what is being done ("writing the dataset card and report.html")."""
        return contextlib.nullcontext()

    def published(self, written: list[Path], pushed: PushResult | None) -> None:
        """The card, recipe and report are written; `pushed` when the recipe has `output.hub`."""

    def training(self, recipe: LoadedRecipe, dataset_dir: Path) -> None:
        """Training the student is about to start."""

    def training_bar(self) -> AbstractContextManager[Progress | None]:
        """Around training the student: where its steps are shown (None: transformers' own
        output, as the caller has set it)."""
        return contextlib.nullcontext()

    def round_finished(self, line: str) -> None:
        """A round of the recipe's loop is finished (or was, before a rerun): one line on it."""

    def trained(self, result: TrainResult | LoopResult) -> None:
        """The student is trained and saved; its before/after metrics (a loop's: the first
        checkpoint's and the last round's student's, on the same held-out rows)."""

    def warn(self, message: str) -> None:
        print(f"warning: {redact(message)}", file=sys.stderr)
