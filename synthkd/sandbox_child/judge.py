"""The tests' side of a check: run the tests against proxies of the answer's names; say pass or fail.

Run by `boot.py` in the judge process, which never imports the answer. The answer's module-level
names arrive from the solution process (`rpc.py`): plain values as copies, functions and classes
as proxies. The tests (the teacher's or a column's: plain asserts, `test_*` functions that take
no argument, unittest cases) run in a namespace holding those names, and `import solution` /
`from solution import f` find them too. The check passes only when every test ran to the end and
the channel to the answer stayed sound the whole time. Standard library only.
"""

import builtins
import sys
import traceback
import types

LOST = "the answer's process ended or broke the channel during the tests"


def run(channel, tests, rpc):
    """(passed, detail): detail says in one line why a check failed."""
    try:
        passed, detail = _run(channel, tests, rpc)
    except rpc.Lost as exc:
        passed, detail = False, f"{LOST} ({exc})"
    except SystemExit as exc:
        passed, detail = False, f"the tests called exit({exc.code!r}) before they finished"
    except MemoryError:
        raise
    except BaseException as exc:
        traceback.print_exc()
        passed, detail = False, _last_line(exc)
    if passed and channel.lost:  # a test caught the loss of the channel: the run is still void
        passed, detail = False, f"{LOST} ({channel.lost})"
    return passed, detail


def _run(channel, tests, rpc):
    first = channel.receive()
    if "failed" in first:
        return False, str(first["failed"])[:300]
    ready = first.get("ready")
    if type(ready) is not dict or type(ready.get("names")) is not list:
        raise rpc.Lost("the answer's process did not start properly")
    names = {}
    for pair in ready["names"]:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
            raise rpc.Lost("a malformed list of names")
        names[pair[0]] = channel.decode(pair[1])
    module_proxy = channel.decode(ready.get("module"))

    module = types.ModuleType("solution")
    module.__dict__.update(names)
    module.__getattr__ = lambda name: getattr(module_proxy, name)  # PEP 562: names added later
    sys.modules["solution"] = module

    namespace = dict(names)
    namespace["__name__"] = "__tests__"
    namespace["__builtins__"] = builtins
    exec(compile(tests, "tests.py", "exec"), namespace)
    for name, value in list(namespace.items()):
        if (
            name.startswith("test")
            and type(value) is types.FunctionType  # not a proxy of the answer's test_ function
            and value.__module__ == "__tests__"
            and value.__code__.co_argcount == 0
        ):
            value()
    if "unittest" in sys.modules:
        import unittest

        cases = [
            value
            for value in namespace.values()
            if issubclass(type(value), type) and issubclass(value, unittest.TestCase)  # not a proxy
        ]
        if cases:
            loader = unittest.defaultTestLoader
            suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in cases)
            result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
            if not result.wasSuccessful():
                return False, f"FAILED (failures={len(result.failures)}, errors={len(result.errors)})"
    return True, ""


def _last_line(exc):
    try:
        return traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]
    except BaseException:
        return type(exc).__name__
