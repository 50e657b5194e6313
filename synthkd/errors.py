"""Errors that the CLI turns into one clear message and an exit code."""

from __future__ import annotations


class SynthkdError(Exception):
    """Base class for errors that are reported without a traceback."""

    exit_code = 1


class RecipeError(SynthkdError):
    """Bad input: a recipe, a data file, a template or the environment it needs.

    Raised before any request is sent; the CLI exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class TeacherFatalError(SynthkdError):
    """A teacher error that retrying cannot fix (bad key, no quota, bad request): the run stops."""

    exit_code = 1
