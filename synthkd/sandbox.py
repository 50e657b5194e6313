"""Run untrusted Python (a teacher's code answer) against tests, for a verdict it cannot forge.

Threat model. The answer's code comes from a model or a dataset: it may be wrong, careless, or
written to cheat or to attack the machine synthkd runs on, often as root in a container. It must
not (1) make a failing answer pass, (2) read secrets (API keys in the environment or HOME,
/etc/shadow, the project's files), (3) write outside a bounded scratch folder, use the network, or
start processes that outlive the check or exhaust the machine (fork bombs, disk, memory, CPU). The
tests (a teacher's, or a dataset column) are the judge, trusted to judge but contained like the
answer: they run under the same isolation.

(1) The verdict. Code that runs first in a process owns that process, so no marker, nonce or file
descriptor in the process that imports the answer can carry a trustworthy "passed" (the finding
that prompted this design: an answer read the old pass marker from `__main__`, printed it and
called `os._exit(0)`). Each check is two processes (`sandbox_child/`):
- the *solution* process imports the answer and answers requests; it never holds the verdict fd
  and never has the nonce in its memory;
- the *judge* process runs the tests against proxies of the answer's names (`rpc.py`): it never
  executes a line of the answer; every call, attribute or operator on a proxy is a request whose
  reply is data (JSON rebuilt into plain values, or another proxy). It reads a per-run nonce from
  a memfd before the solution process exists, and at the end writes the verdict with that nonce
  to another memfd that only it holds. The parent accepts "passed" only from a judge that exited
  0 and wrote the right nonce. The judge cannot be reached from the solution process: under
  bubblewrap as root they are two fresh uids (no ptrace, no signals, no /proc/<pid>/fd or mem);
  otherwise the judge makes itself non-dumpable, which denies the same to a same-uid process.
  What remains is the tests' own strength: an answer returning an object whose `__eq__` is always
  true passes `assert f() == 5` as it would anywhere (tests can check types).

(2, 3) Isolation, the step's `isolation:` key:
- "bwrap": bubblewrap (Debian package `bubblewrap`, 0.8 or later for `--size`). New mount, pid,
  network, IPC and UTS namespaces; read-only binds of /usr (and the /bin, /lib links), the loader
  cache, the interpreter's prefix, the venv's pyvenv.cfg, bin and site-packages, and the harness;
  no /etc/shadow, no /root or HOME beyond those binds, not the project; fresh /proc and /dev; one
  tmpfs of `disk_mb` as the working folder (the only writable place); loopback-only network inside
  the namespace; `--die-with-parent`, `--new-session`. As root, bubblewrap runs without a user
  namespace: one would map the sandbox's uid back to root, whom RLIMIT_NPROC does not bind and
  who owns every root-owned file. It keeps only CAP_SETUID/CAP_SETGID, which the judge uses to
  start the solution as a fresh random uid and to drop to another; from then on no capability is
  left, no file on the machine belongs to either uid, and RLIMIT_NPROC counts only their own
  tasks. As another user, bubblewrap makes a user namespace (uid 65534 inside).
- "none": the same two processes without namespaces, under the rlimits and the audit hook
  (`sandbox_child/hook.py`, which stops naive writes outside the folder, subprocesses, sockets
  and ctypes, but which code written to escape it can get round). Not a security boundary; as
  root, RLIMIT_NPROC does not bind.
- "auto" (the default): "bwrap" when a probe run works; else, as root, `IsolationError` (running
  answers as root without isolation must be asked for with "none"); else "none" with a warning.

In every mode each process sets its own RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_CORE and
(unless root without bwrap) RLIMIT_NPROC before untrusted code runs, and a wall-clock timer kills
the whole sandbox. Linux only (rlimits, memfd, namespaces).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from synthkd.errors import RecipeError, SynthkdError

VIOLATION_EXIT = 91
MEMORY_EXIT = 92
SETUP_EXIT = 93  # sandbox_child/boot.py: the judge could not set itself up
VIOLATION_MARKER = "SYNTHKD-SANDBOX-VIOLATION: "
SETUP_MARKER = "SYNTHKD-SANDBOX-SETUP: "
OUTPUT_TAIL_CHARS = 2000
STATUSES = ("ok", "failed", "timeout", "memory", "sandbox_violation", "output_limit", "crashed")
ISOLATIONS = ("auto", "bwrap", "none")
BWRAP = "bwrap"  # the program looked up on PATH
WORK = "/sandbox"  # the working folder (a tmpfs) inside bubblewrap
HARNESS = "/synthkd-sandbox"  # sandbox_child/, bound read-only inside bubblewrap
USERNS_UID = 65534  # the uid inside bubblewrap's user namespace (non-root only)
FRESH_UIDS = (1_500_000_000, 2_000_000_000)  # as root, each process gets an unused uid from here
_CHILD = Path(__file__).resolve().with_name("sandbox_child")


class IsolationError(RecipeError):
    """The isolation asked for cannot be had on this machine (the message says why and what to do)."""


class SandboxSetupError(SynthkdError):
    """The sandbox itself failed (not the answer): every check would fail the same way."""


@dataclass(frozen=True)
class Limits:
    """What one check may use; each of its two processes gets the CPU, memory and file limits.
    `wall_seconds` None: twice the CPU seconds plus five. `disk_mb`: the working folder's size
    (under bubblewrap)."""

    cpu_seconds: float = 10.0
    wall_seconds: float | None = None
    memory_mb: int = 512
    file_size_mb: int = 16
    max_processes: int = 8  # tasks (processes and threads) each process may add
    disk_mb: int = 64

    @property
    def wall(self) -> float:
        return self.wall_seconds if self.wall_seconds is not None else 2 * self.cpu_seconds + 5


@dataclass
class SandboxResult:
    """How a check ended. `status` is one of STATUSES; `detail` says why in a line. `stdout` and
    `stderr` are the answer's process's (their tails), `tests_output` the judge's."""

    status: str
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    detail: str = ""
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    max_rss_mb: float = 0.0
    isolation: str = ""
    tests_output: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Isolation:
    """The isolation a check runs under ("bwrap" or "none"), and the warning to show for "none"."""

    mode: str
    warning: str | None = None


def choose_isolation(requested: str = "auto") -> Isolation:
    """The isolation for `requested` ("auto", "bwrap" or "none"); IsolationError when it cannot be had."""
    if requested not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {requested!r}")
    if requested == "none":
        return Isolation(
            "none", "answers' code runs without OS isolation (isolation: none): rlimits and a hook only"
        )
    problem = bwrap_problem()
    if problem is None:
        return Isolation("bwrap")
    if requested == "bwrap":
        raise IsolationError(f"bubblewrap cannot be used: {problem}")
    if os.geteuid() == 0:
        raise IsolationError(
            f"bubblewrap is not available ({problem}) and synthkd runs as root, so the answers' code "
            "would run with root's access to this machine. Install bubblewrap (`make bubblewrap` or "
            "`apt-get install bubblewrap`), run synthkd as a non-root user, or set `isolation: none` "
            "on this step to run it anyway"
        )
    return Isolation(
        "none",
        f"bubblewrap is not available ({problem}): answers' code runs without OS isolation, under "
        "rlimits and an audit hook only; install bubblewrap to isolate it",
    )


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot run a sandbox here, or None when a probe run works (cached)."""
    return _probe(BWRAP, os.geteuid() == 0)


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str, as_root: bool) -> str | None:
    path = shutil.which(bwrap)
    if path is None:
        return f"`{bwrap}` is not installed"
    python = [sys.executable, "-I", "-S", "-B", "-c", "import site; site.main()"]
    command = [*_bwrap_prefix(path, as_root, 1 << 20), "--", *python]
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env=_bwrap_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} could not be run ({exc})"
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"{path} cannot make a sandbox here: {lines[-1] if lines else f'exit code {done.returncode}'}"
    return None


def check_solution(code: str, tests: str, limits: Limits, *, isolation: str = "auto") -> SandboxResult:
    """Run `tests` against `code` (as module `solution`); status "ok" when every test passed.

    Blocking; raises IsolationError when `isolation` cannot be had, SandboxSetupError when the
    sandbox itself fails."""
    mode = choose_isolation(isolation).mode
    nonce = secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="synthkd-sandbox-")).resolve()
    fds: list[int] = []
    handles = {}
    try:
        outputs = {name: root / name for name in ("solution_out", "solution_err", "judge_out", "judge_err")}
        handles = {name: path.open("wb") for name, path in outputs.items()}
        job = _memfd("synthkd-job", json.dumps({"nonce": nonce, "solution": code, "tests": tests}).encode())
        verdict = _memfd("synthkd-verdict", b"")
        fds += [job, verdict]
        as_root = os.geteuid() == 0
        uids = _fresh_uids() if mode == "bwrap" and as_root else None
        if uids:
            nproc: int | None = limits.max_processes + 1  # a fresh uid: only this process's own tasks
        elif as_root:
            nproc = None  # root is not bound by RLIMIT_NPROC
        else:
            nproc = _tasks_of_this_user() + limits.max_processes + 4  # + bwrap, its init, both processes
        if mode == "bwrap":
            work, harness = WORK, HARNESS
        else:
            work, harness = str(root / "work"), str(_CHILD)
            os.mkdir(work)
        config = {
            "work": work,
            "fds": {
                "job": job,
                "verdict": verdict,
                "solution_out": handles["solution_out"].fileno(),
                "solution_err": handles["solution_err"].fileno(),
            },
            "uids": uids,
            "nproc": nproc,
            "limits": {
                "cpu": max(1, math.ceil(limits.cpu_seconds)),
                "memory": limits.memory_mb << 20,
                "file_size": limits.file_size_mb << 20,
            },
            "deny_read": _home_dirs(),
            "marker": VIOLATION_MARKER,
            "exit_code": VIOLATION_EXIT,
            "memory_exit": MEMORY_EXIT,
        }
        command = [sys.executable, "-I", "-S", "-B", f"{harness}/boot.py", "judge", json.dumps(config)]
        passed_fds = list(config["fds"].values())
        children_only = [job]  # closed here once started: the nonce stays with the judge alone
        info_read = None
        if mode == "bwrap":
            info_read, info_write = os.pipe()  # bubblewrap writes its child's pid there
            os.set_blocking(info_read, False)
            fds += [info_read, info_write]
            passed_fds.append(info_write)
            children_only.append(info_write)
            prefix = _bwrap_prefix(shutil.which(BWRAP) or BWRAP, as_root, limits.disk_mb << 20)
            command = [*prefix, "--info-fd", str(info_write), "--", *command]
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=None if mode == "bwrap" else work,
            env=_bwrap_env() if mode == "bwrap" else _child_env(work),
            stdin=subprocess.DEVNULL,
            stdout=handles["judge_out"],
            stderr=handles["judge_err"],
            pass_fds=tuple(passed_fds),
            close_fds=True,
            start_new_session=True,  # its own process group, killed whole on timeout
        )
        for fd in children_only:
            os.close(fd)
            fds.remove(fd)
        for handle in handles.values():
            handle.close()
        returncode, usage, killed = _wait(process, limits.wall, info_read)
        wall = time.monotonic() - started
        os.lseek(verdict, 0, os.SEEK_SET)
        written = os.read(verdict, 1 << 20)
        judge_err = _tail(outputs["judge_err"])
        result = SandboxResult(
            "failed",
            returncode,
            _tail(outputs["solution_out"]),
            _tail(outputs["solution_err"]),
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
            wall_seconds=round(wall, 3),
            max_rss_mb=round(usage.ru_maxrss / 1024, 1),
            isolation=mode,
            tests_output=(_tail(outputs["judge_out"]) + judge_err)[-OUTPUT_TAIL_CHARS:],
        )
        _raise_on_setup_failure(returncode, written, judge_err, mode)
        largest_output = max(path.stat().st_size for path in outputs.values())
        result.status, result.detail = _classify(
            result, limits, killed, _verdict(written, nonce), judge_err, largest_output
        )
        return result
    finally:
        for handle in handles.values():
            handle.close()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(root, ignore_errors=True)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _fresh_uids() -> list[int]:
    low, high = FRESH_UIDS
    first = low + secrets.randbelow(high - low)
    second = low + (first - low + 1 + secrets.randbelow(high - low - 1)) % (high - low)
    return [first, second]


def _wait(process: subprocess.Popen, wall: float, info_fd: int | None):
    """Wait for the sandbox (its rusage too); after `wall` seconds kill it whole. Under bubblewrap
    the judge is pid 1 of its pid namespace (`--as-pid-1`), so its death takes every process of
    the sandbox with it before bubblewrap, and so this wait, returns."""
    killed = threading.Event()

    def kill_all() -> None:
        killed.set()
        child = _sandbox_pid(info_fd) if info_fd is not None else None
        if child is not None:  # bubblewrap has not reaped it yet: the pid is still the sandbox's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        _kill_group(process.pid)

    timer = threading.Timer(wall, kill_all)
    timer.daemon = True
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait
    _kill_group(process.pid)  # anything it left behind in its group
    return process.returncode, usage, killed.is_set()


def _sandbox_pid(info_fd: int) -> int | None:
    """The pid (in this namespace) of bubblewrap's child, from its --info-fd."""
    try:
        info = json.loads(os.read(info_fd, 1 << 16) or b"null")
    except (OSError, ValueError):
        return None
    pid = info.get("child-pid") if isinstance(info, dict) else None
    return pid if type(pid) is int and pid > 1 else None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _verdict(written: bytes, nonce: str) -> dict | None:
    """The judge's verdict, if it wrote one with this run's nonce."""
    try:
        verdict = json.loads(written)
    except ValueError:
        return None
    if type(verdict) is not dict or type(verdict.get("nonce")) is not str:
        return None
    if not hmac.compare_digest(verdict["nonce"].encode(), nonce.encode()):
        return None
    return verdict


def _raise_on_setup_failure(returncode: int, written: bytes, judge_err: str, mode: str) -> None:
    if written:
        return
    if returncode == SETUP_EXIT and SETUP_MARKER in judge_err:
        line = judge_err.split(SETUP_MARKER, 1)[1].splitlines()[0]
        raise SandboxSetupError(f"the code_check sandbox could not start ({mode}): {line}")
    first = judge_err.lstrip().splitlines()[0] if judge_err.strip() else ""
    if mode == "bwrap" and first.startswith("bwrap:"):
        raise SandboxSetupError(f"the code_check sandbox could not start: {first}")


def _signal_of(code: int | None, via_bwrap: bool) -> int | None:
    """The signal that ended a process, from its exit code (bubblewrap reports 128 + signal)."""
    if code is None:
        return None
    if code < 0:
        return -code
    if via_bwrap and 128 < code < 128 + 65:
        return code - 128
    return None


def _signal_name(number: int) -> str:
    return signal.Signals(number).name if number in signal.valid_signals() else str(number)


def _classify(
    result: SandboxResult,
    limits: Limits,
    killed: bool,
    verdict: dict | None,
    judge_err: str,
    largest_output: int,
) -> tuple[str, str]:
    judge_code = result.returncode
    if verdict is not None and verdict.get("passed") is True and judge_code == 0:
        return "ok", ""
    solution_code = verdict.get("solution_exit") if verdict else None
    solution_code = solution_code if type(solution_code) is int else None
    for code, stderr in ((solution_code, result.stderr), (judge_code, judge_err)):
        if code == VIOLATION_EXIT and VIOLATION_MARKER in stderr:  # the audit hook stopped it
            return "sandbox_violation", stderr.split(VIOLATION_MARKER, 1)[1].splitlines()[0]
    if killed:
        return "timeout", f"still running after {limits.wall:g} s (wall clock); killed"
    signals = {
        "the answer's process": _signal_of(solution_code, False),
        "the tests' process": _signal_of(judge_code, result.isolation == "bwrap"),
    }
    # the judge is pid 1 of its namespace, which ignores SIGXCPU: its CPU hard limit is a SIGKILL
    cpu_kill = signals["the tests' process"] == signal.SIGKILL and result.cpu_seconds >= limits.cpu_seconds
    if signal.SIGXCPU in signals.values() or cpu_kill:
        return "timeout", f"used its {limits.cpu_seconds:g} CPU seconds"
    if MEMORY_EXIT in (solution_code, judge_code) or (judge_code != 0 and "MemoryError" in judge_err[-500:]):
        return "memory", f"ran out of its {limits.memory_mb} MB"
    if largest_output >= limits.file_size_mb << 20:
        return "output_limit", f"wrote more than {limits.file_size_mb} MB"
    for who, number in signals.items():
        if number is not None:
            return "crashed", f"{who} was killed by {_signal_name(number)}"
    if verdict is not None:
        detail = verdict.get("detail")
        return "failed", str(detail)[:300] if detail else "failed"
    last = judge_err.strip().splitlines()[-1] if judge_err.strip() else f"exit code {judge_code}"
    return "failed", last[:300]


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


def _child_env(work: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": work,
        "TMPDIR": work,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MB of address space per arena otherwise
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _bwrap_env() -> dict[str, str]:
    """bubblewrap's own environment; the sandbox's is set with --clearenv/--setenv."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def _bwrap_prefix(bwrap: str, as_root: bool, disk_bytes: int) -> list[str]:
    """bubblewrap's options (see the module docstring); the command follows a "--"."""
    # --as-pid-1: the judge is the namespace's init, so everything in it dies before it does
    args = [bwrap, "--die-with-parent", "--new-session", "--as-pid-1"]
    if as_root:
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-all", "--uid", str(USERNS_UID), "--gid", str(USERNS_UID)]
    args += _mounts()
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "0777", "--size", str(disk_bytes), "--tmpfs", WORK, "--chdir", WORK, "--clearenv"]
    for key, value in _child_env(WORK).items():
        args += ["--setenv", key, value]
    return args


@functools.cache
def _mounts() -> tuple[str, ...]:
    """Read-only binds of what Python needs, at the paths it knows them by."""
    args: list[str] = []
    links: set[str] = set()
    wanted = {"/usr"}
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
            links.add(path)
        elif os.path.isdir(path):
            wanted.add(path)
    wanted |= {path for path in ("/etc/ld.so.cache", "/etc/localtime") if os.path.exists(path)}
    wanted |= _python_paths()
    resolved = set()
    for path in wanted:  # a path under /lib when /lib is a link into /usr is bound as its target
        top = "/" + path.lstrip("/").split("/", 1)[0]
        resolved.add(os.path.realpath(top) + path[len(top) :] if top in links else path)
    binds = sorted(
        path for path in resolved if not any(_under(path, other) for other in resolved if other != path)
    )
    # bubblewrap creates the folders above a bind as 0700, which a dropped uid cannot cross
    above = {parent for path in [*binds, HARNESS] for parent in _parents(path)}
    above = {path for path in above if not any(_under(path, bind) or path == bind for bind in binds)}
    for folder in sorted(above, key=lambda p: p.count("/")):
        args += ["--perms", "0755", "--dir", folder]
    for path in binds:
        args += ["--ro-bind", path, path]
    args += ["--ro-bind", str(_CHILD), HARNESS]
    return tuple(args)


def _python_paths() -> set[str]:
    """The interpreter's prefix and, for a venv, its pyvenv.cfg, bin folder and site-packages."""
    import site

    paths = {sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    if sys.prefix != sys.base_prefix:
        paths.add(os.path.join(sys.prefix, "pyvenv.cfg"))
        paths.add(os.path.dirname(os.path.abspath(sys.executable)))
        paths.update(site.getsitepackages([sys.prefix]))
    return {os.path.abspath(path) for path in paths if os.path.exists(path)}


def _under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _tail(path: Path, chars: int = OUTPUT_TAIL_CHARS) -> str:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 4 * chars))
            return handle.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""
