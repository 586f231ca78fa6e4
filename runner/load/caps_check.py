"""The load checks of `requires:`, `when:`, `max_time:` and `min_time:` (the schema checked their
types): each capability expression parses (runner.lang.requires), and no step asks about
capabilities before any reply that can carry a capability list was read (which replies can is
protocol knowledge: runner.protocols.caps.may_carry). What can only be known when the session
runs (the IMAP greeting may or may not carry a list) is checked then.
"""

from __future__ import annotations

from runner.lang.requires import parse
from runner.lang.templates import TemplateError
from runner.lang.templates import parse as parse_template
from runner.protocols.caps import may_carry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runner.load.checker import Checker
    from runner.load.yaml_doc import Doc, Path_

__all__ = ["check_seen", "expression", "no_caps", "session_options", "time_limits"]

_FIRST = {
    "smtp": "send EHLO (or LHLO) first",
    "lmtp": "send LHLO first",
    "pop3": "send CAPA first",
    "imap": "read the greeting (or send CAPABILITY) first",
}


def expression(chk: Checker, doc: Doc, path: Path_, value: Any) -> Any:
    """A `requires`/`when` value: the value (as a list) when it parses, else None (reported)."""
    if not doc.accepted(path):
        return None
    req, problems = parse(value)
    for sub, message in problems:
        chk.add(doc, path + sub, message)
    if req is None:
        return None
    return list(value) if isinstance(value, list) else [value]


def time_limits(chk: Checker, doc: Doc, path: Path_, raw: dict, kw: dict, *, step: bool = False) -> None:
    """max_time and min_time of a step, session or scenario into kw (min_time <= max_time; a
    step's need an S: pattern, the reply they time)."""
    for key in ("max_time", "min_time"):
        if key in raw and doc.accepted(path + (key,)):
            kw[key] = float(raw[key])
            if step and "S" not in raw:
                chk.add(doc, path + (key,), f"{key} needs an S: pattern (it times the reply)", key=True)
    if kw.get("min_time") is not None and kw.get("max_time") is not None and kw["min_time"] > kw["max_time"]:
        chk.add(doc, path + ("min_time",), "min_time is above max_time: no reply could pass", key=True)


def check_seen(
    chk: Checker, protocol: str | None, steps: list[tuple[Doc, Path_, dict]], session: tuple | None
) -> bool:
    """steps: (doc, path, the step's fields) of a session's steps then its `finally`, in order;
    session: (doc, path) of the session's own `requires`, or None. -> may any step read a
    capability list?"""
    if not protocol or protocol == "line":
        if protocol == "line":
            for doc, path, kw in steps:
                for key in ("requires", "when"):
                    if kw.get(key) is not None:
                        chk.add(doc, path + (key,), "the line protocol has no capability list", key=True)
            if session is not None:
                chk.add(session[0], session[1], "the line protocol has no capability list", key=True)
        return False
    can_have = False  # may a capability list have been read before the step?
    any_carrier = False
    for doc, path, kw in steps:
        for key in ("requires", "when"):
            if kw.get(key) is not None and not can_have:
                chk.add(
                    doc,
                    path + (key,),
                    f"'{key}' is evaluated before any capability list can have been read "
                    f"(none yet, or the last was dropped by STARTTLS): {_FIRST[protocol]}",
                    key=True,
                )
        if kw.get("expect") is not None and may_carry(
            protocol, kw.get("text") if kw["action"] == "send" else None
        ):
            can_have = any_carrier = True
        if kw.get("starttls"):
            can_have = False  # RFC 3207: the list from before TLS is forgotten
    if session is not None and not any_carrier:
        doc, path = session
        chk.add(
            doc,
            path,
            f"'requires' needs a capability list, but no step can read one: {_FIRST[protocol]}",
            key=True,
        )
    return any_carrier


def session_options(
    chk: Checker, doc: Doc, path: Path_, raw: dict, outer: dict | None = None
) -> tuple[dict, tuple | None]:
    """A session's (or a scenario's) requires, max_time, min_time as Session fields, the
    scenario's (`outer`, from this function) under the session's own: its requires come first,
    its limits are the default. -> (the fields, (doc, path) of its own `requires` or None)."""
    kw: dict = {}
    time_limits(chk, doc, path, raw, kw)
    requires = list(outer["requires"]) if outer else []
    where = None
    if "requires" in raw:
        own = expression(chk, doc, path + ("requires",), raw["requires"])
        requires += own or []
        where = (doc, path + ("requires",))
    out = {
        "requires": tuple(requires),
        "max_time": kw.get("max_time", outer.get("max_time") if outer else None),
        "min_time": kw.get("min_time", outer.get("min_time") if outer else None),
    }
    return out, where


def no_caps(chk: Checker, doc: Doc, path: Path_, values: Any, what: str) -> None:
    """`{{ caps.X }}` where it is rendered before any connection (`vars`, `connect`): a problem."""
    for key, value in (values or {}).items():
        if not isinstance(value, str) or "caps." not in value or not doc.accepted(path + (key,)):
            continue
        try:
            names = parse_template(value).names()
        except TemplateError:
            continue  # reported by the template check
        for name in sorted(n for n in names if n.startswith("caps.")):
            chk.add(
                doc,
                path + (key,),
                f"'{name}' cannot be used in {what}: they are rendered before any connection "
                "(the capability list is known to the steps)",
            )
