"""The code that runs inside the sandbox (see `synthkd.sandbox`).

These files are not imported by synthkd: the sandboxed processes run them from this folder (bound
read-only into bubblewrap's sandbox) with `python -I -S -B`, so they import nothing but the
standard library.

- `boot.py`: the main script of both processes (the judge and the solution): setup, privileges,
  limits, then the role.
- `hook.py`: the audit hook both install before untrusted code runs.
- `rpc.py`: the channel between the two processes (values, proxies, requests).
- `judge.py`: runs the tests against the answer's names and says pass or fail.
"""
