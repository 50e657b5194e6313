"""The audit hook (PEP 578) both sandboxed processes install before any untrusted code runs.

A first line, not the boundary: it names what an answer tried (a write outside the run's folder,
a subprocess, a socket, ctypes) so the row is dropped as `sandbox_violation` with a reason, and it
is all there is when no OS isolation is available (`isolation: none`). Code written to get round
an in-process hook can (a fresh `_posixsubprocess`, crafted code objects): under bubblewrap the
kernel stops what the hook misses (see `synthkd.sandbox`).

The first forbidden action ends the process at once (exit code `exit_code`, the action named on
stderr after `marker`), so the code cannot catch and ignore the refusal. Standard library only.
"""

import os
import sys


def install(config):
    join, isabs, realpath = os.path.join, os.path.isabs, os.path.realpath
    work = realpath(config["work"])
    own_proc = f"/proc/{os.getpid()}"
    interpreter = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    allow_read = tuple(realpath(p) for p in config["allow_read"] + interpreter + [p for p in sys.path if p])
    deny_read = tuple(realpath(p) for p in config["deny_read"])
    writable_names = frozenset(("/dev/null",))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    err = os.dup(2)
    marker, exit_code = config["marker"], config["exit_code"]
    from _thread import get_ident

    busy = set()  # threads inside the hook (its own calls raise no events, but be safe)

    def inside(path, roots):
        return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)

    def resolve(path, dir_fd=None):
        if isinstance(path, int):
            return realpath(f"/proc/self/fd/{path}")
        path = os.fsdecode(os.fspath(path))
        if not isabs(path):
            if isinstance(dir_fd, int) and dir_fd >= 0:
                base = os.readlink(f"/proc/self/fd/{dir_fd}")
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
        "os.remove": ((0,), 1),
        "os.rmdir": ((0,), 1),
        "os.mkdir": ((0,), 2),
        "os.rename": ((0, 1), 2),
        "os.link": ((0, 1), 2),
        "os.symlink": ((1,), 2),
        "os.truncate": ((0,), None),
        "os.chmod": ((0,), 2),
        "os.chown": ((0,), 3),
        "os.utime": ((0,), 3),
        "os.chflags": ((0,), None),
        "os.lchflags": ((0,), None),
        "os.setxattr": ((0,), None),
        "os.removexattr": ((0,), None),
        "os.mkfifo": ((0,), 2),
        "os.mknod": ((0,), 3),
        "shutil.rmtree": ((0,), None),
        "shutil.copyfile": ((1,), None),
        "shutil.copymode": ((1,), None),
        "shutil.copystat": ((1,), None),
        "shutil.copytree": ((1,), None),
        "shutil.move": ((0, 1), None),
        "shutil.chown": ((0,), None),
    }
    processes = (
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
        "os.killpg", "subprocess.Popen", "os.startfile", "pty.spawn", "os.setuid", "os.setgid",
        "os.setsid", "os.setpgid",
    )  # fmt: skip
    network = (
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo",
        "socket.sethostname",
    )  # fmt: skip
    refused = (
        "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata", "ctypes.string_at",
        "ctypes.wstring_at", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    )  # fmt: skip

    def hook(event, args):
        me = get_ident()
        if me in busy:
            return
        busy.add(me)
        try:
            check(event, args)
        except Exception as exc:  # a path we cannot resolve is refused, never let through
            if event in writes or event == "open":
                stop(f"{event} {args[:2]!r} ({exc})")
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
                    stop(f"open({path!r}) for writing outside the sandbox folder")
                return
            resolved = resolve(path)
            if not may_read(resolved):
                stop(f"open({path!r}) for reading: a private path")
            if mode is None and not inside(resolved, (work,)) and os.path.isdir(resolved):
                stop(f"os.open({path!r}): a directory handle outside the sandbox folder")
        elif event in writes:
            positions, fd_at = writes[event]
            dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
            for position in positions:
                target = args[position] if position < len(args) else None
                if target is not None and not may_write(target, dir_fd):
                    stop(f"{event}({target!r}) outside the sandbox folder")
        elif event in processes:
            stop(f"{event}: starting or signalling processes is not allowed")
        elif event in network:
            stop(f"{event}: network access is not allowed")
        elif event == "socket.__new__":
            if args[1] not in (-1, 1):  # AF_UNIX (socket pairs, e.g. asyncio's self-pipe) only
                stop(f"socket(family={args[1]!r}): network access is not allowed")
        elif event == "sqlite3.connect":  # sqlite opens its files in C, with no "open" event
            database = os.fsdecode(os.fspath(args[0]))
            if database.startswith("file:"):
                if "mode=memory" in database:
                    return
                database = database[5:].split("?", 1)[0]
                database = database[2:] if database.startswith("//") else database
            if database not in ("", ":memory:") and not may_write(database):
                stop(f"sqlite3.connect({args[0]!r}) outside the sandbox folder")
        elif event in ("sqlite3.enable_load_extension", "sqlite3.load_extension"):
            stop(f"{event}: loading native code is not allowed")
        elif event == "ctypes.dlopen":
            if args[0] is not None:
                stop(f"ctypes.dlopen({args[0]!r}): loading native libraries is not allowed")
        elif event in refused:
            stop(f"{event} is not allowed")
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
