"""Bases of the plain record classes: the scenario model, results and events, replies, template
nodes, pattern verdicts, TLS/connect info, suite runs.

Fields live in each class's `__slots__` and are set by its hand-written `__init__`; these bases
add what a dataclass would generate, without importing dataclasses (inspect, ast, dis: about
10 ms at every start of `mailrun`) or generating each class (a fraction of a millisecond each):

  Plain   `Name(field=value, ...)` over the class's own slots (`_private` ones left out);
          identity equality
  Record  + equality by value over `_compared` (by default the class's slots); mutable, so
          unhashable; the repr shows what equality compares
  Value   + hashed by value (treated as read-only, not enforced)
  Frozen  + read-only: `__init__` sets fields with `object.__setattr__`; assignment and
          deletion afterwards raise AttributeError, like a frozen dataclass
"""

from __future__ import annotations


class Plain:
    __slots__ = ()

    def _shown(self) -> tuple[str, ...]:
        return tuple(n for n in type(self).__slots__ if not n.startswith("_"))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._shown())
        return f"{type(self).__name__}({fields})"


class Record(Plain):
    __slots__ = ()
    _compared: tuple[str, ...] = ()  # empty: every slot of the class

    def _fields(self) -> tuple[str, ...]:
        cls = type(self)
        return cls._compared or cls.__slots__

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self._fields())

    _shown = _fields

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]


class Value(Record):
    __slots__ = ()

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._values()))


class Frozen(Value):
    __slots__ = ()

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is read-only")
