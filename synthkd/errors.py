"""Errors that the CLI turns into one clear message and an exit code."""

from __future__ import annotations

from collections.abc import Iterator


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling, and so on, each once: an SDK's
    exception says less than the one it wraps (a refused connection, a full disk)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class SynthkdError(Exception):
    """Base class for errors that are reported without a traceback."""

    exit_code = 1

    def __reduce__(self) -> tuple[object, ...]:
        # As it is, whatever its __init__ takes: an error raised in another process (a Ray actor)
        # is raised again in the driver with its message, type and attributes.
        return (_restored_error, (type(self), self.args, self.__dict__))


def _restored_error(cls: type[SynthkdError], args: tuple[object, ...], state: dict) -> SynthkdError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class RecipeError(SynthkdError):
    """Bad input: a recipe, a data file, a template or the environment it needs.

    Raised before any request is sent; the CLI exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class MissingExtraError(RecipeError):
    """A part of synthkd the recipe (or command) uses is not installed: its pip extra is missing
    (see `synthkd.extras`). Found before any request where possible; exit code 2.

    One line: "`where`: `purpose` needs the '`extra`' extra (`module` is not installed): pip install
    'synthkd[`extra`]'".
    """

    exit_code = 2

    def __init__(self, extra: str, purpose: str, module: str | None = None, *, where: str | None = None):
        self.extra = extra
        self.module = module
        detail = f" ({module} is not installed)" if module else ""
        super().__init__(
            f"{purpose} needs the '{extra}' extra{detail}: pip install 'synthkd[{extra}]'", where=where
        )


class TeacherFatalError(SynthkdError):
    """A teacher error that retrying cannot fix (bad key, no quota, bad request): the run stops."""

    exit_code = 1


class DamagedFileError(SynthkdError):
    """A SQLite file synthkd keeps is not a readable database (truncated, overwritten, a disk
    fault): what needs it cannot go on until it is set aside. Exit code 2.

    One line: "`what` `path` is damaged (`detail`); `fix`", where `fix` says how to set it aside
    and what that costs."""

    exit_code = 2

    def __init__(self, path: object, detail: str, *, what: str, fix: str) -> None:
        self.path = path
        super().__init__(f"{what} {path} is damaged ({detail}); {fix}")


class LockedFileError(SynthkdError):
    """Another process held a SQLite file's write lock for longer than the busy timeout. What was
    committed before stays, so the same command resumes: exit code 1.

    One line: "`what` `path` is locked: another synthkd run ... for over `timeout` s; `fix`"."""

    exit_code = 1

    def __init__(self, path: object, timeout: float, *, what: str, fix: str) -> None:
        self.path = path
        super().__init__(
            f"{what} {path} is locked: another synthkd run (or another program) has been writing to it "
            f"for over {timeout:g} s; {fix}"
        )


class UnwritableFileError(SynthkdError):
    """A SQLite file synthkd must write cannot be opened or written: it, or its folder, is
    read-only (a read-only mount, another user's file). What was committed before stays; nothing
    goes on until it is writable: exit code 2.

    One line: "cannot write `what` `path` (`detail`): `outcome`; `fix`"."""

    exit_code = 2

    def __init__(self, path: object, detail: str, *, what: str, outcome: str, fix: str) -> None:
        self.path = path
        super().__init__(f"cannot write {what} {path} ({detail}): {outcome}; {fix}")


class CacheDamagedError(DamagedFileError):
    """The request cache file is not a readable SQLite database (truncated, overwritten, a disk
    fault). Nothing can be sent until it is set aside with `synthkd cache clear`: exit code 2."""

    def __init__(self, path: object, detail: str) -> None:
        super().__init__(
            path,
            detail,
            what="the request cache",
            fix="run `synthkd cache clear` to set it aside and start a new one (the damaged file is kept "
            f"as {path}.damaged-<UTC time>)",
        )


class CacheLockedError(LockedFileError):
    """Another process held the request cache's write lock for longer than the busy timeout.
    Answers received so far are committed, so the same command resumes: exit code 1."""

    def __init__(self, path: object, timeout: float) -> None:
        super().__init__(
            path,
            timeout,
            what="the request cache",
            fix="wait for it to finish and run the same command again (answers received so far are kept), "
            "or give this run a cache of its own with SYNTHKD_CACHE_DIR",
        )


class RunIncompleteError(SynthkdError):
    """A run that finished but lost more rows to failed requests than `output.max_failure_ratio`
    allows, or produced no rows: exit code 3. The previous outputs stay in place; what this run
    got is in a side folder (`result.out_dir`) and every answer is cached, so a rerun resumes."""

    exit_code = 3

    def __init__(self, message: str, result: object) -> None:
        self.result = result
        super().__init__(message)


class BudgetExceededError(SynthkdError):
    """The run reached a `max_cost_usd` (the recipe's or a teacher's): nothing more is sent, every
    answer bought is cached, and the same command with a higher cap goes on from there. The
    previous outputs stay in place. Exit code 4."""

    exit_code = 4


class OutputBusyError(SynthkdError):
    """Another synthkd process is writing the same output folder: exit code 1."""

    exit_code = 1


class StorageFullError(SynthkdError):
    """A write failed for want of space (the kernel's ENOSPC, or SQLite's "database or disk is full").
    What was written before is kept: cached answers stay committed, and a file being replaced is
    written beside it and renamed into place, so the previous one is left whole. Exit code 1.

    `what` names the thing at `path` ("the request cache", "the report"); `outcome` says what was
    and was not written; `fix` what to do (by default: free some space and run the command again).
    """

    exit_code = 1

    def __init__(self, path: object, *, what: str = "", outcome: str = "", fix: str = "") -> None:
        self.path = path
        named = f"{what} {path}" if what else str(path)
        outcome = f": {outcome}" if outcome else ""
        fix = fix or "free some space there and run the same command again"
        super().__init__(f"the disk holding {named} is full{outcome}; {fix}")
