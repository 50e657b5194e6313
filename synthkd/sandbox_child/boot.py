"""The first code of both sandboxed processes: set up, give up what is not needed, run the role.

`synthkd.sandbox` starts `python -I -S -B boot.py judge CONFIG_JSON`, under bubblewrap or (without
isolation) directly. The judge:

1. reads the job (the nonce, the answer, the tests) from an inherited memfd and closes it;
2. writes the answer as `solution.py` in the run's folder and starts the solution process (this
   file again, role `solution`) holding only its two channel ends and its own output files: as a
   fresh uid of its own when the judge starts as root inside bubblewrap;
3. drops to its own fresh uid, makes itself non-dumpable (so a process of the same uid cannot
   ptrace it or open its /proc/<pid>/mem or fd/), sets its rlimits, turns `site` on (the venv's
   packages), installs the audit hook and runs the tests (judge.py) against proxies of the
   answer's names;
4. writes the verdict with the nonce to the verdict fd, which only it holds.

The solution process sets its rlimits, turns `site` on, installs the hook, imports `solution`,
sends its names and answers the judge's requests until the judge closes the channel.

A setup step that fails ends the judge with SETUP_EXIT and a line after SETUP_MARKER on stderr:
the parent stops the run rather than count every answer as failed. Standard library only.
"""

import contextlib
import json
import os
import sys

SETUP_EXIT = 93
SETUP_MARKER = "SYNTHKD-SANDBOX-SETUP: "
PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3
HERE = os.path.dirname(os.path.abspath(__file__))  # the harness folder


def load(name):
    """A sibling module under a private name (the harness folder is not on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_synthkd_{name}", os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def install_hook(config):
    """The audit hook; the harness stays readable even if it lies under a home folder it denies."""
    load("hook").install({**config, "allow_read": [HERE]})


def set_limits(limits, nproc):
    import resource

    def limit(kind, soft, hard):
        _, current = resource.getrlimit(kind)
        if current != resource.RLIM_INFINITY:  # a process may lower its hard limit, never raise it
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(kind, (soft, hard))

    limit(resource.RLIMIT_CPU, limits["cpu"], limits["cpu"] + 1)
    limit(resource.RLIMIT_AS, limits["memory"], limits["memory"])
    limit(resource.RLIMIT_FSIZE, limits["file_size"], limits["file_size"])
    limit(resource.RLIMIT_CORE, 0, 0)
    if nproc is not None:
        limit(resource.RLIMIT_NPROC, nproc, nproc)


def not_dumpable():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 or libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def drop_to(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != uid:
        raise OSError(f"could not drop to uid {uid}")


def read_all(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def judge_main(config):
    import subprocess

    fds = config["fds"]
    try:
        job = json.loads(read_all(fds["job"]))
        not_dumpable()
        os.umask(0)  # the two processes (two uids as root) share the folder's files
        work = config["work"]
        fd = os.open(os.path.join(work, "solution.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(job["solution"])
        solution_read, judge_write = os.pipe()
        judge_read, solution_write = os.pipe()
        uids = config["uids"]
        shared = ("work", "limits", "nproc", "deny_read", "marker", "exit_code", "memory_exit")
        solution_config = {
            **{key: config[key] for key in shared},
            "fds": {"read": solution_read, "write": solution_write},
        }
        identity = {"user": uids[0], "group": uids[0], "extra_groups": []} if uids else {}
        process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-B",
                os.path.abspath(__file__),
                "solution",
                json.dumps(solution_config),
            ],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=fds["solution_out"],
            stderr=fds["solution_err"],
            pass_fds=(solution_read, solution_write),
            close_fds=True,
            **identity,
        )
        for fd in (solution_read, solution_write, fds["solution_out"], fds["solution_err"]):
            os.close(fd)
        if uids:
            drop_to(uids[1])
        not_dumpable()  # again: a change of uid may reset it (fs.suid_dumpable)
        set_limits(config["limits"], config["nproc"])
        import site

        site.main()
        rpc, judge = load("rpc"), load("judge")
        install_hook(config)
    except Exception as exc:
        os.write(2, f"\n{SETUP_MARKER}{type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
        os._exit(SETUP_EXIT)
    channel = rpc.Channel(judge_read, judge_write, strict=True)
    try:
        passed, detail = judge.run(channel, job["tests"], rpc)
    except MemoryError:
        os.write(2, b"\nMemoryError\n")
        os._exit(config["memory_exit"])
    channel.close()  # the solution process reads end-of-file and ends; under bubblewrap the judge
    status = wait_briefly(process.pid)  # is pid 1: its exit would kill it before its output is out
    verdict = {"nonce": job["nonce"], "passed": passed, "detail": detail, "solution_exit": status}
    os.write(fds["verdict"], json.dumps(verdict).encode("utf-8"))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def wait_briefly(pid, seconds=1.0):
    """The solution process's exit status once it ended (it has the channel's end-of-file)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def solution_main(config):
    import traceback

    set_limits(config["limits"], config["nproc"])
    os.umask(0)
    import site

    site.main()
    rpc = load("rpc")
    install_hook(config)
    channel = rpc.Channel(config["fds"]["read"], config["fds"]["write"], strict=False)
    os.chdir(config["work"])
    sys.path.insert(0, config["work"])
    sys.stdout.reconfigure(line_buffering=True)  # what it printed is there even if it is killed
    sys.stdout = rpc.ForwardingStream(channel, sys.stdout, 1)
    sys.stderr = rpc.ForwardingStream(channel, sys.stderr, 2)
    try:
        import solution
    except SystemExit as exc:
        channel.send({"failed": f"the solution called exit({exc.code!r}) while being imported"})
        return 3
    except MemoryError:
        raise
    except BaseException as exc:
        traceback.print_exc()
        channel.send({"failed": traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]})
        return 1
    names = [
        [name, channel.encode(value)] for name, value in vars(solution).items() if not name.startswith("__")
    ]
    channel.send({"ready": {"module": channel.export(solution), "names": names}})
    channel.serve_forever()
    return 0


def main():
    role, config = sys.argv[1], json.loads(sys.argv[2])
    if role == "judge":
        judge_main(config)
        return
    try:
        code = solution_main(config)
    except MemoryError:
        os.write(2, b"\nMemoryError\n")
        os._exit(config["memory_exit"])
    except SystemExit as exc:  # the answer called exit() while the tests ran: that ends it
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the channel was lost, or the answer broke out of serving
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
