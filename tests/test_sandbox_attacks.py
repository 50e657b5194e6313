"""Attacks on code_check's sandbox, each run for real under bubblewrap: the answer must neither
forge its verdict nor reach the machine (issue 13, item 2).

Most attacks first get round the in-process audit hook the way the findings did, by starting
programs through a freshly loaded `_posixsubprocess` (no audit event, no patched function), so
what is tested is the OS isolation, not the hook. bubblewrap must be installed (`make bubblewrap`):
without it these tests fail, they do not skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

import synthkd
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.sandbox import Limits, SandboxResult, check_solution

ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
WRONG_ADD = "\ndef add(a, b):\n    return a - b\n"
RIGHT_ADD = "\ndef add(a, b):\n    return a + b\n"
LIMITS = Limits(cpu_seconds=5, wall_seconds=15, memory_mb=256, file_size_mb=16, max_processes=8, disk_mb=64)
PROJECT = Path(synthkd.__file__).resolve().parents[1]

# Starts a program with a fresh copy of _posixsubprocess: neither the audit hook nor any patch of
# the loaded module sees it (finding 2). `spawn` returns the pid; `run` waits and returns the status.
SPAWN = """
import importlib.util, os, sys

def _fresh_posixsubprocess():
    spec = importlib.util.find_spec("_posixsubprocess")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

_FRESH = _fresh_posixsubprocess()

def spawn(argv):
    errors_read, errors_write = os.pipe()
    pid = _FRESH.fork_exec(
        [os.fsencode(a) for a in argv], [os.fsencode(argv[0])], True, (), None, None,
        -1, -1, -1, -1, -1, -1, errors_read, errors_write,
        True, False, -1, None, None, None, -1, None, False,
    )
    os.close(errors_write)
    failure = os.read(errors_read, 4096)
    os.close(errors_read)
    if failure:
        os.waitpid(pid, 0)
        raise OSError(failure.decode(errors="replace"))
    return pid

def run(argv):
    return os.waitpid(spawn(argv), 0)[1]
"""


def sandboxed(code: str, tests: str = ADD_TESTS, limits: Limits = LIMITS) -> SandboxResult:
    return check_solution(code, tests, limits, isolation="bwrap")


def output(result: SandboxResult) -> str:
    return result.stdout + result.stderr + result.tests_output


# -- the verdict cannot be forged


FORGERIES = {
    # Finding 1: read the pass marker wherever the process can reach it (__main__, the entry
    # script, the callers' frames), print it everywhere, and leave with exit code 0.
    "marker_from_main": """
import os, re, sys, __main__
pattern = re.compile(r"SYNTHKD-[A-Z-]*[0-9a-f]{8,}")
found = set()
for path in {getattr(__main__, "__file__", None), sys.argv[0]}:
    try:
        found.update(pattern.findall(open(path).read()))
    except Exception:
        pass
frame = sys._getframe()
while frame is not None:
    for scope in (frame.f_locals, frame.f_globals):
        for value in list(scope.values()):
            if isinstance(value, str):
                found.update(pattern.findall(value))
    frame = frame.f_back
for value in list(vars(__main__).values()):
    if isinstance(value, str):
        found.update(pattern.findall(value))
forged = "".join(f"\\n{marker}\\n" for marker in found) + '\\n{"passed": true, "r": null}\\n'
for fd in range(64):
    try:
        os.write(fd, forged.encode())
    except OSError:
        pass
os._exit(0)
""",
    # Neutralise the tests in the process that runs them: every compile() compiles `pass`.
    "patched_test_runner": """
import builtins, sys
_compile = builtins.compile
builtins.compile = lambda source, name, mode, *args, **kwargs: _compile("pass", name, mode)
sys.settrace(None)
""",
    # From a process the audit hook does not see, look through every other process's file
    # descriptors for the judge's job (the nonce) and verdict memfds, and write a passing verdict
    # with the stolen nonce. Safe if the sandbox ever broke: it touches synthkd's memfds only.
    "verdict_through_proc": SPAWN
    + '''
SCRIPT = """
import json, os
nonce, verdicts = None, []
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) in (os.getpid(), os.getppid()):  # not the answer's own
        continue
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError as exc:
        print("no fds of", pid, exc.errno, flush=True)
        continue
    for fd in fds:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(path)
        except OSError:
            continue
        if target.startswith("/memfd:synthkd-job"):
            with open(path, "rb") as handle:
                nonce = json.load(handle)["nonce"]
                print("stole the nonce", flush=True)
        elif target.startswith("/memfd:synthkd-verdict"):
            verdicts.append(path)
for path in verdicts:
    forged = {"nonce": nonce, "passed": True, "detail": "", "solution_exit": None}
    fd = os.open(path, os.O_WRONLY)  # no O_TRUNC: a memfd of synthkd, nothing else
    os.write(fd, json.dumps(forged).encode())
    os.close(fd)
    print("wrote into the verdict", flush=True)
"""
run([sys.executable, "-I", "-c", SCRIPT])
''',
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_wrong_answer_cannot_forge_a_pass(forgery: str):
    result = sandboxed(FORGERIES[forgery] + WRONG_ADD)
    assert result.status != "ok", result
    assert "stole the nonce" not in result.stdout, result  # the judge's descriptors are out of reach
    assert "wrote into the verdict" not in result.stdout, result
    if forgery == "verdict_through_proc":
        assert "no fds of" in result.stdout, result  # it saw the judge, and was turned away


def test_forged_answers_are_dropped_by_the_step(tmp_path: Path):
    rows = [
        {"id": name, "response": f"```python\n{code}{WRONG_ADD}```", "tests": ADD_TESTS}
        for name, code in FORGERIES.items()
    ]
    rows.append({"id": "right", "response": f"```python\n{RIGHT_ADD}```", "tests": ADD_TESTS})
    write_jsonl(tmp_path / "rows.jsonl", rows)
    step = {
        "step": "code_check",
        "tests_column": "tests",
        "isolation": "bwrap",
        "cpu_seconds": 5,
        "wall_seconds": 15,
    }
    path = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "forge",
            "steps": [{"step": "load", "path": "rows.jsonl"}, step],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    result = run_recipe(load_recipe(path))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["right"]
    assert result.manifest["steps"][1]["details"]["isolation"] == "bwrap"


# -- the machine is out of reach


def test_a_fresh_posixsubprocess_shell_is_contained(tmp_path: Path):
    """Finding 2: a shell started round the audit hook runs, but as nobody, in the sandbox."""
    name = f"synthkd-escape-{os.getpid()}-{time.monotonic_ns()}"
    targets = [tmp_path / name, Path("/tmp") / name, Path("/var/tmp") / name, Path("/dev/shm") / name]
    writes = " ".join(f"; touch {target} && echo wrote-{target}" for target in targets)
    code = (
        SPAWN
        + f"""
status = run(["/bin/sh", "-c", "echo uid=$(id -u) {writes}; echo shell-ran"])
"""
        + RIGHT_ADD
    )
    try:
        result = sandboxed(code)
        escaped = [target for target in targets if target.exists()]
    finally:
        for target in targets:
            with contextlib.suppress(OSError):
                target.unlink()
    assert "shell-ran" in result.stdout, result  # the shell did run: what stopped it is the sandbox
    assert "uid=" in result.stdout and "uid=0\n" not in result.stdout, result
    assert not escaped and "wrote-" not in result.stdout, result
    assert result.ok, result  # containment does not cost a right answer its pass


def test_secrets_are_not_readable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNTHKD_CANARY_KEY", "sk-canary-4417")
    code = (
        f"""
import os
def attempt(label, action):
    try:
        print(label, "READ", len(action()), flush=True)  # never the content itself
    except OSError as exc:
        print(label, "DENIED", type(exc).__name__, flush=True)

attempt("shadow", lambda: open("/etc/shadow").read())
attempt("passwd", lambda: open("/etc/passwd").read())
attempt("project", lambda: open({str(PROJECT / "pyproject.toml")!r}).read())
attempt("project-dir", lambda: os.listdir({str(PROJECT)!r}))
attempt("root-ssh", lambda: os.listdir("/root/.ssh"))
print("uid", os.getuid(), "euid", os.geteuid(), flush=True)
print("env", sorted(os.environ), flush=True)
"""
        + SPAWN
        + """
run(["/bin/sh", "-c", "cat /etc/shadow > /dev/null && echo SHADOW-READ; echo shell-done"])
"""
        + RIGHT_ADD
    )
    result = sandboxed(code)
    out = result.stdout
    assert "shell-done" in out, result
    for label in ("shadow", "passwd", "project", "root-ssh"):
        assert f"{label} DENIED" in out, (label, out)
    assert "SHADOW-READ" not in out
    assert "synthkd" not in out.split("project-dir", 1)[1].splitlines()[0]  # at most the venv's mount point
    assert "uid 0 " not in out and "euid 0\n" not in out, out
    assert "SYNTHKD_CANARY_KEY" not in out and "sk-canary" not in output(result)


def _listeners() -> set[int]:
    """Ports listening on the host's network namespace (IPv4 and IPv6)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _reachable_during(run, canary: bytes) -> tuple[bool, object]:
    """Run `run()` in a thread; meanwhile connect to every port that starts listening on the
    host and read from it. True when one of them answered `canary`."""
    before = _listeners()
    done: dict[str, object] = {}
    thread = threading.Thread(target=lambda: done.setdefault("result", run()))
    thread.start()
    reached = False
    while thread.is_alive() and not reached:
        for port in _listeners() - before:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                    connection.settimeout(0.5)
                    reached = canary in connection.recv(64)
            except OSError:
                continue
        time.sleep(0.05)
    thread.join()
    return reached, done.get("result")


LISTEN = """
import time
server.settimeout(0.2)
print("listening on", server.getsockname(), flush=True)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    try:
        connection, _ = server.accept()
    except OSError:
        continue
    connection.sendall(b"synthkd-sandbox-canary")
    connection.close()
print("stopped listening", flush=True)
"""


def test_a_listening_socket_is_unreachable_from_the_host():
    """Finding 3: `_socket.socket(-1, ...)` passes the hook's family check, and listen() binds
    0.0.0.0 itself; the sandbox has a network namespace of its own."""
    code = (
        """
import _socket

class Server:  # the raw socket, with the accept() of socket.socket
    def __init__(self):
        self.raw = _socket.socket(-1, 1)  # family -1: the default, AF_INET
        self.raw.listen(5)  # binds 0.0.0.0 on a free port
    def __getattr__(self, name):
        return getattr(self.raw, name)
    def accept(self):
        fd, address = self.raw._accept()
        return _socket.socket(fileno=fd), address

server = Server()
"""
        + LISTEN
        + RIGHT_ADD
    )
    reached, result = _reachable_during(lambda: sandboxed(code), b"synthkd-sandbox-canary")
    assert isinstance(result, SandboxResult)
    assert "listening on" in result.stdout and "stopped listening" in result.stdout, result
    assert not reached  # it did listen, for 3 s, in a network namespace of its own


def test_a_listener_started_around_the_hook_is_unreachable_from_the_host():
    child = (
        "import socket\nserver = socket.socket()\nserver.bind(('0.0.0.0', 0))\nserver.listen(5)\n" + LISTEN
    )
    code = SPAWN + f"\nrun([sys.executable, '-I', '-c', {child!r}])\n" + RIGHT_ADD
    reached, result = _reachable_during(lambda: sandboxed(code), b"synthkd-sandbox-canary")
    assert isinstance(result, SandboxResult)
    assert "listening on" in result.stdout and "stopped listening" in result.stdout, result
    assert not reached


def test_no_connection_leaves_the_sandbox():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(0.1)
        child = (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
            "    print('connected')\nexcept OSError as exc:\n    print('refused', exc.errno)\n"
        )
        code = SPAWN + f"\nrun([sys.executable, '-I', '-c', {child!r}])\n" + RIGHT_ADD
        result = sandboxed(code)
        with pytest.raises(TimeoutError):
            server.accept()
    assert "refused" in result.stdout and "connected" not in result.stdout, result


def test_filling_the_disk_is_bounded_and_quick():
    free_before = shutil.disk_usage(tempfile.gettempdir()).free
    lowest: list[int] = [free_before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lowest.append(shutil.disk_usage(tempfile.gettempdir()).free)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    code = (
        """
written = 0
try:
    for index in range(128):  # 1 GB in files of 8 MB, under the 16 MB file-size limit
        with open(f"fill-{index}", "wb") as handle:
            for _ in range(8):
                handle.write(bytes(1 << 20))
                written += 1 << 20
except OSError as exc:
    print("stopped by", exc.strerror, flush=True)
print("written MB", written >> 20, flush=True)
"""
        + RIGHT_ADD
    )
    started = time.monotonic()
    try:
        result = sandboxed(code)
    finally:
        stop.set()
        watcher.join()
    assert time.monotonic() - started < 10
    written = int(result.stdout.split("written MB", 1)[1].split()[0])
    assert written <= LIMITS.disk_mb, result
    assert "stopped by" in result.stdout
    assert free_before - min(lowest) < 400 << 20  # the host's disk did not take the 1 GB


def test_a_fork_bomb_is_bounded():
    code = (
        SPAWN
        + """
started = 0
try:
    for _ in range(200):
        spawn(["/bin/sleep", "7.25"])
        started += 1
except OSError as exc:
    print("refused after", started, exc, flush=True)
print("started", started, flush=True)
"""
        + RIGHT_ADD
    )
    result = sandboxed(code)
    started = int(result.stdout.split("started ", 1)[1].split()[0])
    assert started <= LIMITS.max_processes, result
    leftovers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"7.25" in Path(f"/proc/{pid}/cmdline").read_bytes():
                leftovers.append(pid)
        except OSError:
            continue
    assert not leftovers  # nothing outlives the check


def test_an_endless_loop_hits_the_cpu_limit():
    started = time.monotonic()
    result = sandboxed("while True:\n    pass\n" + RIGHT_ADD, limits=Limits(cpu_seconds=1, wall_seconds=10))
    assert result.status == "timeout" and "CPU" in result.detail, result
    assert time.monotonic() - started < 6


def test_memory_is_bounded():
    result = sandboxed("blob = bytearray(1 << 30)\n" + RIGHT_ADD, limits=Limits(cpu_seconds=5, memory_mb=256))
    assert result.status == "memory", result


def test_endless_tests_hit_the_cpu_limit():
    """The judge is pid 1 of its namespace (SIGXCPU does not reach it): its hard limit stops it."""
    started = time.monotonic()
    result = sandboxed(
        RIGHT_ADD, "while True:\n    add(1, 2) if False else None\n", Limits(cpu_seconds=1, wall_seconds=10)
    )
    assert result.status == "timeout" and "CPU" in result.detail, result
    assert time.monotonic() - started < 6
