"""Checking a `steps:` list and building its runner.model.scenario.Step records.

A step does one action (C, body, body_file, raw, bdat, sleep, include; S alone reads a reply) and
may carry options (name, timeout, starttls, multiline, tag, capture). The schema has already
checked every value's type (runner.load.schema): a key it rejected is left out of the checks
here (it was reported once, by the schema), the step's other keys are still checked, and a
step is built only when the schema accepted all of it. The names a step captures stay defined,
so later steps are not told they are undefined.
"""

from __future__ import annotations

import re

from runner.lang.pattern_parse import MAPPING_KEYS, parse_pattern, regex_problem
from runner.load.caps_check import expression, time_limits
from runner.load.checker import UNKNOWN_PROTOCOL, is_literal
from runner.load.includes import count_expanded, open_include, within_budget
from runner.model.scenario import Step
from runner.protocols.sasl import MECHANISMS, NEEDS
from runner.protocols.sasl import SUCCESS as AUTH_SUCCESS  # auth's default S:

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runner.lang.patterns import Pattern
    from runner.load.checker import Checker, Scope
    from runner.load.yaml_doc import Doc, Path_
    from runner.model.scenario import Location

__all__ = ["ACTION_KEYS", "steps"]

ACTION_KEYS = ("C", "body", "body_file", "raw", "bdat", "auth", "append", "idle", "sleep", "include")


def steps(
    chk: Checker, doc: Doc, path: Path_, items: Any, scope: Scope, *, in_finally: bool = False
) -> list[Step]:
    out: list[Step] = []
    if items is None or path in doc.rejected:
        return out
    for i, raw in enumerate(items):
        out.extend(_step(chk, doc, path + (i,), raw, scope, in_finally))
    return out


def _step(chk: Checker, doc: Doc, path: Path_, raw: Any, scope: Scope, in_finally: bool) -> list[Step]:
    if path in doc.rejected:  # the step as a whole is wrong, and the schema said how
        return []
    whole = doc.accepted(path)
    if not whole and not any(k in raw for k in (*ACTION_KEYS, "S")):
        return []  # no action, and a key the schema rejected (a typo'd `c:`) says why
    action = _action(chk, doc, path, raw)
    if action is None:
        return []
    # A key the schema rejected is left out of the checks (the schema reported it once), while
    # every other key of the step is still checked; the step is built only when all was accepted.
    if not whole:
        raw = {k: v for k, v in raw.items() if _kept(doc, path + (k,))}
        if action not in raw and action != "read":
            _captures(chk, doc, path, raw, scope)  # its captures stay defined for later steps
            return []
    if not count_expanded(chk, doc, path):
        return []
    loc = doc.loc(path, scope.via)
    if action == "include":
        return _include(chk, doc, path, raw, scope, loc)
    if "vars" in raw:
        chk.add(doc, path + ("vars",), "'vars' in a step goes only with include", key=True)
    if action == "sleep" and set(raw) - {"sleep", "name"}:
        other = sorted(set(raw) - {"sleep", "name"})[0]
        chk.add(doc, path + (other,), f"'{other}' cannot go with sleep (a sleep step only waits)", key=True)
        return []
    kw: dict[str, Any] = {"location": loc, "bindings": scope.bindings, "defaults": scope.defaults}
    ok = _ACTIONS[action](chk, doc, path, raw, scope, kw)
    if "S" in raw:
        kw["expect"] = _pattern(chk, doc, path + ("S",), raw["S"], scope)
        kw["expect_source"] = raw["S"]
        ok = ok and kw["expect"] is not None
    _options(chk, doc, path, raw, scope, kw, in_finally)
    kw["capture"] = _captures(chk, doc, path, raw, scope)
    chk.cap_steps.append((doc, path, kw))  # for runner.load.caps_check.check_seen
    return [Step(**kw)] if ok and whole else []


def _kept(doc: Doc, path: Path_) -> bool:
    """Is a step's key still checked? When the schema accepted its value, or it is a mapping of
    names (vars, capture) whose entries are checked one by one."""
    return doc.accepted(path) or (path[-1] in ("vars", "capture") and path not in doc.rejected)


def _action(chk: Checker, doc: Doc, path: Path_, raw: dict) -> str | None:
    """The step's one action ("read" for S alone), or None after reporting why there is none."""
    actions = [k for k in ACTION_KEYS if k in raw]
    if len(actions) > 1:
        chk.add(
            doc,
            path + (actions[1],),
            f"a step does exactly one of C, body, body_file, raw, bdat, auth, append, idle, sleep or include; "
            f"this one has {' and '.join(actions)} (split it into separate steps)",
            key=True,
        )
        return None
    if actions:
        return actions[0]
    if "S" in raw:
        return "read"
    chk.add(
        doc,
        path,
        "a step needs one of C, S, body, body_file, raw, bdat, auth, append, idle, sleep or include",
    )
    return None


def _include(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, loc: Location) -> list[Step]:
    extra = sorted(set(raw) - {"include", "vars"})
    if extra:
        chk.add(doc, path + (extra[0],), f"'{extra[0]}' cannot go with include (only vars can)", key=True)
        return []
    opened = open_include(chk, doc, path, raw, scope, loc)
    if opened is None:
        return []
    frag, inner = opened
    if not within_budget(chk, doc, path, frag):
        return []
    before = set(inner.defined)
    out = steps(chk, frag, ("steps",), frag.data.get("steps"), inner)
    new = inner.defined - before
    scope.defined |= new  # captures survive the fragment
    scope.tainted -= new
    return out


# -- one function per action: fill kw, -> False when the step cannot be built


def _send(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    text = raw["C"]
    kw.update(action="send", text=text)
    ok = "\r" not in text and "\n" not in text
    if not ok:
        chk.add(
            doc,
            path + ("C",),
            "a C line cannot hold a line break (CR or LF): it would send two commands; "
            "use one step per line, or raw: for exact bytes",
        )
    chk.template(doc, path + ("C",), text, scope, in_c=True)
    return ok


def _body(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    chk.template(doc, path + ("body",), raw["body"], scope)
    kw.update(action="body", text=raw["body"])
    return True


def _body_file(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    kw.update(action="body_file", path=doc.base_dir / raw["body_file"])
    return _message_file(chk, doc, path + ("body_file",), raw["body_file"])


def _message_file(chk: Checker, doc: Doc, path: Path_, bf: Any) -> bool:
    """A body_file (of a body_file: or bdat: step): a literal path to an existing file."""
    if not is_literal(bf):
        chk.add(doc, path, "body_file is a path, not a template")
        return False
    p = doc.base_dir / bf
    if not p.is_file():
        chk.add(doc, path, f"file {bf!r} not found (relative to {doc.display})")
        return False
    chk.must_exist.append(str(p))
    return True


def _bdat(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    """`bdat: {body | body_file, chunk}`: SMTP's CHUNKING (RFC 3030)."""
    spec, where = raw["bdat"], path + ("bdat",)
    if scope.protocol and scope.protocol not in ("smtp", "lmtp", UNKNOWN_PROTOCOL):
        chk.add(doc, where, f"bdat is SMTP's (this session is {scope.protocol})", key=True)
        return False
    given = [k for k in ("body", "body_file") if k in spec]
    if len(given) != 1:
        chk.add(doc, where, "bdat needs exactly one of body or body_file")
        return False
    kw.update(action="bdat", chunk=spec.get("chunk"))
    if given == ["body"]:
        chk.template(doc, where + ("body",), spec["body"], scope)
        kw["text"] = spec["body"]
        return True
    kw["path"] = doc.base_dir / spec["body_file"]
    return _message_file(chk, doc, where + ("body_file",), spec["body_file"])


def _raw(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    r = raw["raw"]
    if isinstance(r, bytes):  # YAML !!binary
        kw.update(action="raw", data=r)
    else:
        chk.template(doc, path + ("raw",), r, scope)
        kw.update(action="raw", text=r)
    return True


def _auth(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    """`auth: {mechanism, user, password | token, authzid, initial_response}`: a SASL exchange;
    without `S:` it expects the protocol's success."""
    spec, where = dict(raw["auth"]), path + ("auth",)
    if scope.protocol and scope.protocol not in (*AUTH_SUCCESS, UNKNOWN_PROTOCOL):
        chk.add(
            doc, where, f"auth is for smtp, lmtp, pop3 and imap (this session is {scope.protocol})", key=True
        )
        return False
    mechanism = str(spec.get("mechanism", "")).upper()
    if mechanism not in MECHANISMS:
        chk.add(
            doc,
            where + ("mechanism",),
            f"unknown SASL mechanism {spec.get('mechanism')!r} (use {', '.join(MECHANISMS)})",
        )
        return False
    ok = True
    needs = NEEDS[mechanism]
    for key in needs:
        if key not in spec:
            chk.add(doc, where, f"auth with {mechanism} needs {' and '.join(needs)}")
            ok = False
            break
    for key, other in (("password", "token"), ("token", "password")):
        if key in spec and other in needs:
            chk.add(doc, where + (key,), f"{mechanism} takes a {other}, not a {key}", key=True)
            ok = False
    for key in ("user", "password", "token", "authzid"):
        if key in spec:
            chk.template(doc, where + (key,), spec[key], scope)
    spec["mechanism"] = mechanism
    kw.update(action="auth", auth=spec)
    if "S" not in raw and scope.protocol in AUTH_SUCCESS:
        kw["expect_source"] = AUTH_SUCCESS[scope.protocol]
        kw["expect"] = _pattern(chk, doc, path, kw["expect_source"], scope)
    return ok


def _append(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    """`append: {mailbox, flags, body | body_file}`: IMAP APPEND; without `S:` it expects OK."""
    spec, where = dict(raw["append"]), path + ("append",)
    if scope.protocol and scope.protocol not in ("imap", UNKNOWN_PROTOCOL):
        chk.add(doc, where, f"append is IMAP's (this session is {scope.protocol})", key=True)
        return False
    given = [k for k in ("body", "body_file") if k in spec]
    if len(given) != 1:
        chk.add(doc, where, "append needs exactly one of body or body_file")
        return False
    for flag in spec.get("flags", ()):
        if not re.fullmatch(r"\\?[A-Za-z0-9$_.-]+", flag):
            chk.add(doc, where + ("flags",), f"{flag!r} is not an IMAP flag (\\Seen, \\Flagged, $Label, ...)")
            return False
    spec.setdefault("mailbox", "INBOX")
    chk.template(doc, where + ("mailbox",), spec["mailbox"], scope)
    ok = True
    if "body" in spec:
        chk.template(doc, where + ("body",), spec["body"], scope)
    else:
        kw["path"] = doc.base_dir / spec["body_file"]
        ok = _message_file(chk, doc, where + ("body_file",), spec["body_file"])
    kw.update(action="append", mailbox=spec)
    if "S" not in raw and scope.protocol == "imap":
        kw["expect_source"] = "OK"
        kw["expect"] = _pattern(chk, doc, path, "OK", scope)
    return ok


def _idle(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    """`idle: {until, during, timeout}`: IMAP IDLE (runner.engine.idle); `until` is an IMAP
    pattern for the untagged response awaited, `during` another session of this file (checked
    by build.py once all are known), `timeout` the step's; without `S:` DONE expects OK."""
    spec, where = raw["idle"], path + ("idle",)
    if scope.protocol and scope.protocol not in ("imap", UNKNOWN_PROTOCOL):
        chk.add(doc, where, f"idle is IMAP's (this session is {scope.protocol})", key=True)
        return False
    if "timeout" in spec and "timeout" in raw:
        chk.add(doc, path + ("timeout",), "give the timeout once: in idle or on the step", key=True)
        return False
    if "until" not in spec:
        return False  # the schema said it is required
    saved = scope.protocol
    if saved is None:  # a fragment: `until` is read as IMAP's
        scope.protocol = "imap"
    until = _pattern(chk, doc, where + ("until",), spec["until"], scope)
    scope.protocol = saved
    kw.update(action="idle", until=until, until_source=spec["until"], during=spec.get("during"))
    if "during" in spec:
        chk.during.append((doc, where + ("during",), spec["during"], chk.session_name))
    if "timeout" in spec:
        kw["timeout"] = float(spec["timeout"])
    if "S" not in raw and scope.protocol == "imap":
        kw["expect_source"] = "OK"
        kw["expect"] = _pattern(chk, doc, path, "OK", scope)
    return until is not None


def _sleep(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    kw.update(action="sleep", seconds=float(raw["sleep"]))
    return True


def _read(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict) -> bool:
    kw.update(action="read")
    return True


_ACTIONS = {
    "C": _send,
    "body": _body,
    "body_file": _body_file,
    "raw": _raw,
    "bdat": _bdat,
    "auth": _auth,
    "append": _append,
    "idle": _idle,
    "sleep": _sleep,
    "read": _read,
}


# -- what goes with the action


def _pattern(chk: Checker, doc: Doc, path: Path_, value: Any, scope: Scope) -> Pattern | None:
    """The `S:` pattern, parsed for the session's protocol (for every protocol in a fragment,
    which any session may include: the first that accepts it)."""
    if isinstance(value, dict) and len(value) == 1:
        ((k, v),) = value.items()
        if k not in MAPPING_KEYS and isinstance(v, (str, int, float)):
            chk.add(
                doc,
                path,
                f"expected a reply pattern, got a mapping — YAML read '{k}: {v}' as key: value; "
                "quote the whole line",
            )
            return None
    if scope.protocol == UNKNOWN_PROTOCOL:
        return None  # the schema reported the protocol; the pattern's meaning depends on it
    protos = [scope.protocol] if scope.protocol else ["smtp", "pop3", "imap"]
    results = [parse_pattern(value, pr) for pr in protos]
    good = [r for r in results if r[0] is not None and not r[1]]
    if not good:
        for pr in results[0][1]:
            chk.add(doc, path + _subpath(pr.path), pr.message)
        return None
    pat = good[0][0]
    for src in pat.templates():
        chk.template(doc, path, src, scope)
    return pat


def _options(
    chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, kw: dict, in_finally: bool
) -> None:
    if "name" in raw:
        kw["name"] = raw["name"]
    if "timeout" in raw and "timeout" not in kw:
        kw["timeout"] = float(raw["timeout"])
    if raw.get("snapshot") is False:
        kw["snapshot"] = False
    for key in ("requires", "when"):
        if key in raw:
            kw[key] = expression(chk, doc, path + (key,), raw[key])
    time_limits(chk, doc, path, raw, kw, step=True)
    if raw.get("starttls") is True:
        if "S" not in raw:
            chk.add(
                doc,
                path + ("starttls",),
                "starttls: true needs an S: pattern (TLS starts after that reply)",
                key=True,
            )
        if in_finally:
            chk.add(doc, path + ("starttls",), "starttls cannot be used in finally", key=True)
        chk.starttls.append((doc, path))
        kw["starttls"] = True
    for key, proto in (("multiline", "pop3"), ("tag", "imap")):
        if key not in raw:
            continue
        if scope.protocol and scope.protocol != proto:
            chk.add(
                doc,
                path + (key,),
                f"'{key}' is for {proto} only (this session is {scope.protocol})",
                key=True,
            )
        else:
            kw[key] = raw[key]


def _captures(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope) -> dict[str, str]:
    captures = raw.get("capture")
    if captures is None:
        return {}
    if "S" not in raw:
        chk.add(doc, path + ("capture",), "capture needs an S: pattern (it searches the reply)", key=True)
    for cname, rx in captures.items():
        cpath = path + ("capture", cname)
        if doc.accepted(cpath) and chk.template(doc, cpath, rx, scope) is not None:
            problem = regex_problem(rx)
            if problem is not None:
                chk.add(doc, cpath, problem)
    _define_captures(scope, captures)
    return dict(captures)


def _define_captures(scope: Scope, captures: dict) -> None:
    for cname in captures:
        scope.defined.add(cname)
        scope.tainted.discard(cname)


_SUB_RE = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def _subpath(text: str) -> Path_:
    """'.not.re' / '[1]' (a pattern Problem's path) -> ('not', 're') / (1,)"""
    return tuple(m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _SUB_RE.finditer(text))
