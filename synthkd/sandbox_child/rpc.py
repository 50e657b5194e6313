"""The channel between a check's two processes: the solution's and the judge's.

Why two processes: code that runs first in a process owns it. An answer imported into the process
that runs the tests can read whatever that process will use to say "passed" (a marker, a nonce, a
file descriptor), patch the test runner, install a trace function that skips the asserts, or just
print the marker and exit. No check made inside that process can be trusted. So the answer is
imported in a process of its own (the *solution* process) and the tests run in another (the
*judge*), which alone holds the channel the verdict goes out on, and which never executes a line
of the answer: the tests see the answer's names as proxies, and every use of a proxy (a call, an
attribute, an operator, iteration) is a request to the solution process, whose reply is data.

What crosses the channel, one JSON object a line:
- plain values by value, rebuilt by the receiver from JSON without running any code: None, bool,
  int, float, str, bytes, bytearray, complex, list, tuple, dict, set, frozenset, range, slice,
  Ellipsis, and a few standard library value types (Fraction, Decimal, date/time/datetime/
  timedelta, OrderedDict, Counter, deque, defaultdict of a builtin type). Only exact types: an int
  subclass with its own `__eq__` is not an int here.
- classes, functions and modules of a short list of standard library modules by name (`len`,
  `collections.Counter`, `math`): the receiver uses its own. Names that run code given a string
  (`exec`, `eval`, `open`, `__import__`, `getattr`, ...) are never resolved this way.
- anything else by reference: the receiver gets a proxy; the object stays where it lives.

Requests: getattr/setattr/delattr, call, an operator from a fixed table (`OPS`), and `write` (the
solution's print() during a call goes to the judge's stdout, so tests can capture it). The judge
serves the solution's requests only on objects the judge itself handed over (a callback, an
instance of a class the tests define), only public attributes of instances of the tests' own
classes, and refuses everything else (`strict`). A reply that is not well formed, or a channel
that closes, is `Lost`: the judge fails the check, whatever the tests catch.

Standard library only: this file runs in both processes, under `python -I`.
"""

import builtins
import contextlib
import json
import math
import operator
import os
import sys
import threading
import types

MAX_MESSAGE = 64 << 20  # bytes in one line
MAX_DEPTH = 40  # nesting encoded by value; deeper values go by reference
MAX_TRACEBACK = 4000
SAFE_INT = 1 << 53
# Modules whose public classes and functions may be named across the channel (each side uses its
# own) and which may be handed over as modules.
SAFE_MODULES = frozenset(
    {
        "builtins", "math", "cmath", "operator", "collections", "itertools", "functools", "heapq",
        "bisect", "fractions", "decimal", "datetime", "string", "re", "statistics", "random", "enum",
        "typing", "json", "copy", "numbers", "array", "textwrap", "unicodedata", "dataclasses",
    }
)  # fmt: skip
# Names that would run code chosen by the other side if the tests called them with its data.
DENIED = frozenset(
    [("builtins", name) for name in (
        "exec", "eval", "compile", "open", "__import__", "breakpoint", "input", "exit", "quit", "help",
        "globals", "locals", "vars", "getattr", "setattr", "delattr", "memoryview",
    )]
    + [("operator", "attrgetter"), ("operator", "methodcaller"), ("copy", "copyreg")]
)  # fmt: skip
PASSED_BY_VALUE_MUTABLE = (list, dict, set, bytearray)
UNCATCHABLE = (SystemExit, KeyboardInterrupt, GeneratorExit)


class Lost(BaseException):
    """The other process closed the channel, died, or broke the protocol.

    A BaseException so that a test's `except Exception` does not swallow it; the judge fails the
    check once this happened, even if a test caught it.
    """


class RemoteError(Exception):
    """An exception from the other side whose class cannot be rebuilt here."""


OPS = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge, "hash": hash, "truth": operator.truth, "len": len, "iter": iter, "next": next,
    "reversed": reversed, "contains": operator.contains, "getitem": operator.getitem,
    "setitem": operator.setitem, "delitem": operator.delitem, "repr": repr, "str": str,
    "format": format, "bytes": bytes, "int": int, "float": float, "complex": complex,
    "index": operator.index, "round": round, "trunc": math.trunc, "floor": math.floor, "ceil": math.ceil,
    "abs": abs, "neg": operator.neg, "pos": operator.pos, "invert": operator.invert,
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "matmul": operator.matmul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "divmod": divmod, "pow": pow, "lshift": operator.lshift, "rshift": operator.rshift,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor,
    "iadd": operator.iadd, "isub": operator.isub, "imul": operator.imul, "imatmul": operator.imatmul,
    "itruediv": operator.itruediv, "ifloordiv": operator.ifloordiv, "imod": operator.imod,
    "ipow": operator.ipow, "ilshift": operator.ilshift, "irshift": operator.irshift,
    "iand": operator.iand, "ior": operator.ior, "ixor": operator.ixor,
    "enter": lambda obj: type(obj).__enter__(obj),
    "exit": lambda obj, *args: type(obj).__exit__(obj, *args),
    "dir": dir, "isinstance": isinstance, "issubclass": issubclass,
}  # fmt: skip


class Channel:
    """One end of the channel. `strict`: this end is the judge (see the module docstring)."""

    def __init__(self, read_fd, write_fd, *, strict):
        self.reader = os.fdopen(read_fd, "rb", buffering=1 << 16)
        self.write_fd = write_fd
        self.strict = strict
        self.exported = {}  # our objects the other side holds: number -> object
        self.export_ids = {}  # id(object) -> number (the object is kept alive in `exported`)
        self.proxies = {}  # the other side's number -> our proxy (or exception class mirror)
        self.mirror_ids = {}  # id(mirror class) -> the other side's number
        self.serving = 0  # requests of the other side being served now
        self.owner = threading.get_ident()
        self.lost = None  # why the channel is unusable, once it is

    # -- transport

    def send(self, message):
        if self.lost:
            raise Lost(self.lost)
        try:
            data = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        except (TypeError, ValueError, RecursionError) as exc:  # a bug of ours, not of the other side
            raise RuntimeError(f"cannot encode a message: {exc}") from None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.write_fd, view) :]
        except OSError as exc:
            self._lose(f"the other process closed the channel ({exc.strerror})")

    def receive(self):
        if self.lost:
            raise Lost(self.lost)
        try:
            line = self.reader.readline(MAX_MESSAGE + 1)
        except OSError as exc:
            self._lose(f"cannot read the channel ({exc.strerror})")
        if not line:
            self._lose("the other process closed the channel")
        if not line.endswith(b"\n"):
            self._lose("a message over the size limit" if len(line) > MAX_MESSAGE else "a message cut short")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self._lose("a message that is not JSON")
        if type(message) is not dict:
            self._lose("a message that is not an object")
        return message

    def _lose(self, why):
        self.lost = self.lost or why
        raise Lost(self.lost)

    def close(self):
        self.lost = self.lost or "closed"
        for close in (self.reader.close, lambda: os.close(self.write_fd)):
            with contextlib.suppress(OSError):
                close()

    # -- requests

    def request(self, message, *, sync=None):
        """Send a request and wait for its reply, serving the other side's requests meanwhile."""
        if threading.get_ident() != self.owner:
            raise RuntimeError("the sandbox channel is used by one thread only")
        self.send(message)
        while True:
            reply = self.receive()
            if "q" in reply:
                self.serve(reply)
            elif "r" in reply:
                value = self.decode(reply["r"])
                if sync is not None and "m" in reply:
                    self._sync(sync, reply["m"])
                return value
            elif "e" in reply:
                raise self.decode_exception(reply["e"])
            else:
                self._lose("a message that is neither a request nor a reply")

    def serve(self, message):
        """Answer one request of the other side."""
        self.serving += 1
        try:
            try:
                reply = self.handle(message)
            except (Lost, MemoryError, *UNCATCHABLE):
                raise
            except BaseException as exc:
                reply = {"e": self.encode_exception(exc)}
            self.send(reply)
        finally:
            self.serving -= 1

    def serve_forever(self):
        """The solution process's loop: answer requests until the judge closes the channel."""
        while True:
            try:
                message = self.receive()
            except Lost:
                return
            if "q" not in message:
                self._lose("a reply when no request was made")
            self.serve(message)

    def handle(self, message):
        kind = message.get("q")
        if kind == "write":
            return self._write(message)
        if kind == "op":
            name = message.get("f")
            if name not in OPS or type(message.get("a")) is not list:
                raise PermissionError(f"operation {name!r} is not allowed across the sandbox")
            if self.strict and not any(_is_back(item) for item in message["a"]):
                raise PermissionError("operations are allowed only on objects handed over")
            return {"r": self.encode(OPS[name](*self.decode(message["a"])))}
        target_data = message.get("o")
        if self.strict and not _is_back(target_data):
            raise PermissionError("requests are allowed only on objects handed over")
        target = self.decode(target_data)
        if kind == "call":
            if (
                not callable(target)
                or type(message.get("a")) is not list
                or type(message.get("k")) is not list
            ):
                raise TypeError("not callable across the sandbox")
            args = self.decode(message["a"])
            kwargs = {}
            for pair in message["k"]:
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                    self._lose("a malformed keyword argument")
                kwargs[pair[0]] = self.decode(pair[1])
            result = target(*args, **kwargs)
            reply = {"r": self.encode(result)}
            changed = [[index, self.encode(value)] for index, value in enumerate(args) if _mutable(value)]
            changed += [[name, self.encode(value)] for name, value in kwargs.items() if _mutable(value)]
            if changed:
                reply["m"] = changed
            return reply
        name = message.get("n")
        if type(name) is not str:
            self._lose("an attribute name that is not a string")
        if self.strict:
            self._check_attribute(target, name)
        if kind == "getattr":
            return {"r": self.encode(getattr(target, name))}
        if kind == "setattr":
            setattr(target, name, self.decode(message.get("v")))
            return {"r": None}
        if kind == "delattr":
            delattr(target, name)
            return {"r": None}
        self._lose(f"an unknown request {kind!r}")

    def _check_attribute(self, target, name):
        defined_by_tests = getattr(type(target), "__module__", None) == "__tests__"
        if name.startswith("_") or not defined_by_tests or isinstance(target, type):
            raise PermissionError(
                f"{name!r} of a {type(target).__name__} of the tests is out of the answer's reach"
            )

    def _write(self, message):
        if not self.strict:
            raise PermissionError("the judge does not write to the solution's output")
        stream = {1: sys.stdout, 2: sys.stderr}.get(message.get("s"))
        text = message.get("t")
        if stream is None or type(text) is not str:
            self._lose("a malformed write")
        stream.write(text)
        return {"r": None}

    def _sync(self, sent, changes):
        """Mutable arguments passed by value get the changes the call made to them, in place."""
        args, kwargs = sent
        if type(changes) is not list:
            self._lose("malformed argument changes")
        for change in changes:
            if type(change) is not list or len(change) != 2:
                self._lose("malformed argument changes")
            key, data = change
            if type(key) is int and 0 <= key < len(args):
                original = args[key]
            elif type(key) is str and key in kwargs:
                original = kwargs[key]
            else:
                self._lose("a change to an argument that was not passed")
            value = self.decode(data)
            if type(original) is not type(value) or not _mutable(original):
                continue
            if type(original) in (dict, set):
                original.clear()
                original.update(value)
            else:
                original[:] = value

    # -- values

    def encode(self, value, depth=0):
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            return value if -SAFE_INT < value < SAFE_INT else {"$": "int", "v": format(value, "x")}
        if kind is float:
            return value if value - value == 0 else {"$": "float", "v": repr(value)}  # nan, inf
        if kind in PROXY_TYPES:
            if object.__getattribute__(value, "_sk_channel") is self:
                return {"$": "back", "id": object.__getattribute__(value, "_sk_id")}
            return self.export(value)
        if kind is type and id(value) in self.mirror_ids:
            return {"$": "back", "id": self.mirror_ids[id(value)]}
        if depth > MAX_DEPTH:
            return self.export(value)
        deeper = depth + 1
        if kind is list:
            return [self.encode(item, deeper) for item in value]
        if kind in (tuple, set, frozenset):
            return {"$": kind.__name__, "v": [self.encode(item, deeper) for item in value]}
        if kind is dict:
            return {
                "$": "dict",
                "v": [[self.encode(k, deeper), self.encode(v, deeper)] for k, v in value.items()],
            }
        if kind in (bytes, bytearray):
            return {"$": kind.__name__, "v": value.hex()}
        if kind is complex:
            return {"$": "complex", "v": [self.encode(value.real), self.encode(value.imag)]}
        if kind is range:
            return {
                "$": "range",
                "v": [self.encode(value.start), self.encode(value.stop), self.encode(value.step)],
            }
        if kind is slice:
            return {
                "$": "slice",
                "v": [self.encode(p, deeper) for p in (value.start, value.stop, value.step)],
            }
        if value is Ellipsis or value is NotImplemented:
            return {"$": "Ellipsis" if value is Ellipsis else "NotImplemented"}
        encoded = self._encode_stdlib(value, kind, deeper)
        if encoded is not None:
            return encoded
        if (
            kind is types.ModuleType
            and value.__name__ in SAFE_MODULES
            and sys.modules.get(value.__name__) is value
        ):
            return {"$": "module", "n": value.__name__}
        name = global_name(value)
        if name is not None:
            return {"$": "global", "m": name[0], "n": name[1]}
        return self.export(value)

    def _encode_stdlib(self, value, kind, depth):
        module = getattr(kind, "__module__", None)
        if module not in ("fractions", "decimal", "datetime", "collections", "_decimal", "_pydecimal"):
            return None
        if sys.modules.get(module) is None or kind is not getattr(sys.modules[module], kind.__name__, None):
            return None
        name = kind.__name__
        if name == "Fraction":
            return {"$": "Fraction", "v": [self.encode(value.numerator), self.encode(value.denominator)]}
        if name == "Decimal":
            return {"$": "Decimal", "v": str(value)}
        if name in ("date", "datetime", "time"):
            tz = getattr(value, "tzinfo", None)
            if tz is not None and type(tz).__name__ != "timezone":
                return None
            offset = None if tz is None else tz.utcoffset(None).total_seconds()
            return {
                "$": name,
                "v": value.replace(tzinfo=None).isoformat() if tz else value.isoformat(),
                "tz": offset,
            }
        if name == "timedelta":
            return {"$": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
        if name in ("OrderedDict", "Counter"):
            return {
                "$": name,
                "v": [[self.encode(k, depth), self.encode(v, depth)] for k, v in value.items()],
            }
        if name == "deque":
            return {"$": "deque", "v": [self.encode(item, depth) for item in value], "max": value.maxlen}
        if name == "defaultdict":
            factory = value.default_factory
            if factory is not None and (
                type(factory) is not type or getattr(builtins, factory.__name__, None) is not factory
            ):
                return None
            items = [[self.encode(k, depth), self.encode(v, depth)] for k, v in value.items()]
            return {"$": "defaultdict", "v": items, "f": None if factory is None else factory.__name__}
        return None

    def export(self, value):
        number = self.export_ids.get(id(value))
        if number is None:
            number = len(self.exported) + 1
            self.exported[number] = value
            self.export_ids[id(value)] = number
        data = {"$": "ref", "id": number}
        try:
            if isinstance(value, type):
                data["k"] = "class"
                data["n"] = str(getattr(value, "__qualname__", "class"))[:200]
                if issubclass(value, BaseException):
                    data["exc"] = _builtin_base(value)
            else:
                data["k"] = "call" if callable(value) else "obj"
            data["t"] = str(getattr(type(value), "__qualname__", "object"))[:200]
            type_name = global_name(type(value))
            if type_name is not None:
                data["c"] = list(type_name)
        except Exception:
            data.setdefault("k", "obj")
        return data

    def decode(self, data):
        try:
            return self._decode(data)
        except (Lost, MemoryError, *UNCATCHABLE):
            raise
        except BaseException as exc:  # malformed data from the other side
            self._lose(f"a value that cannot be read ({type(exc).__name__}: {exc})")

    def _decode(self, data):
        kind = type(data)
        if data is None or kind in (bool, int, float, str):
            return data
        if kind is list:
            return [self._decode(item) for item in data]
        if kind is not dict:
            raise ValueError("not a value")
        tag, value = data.get("$"), data.get("v")
        if tag == "int":
            return int(_str(value), 16)
        if tag == "float":
            return float(_str(value))
        if tag in ("tuple", "set", "frozenset"):
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](self._decode(_list(value)))
        if tag == "dict":
            return {self._decode(k): self._decode(v) for k, v in _pairs(value)}
        if tag in ("bytes", "bytearray"):
            return (bytes if tag == "bytes" else bytearray).fromhex(_str(value))
        if tag == "complex":
            real, imag = _list(value, 2)
            return complex(_number(self._decode(real)), _number(self._decode(imag)))
        if tag == "range":
            return range(*(_int(self._decode(part)) for part in _list(value, 3)))
        if tag == "slice":
            return slice(*(self._decode(part) for part in _list(value, 3)))
        if tag == "Ellipsis":
            return Ellipsis
        if tag == "NotImplemented":
            return NotImplemented
        if tag == "back":
            number = data.get("id")
            if type(number) is not int or number not in self.exported:
                raise ValueError("a reference to an object never handed over")
            return self.exported[number]
        if tag == "ref":
            return self._proxy(data)
        if tag == "module":
            name = _str(data.get("n"))
            if name not in SAFE_MODULES:
                raise ValueError(f"module {name!r} may not be named across the sandbox")
            import importlib

            return importlib.import_module(name)
        if tag == "global":
            return resolve_global(_str(data.get("m")), _str(data.get("n")))
        return self._decode_stdlib(tag, value, data)

    def _decode_stdlib(self, tag, value, data):
        if tag == "Fraction":
            import fractions

            numerator, denominator = (_int(self._decode(part)) for part in _list(value, 2))
            return fractions.Fraction(numerator, denominator)
        if tag == "Decimal":
            import decimal

            return decimal.Decimal(_str(value))
        if tag in ("date", "datetime", "time", "timedelta"):
            import datetime

            if tag == "timedelta":
                return datetime.timedelta(*(_int(part) for part in _list(value, 3)))
            parsed = getattr(datetime, tag).fromisoformat(_str(value))
            offset = data.get("tz")
            if offset is not None:
                tz = datetime.timezone(datetime.timedelta(seconds=_number(offset)))
                parsed = parsed.replace(tzinfo=tz)
            return parsed
        if tag in ("OrderedDict", "Counter", "deque", "defaultdict"):
            import collections

            if tag == "deque":
                maxlen = data.get("max")
                if maxlen is not None:
                    _int(maxlen)
                return collections.deque(self._decode(_list(value)), maxlen)
            items = [(self._decode(k), self._decode(v)) for k, v in _pairs(value)]
            if tag == "defaultdict":
                factory = data.get("f")
                if factory is not None:
                    factory = getattr(builtins, _str(factory), None)
                    if type(factory) is not type:
                        raise ValueError("a defaultdict factory that is not a builtin type")
                return collections.defaultdict(factory, items)
            made = getattr(collections, tag)()
            for k, v in items:
                made[k] = v
            return made
        raise ValueError(f"unknown value tag {tag!r}")

    def _proxy(self, data):
        number = data.get("id")
        if type(number) is not int:
            raise ValueError("a reference without a number")
        known = self.proxies.get(number)
        if known is not None:
            return known
        kind = data.get("k")
        if kind == "class" and "exc" in data:
            made = self._mirror(number, data)
        else:
            proxy_type = {"class": ClassProxy, "call": CallableProxy}.get(kind, Proxy)
            made = object.__new__(proxy_type)
            local_type = None
            if type(data.get("c")) is list and len(data["c"]) == 2:
                try:
                    local_type = resolve_global(_str(data["c"][0]), _str(data["c"][1]))
                except Exception:
                    local_type = None
            for name, value in (
                ("_sk_channel", self),
                ("_sk_id", number),
                ("_sk_type", local_type if isinstance(local_type, type) else None),
                ("_sk_name", str(data.get("t", "object"))[:200]),
            ):
                object.__setattr__(made, name, value)
        self.proxies[number] = made
        return made

    def _mirror(self, number, data):
        """A local exception class standing for one of the other side's, so tests can catch it."""
        base = getattr(builtins, _str(data["exc"]), None)
        if not (isinstance(base, type) and issubclass(base, BaseException)) or issubclass(base, UNCATCHABLE):
            base = Exception
        name = _str(data.get("n", "RemoteError")).rsplit(".", 1)[-1] or "RemoteError"
        mirror = type(name, (MirrorMixin, base), {"__module__": "solution", "__qualname__": name})
        self.mirror_ids[id(mirror)] = number
        return mirror

    # -- exceptions

    def encode_exception(self, exc):
        import traceback

        try:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-MAX_TRACEBACK:]
        except Exception:
            text = ""
        try:
            message = str(exc)[:MAX_TRACEBACK]
        except Exception:
            message = ""
        data = {"cls": self.encode(type(exc)), "s": message, "tb": text}
        try:
            data["a"] = self.encode(tuple(exc.args))
        except Exception:
            data["a"] = {"$": "tuple", "v": [message]}
        if type(exc).__module__ != "builtins":
            data["o"] = self.export(exc)
        return data

    def decode_exception(self, data):
        if type(data) is not dict:
            self._lose("a malformed exception")
        cls = self.decode(data.get("cls"))
        args = self.decode(data.get("a", {"$": "tuple", "v": []}))
        message = data.get("s") if type(data.get("s")) is str else ""
        if not (isinstance(cls, type) and issubclass(cls, BaseException)) or issubclass(
            cls, UNCATCHABLE + (Lost,)
        ):
            cls, args = RemoteError, (message,)
        try:
            exc = cls(*args) if type(args) is tuple else cls(message)
        except Exception:
            exc = RemoteError(message)
        if "o" in data and isinstance(exc, MirrorMixin):
            object.__setattr__(exc, "_sk_remote", self.decode(data["o"]))
        tb = data.get("tb")
        if type(tb) is str and tb:
            side = "answer" if self.strict else "tests"
            exc.add_note(f"in the {side}'s process:\n{tb[-MAX_TRACEBACK:].rstrip()}")
        return exc


def _is_back(data):
    return type(data) is dict and data.get("$") == "back"


def _mutable(value):
    return type(value) in PASSED_BY_VALUE_MUTABLE


def _str(value):
    if type(value) is not str:
        raise ValueError("expected a string")
    return value


def _int(value):
    if type(value) is not int:
        raise ValueError("expected an int")
    return value


def _number(value):
    if type(value) not in (int, float):
        raise ValueError("expected a number")
    return value


def _list(value, length=None):
    if type(value) is not list or (length is not None and len(value) != length):
        raise ValueError("expected a list")
    return value


def _pairs(value):
    for pair in _list(value):
        yield _list(pair, 2)


def _builtin_base(cls):
    for base in cls.__mro__:
        if base.__module__ == "builtins" and issubclass(base, BaseException):
            return base.__name__
    return "Exception"


def global_name(value):
    """(module, qualified name) when `value` is a public class or function of a SAFE module that
    the other side may resolve to its own copy; else None."""
    if not isinstance(value, (type, types.BuiltinFunctionType, types.FunctionType)):
        return None
    try:
        module, qualname = value.__module__, value.__qualname__
    except Exception:
        return None
    if type(module) is not str or type(qualname) is not str:
        return None
    try:
        found = resolve_global(module, qualname)
    except Exception:
        return None
    return (module, qualname) if found is value else None


def resolve_global(module, qualname):
    parts = qualname.split(".")
    if (
        module not in SAFE_MODULES
        or (module, qualname) in DENIED
        or any(p.startswith("_") or not p for p in parts)
    ):
        raise ValueError(f"{module}.{qualname} may not be named across the sandbox")
    if module not in sys.modules:
        import importlib

        importlib.import_module(module)
    value = sys.modules[module]
    for part in parts:
        value = getattr(value, part)
    if not isinstance(value, (type, types.BuiltinFunctionType, types.FunctionType)):
        raise ValueError(f"{module}.{qualname} is not a class or function")
    return value


class MirrorMixin:
    """Base of the local stand-ins for the other side's exception classes: attributes the
    exception does not have here are read from the original."""

    def __getattr__(self, name):
        try:
            remote = object.__getattribute__(self, "_sk_remote")
        except AttributeError:
            raise AttributeError(name) from None
        return getattr(remote, name)


# -- proxies: the other side's objects, every use a request


_OWN = frozenset({"_sk_channel", "_sk_id", "_sk_type", "_sk_name"})


def _channel(proxy):
    return object.__getattribute__(proxy, "_sk_channel")


def _op(name, *args):
    """Apply OPS[name] to `args` in the process one of them (a proxy) lives in."""
    channel = next(_channel(arg) for arg in args if type(arg) in PROXY_TYPES)
    return channel.request({"q": "op", "f": name, "a": [channel.encode(arg) for arg in args]})


class Proxy:
    """An object that lives in the other process."""

    __slots__ = tuple(_OWN)

    def __getattribute__(self, name):
        if name in _OWN:
            return object.__getattribute__(self, name)
        if name == "__class__":
            local = object.__getattribute__(self, "_sk_type")
            return local if local is not None else type(self)
        channel = _channel(self)
        return channel.request({"q": "getattr", "o": channel.encode(self), "n": name})

    def __setattr__(self, name, value):
        channel = _channel(self)
        channel.request({"q": "setattr", "o": channel.encode(self), "n": name, "v": channel.encode(value)})

    def __delattr__(self, name):
        channel = _channel(self)
        channel.request({"q": "delattr", "o": channel.encode(self), "n": name})

    def __reduce_ex__(self, protocol):
        raise TypeError("an object of the other sandboxed process cannot be pickled")

    def __repr__(self):
        return _op("repr", self)

    def __str__(self):
        return _op("str", self)

    def __format__(self, spec):
        return _op("format", self, spec)

    def __hash__(self):
        return _op("hash", self)

    def __bool__(self):
        return _op("truth", self)

    def __len__(self):
        return _op("len", self)

    def __iter__(self):
        return _op("iter", self)

    def __next__(self):
        return _op("next", self)

    def __reversed__(self):
        return _op("reversed", self)

    def __contains__(self, item):
        return _op("contains", self, item)

    def __getitem__(self, key):
        return _op("getitem", self, key)

    def __setitem__(self, key, value):
        _op("setitem", self, key, value)

    def __delitem__(self, key):
        _op("delitem", self, key)

    def __enter__(self):
        return _op("enter", self)

    def __exit__(self, *args):
        return _op("exit", self, *args)

    def __dir__(self):
        return _op("dir", self)

    def __round__(self, *args):
        return _op("round", self, *args)

    def __pow__(self, other, modulo=None):
        return _op("pow", self, other) if modulo is None else _op("pow", self, other, modulo)


def _unary(name):
    return lambda self: _op(name, self)


def _binary(name):
    return lambda self, other: _op(name, self, other)


def _reflected(name):
    return lambda self, other: _op(name, other, self)


for _name in ("eq", "ne", "lt", "le", "gt", "ge", "divmod"):
    setattr(Proxy, f"__{_name}__", _binary(_name))
for _name in (
    "bytes", "int", "float", "complex", "index", "trunc", "floor", "ceil", "abs", "neg", "pos", "invert",
):  # fmt: skip
    setattr(Proxy, f"__{_name}__", _unary(_name))
for _name in (
    "add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "lshift", "rshift", "and", "or", "xor",
):  # fmt: skip
    setattr(Proxy, f"__{_name}__", _binary(_name))
    setattr(Proxy, f"__r{_name}__", _reflected(_name))
    setattr(Proxy, f"__i{_name}__", _binary(f"i{_name}"))
Proxy.__rdivmod__ = _reflected("divmod")
Proxy.__rpow__ = _reflected("pow")
Proxy.__ipow__ = _binary("ipow")


class CallableProxy(Proxy):
    """A function, method or other callable of the other process."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        channel = _channel(self)
        return channel.request(
            {
                "q": "call",
                "o": channel.encode(self),
                "a": [channel.encode(arg) for arg in args],
                "k": [[name, channel.encode(value)] for name, value in kwargs.items()],
            },
            sync=(args, kwargs),
        )


class ClassProxy(CallableProxy):
    """A class of the other process: isinstance/issubclass are asked there."""

    __slots__ = ()

    def __instancecheck__(self, instance):
        return _op("isinstance", instance, self) is True

    def __subclasscheck__(self, subclass):
        return _op("issubclass", subclass, self) is True

    def __mro_entries__(self, bases):
        raise TypeError("a class of the answer cannot be subclassed in the tests' process")


PROXY_TYPES = (Proxy, CallableProxy, ClassProxy)


class ForwardingStream:
    """sys.stdout/sys.stderr of the solution process: while it serves the judge's request (a call
    from the tests) what it writes goes to the judge's stream, so tests can capture it; else to
    its own file."""

    def __init__(self, channel, stream, number):
        self._channel, self._stream, self._number = channel, stream, number

    def write(self, text):
        channel = self._channel
        if (
            channel.serving
            and not channel.lost
            and threading.get_ident() == channel.owner
            and type(text) is str
        ):
            channel.request({"q": "write", "s": self._number, "t": text})
            return len(text)
        return self._stream.write(text)

    def flush(self):
        return self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)
