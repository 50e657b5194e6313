"""The two-process check (sandbox_child/rpc.py): tests written as for an ordinary import of the
answer still pass against a right answer and fail against a wrong one, though the tests only see
the answer through proxies. Each case runs for real under bubblewrap."""

from __future__ import annotations

import textwrap

import pytest

from synthkd.sandbox import Limits, check_solution

LIMITS = Limits(cpu_seconds=5, wall_seconds=15, memory_mb=256)

STACK = """
class EmptyStackError(Exception):
    def __init__(self, message, depth=0):
        super().__init__(message)
        self.depth = depth

class Stack:
    def __init__(self, items=None):
        self.items = list(items or [])
    def push(self, item):
        self.items.append(item)
    def pop(self):
        if not self.items:
            raise EmptyStackError("pop from an empty stack", depth=len(self.items))
        return self.items.pop()
    def __len__(self):
        return len(self.items)
    def __iter__(self):
        return iter(reversed(self.items))
    def __eq__(self, other):
        return isinstance(other, Stack) and self.items == other.items
    def __repr__(self):
        return f"Stack({self.items!r})"
"""

CASES = {
    "class": (
        STACK,
        """
        s = Stack()
        s.push(1)
        s.push(2)
        assert len(s) == 2
        assert s.pop() == 2
        assert list(s) == [1]
        assert s == Stack([1])
        assert isinstance(s, Stack)
        assert repr(s) == "Stack([1])"
        assert s.items == [1]
        """,
    ),
    "custom exception": (
        STACK,
        """
        import pytest
        with pytest.raises(EmptyStackError, match="empty"):
            Stack().pop()
        try:
            Stack().pop()
        except Exception as exc:
            assert isinstance(exc, EmptyStackError)
            assert exc.depth == 0
        else:
            raise AssertionError("no error")
        """,
    ),
    "builtin exception": (
        """
        def root(x):
            if x < 0:
                raise ValueError("negative")
            return x ** 0.5
        """,
        """
        import pytest
        with pytest.raises(ValueError):
            root(-1)
        assert root(9) == 3.0
        """,
    ),
    "import solution": (
        """
        def add(a, b):
            return a + b
        LIMIT = 10
        """,
        """
        from solution import add
        import solution
        assert add(1, 2) == 3
        assert solution.add(2, 2) == 4
        assert solution.LIMIT == 10
        """,
    ),
    "captured print": (
        """
        def greet(name):
            print(f"Hello, {name}!")
        """,
        """
        import io, contextlib
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            greet("Ada")
        assert buffer.getvalue() == "Hello, Ada!\\n"
        """,
    ),
    "in-place mutation": (
        """
        def sort_in_place(items):
            items.sort()

        def rotate(matrix):
            matrix[:] = [list(row) for row in zip(*matrix[::-1])]
        """,
        """
        data = [3, 1, 2]
        assert sort_in_place(data) is None
        assert data == [1, 2, 3]
        m = [[1, 2], [3, 4]]
        rotate(m)
        assert m == [[3, 1], [4, 2]]
        """,
    ),
    "callback": (
        """
        def apply_all(func, items):
            return [func(item) for item in items]

        def retry(times):
            def wrap(func):
                def inner(*args):
                    for _ in range(times - 1):
                        try:
                            return func(*args)
                        except RuntimeError:
                            pass
                    return func(*args)
                return inner
            return wrap
        """,
        """
        assert apply_all(lambda x: x * 2, [1, 2]) == [2, 4]
        assert apply_all(str, [1]) == ["1"]
        calls = []
        @retry(3)
        def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError("again")
            return "ok"
        assert flaky() == "ok" and len(calls) == 3
        """,
    ),
    "generator": (
        """
        def evens(n):
            for i in range(n):
                if i % 2 == 0:
                    yield i
        """,
        """
        assert list(evens(7)) == [0, 2, 4, 6]
        assert sum(evens(5)) == 6
        assert next(evens(3)) == 0
        """,
    ),
    "stdlib values": (
        """
        from collections import Counter, deque
        from fractions import Fraction
        from decimal import Decimal
        import datetime

        def stats(words):
            return Counter(words)

        def half(x):
            return Fraction(x, 2)

        def price():
            return Decimal("1.10")

        def day():
            return datetime.date(2024, 2, 29)

        def window():
            return deque([1, 2], maxlen=2)
        """,
        """
        from collections import Counter
        from fractions import Fraction
        from decimal import Decimal
        import datetime
        assert stats("aab") == Counter({"a": 2, "b": 1})
        assert isinstance(stats(""), Counter)
        assert half(3) == Fraction(3, 2)
        assert price() == Decimal("1.10")
        assert day() + datetime.timedelta(days=1) == datetime.date(2024, 3, 1)
        assert window().maxlen == 2
        """,
    ),
    "dataclass and namedtuple": (
        """
        from dataclasses import dataclass
        from collections import namedtuple
        Point = namedtuple("Point", "x y")

        @dataclass
        class Box:
            w: int
            h: int
            def area(self):
                return self.w * self.h
        """,
        """
        assert Box(2, 3).area() == 6
        assert Box(2, 3) == Box(2, 3)
        assert Point(1, 2) == (1, 2)
        x, y = Point(3, 4)
        assert (x, y) == (3, 4)
        assert Point(1, 2).x == 1
        """,
    ),
    "unittest": (
        """
        def add(a, b):
            return a + b
        """,
        """
        import unittest
        class T(unittest.TestCase):
            def test_add(self):
                self.assertEqual(add(1, 1), 2)
            def test_raises(self):
                with self.assertRaises(TypeError):
                    add(1, "a")
        """,
    ),
    "test functions and kwargs": (
        """
        def power(base, exp=2):
            return base ** exp
        """,
        """
        def test_default():
            assert power(3) == 9

        def test_keyword():
            assert power(base=2, exp=10) == 1024
        """,
    ),
    "big values": (
        """
        def big():
            return 2 ** 200

        def floats():
            return [float("inf"), -0.0, 1e-300]

        def blob():
            return bytes(range(256)) * 10
        """,
        """
        import math
        assert big() == 2 ** 200
        f = floats()
        assert math.isinf(f[0]) and math.copysign(1, f[1]) == -1
        assert blob()[:3] == b"\\x00\\x01\\x02" and len(blob()) == 2560
        """,
    ),
    "files shared with the tests": (
        """
        def save(path, text):
            with open(path, "w") as handle:
                handle.write(text)

        def count_lines(path):
            with open(path) as handle:
                return sum(1 for _ in handle)
        """,
        """
        save("out.txt", "hi")
        assert open("out.txt").read() == "hi"
        with open("in.txt", "w") as handle:
            handle.write("a\\nb\\n")
        assert count_lines("in.txt") == 2
        """,
    ),
}
CASES = {name: (textwrap.dedent(code), textwrap.dedent(tests)) for name, (code, tests) in CASES.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tests_written_for_a_plain_import_pass(case: str):
    code, tests = CASES[case]
    result = check_solution(code, tests, LIMITS, isolation="bwrap")
    assert result.ok, result


WRONG = {
    "class": STACK.replace("return self.items.pop()", "return self.items[0]"),
    "custom exception": STACK.replace(
        'raise EmptyStackError("pop from an empty stack", depth=len(self.items))', "return None"
    ),
    "captured print": "def greet(name):\n    print(f'Hi, {name}!')\n",
    "in-place mutation": "def sort_in_place(items):\n    items = sorted(items)\n\ndef rotate(m):\n    pass\n",
    "callback": "def apply_all(f, items):\n    return list(items)\n\ndef retry(n):\n    return lambda f: f\n",
    "generator": "def evens(n):\n    yield from range(n)\n",
    "unittest": "def add(a, b):\n    return a - b\n",
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_answers_fail_the_same_tests(case: str):
    result = check_solution(WRONG[case], CASES[case][1], LIMITS, isolation="bwrap")
    assert result.status == "failed", result


def test_an_answer_that_breaks_the_channel_fails_even_if_the_tests_catch_everything():
    code = "import os\n\ndef add(a, b):\n    os.write(3 if False else 1, b'')\n    os._exit(0)\n"
    tests = "try:\n    add(1, 2)\nexcept BaseException:\n    pass\n"
    result = check_solution(code, tests, LIMITS, isolation="bwrap")
    assert result.status == "failed" and "ended" in result.detail, result


def test_the_answer_cannot_reach_the_tests_objects_beyond_what_they_hand_over():
    """A callback is callable from the answer; its globals (the judge's builtins) are not."""
    code = (
        "def probe(callback):\n    found = []\n    for name in ('__globals__', 'gi_frame', '__code__'):\n"
        "        try:\n            getattr(callback, name)\n            found.append(name)\n"
        "        except Exception:\n            pass\n    return found, callback(2)\n"
    )
    tests = "assert probe(lambda x: x + 1) == ([], 3)\n"
    result = check_solution(code, tests, LIMITS, isolation="bwrap")
    assert result.ok, result


def test_raw_requests_from_the_answer_cannot_run_code_in_the_judge():
    """The answer holds its end of the channel (here through sys.stdout): what it may ask of the
    judge is limited to objects the tests handed over; exec and friends are refused."""
    code = """
import sys

def attack():
    channel = sys.stdout._channel
    requests = [
        {"q": "call", "o": {"$": "global", "m": "builtins", "n": "print"}, "a": ["called"], "k": []},
        {"q": "call", "o": {"$": "module", "n": "json"}, "a": [], "k": []},
        {"q": "op", "f": "getitem", "a": [{"$": "module", "n": "json"}, "loads"]},
        {"q": "op", "f": "call", "a": []},
        {"q": "getattr", "o": {"$": "module", "n": "json"}, "n": "loads"},
    ]
    outcomes = []
    for request in requests:
        try:
            channel.request(request)
            outcomes.append("answered")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    return outcomes

def add(a, b):
    return a + b
"""
    tests = "assert set(attack()) == {'PermissionError'}, attack()\nassert add(2, 3) == 5\n"
    result = check_solution(code, tests, LIMITS, isolation="bwrap")
    assert result.ok, result


@pytest.mark.parametrize(
    "message",
    [
        '{"r": {"$": "global", "m": "builtins", "n": "exec"}}',  # a name that runs code
        '{"r": {"$": "module", "n": "os"}}',  # a module off the list
        '{"r": {"$": "back", "id": 999}}',  # an object the judge never handed over
        "not json at all",
    ],
)
def test_a_malformed_or_dangerous_reply_voids_the_check(message: str):
    code = f"""
import os, sys

def add(a, b):
    channel = sys.stdout._channel
    os.write(channel.write_fd, {message!r}.encode() + b"\\n")
    return a + b
"""
    tests = "try:\n    add(2, 3)\nexcept BaseException:\n    pass\n"
    result = check_solution(code, tests, LIMITS, isolation="bwrap")
    assert result.status == "failed" and "channel" in result.detail, result
