"""Write a file whole or not at all, and tell a full disk from other write errors.

`atomic_write_text`/`atomic_writer` write into a hidden temporary file beside the target
(`.<name>.tmp-<pid>-<random>`, same folder, so same file system), flush it to the disk, then
rename it over the target. A write that fails at any point (a full disk, an exception, a
killed process) leaves the previous file as it was, or no file; never a truncated one. A full disk
is raised as `StorageFullError` naming the file; the temporary file is removed. Temporary files a
killed writer left behind are removed by the next write to the same file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from synthkd.errors import StorageFullError, causes

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Libraries that turn errno into text (pyarrow: "[errno 28] No space left on device").
DISK_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
TEMP_MARK = ".tmp-"
KEPT = "it was not written, and the file there before, if any, is left whole"


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says that the disk (or a quota) is full:
    an OSError with ENOSPC/EDQUOT (or that text), or SQLite's SQLITE_FULL."""
    return any(_says_full(cause) for cause in causes(exc))


def _says_full(exc: BaseException) -> bool:
    if isinstance(exc, StorageFullError) or getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL":
        return True
    return isinstance(exc, OSError) and (
        exc.errno in DISK_FULL_ERRNOS or any(text in str(exc) for text in DISK_FULL_TEXTS)
    )


def atomic_write_text(
    path: str | Path, text: str, *, encoding: str = "utf-8", newline: str | None = None, what: str = ""
) -> Path:
    """Write `text` to `path` whole or not at all (see the module); returns the path written.
    `what` names the file in the error a full disk raises ("the report")."""
    with atomic_writer(path, "w", encoding=encoding, newline=newline, what=what) as handle:
        handle.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_writer(
    path: str | Path,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
    what: str = "",
) -> Iterator[IO[Any]]:
    """An open temporary file that replaces `path` when the block ends without an error (for
    writers that stream, like JSON lines); `mode` is "w" or "wb". An error in the block, or a full
    disk, leaves `path` as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer writes a whole file: mode 'w' or 'wb', not {mode!r}")
    target = Path(path)
    if target.is_symlink():  # replace the file the link points to, not the link
        target = target.resolve()
    remove_stale_temporaries(target)
    temp = target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        previous = os.stat(target).st_mode
    except OSError:
        previous = None
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            if previous is not None:  # a replaced file keeps its permissions
                os.fchmod(descriptor, stat.S_IMODE(previous))
            handle = open(  # noqa: SIM115 (closed below, before the rename)
                descriptor,
                mode,
                encoding=encoding if mode == "w" else None,
                newline=newline if mode == "w" else None,
            )
        except BaseException:
            os.close(descriptor)
            raise
        with handle:
            yield handle
            handle.flush()
            # Flushed to the disk before the rename: a file system that reserves space late (NFS)
            # reports a full disk here, not after the old file is gone.
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, Exception) and not isinstance(exc, StorageFullError) and is_disk_full(exc):
            raise StorageFullError(target, what=what, outcome=KEPT) from exc
        raise
    _sync_folder(target.parent)


def remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary files of `target` whose writer is no longer running."""
    prefix = f".{target.name}{TEMP_MARK}"
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not process_running(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def process_running(pid: int) -> bool:
    """Whether a process with this pid exists (a writer whose leftovers must not be touched)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's process exists; a bogus pid does not
    return True


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every system can open a folder)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
