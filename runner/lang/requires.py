"""The capability expressions of `requires:` and `when:`: parsed at load time (problems with the
path of the item they are in, for file:line:col), evaluated at run time against a session's
capability list (runner.protocols.caps: NAME -> its parameters, names upper-case).

An expression is a list (or one item); every item must hold. An item is a string

    NAME              the server offers NAME                  STARTTLS, IDLE, 8BITMIME
    NAME=VALUE        VALUE is one of NAME's parameters       AUTH=PLAIN (SMTP `AUTH PLAIN
                      (an IMAP atom NAME=VALUE is one)        LOGIN`, IMAP `AUTH=PLAIN`)
    NAME>=N           NAME's first parameter is a number and  SIZE>=10000000 (also >, <=, <)
                      compares so
    not ITEM          ITEM does not hold                      not SMTPUTF8

or a mapping `any: [ITEM, ...]`: at least one holds. Names and values compare
case-insensitively. `check()` gives, for the first item that does not hold, the item as text
(what a result's `condition` field carries) and why, for people: "server does not offer
AUTH=CRAM-MD5 (offers PLAIN LOGIN)".
"""

from __future__ import annotations

import functools
import re

from runner.records import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["Any_", "Requirement", "Term", "check", "parse", "requirement"]

_TERM = re.compile(
    r"\s*(?P<not>not\s+)?(?P<name>[A-Za-z0-9][A-Za-z0-9_+.\-]*)"
    r"(?:\s*(?P<op>>=|<=|>|<|=)\s*(?P<value>[^\s=<>]+))?\s*\Z"
)
_NUMERIC = {">=": int.__ge__, "<=": int.__le__, ">": int.__gt__, "<": int.__lt__}


class Term(Plain):
    """One string item: `negated`, `name` (upper-case), `op` (None, '=', '>=', ...), `value`."""

    __slots__ = ("name", "op", "value", "negated", "text")

    def __init__(self, name: str, op: str | None, value: str | None, negated: bool):
        self.name = name.upper()
        self.op = op
        self.value = value.upper() if value is not None and op == "=" else value
        self.negated = negated
        body = self.name + (f"{op}{self.value}" if op else "")
        self.text = f"not {body}" if negated else body

    def holds(self, caps: Mapping[str, str]) -> bool:
        return self._offered(caps) != self.negated

    def _offered(self, caps: Mapping[str, str]) -> bool:
        params = caps.get(self.name)
        if params is None:
            return False
        if self.op is None:
            return True
        if self.op == "=":
            return self.value in params.upper().split()
        first = params.split()[0] if params.split() else ""
        # ASCII digits, and not a hostile server's 5000 of them (int() refuses over 4300)
        if not (first.isascii() and first.isdigit() and len(first) <= 30):
            return False
        return _NUMERIC[self.op](int(first), int(self.value or 0))

    def why(self, caps: Mapping[str, str]) -> str:
        """Why it does not hold (call only when it does not)."""
        params = caps.get(self.name)
        if self.negated:
            return f"server offers {self.text[4:]}" + (f" ({self.name} {params})" if params else "")
        if self.op == "=":
            offers = f"no {self.name}" if params is None else params or f"{self.name} without parameters"
            return f"server does not offer {self.text} (offers {offers})"
        if self.op is None or params is None:
            return f"server does not offer {self.name}"
        return f"server offers {self.name} {params or 'without a number'}, not {self.op} {self.value}"


class Any_(Plain):
    """`any: [...]`: at least one of `items` holds."""

    __slots__ = ("items", "text")

    def __init__(self, items: tuple[Term | Any_, ...]):
        self.items = items
        self.text = "any: [" + ", ".join(i.text for i in items) + "]"

    def holds(self, caps: Mapping[str, str]) -> bool:
        return any(i.holds(caps) for i in self.items)

    def why(self, caps: Mapping[str, str]) -> str:
        names = {i.name for i in self.items if isinstance(i, Term) and not i.negated}
        listed = ", ".join(i.text for i in self.items)
        if len(names) == 1 and all(isinstance(i, Term) and not i.negated for i in self.items):
            (name,) = names
            params = caps.get(name)
            return f"server offers none of {listed} (offers {params if params else 'no ' + name})"
        return f"server offers none of {listed} (" + "; ".join(i.why(caps) for i in self.items) + ")"


class Requirement(Plain):
    """Every one of `items` must hold; `text` is the whole expression, for display."""

    __slots__ = ("items", "text")

    def __init__(self, items: tuple[Term | Any_, ...]):
        self.items = items
        self.text = ", ".join(i.text for i in items)

    def unmet(self, caps: Mapping[str, str]) -> Term | Any_ | None:
        return next((i for i in self.items if not i.holds(caps)), None)


def parse(source: Any) -> tuple[Requirement | None, list[tuple[tuple, str]]]:
    """A `requires:`/`when:` value as written (a string, a mapping, or a list of them) -> the
    Requirement (None when there are problems) and the problems as (sub-path, message), the
    sub-path relative to the value: (2,) is its third item, (2, 'any', 0) inside it."""
    problems: list[tuple[tuple, str]] = []
    if isinstance(source, (list, tuple)):
        items = [_item(v, (i,), problems) for i, v in enumerate(source)]
        if not source:
            problems.append(((), "an empty list: name at least one capability"))
    else:
        items = [_item(source, (), problems)]
    if problems:
        return None, problems
    return Requirement(tuple(items)), []  # type: ignore[arg-type]


def _item(value: Any, path: tuple, problems: list[tuple[tuple, str]]) -> Term | Any_ | None:
    if isinstance(value, dict):
        if set(value) != {"any"} or not isinstance(value["any"], (list, tuple)) or not value["any"]:
            problems.append((path, "a mapping here is `any: [ITEM, ...]` (at least one item)"))
            return None
        items = [_item(v, path + ("any", j), problems) for j, v in enumerate(value["any"])]
        return None if None in items else Any_(tuple(items))  # type: ignore[arg-type]
    if not isinstance(value, str):
        problems.append((path, f"expected a capability expression (a string), got {type(value).__name__}"))
        return None
    m = _TERM.match(value)
    if m is None:
        problems.append(
            (
                path,
                f"not a capability expression: {value!r} (expected NAME, NAME=VALUE, NAME>=NUMBER "
                "or 'not NAME', e.g. STARTTLS, AUTH=PLAIN, SIZE>=10000000, not SMTPUTF8)",
            )
        )
        return None
    op, val = m.group("op"), m.group("value")
    if op in _NUMERIC and not (val or "").isdigit():
        problems.append((path, f"{op} compares numbers: {val!r} is not a whole number"))
        return None
    return Term(m.group("name"), op, val, bool(m.group("not")))


def _frozen(source: Any) -> Any:
    if isinstance(source, (list, tuple)):
        return tuple(_frozen(v) for v in source)
    if isinstance(source, dict):
        return ("\0map", tuple((k, _frozen(v)) for k, v in source.items()))
    return source


def _thawed(value: Any) -> Any:
    if isinstance(value, tuple) and value[:1] == ("\0map",):
        return {k: _thawed(v) for k, v in value[1]}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


@functools.lru_cache(maxsize=1024)
def _compiled(frozen: Any) -> Requirement:
    req, problems = parse(_thawed(frozen))
    if req is None:  # the loader reported these before anything ran
        raise ValueError("; ".join(m for _, m in problems))
    return req


def requirement(source: Any) -> Requirement:
    """The Requirement of a value the loader accepted (cached; ValueError if it was not)."""
    return _compiled(_frozen(source))


def check(source: Any, caps: Mapping[str, str]) -> tuple[str, str] | None:
    """None when every item holds; else (the first item that does not, as text; why)."""
    item = requirement(source).unmet(caps)
    return None if item is None else (item.text, item.why(caps))
