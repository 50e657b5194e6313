"""A real, small file system for the full-disk tests: a tmpfs of a few MiB whose writes fail with
the kernel's ENOSPC once it is full, never a mocked error.

It is mounted in a mount namespace of its own (`unshare --mount`), held open by a process that
waits on a pipe from the test (so it also ends if the test is killed), and nothing outside that
namespace sees it: the test machine's mounts are left alone. Commands run inside with `nsenter`;
the test reads and writes the tmpfs's files through `/proc/<holder>/root/...`, which the kernel
resolves in the holder's namespace (plain file calls only: SQLite resolves links itself and would
land outside, so a SQLite file on it is opened from a command run inside).

Needs util-linux's `unshare` and `nsenter` and the right to make a mount namespace: root (as in the
project's container), or a kernel allowing unprivileged user namespaces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = 4096


class SmallDisk:
    """A tmpfs of `size` bytes at `mount_point` (created, empty), visible to `run` only."""

    def __init__(self, mount_point: Path, size: int) -> None:
        missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
        if missing:
            pytest.fail(
                f"the full-disk tests need util-linux's {' and '.join(missing)} (apt-get install util-linux)"
            )
        self.mount_point = mount_point
        mount_point.mkdir(parents=True)
        self._user = os.geteuid() != 0  # not root: a user namespace in which we are
        self._holder = subprocess.Popen(
            [
                "unshare",
                *(["--map-root-user"] if self._user else []),
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount -t tmpfs -o size="$1",mode=0755 synthkd-small-disk "$0" && echo ready '
                "&& exec cat >/dev/null",  # until the test closes the pipe, or ends
                str(mount_point),
                str(size),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "ready":
            self.close()
            error = self._holder.stderr.read() if self._holder.stderr else ""
            pytest.fail(
                "the full-disk tests need to mount a small tmpfs in a mount namespace of their own, "
                f"as root or with unprivileged user namespaces; `unshare --mount` said: {error.strip()}"
            )

    def outside(self, path: Path) -> Path:
        """Where the test itself reads or writes `path` (a path on the tmpfs, as seen inside)."""
        return Path(f"/proc/{self._holder.pid}/root") / path.relative_to("/")

    def run(
        self, argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """Run a command that sees the tmpfs at its mount point."""
        enter = ["nsenter", f"--target={self._holder.pid}", "--mount"]
        if self._user:
            enter[1:1] = ["--user", "--preserve-credentials"]
        # `cd` inside: nsenter's --wd would resolve the folder before entering the namespace.
        change_folder = ["sh", "-c", 'cd "$0" && exec "$@"', str(cwd)]
        return subprocess.run(
            [*enter, "--", *change_folder, *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def synthkd(self, args: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
        """`synthkd ARGS` inside, through its real entry point (so a traceback would be seen)."""
        return self.run([sys.executable, "-m", "synthkd.cli", *args], env={**env, "COLUMNS": "400"}, cwd=cwd)

    def free_bytes(self) -> int:
        disk = os.statvfs(self.outside(self.mount_point))
        return disk.f_bavail * disk.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all the free space but `leave` bytes (rounded down to pages) with a filler file."""
        filler = self.outside(self.mount_point / "filler")
        keep = leave // PAGE * PAGE
        with filler.open("ab") as handle:
            while self.free_bytes() > keep:
                handle.write(b"\0" * min(self.free_bytes() - keep, 1 << 20))
                handle.flush()

    def free(self) -> None:
        """Delete the filler: the space it took is free again."""
        self.outside(self.mount_point / "filler").unlink(missing_ok=True)

    def close(self) -> None:
        if self._holder.poll() is None:
            assert self._holder.stdin is not None
            self._holder.stdin.close()  # the holder's `cat` ends; with it the namespace and the tmpfs
            try:
                self._holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait()


def one_error_line(process: subprocess.CompletedProcess | str) -> str:
    """The command's error: stderr (the process's, or as captured from `synthkd.cli.main`) holds no
    traceback and exactly one `error:` line (progress lines from before the error may precede it)."""
    stderr = process if isinstance(process, str) else process.stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]
