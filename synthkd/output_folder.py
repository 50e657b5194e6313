"""Replace a run folder's outputs all at once, and keep two runs from writing one folder.

Outputs are written into a fresh staging folder, which then becomes the run folder: the old one is
renamed out of the way, the staging folder renamed into place, the old one deleted. Whatever else
the old run folder held (a trained student, a report) is hard-linked into the staging folder first,
so it is carried over without copying and without ever being moved out of the old folder. A run
that fails or is killed at any point leaves the previous outputs whole: all old or all new, never a
mix. Folders a killed run left behind are cleaned up (or, if it was killed between the two renames,
the old run folder is put back) by the next write to the same place.

The staging folder normally sits beside the run folder, where renames are atomic. A run folder
that cannot be renamed (a mount point such as a Docker volume, or the working directory) keeps its
place: staging then sits inside it, on the same file system, and the output files are swapped one
by one (each swap atomic; a writer killed between two is repaired by the next write).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from synthkd.atomic import process_running
from synthkd.errors import OutputBusyError, RecipeError

OUTPUT_FILES = ("dataset", "data.jsonl", "failures.jsonl", "manifest.json")
# Side folders inside a run folder that cannot be renamed (see the module docstring).
_INSIDE_PREFIX = ".synthkd."
# The lock files the current run holds. A context variable, not a process-wide set: a run nests
# its own holds (the CLI holds the folder from the first request to the student, `execute` holds
# it again), while another run in the same process (two `synthkd.run_async` at once, another
# thread) is refused like another process.
_held_locks: ContextVar[frozenset[Path]] = ContextVar("synthkd_held_output_locks", default=frozenset())


def incomplete_folder(out_dir: Path) -> Path:
    """Where a run that failed (see `output.max_failure_ratio`) leaves what it got, beside the
    run folder so the previous good outputs stay untouched."""
    return out_dir.with_name(out_dir.name + ".incomplete")


def check_output_folder(out_dir: Path, where: str) -> None:
    """Before the first request: the run folder can be written. It is a folder (or does not exist
    yet), and the nearest existing folder at or above it takes new files. `where` names the key."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise RecipeError(
            f"{out_dir} is a file; output.dir must name a folder (made if missing)", where=where
        )
    existing = out_dir
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: the folder it names cannot be made
            raise RecipeError(
                f"{existing} is a link to {os.readlink(existing)}, which is missing", where=where
            )
        existing = existing.parent
    if not existing.is_dir():
        raise RecipeError(f"{existing} is a file, so {out_dir} cannot be made under it", where=where)
    # os.access says yes to root on a read-only mount: only a real file settles it.
    try:
        handle, probe = tempfile.mkstemp(prefix=".synthkd-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise RecipeError(
            f"cannot write into {existing} ({exc.strerror}); choose another output.dir or --output",
            where=where,
        ) from None


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold the run folder for this run; another run asking (another process, or another thread or
    task of this one) gets `OutputBusyError` at once.

    The lock is a `flock` on a file beside the folder (the folder itself is swapped out), so it
    goes with the process however it ends: kill -9 leaves no stale lock, only the file, which the
    next run takes over.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    if lock_path in _held_locks.get():
        yield  # this run holds it already
        return
    # flock belongs to an open file, not a process: a second open in this process is refused too.
    fd = _take_lock(lock_path, out_dir)
    token = _held_locks.set(_held_locks.get() | {lock_path})
    try:
        yield
    finally:
        _held_locks.reset(token)
        # Unlinked while still held, so a process that opens the name next makes a new file;
        # one that opened this file meanwhile sees it is gone (see _take_lock) and retries.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def _take_lock(lock_path: Path, out_dir: Path) -> int:
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutputBusyError(
                f"another synthkd run (pid {holder}) is writing {out_dir}; wait for it to finish, "
                "or give this run another output.dir (--output)"
            ) from None
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)  # the holder released and removed it between our open and flock: again


def staging_folder(out_dir: Path) -> Path:
    """A new, empty staging folder for `out_dir` (see the module docstring for where)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(out_dir)
    staging = _side_folder(out_dir, "staging")
    staging.mkdir()
    return staging


def swap_into_place(staging: Path, out_dir: Path) -> None:
    """Make `staging` the run folder, carrying over what else the old one held."""
    if _fixed_in_place(out_dir):
        _swap_files(staging, out_dir)
        return
    if out_dir.exists():
        for entry in out_dir.iterdir():
            if entry.name not in OUTPUT_FILES:
                _link_tree(entry, staging / entry.name)
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    retired = _side_folder(out_dir, "retired")
    os.rename(out_dir, retired)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(retired, out_dir)  # the old outputs stay where they were
        raise
    shutil.rmtree(retired, ignore_errors=True)


def recover(out_dir: Path) -> None:
    """Clean up after a writer that was killed: delete its staging folders; put back what it had
    retired but not yet replaced, and delete the rest."""
    for staging in side_folders(out_dir, "staging"):
        shutil.rmtree(staging, ignore_errors=True)
    retired = sorted(side_folders(out_dir, "retired"), key=lambda path: path.stat().st_mtime)
    for folder in [path for path in retired if path.parent == out_dir]:  # swapped file by file
        for name in OUTPUT_FILES:
            if (folder / name).exists() and not (out_dir / name).exists():
                os.rename(folder / name, out_dir / name)
        shutil.rmtree(folder, ignore_errors=True)
        retired.remove(folder)
    if retired and not out_dir.exists():
        os.rename(retired.pop(), out_dir)
    for path in retired:
        shutil.rmtree(path, ignore_errors=True)


def side_folders(out_dir: Path, kind: str) -> list[Path]:
    """The staging or retired folders of `out_dir` whose writer is no longer running."""
    places = [(out_dir.parent, f".{out_dir.name}.{kind}-"), (out_dir, f"{_INSIDE_PREFIX}{kind}-")]
    found = []
    for folder, prefix in places:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not path.name.startswith(prefix):
                continue
            pid = path.name[len(prefix) :].split("-", 1)[0]
            if not (pid.isdigit() and process_running(int(pid))):
                found.append(path)
    return found


def _side_folder(out_dir: Path, kind: str) -> Path:
    """`.<run>.<kind>-<pid>-<random>` beside the run folder (same file system: renames are atomic),
    or `.synthkd.<kind>-...` inside it when it cannot be renamed."""
    tag = f"{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    if _fixed_in_place(out_dir):
        return out_dir / f"{_INSIDE_PREFIX}{tag}"
    return out_dir.parent / f".{out_dir.name}.{tag}"


def _fixed_in_place(out_dir: Path) -> bool:
    """A run folder that must not be renamed: a mount point (rename fails with EBUSY) or one the
    process works in (renaming it away would leave the process in a deleted folder)."""
    return out_dir.is_dir() and (os.path.ismount(out_dir) or _contains_cwd(out_dir))


def _contains_cwd(folder: Path) -> bool:
    with contextlib.suppress(OSError):
        cwd, folder = Path.cwd().resolve(), folder.resolve()
        return cwd == folder or folder in cwd.parents
    return False


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link a file or folder tree (copy where links are impossible); symlinks stay symlinks."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(source, target)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _swap_files(staging: Path, out_dir: Path) -> None:
    """Replace the output files one by one; other files there are left alone."""
    retired = _side_folder(out_dir, "retired")
    retired.mkdir()
    for name in OUTPUT_FILES:
        if (out_dir / name).exists():
            os.replace(out_dir / name, retired / name)
    for name in OUTPUT_FILES:
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(retired, ignore_errors=True)
