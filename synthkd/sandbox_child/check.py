"""The entry script of `synthkd.sandbox.check_solution`, run by `boot.py` inside the sandbox.

The parent appends `main(NONCE)`. It imports the answer as module `solution`, runs the tests (the
private file `tests.py` beside this script) in a namespace that holds the solution's names, calls
the test_* functions and unittest cases, then prints the nonce: only a run that gets that far
passes. Standard library only.
"""

import os
import sys
import types


def main(nonce):
    out = os.dup(1)
    with open(sys.argv[0].rsplit("/", 1)[0] + "/tests.py", encoding="utf-8") as handle:
        tests = handle.read()
    try:
        import solution
    except SystemExit as exc:
        sys.stderr.write(f"the solution called exit({exc.code!r}) while being imported\n")
        sys.exit(3)
    namespace = {k: v for k, v in vars(solution).items() if not k.startswith("__")}
    namespace["__name__"] = "__tests__"
    try:
        exec(compile(tests, "tests.py", "exec"), namespace)
        for name, value in list(namespace.items()):
            if (
                name.startswith("test")
                and isinstance(value, types.FunctionType)
                and value.__module__ == "__tests__"
                and value.__code__.co_argcount == 0
            ):
                value()
        if "unittest" in sys.modules:
            import unittest

            case_type = unittest.TestCase
            cases = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, case_type)]
            if cases:
                loader = unittest.defaultTestLoader
                suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in cases)
                result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
                if not result.wasSuccessful():
                    sys.exit(1)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
        sys.stderr.write("the tests called exit() before they finished\n")
        sys.exit(4)
    os.write(out, ("\n" + nonce + "\n").encode())
