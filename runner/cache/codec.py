"""The model <-> JSON codec of the cache, derived from the model classes themselves.

A record (a runner.records.Plain class defined in runner.model.scenario or runner.model.config)
is written as its class name and its constructor's arguments in order, which are its public
slots; decoding calls the constructor with them (an entry is read only by the model sources that
wrote it: their sizes and mtimes are part of its key). A field added to a model class therefore
needs no line here; a class whose constructor does not take exactly its public slots is refused
(NotCacheable), so it is never cached rather than cached wrong. JSON carries str, int, float,
bool and None as they are; every other value is one of the few kinds of _DECODE: a record, dict
(text keys), list, tuple, frozenset, Path, bytes, or the mark of an `S:` pattern.

Each value other than a scalar is written once, into a flat table, and referred to by its index
as `[i]`: objects the model shares (the Location of an `include:` step sits in the `via` of every
step below it and carries its own `via`; a fragment's bindings are shared by its steps) stay one
entry each, and the model comes back with the same sharing. Tuples are immutable, so equal ones
are one entry too, and a tuple one item longer than one written before is written as that one
plus its last item (["T+", i, item]): the `via` and `bindings` of a step k includes deep hold k
items, k - 1 of them its including step's. An entry so grows linearly with the include depth (a
tree written out doubles with each level). The table is in post order: an entry refers only to
entries before it, so decoding is one pass that cannot loop.

The `S:` pattern (Step.expect, a runner.lang.patterns object) is not data JSON can carry, and
the cache does not import the language package: it is written as a mark holding the protocol of
the session above it and rebuilt from `expect_source` by the `parse_pattern` decode is given.
"""

from __future__ import annotations

from pathlib import Path

from runner.model import config, scenario
from runner.records import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    PatternParser = Callable[[Any, str], tuple[Any, list]]  # runner.lang.patterns.parse_pattern

__all__ = ["Damaged", "NotCacheable", "decode", "encode"]

#: The record classes an entry may name: every Plain class the model modules define.
CLASSES = {
    name: c
    for m in (scenario, config)
    for name, c in vars(m).items()
    if isinstance(c, type) and issubclass(c, Plain) and c.__module__ == m.__name__
}
#: A field F holding a pattern is one beside a field F + SOURCE, the source it is parsed from
#: (Step.expect and expect_source, Step.until and until_source).
SOURCE = "_source"
_PATH = type(Path())
_FIELDS: dict[type, tuple[tuple[str, ...], tuple[tuple[int, int], ...]]] = {}


class NotCacheable(Exception):
    """The model holds something the codec cannot give back exactly."""


class Damaged(Exception):
    """The data is not what encode wrote (another layout, a hand edit)."""


def _spec(cls: type) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """The fields of a record class: its constructor's parameters, in order, which must be
    exactly its public slots (a `_private` slot is derived state and not written); and, for
    each pattern field, (its index, the index of its source field)."""
    got = _FIELDS.get(cls)
    if got is None:
        code = cls.__init__.__code__
        names = code.co_varnames[1 : code.co_argcount]
        slots = {n for k in cls.__mro__ for n in getattr(k, "__slots__", ())}
        public = {n for n in slots if not n.startswith("_")}
        # 0x0C: CO_VARARGS | CO_VARKEYWORDS; keyword-only parameters: not to be given in order
        if code.co_flags & 0x0C or code.co_kwonlyargcount or set(names) != public:
            raise NotCacheable(f"{cls.__name__}'s constructor does not take exactly its fields")
        patterns = tuple((i, names.index(n + SOURCE)) for i, n in enumerate(names) if n + SOURCE in names)
        got = _FIELDS[cls] = (names, patterns)
    return got


# --------------------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self):
        self.table: list = []
        self.seen: dict[int, int] = {}  # id(object) -> its index in the table
        self.keep: list = []  # what `seen` names stays alive, so no id is reused meanwhile
        self.protocol: str | None = None  # of the record being written, for its patterns
        self.tuples: dict[tuple, int] = {}  # a tuple's items (with their types) -> its index

    def value(self, v: Any) -> Any:
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            return v
        if t is float:
            if v - v != 0:  # NaN, infinities: JSON has none
                raise NotCacheable("non-finite number")
            return v
        i = self.seen.get(id(v))
        if i is None:
            i = self.tuple(v) if t is tuple else self.add(self.entry(v, t))
            self.seen[id(v)] = i
            self.keep.append(v)
        return [i]

    def add(self, entry: list) -> int:
        self.table.append(entry)
        return len(self.table) - 1

    def tuple(self, v: tuple) -> int:
        """Equal tuples are one entry; one item more than a tuple written before: ["T+", i, item]."""
        items = [self.value(x) for x in v]
        key = tuple(("#", x[0]) if type(x) is list else (type(x), repr(x)) for x in items)  # 0.0 != -0.0
        i = self.tuples.get(key)
        if i is None:
            base = self.tuples.get(key[:-1]) if len(key) > 1 else None
            i = self.tuples[key] = self.add(["T", items] if base is None else ["T+", base, items[-1]])
        return i

    def entry(self, v: Any, t: type) -> list:
        if CLASSES.get(t.__name__) is t:
            return self.record(v, t)
        if t is dict:
            if not all(type(k) is str for k in v):
                raise NotCacheable("non-text key")
            return ["D", {k: self.value(x) for k, x in v.items()}]
        if t is list:
            return ["L", [self.value(x) for x in v]]
        if t is frozenset:
            return ["F", [self.value(x) for x in sorted(v, key=repr)]]
        if t is _PATH:
            return ["P", str(v)]
        if t is bytes:
            from binascii import b2a_base64

            return ["B", b2a_base64(v, newline=False).decode("ascii")]
        raise NotCacheable(f"a {t.__name__} value")

    def record(self, v: Plain, t: type) -> list:
        names = _spec(t)[0]
        outer = self.protocol
        if "protocol" in names:
            self.protocol = v.protocol
        out = []
        pattern_at = dict(_spec(t)[1])  # a pattern field's index -> its source field's
        for i, n in enumerate(names):
            x = getattr(v, n)
            if i in pattern_at and x is not None:
                if getattr(v, names[pattern_at[i]]) is None or type(self.protocol) is not str:
                    raise NotCacheable("a pattern without its source or protocol")
                self.table.append(["S", self.protocol])  # one mark per pattern: nothing shares it
                out.append([len(self.table) - 1])
            else:
                out.append(self.value(x))
        self.protocol = outer
        return ["R", t.__name__, out]


def encode(sc: scenario.Scenario) -> dict:
    """The model as JSON-ready data: {"table": [...], "root": [i]} (NotCacheable when it cannot
    be given back exactly)."""
    enc = _Encoder()
    try:
        root = enc.value(sc)
    except RecursionError:  # pragma: no cover - the model has no cycles
        raise NotCacheable("too deep") from None
    return {"table": enc.table, "root": root}


# --------------------------------------------------------------------------- decoding


class _Mark:
    __slots__ = ("protocol",)

    def __init__(self, protocol: str):
        self.protocol = protocol


def _ref(x: Any, done: list) -> Any:
    """An inline value: a scalar, or [i] for entry i of the table (decoded already)."""
    if type(x) is list:
        (i,) = x
        if type(i) is not int or i < 0:
            raise Damaged("bad reference")
        return done[i]
    if type(x) is dict:
        raise Damaged("an inline mapping")
    return x


def _record(e: list, done: list, parse_pattern: PatternParser | None) -> Plain:
    _, name, values = e
    cls = CLASSES[name]
    names, patterns = _spec(cls)
    if type(values) is not list or len(values) != len(names):
        raise Damaged(f"{name}: other fields")
    values = [_ref(x, done) for x in values]
    for i, source in patterns:
        mark = values[i]
        if type(mark) is _Mark:
            if parse_pattern is None:
                raise Damaged("no pattern parser given")
            values[i], problems = parse_pattern(values[source], mark.protocol)
            if values[i] is None or problems:
                raise Damaged("a pattern that does not parse")
    return cls(*values)


def _items(e: list, done: list) -> list:
    _, items = e
    if type(items) is not list:
        raise Damaged("not a list")
    return [_ref(x, done) for x in items]


def _dict(e: list, done: list, _p) -> dict:
    _, items = e
    if type(items) is not dict:
        raise Damaged("not a mapping")
    return {k: _ref(x, done) for k, x in items.items()}


def _longer(e: list, done: list, _p) -> tuple:
    _, base, last = e
    if type(base) is not int or type(done[base]) is not tuple:
        raise Damaged("not a tuple")
    return (*done[base], _ref(last, done))


def _text(e: list) -> str:
    _, text = e
    if type(text) is not str:
        raise Damaged("not a string")
    return text


def _bytes(e: list, _d, _p) -> bytes:
    from binascii import a2b_base64

    return a2b_base64(_text(e))


def _mark(e: list, _d, _p) -> _Mark:
    return _Mark(_text(e))


_DECODE = {
    "R": _record,
    "D": _dict,
    "L": lambda e, done, _p: _items(e, done),
    "T": lambda e, done, _p: tuple(_items(e, done)),
    "T+": _longer,
    "F": lambda e, done, _p: frozenset(_items(e, done)),
    "P": lambda e, _d, _p: Path(_text(e)),
    "B": _bytes,
    "S": _mark,
}


def decode(data: Any, parse_pattern: PatternParser | None) -> scenario.Scenario:
    """The model back from `encode`'s data. parse_pattern (runner.lang.patterns.parse_pattern)
    rebuilds the `S:` patterns; without it a model that has any is Damaged. Any other damage:
    Damaged, KeyError, IndexError, TypeError or ValueError."""
    done: list = []
    for e in data["table"]:
        done.append(_DECODE[e[0]](e, done, parse_pattern))
    sc = _ref(data["root"], done)
    if type(sc) is not scenario.Scenario:
        raise Damaged("not a scenario")
    return sc
