"""The code that runs inside the sandboxed child process (see `synthkd.sandbox`).

These files are not imported by synthkd: the parent copies their text into each run's folder and
the child runs them with `python -I -B`. So they import nothing but the standard library.

- `boot.py` is the child's main script: it installs the audit hook, then runs the entry script.
- `check.py` is the entry script of `check_solution`: it imports the answer as `solution` and runs
  the tests against it.
"""
