"""Run untrusted Python (a teacher's code answer and its tests) in a limited subprocess.

Each run gets a fresh temporary folder as its working directory and is started as
`python -I -B` (isolated: no user site, no PYTHON* variables, no script folder on sys.path) with
a stripped environment. Resource limits are set with `setrlimit` between fork and exec: CPU
seconds, address space, file size, core dumps and (for a non-root user) processes. A wall-clock
timer kills the whole process group. Inside, a bootstrap (`synthkd/sandbox_child/boot.py`) installs
an audit hook (PEP 578) before any untrusted code runs; the first forbidden action ends the process
at once (exit code VIOLATION_EXIT, the action named on stderr), so the code cannot catch and ignore
the refusal:

- opening a file for writing, creating, deleting, renaming, linking or changing metadata of a path
  outside the run's folder (`/dev/null` excepted);
- reading under the user's home folder (except the interpreter's own prefixes and sys.path) or
  another process's `/proc/<pid>`, which would show its environment;
- starting processes (subprocess, os.system, fork, exec, spawn, kill);
- network sockets (anything but AF_UNIX socket pairs), DNS look-ups;
- ctypes foreign calls and libraries, sqlite extensions, and the gc walks that would reach the
  hook's own state.

Linux only (rlimits, /proc, wait4). This guards against a teacher's mistakes and naive harmful
code. It is not a security boundary against code written to escape an in-process hook (CPython
internals offer ways round it); as root, RLIMIT_NPROC does not bind. For adversarial code run
synthkd inside a container or VM.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

VIOLATION_EXIT = 91
MEMORY_EXIT = 92
VIOLATION_MARKER = "SYNTHKD-SANDBOX-VIOLATION: "
OUTPUT_TAIL_CHARS = 2000
STATUSES = ("ok", "failed", "timeout", "memory", "sandbox_violation", "output_limit", "crashed")


@dataclass(frozen=True)
class Limits:
    """What one run may use. `wall_seconds` None: twice the CPU seconds plus five."""

    cpu_seconds: float = 10.0
    wall_seconds: float | None = None
    memory_mb: int = 512
    file_size_mb: int = 16
    max_processes: int = 8  # threads count too (Linux counts tasks); forks are refused by the hook anyway

    @property
    def wall(self) -> float:
        return self.wall_seconds if self.wall_seconds is not None else 2 * self.cpu_seconds + 5


@dataclass
class SandboxResult:
    """How a run ended. `status` is one of STATUSES; `detail` says why in a line."""

    status: str
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    detail: str = ""
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    max_rss_mb: float = 0.0
    marker_seen: bool = field(default=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# The code run inside the child lives in real modules (standard library only, never imported by
# synthkd): their text is copied into each run's folder. boot.py installs the audit hook, then runs
# the entry script; check.py is check_solution's entry script.
_CHILD = Path(__file__).resolve().with_name("sandbox_child")


@functools.cache
def _child_source(name: str) -> str:
    return (_CHILD / name).read_text(encoding="utf-8")


def _home_dirs() -> list[str]:
    """The user's home folders (where keys and .env files live); "/" as home would deny everything."""
    homes = {str(Path.home()), os.environ.get("HOME", "")}
    return sorted(home for home in homes if home and os.path.realpath(home) != "/")


_NPROC_CACHE: tuple[float, int] | None = None
_NPROC_LOCK = threading.Lock()


def _tasks_of_this_user() -> int:
    """Tasks (processes and threads) of this real uid now: RLIMIT_NPROC counts those."""
    global _NPROC_CACHE
    with _NPROC_LOCK:
        now = time.monotonic()
        if _NPROC_CACHE is not None and now - _NPROC_CACHE[0] < 5.0:
            return _NPROC_CACHE[1]
        uid, count = os.getuid(), 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        count += len(os.listdir(f"/proc/{entry.name}/task"))
                except OSError:
                    continue
        _NPROC_CACHE = (now, count)
        return count


def _capped(value: int, kind: int) -> tuple[int, int]:
    """(soft, hard) no higher than the current hard limit: an unprivileged process cannot raise it."""
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    return value, value


def _limiter(limits: Limits) -> list[tuple[int, tuple[int, int]]]:
    cpu = max(1, int(limits.cpu_seconds + 0.999))
    settings = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, _capped(limits.memory_mb * 1024 * 1024, resource.RLIMIT_AS)),
        (resource.RLIMIT_FSIZE, _capped(limits.file_size_mb * 1024 * 1024, resource.RLIMIT_FSIZE)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_hard != resource.RLIM_INFINITY:
        settings[0] = (resource.RLIMIT_CPU, (min(cpu, cpu_hard), cpu_hard))
    if os.getuid() != 0:  # root is not bound by RLIMIT_NPROC; the hook refuses forks either way
        nproc = _tasks_of_this_user() + limits.max_processes
        settings.append((resource.RLIMIT_NPROC, _capped(nproc, resource.RLIMIT_NPROC)))
    return settings


def _preexec(settings: list[tuple[int, tuple[int, int]]]):
    setrlimit = resource.setrlimit  # bound before fork: the child only calls into C

    def apply() -> None:
        for kind, value in settings:
            setrlimit(kind, value)

    return apply


def _child_env(work: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MB of address space per arena otherwise
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _tail(path: Path, chars: int = OUTPUT_TAIL_CHARS) -> str:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 4 * chars))
            return handle.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def run_files(
    files: dict[str, str],
    entry_source: str,
    limits: Limits,
    *,
    private_files: dict[str, str] | None = None,
    success_marker: str | None = None,
) -> SandboxResult:
    """Write `files` into a fresh folder and run `entry_source` there under the sandbox (blocking).

    The entry script and `private_files` (e.g. the tests) live beside that folder, readable but
    not writable by the code. With `success_marker`, a run passes only if it exits 0 *and* printed
    the marker, so an early exit(0) is not a pass.
    """
    root = Path(tempfile.mkdtemp(prefix="synthkd-sandbox-")).resolve()
    try:
        work = root / "work"
        work.mkdir()
        for folder, contents in ((work, files), (root, private_files or {})):
            for name, text in contents.items():
                target = (folder / name).resolve()
                if not target.is_relative_to(folder) or target == folder:
                    raise ValueError(f"sandbox file {name!r} is outside its folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        (root / "boot.py").write_text(_child_source("boot.py"), encoding="utf-8")
        (root / "entry.py").write_text(entry_source, encoding="utf-8")
        config = {
            "work": str(work),
            "entry": str(root / "entry.py"),
            "allow_read": [str(root)],  # its own scripts, even if the temporary folder is under home
            "deny_read": _home_dirs(),
            "marker": VIOLATION_MARKER,
            "exit_code": VIOLATION_EXIT,
            "memory_exit": MEMORY_EXIT,
        }
        return _run(root, work, config, limits, success_marker)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, work: Path, config: dict, limits: Limits, success_marker: str | None) -> SandboxResult:
    settings = _limiter(limits)
    stdout_path, stderr_path = root / "stdout", root / "stderr"
    killed = threading.Event()
    started = time.monotonic()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(root / "boot.py"), json.dumps(config)],
            cwd=work,
            env=_child_env(work),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            close_fds=True,
            start_new_session=True,  # its own process group, killed whole on timeout
            preexec_fn=_preexec(settings),
        )

        def kill_group() -> None:
            killed.set()
            _kill_group(process.pid)

        timer = threading.Timer(limits.wall, kill_group)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait
        _kill_group(process.pid)  # anything it left behind in its group
    wall = time.monotonic() - started
    stdout, stderr = _tail(stdout_path), _tail(stderr_path)
    result = SandboxResult(
        "failed",
        process.returncode,
        stdout,
        stderr,
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
        wall_seconds=round(wall, 3),
        max_rss_mb=round(usage.ru_maxrss / 1024, 1),
    )
    result.status, result.detail = _classify(
        result, limits, killed.is_set(), success_marker, stdout_path, stderr_path
    )
    return result


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _classify(
    result: SandboxResult,
    limits: Limits,
    killed: bool,
    success_marker: str | None,
    stdout_path: Path,
    stderr_path: Path,
) -> tuple[str, str]:
    code = result.returncode
    if VIOLATION_MARKER in result.stderr and code == VIOLATION_EXIT:
        line = result.stderr.split(VIOLATION_MARKER, 1)[1].splitlines()[0]
        return "sandbox_violation", line
    if killed:
        return "timeout", f"still running after {limits.wall:g} s (wall clock); killed"
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and result.cpu_seconds >= limits.cpu_seconds):
        return "timeout", f"used its {limits.cpu_seconds:g} CPU seconds"
    if code == MEMORY_EXIT or (code != 0 and "MemoryError" in result.stderr[-500:]):
        return "memory", f"ran out of its {limits.memory_mb} MB"
    limit_bytes = limits.file_size_mb * 1024 * 1024
    if code != 0 and max(_size(stdout_path), _size(stderr_path)) >= limit_bytes:
        return "output_limit", f"wrote more than {limits.file_size_mb} MB"
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return "crashed", f"killed by {name}"
    if code == 0 and (success_marker is None or success_marker in result.stdout):
        return "ok", ""
    if code == 0:
        return "failed", "exited before the tests finished"
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {code}"
    return "failed", last[:300]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def check_solution(code: str, tests: str, limits: Limits) -> SandboxResult:
    """Run `tests` against `code` (imported as module `solution`); status "ok" when every test passed."""
    nonce = f"SYNTHKD-TESTS-PASSED-{secrets.token_hex(8)}"
    entry = f"{_child_source('check.py')}\n\nmain({nonce!r})\n"
    return run_files(
        {"solution.py": code}, entry, limits, private_files={"tests.py": tests}, success_marker=nonce
    )
