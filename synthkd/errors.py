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


class CacheDamagedError(SynthkdError):
    """The request cache file is not a readable SQLite database (truncated, overwritten, a disk
    fault). Nothing can be sent until it is set aside with `synthkd cache clear`: exit code 2."""

    exit_code = 2

    def __init__(self, path: object, detail: str) -> None:
        self.path = path
        super().__init__(
            f"the request cache {path} is damaged ({detail}); run `synthkd cache clear` to set it aside "
            f"and start a new one (the damaged file is kept as {path}.damaged-<UTC time>)"
        )


class CacheLockedError(SynthkdError):
    """Another process held the request cache's write lock for longer than the busy timeout.
    Answers received so far are committed, so the same command resumes: exit code 1."""

    exit_code = 1

    def __init__(self, path: object, timeout: float) -> None:
        self.path = path
        super().__init__(
            f"the request cache {path} is locked: another synthkd run (or another program) has been "
            f"writing to it for over {timeout:g} s; wait for it to finish and run the same command again "
            "(answers received so far are kept), or give this run a cache of its own with SYNTHKD_CACHE_DIR"
        )
