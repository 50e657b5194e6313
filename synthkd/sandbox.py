"""Run untrusted Python (a teacher's code answer and its tests) in a limited subprocess.

Each run gets a fresh temporary folder as its working directory and is started as
`python -I -B` (isolated: no user site, no PYTHON* variables, no script folder on sys.path) with
a stripped environment. Resource limits are set with `setrlimit` between fork and exec: CPU
seconds, address space, file size, core dumps and (for a non-root user) processes. A wall-clock
timer kills the whole process group. Inside, a bootstrap installs an audit hook (PEP 578) before
any untrusted code runs; the first forbidden action ends the process at once (exit code
VIOLATION_EXIT, the action named on stderr), so the code cannot catch and ignore the refusal:

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


# Runs in the child before any untrusted code: installs the audit hook, then runs the entry script.
# It is plain source (not imported from synthkd) so the child needs nothing but the standard library.
_BOOT = r"""
import os, sys

def _install(config):
    join, isabs, realpath = os.path.join, os.path.isabs, os.path.realpath
    work = realpath(config["work"])
    own_proc = "/proc/%d" % os.getpid()
    allow_read = tuple(realpath(p) for p in config["allow_read"] + [sys.prefix, sys.base_prefix,
                       sys.exec_prefix, sys.base_exec_prefix] + [p for p in sys.path if p])
    deny_read = tuple(realpath(p) for p in config["deny_read"])
    writable_names = frozenset(("/dev/null",))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    err = os.dup(2)
    marker, exit_code = config["marker"], config["exit_code"]
    from _thread import get_ident
    busy = set()  # threads inside the hook (its own calls raise no events, but be safe)

    def inside(path, roots):
        for root in roots:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return True
        return False

    def resolve(path, dir_fd=None):
        if isinstance(path, int):
            return realpath("/proc/self/fd/%d" % path)
        path = os.fsdecode(os.fspath(path))
        if not isabs(path):
            if isinstance(dir_fd, int) and dir_fd >= 0:
                base = os.readlink("/proc/self/fd/%d" % dir_fd)
            else:
                base = os.getcwd()
            path = join(base, path)
        return realpath(path)

    def stop(what):
        try:
            os.write(err, ("\n" + marker + what + "\n").encode("utf-8", "replace"))
        finally:
            os._exit(exit_code)

    def may_write(path, dir_fd=None):
        if not isinstance(path, int) and os.fsdecode(os.fspath(path)) in writable_names:
            return True
        return inside(resolve(path, dir_fd), (work,))

    def may_read(resolved):
        if resolved.startswith("/proc/") and resolved.split("/")[2].isdigit():
            return inside(resolved, (own_proc,))
        return not inside(resolved, deny_read) or inside(resolved, allow_read) or inside(resolved, (work,))

    # event -> (positions of paths written, position of their dir_fd or None)
    writes = {
        "os.remove": ((0,), 1), "os.rmdir": ((0,), 1), "os.mkdir": ((0,), 2),
        "os.rename": ((0, 1), 2), "os.link": ((0, 1), 2), "os.symlink": ((1,), 2),
        "os.truncate": ((0,), None), "os.chmod": ((0,), 2), "os.chown": ((0,), 3),
        "os.utime": ((0,), 3), "os.chflags": ((0,), None), "os.lchflags": ((0,), None),
        "os.setxattr": ((0,), None), "os.removexattr": ((0,), None), "os.mkfifo": ((0,), 2),
        "os.mknod": ((0,), 3), "shutil.rmtree": ((0,), None), "shutil.copyfile": ((1,), None),
        "shutil.copymode": ((1,), None), "shutil.copystat": ((1,), None), "shutil.copytree": ((1,), None),
        "shutil.move": ((0, 1), None), "shutil.chown": ((0,), None),
    }
    processes = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                 "os.kill", "os.killpg", "subprocess.Popen", "os.startfile", "pty.spawn", "os.setuid",
                 "os.setgid", "os.setsid", "os.setpgid")
    network = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
               "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr",
               "socket.getnameinfo", "socket.sethostname")
    refused = ("ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata",
               "ctypes.string_at", "ctypes.wstring_at", "gc.get_objects", "gc.get_referrers",
               "gc.get_referents")

    def hook(event, args):
        me = get_ident()
        if me in busy:
            return
        busy.add(me)
        try:
            check(event, args)
        except Exception as exc:  # a path we cannot resolve is refused, never let through
            if event in writes or event == "open":
                stop("%s %r (%s)" % (event, args[:2], exc))
        finally:
            busy.discard(me)

    def check(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = bool((flags or 0) & write_flags)
            writing = writing or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writing:
                if not may_write(path):
                    stop("open(%r) for writing outside the sandbox folder" % (path,))
                return
            resolved = resolve(path)
            if not may_read(resolved):
                stop("open(%r) for reading: a private path" % (path,))
            if mode is None and not inside(resolved, (work,)) and os.path.isdir(resolved):
                stop("os.open(%r): a directory handle outside the sandbox folder" % (path,))
        elif event in writes:
            positions, fd_at = writes[event]
            dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
            for position in positions:
                target = args[position] if position < len(args) else None
                if target is not None and not may_write(target, dir_fd):
                    stop("%s(%r) outside the sandbox folder" % (event, target))
        elif event in processes:
            stop("%s: starting or signalling processes is not allowed" % event)
        elif event in network:
            stop("%s: network access is not allowed" % event)
        elif event == "socket.__new__":
            if args[1] not in (-1, 1):  # AF_UNIX (socket pairs, e.g. asyncio's self-pipe) only
                stop("socket(family=%r): network access is not allowed" % (args[1],))
        elif event == "sqlite3.connect":  # sqlite opens its files in C, with no "open" event
            database = os.fsdecode(os.fspath(args[0]))
            if database.startswith("file:"):
                if "mode=memory" in database:
                    return
                database = database[5:].split("?", 1)[0]
                database = database[2:] if database.startswith("//") else database
            if database not in ("", ":memory:") and not may_write(database):
                stop("sqlite3.connect(%r) outside the sandbox folder" % (args[0],))
        elif event in ("sqlite3.enable_load_extension", "sqlite3.load_extension"):
            stop("%s: loading native code is not allowed" % event)
        elif event == "ctypes.dlopen":
            if args[0] is not None:
                stop("ctypes.dlopen(%r): loading native libraries is not allowed" % (args[0],))
        elif event in refused:
            stop("%s is not allowed" % event)
        elif event in ("object.__setattr__", "object.__delattr__") and args[0] in (hook, check, stop):
            stop("tampering with the sandbox")

    sys.addaudithook(hook)
    try:
        import _posixsubprocess

        def fork_exec(*args, **kwargs):
            stop("_posixsubprocess.fork_exec: starting processes is not allowed")

        _posixsubprocess.fork_exec = fork_exec
    except ImportError:
        pass
    return config


def _main():
    config = _install(__import__("json").loads(sys.argv[1]))
    os.chdir(config["work"])
    sys.path.insert(0, config["work"])
    sys.argv = [config["entry"]]
    import runpy, traceback
    try:
        runpy.run_path(config["entry"], run_name="__main__")
    except MemoryError:
        os.write(2, b"\nMemoryError\n")
        os._exit(config["memory_exit"])
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(1)

_main()
"""

# The test harness: imports the answer as module `solution`, runs the tests in a namespace that
# holds the solution's names, calls test_* functions and unittest cases, then prints the nonce.
_CHECK = r"""
import os, sys, types
_out = os.dup(1)
_tests = open(sys.argv[0].rsplit("/", 1)[0] + "/tests.py", encoding="utf-8").read()
try:
    import solution
except SystemExit as exc:
    sys.stderr.write("the solution called exit(%r) while being imported\n" % (exc.code,))
    sys.exit(3)
_ns = {k: v for k, v in vars(solution).items() if not k.startswith("__")}
_ns["__name__"] = "__tests__"
try:
    exec(compile(_tests, "tests.py", "exec"), _ns)
    for _name, _value in list(_ns.items()):
        if (_name.startswith("test") and isinstance(_value, types.FunctionType)
                and _value.__module__ == "__tests__" and _value.__code__.co_argcount == 0):
            _value()
    if "unittest" in sys.modules:
        import unittest
        _cases = [v for v in _ns.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)]
        if _cases:
            _suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in _cases)
            _result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(_suite)
            if not _result.wasSuccessful():
                sys.exit(1)
except SystemExit as exc:
    if exc.code not in (None, 0):
        raise
    sys.stderr.write("the tests called exit() before they finished\n")
    sys.exit(4)
os.write(_out, ("\n" + NONCE + "\n").encode())
"""


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
        (root / "boot.py").write_text(_BOOT, encoding="utf-8")
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
    entry = f"NONCE = {nonce!r}\n{_CHECK}"
    return run_files(
        {"solution.py": code}, entry, limits, private_files={"tests.py": tests}, success_marker=nonce
    )
