"""The full load of one file: YAML -> schema -> semantic checks -> the model.

Every problem is reported as `file:line:col: path: message`, and all problems of a file (and
of the fragments it includes) are reported together in one ScenarioError. Each file is
validated against the schema when it is taken in (Checker.register), before any semantic
check; the checks skip what the schema rejected, so a value is reported once, by the schema,
and the checks can rely on its types. The model is built only when there is no problem.

runner.load.api calls load_file after a model-cache miss; a clean model is written to the
cache unless its vars give a secret a literal value (runner.load.cacheable).
"""

from __future__ import annotations

from pathlib import Path

from runner.cache import store as model_cache
from runner.errors import ScenarioError
from runner.lang.templates import BUILTINS
from runner.lang.tls_expect import CONNECT_NAMES, parse_check
from runner.load.cacheable import holds_secret_literal
from runner.load.caps_check import check_seen, no_caps, session_options
from runner.load.checker import UNKNOWN_PROTOCOL, Checker, Scope, is_literal
from runner.load.steps import steps
from runner.load.yaml_doc import is_fragment_data, read_doc
from runner.model.config import PATH_KEYS, check_connect, starttls_problem
from runner.model.scenario import (
    ConnectSpec,
    Location,
    Retry,
    Scenario,
    Session,
    SnapshotSpec,
    TLSCheck,
    TLSExpect,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from runner.load.yaml_doc import Doc, Path_

__all__ = ["check_file", "load_file", "load_scenario_file", "validate_fragment"]


def load_scenario_file(path: str | Path, defined: list[str], use_cache: bool) -> Scenario:
    """The full load; with use_cache, the schema step may be skipped for bytes that validated
    before and the clean model is stored (when it may be written)."""
    chk, scenario, doc = load_file(path, defined, use_cache)
    _raise_problems(chk)
    if scenario is None:  # pragma: no cover - every path to None adds a problem
        raise ScenarioError(f"{doc.display}:1:1: invalid scenario")
    if use_cache and not holds_secret_literal(scenario):
        model_cache.store(
            scenario,
            display=doc.display,
            raw=doc.raw,
            defined=defined,
            includes=chk.includes,
            files=chk.must_exist,
        )
    return scenario


def validate_fragment(path: str | Path, defined: Iterable[str]) -> None:
    """Check a fragment by itself (its includer defines its names): ScenarioError on problems."""
    chk, _, _ = load_file(path, defined, use_cache=False, allow_fragment=True)
    _raise_problems(chk)


def check_file(path: str | Path, defined: Iterable[str]) -> tuple[Scenario | None, bool, list[str]]:
    """`mailrun validate`: check a scenario, or a fragment by itself, reading the file once (so
    a pipe is taken as a run takes it) -> (the scenario or None, whether it is a fragment, its
    problems). ScenarioError only for an unreadable file or broken YAML."""
    chk, scenario, doc = load_file(path, defined, use_cache=False, allow_fragment=True)
    return (None if chk.problems else scenario), is_fragment_data(doc.data), chk.problem_texts()


def load_file(
    path: str | Path, defined: Iterable[str], use_cache: bool, *, allow_fragment: bool = False
) -> tuple[Checker, Scenario | None, Doc]:
    """-> (checker with every problem, the scenario or None, the main doc). Raises
    ScenarioError for fatal problems (unreadable file, YAML syntax)."""
    doc = read_doc(path, pipe_ok=True)  # `mailrun <(generate)`: the one file that may be a pipe
    data = doc.data
    fragment = is_fragment_data(data)
    if fragment and not allow_fragment:
        raise ScenarioError(
            f"{doc.display}:1:1: this is a fragment (only steps, vars, secrets, description): "
            "include it from a scenario with `include:`; it cannot run by itself"
        )
    chk = Checker(defined, use_cache=use_cache)
    chk.register(doc, "fragment" if fragment else ("sessions_scenario" if "sessions" in data else "scenario"))
    base = Scope(defined=set(BUILTINS) | chk.external, tainted=set(), protocol=None)
    if not fragment:
        return chk, _build_scenario(chk, doc, base), doc
    base.check_undefined = False
    defaults = chk.vars_block(doc, ("vars",), data.get("vars"), base, sequential=False)
    chk.secrets_block(doc, ("secrets",), data.get("secrets"), base, set(defaults))
    steps(chk, doc, ("steps",), data.get("steps"), base)
    return chk, None, doc


def _raise_problems(chk: Checker) -> None:
    if chk.problems:
        raise ScenarioError(chk.problem_texts())


def _build_scenario(chk: Checker, doc: Doc, scope: Scope) -> Scenario | None:
    data = doc.data
    vars_ = chk.vars_block(doc, ("vars",), data.get("vars"), scope, sequential=True)
    no_caps(chk, doc, ("vars",), vars_, "vars")
    chk.secrets_block(doc, ("secrets",), data.get("secrets"), scope, set(vars_))
    if "sessions" not in data:
        sessions = [_build_session(chk, doc, (), data, scope, data.get("protocol", "smtp"))]
    elif ("sessions",) in doc.rejected:
        sessions = []
    else:
        outer, _ = session_options(chk, doc, (), data)  # the scenario's requires and limits
        sessions = [
            _build_session(chk, doc, ("sessions", i), s, scope, s.get("protocol"), outer)
            for i, s in enumerate(data["sessions"])
            if ("sessions", i) not in doc.rejected
        ]
    _check_during(chk, [s.name for s in sessions if s is not None])
    snapshot = _snapshot_spec(chk, doc, data.get("snapshot"))
    if chk.problems:
        return None
    return Scenario(
        path=Path(doc.display),
        name=data["name"],
        sessions=tuple(sessions),
        description=data.get("description"),
        tags=tuple(data.get("tags", ())),
        vars=dict(vars_),
        secrets=frozenset(chk.secrets),
        env_refs={k: tuple(v) for k, v in chk.env_refs.items()},
        location=doc.loc(()),
        snapshot=snapshot,
    )


def _check_during(chk: Checker, names: list[str]) -> None:
    """Each `idle:` step's `during` names another session of this file (runner.engine.idle
    plays it there, and the engine not again in the sequence), and one played so plays none
    itself (no session could start the chain)."""
    named = {name for _doc, _path, name, _own in chk.during}
    for doc, path, name, own in chk.during:
        if own in named and name != own:
            chk.add(
                doc, path, f"session {own!r} is played during another's idle step; it cannot play one itself"
            )
        elif name == own:
            chk.add(doc, path, f"during names the session this idle step is in ({name!r}); name another one")
        elif name not in names:
            known = ", ".join(repr(n) for n in names if n != own) or "none"
            chk.add(doc, path, f"during: no session {name!r} in this file (other sessions: {known})")


def _snapshot_spec(chk: Checker, doc: Doc, raw: dict | None) -> SnapshotSpec | None:
    """`snapshot: {ignore: [REGEX...], rules: {NAME: off}}`: each regex compiles, each name is a
    built-in rule (runner.snapshot.rules, with a did-you-mean)."""
    if raw is None or not doc.accepted(("snapshot",)):
        return None
    from runner.snapshot.rules import ignore_problem, unknown_rule_problem

    for i, rx in enumerate(raw.get("ignore", ())):
        problem = ignore_problem(rx)
        if problem is not None:
            chk.add(doc, ("snapshot", "ignore", i), problem)
    for name in raw.get("rules", {}):
        problem = unknown_rule_problem(name)
        if problem is not None:
            chk.add(doc, ("snapshot", "rules", name), problem, key=True)
    off = tuple(n for n, v in raw.get("rules", {}).items() if v in ("off", False))
    return SnapshotSpec(ignore=tuple(raw.get("ignore", ())), off=off)


def _build_session(
    chk: Checker,
    doc: Doc,
    path: Path_,
    raw: dict,
    scope: Scope,
    protocol: str | None,
    outer: dict | None = None,
):
    """Check one session (the file itself when there is no `sessions:`); -> its Session, or
    None when the file has problems."""
    if path + ("protocol",) in doc.rejected:
        scope.protocol = UNKNOWN_PROTOCOL  # S: patterns are not checked against a guess
    else:
        scope.protocol = protocol  # None: a sessions item without one (the schema said so)
    chk.starttls = []
    chk.cap_steps = []
    chk.session_name = raw.get("name")
    cpath = path + ("connect",)
    connect = None if cpath in doc.rejected else raw.get("connect")
    tls_expect = _tls_expect(chk, doc, path + ("tls_expect",), raw, scope)
    if connect is not None:
        _check_connect(chk, doc, cpath, connect, scope, tls_expect is not None)
        no_caps(chk, doc, cpath, connect, "connect")
    body = steps(chk, doc, path + ("steps",), raw.get("steps"), scope)
    finally_steps = steps(chk, doc, path + ("finally",), raw.get("finally"), scope, in_finally=True)
    if connect is not None:
        _check_starttls(chk, doc, cpath, connect)
    options, requires_at = session_options(chk, doc, path, raw, outer)
    if not check_seen(chk, scope.protocol, chk.cap_steps, requires_at) and requires_at is None:
        options["requires"] = ()  # the scenario's requires: for the sessions that read a list
    if chk.problems:
        return None
    r = raw.get("retry")
    return Session(
        name=raw["name"],
        protocol=scope.protocol,  # type: ignore[arg-type]
        connect=ConnectSpec(
            values=dict(connect),
            base_dir=doc.base_dir,
            location=doc.loc(cpath),
            key_locations={k: doc.loc(cpath + (k,)) for k in connect},
        ),
        steps=tuple(body),
        finally_steps=tuple(finally_steps),
        retry=None
        if r is None
        else Retry(attempts=r.get("attempts", 1), interval=float(r.get("interval", 0.0))),
        location=doc.loc(path),
        tls_expect=tls_expect,
        **options,
    )


def _tls_expect(chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope) -> TLSExpect | None:
    """A session's `tls_expect:` parsed (runner.lang.tls_expect); `name` is a template that may
    also use the session's connect values (connect.host)."""
    values = raw.get("tls_expect")
    if values is None or path in doc.rejected:
        return None
    checks = []
    for key, value in values.items():
        if not doc.accepted(path + (key,)):
            continue  # the schema reported it
        if key == "name":
            named = scope.copy()
            named.defined.update(CONNECT_NAMES)
            chk.template(doc, path + (key,), value, named)
        try:
            op, wanted = parse_check(key, value)
        except ValueError as e:
            chk.add(doc, path + (key,), str(e))
            continue
        checks.append(TLSCheck(key, op, wanted, value, doc.loc(path + (key,))))
    line, col = doc.pos(path, key=True)  # where `tls_expect:` is written
    return TLSExpect(tuple(checks), Location(doc.display, line, col))


def _check_connect(
    chk: Checker, doc: Doc, cpath: Path_, connect: dict, scope: Scope, tls_expect: bool = False
) -> None:
    """Templates in every value; the literal values through the connect rules of
    runner.model.config (which check the rendered values again at run time)."""
    literal = {}
    for k, v in connect.items():
        if doc.accepted(cpath + (k,)):
            for sub, value in v.items() if isinstance(v, dict) else ((None, v),):  # proxy: a mapping
                chk.template(doc, cpath + ((k, sub) if sub else (k,)), value, scope)
            if isinstance(v, dict) or is_literal(v):
                literal[k] = v
    if not scope.protocol:
        return  # the schema reported the protocol
    out, found = check_connect(
        literal,
        scope.protocol,
        doc.base_dir,
        keys=set(connect),
        relative=set(literal),
        base_display=doc.display,
        tls_expect=tls_expect,
    )
    for key, message in found:
        chk.add(
            doc,
            cpath[:-1] + (key,) if key == "tls_expect" else cpath + (key,),
            message,
            key=key == "tls_expect",
        )
    bad = {key for key, _ in found}
    chk.must_exist.extend(str(out[k]) for k in PATH_KEYS if out.get(k) is not None and k not in bad)


def _check_starttls(chk: Checker, doc: Doc, cpath: Path_, connect: dict) -> None:
    """starttls: true with tls: starttls, and on exactly one step of the session."""
    tls = connect.get("tls", "none")
    if doc.accepted(cpath + ("tls",)) and is_literal(tls):
        mismatch = starttls_problem(tls, bool(chk.starttls))
        if mismatch is not None and mismatch[0] == "tls":
            chk.add(doc, cpath + ("tls",), mismatch[1])
        elif mismatch is not None:
            for d, p in chk.starttls:
                chk.add(d, p + ("starttls",), mismatch[1], key=True)
    first = chk.starttls[0] if chk.starttls else None
    for d, p in chk.starttls[1:]:
        chk.add(
            d,
            p + ("starttls",),
            f"only one step per session may have starttls: true (the first is at "
            f"{first[0].display}:{first[0].pos(first[1])[0]})",
            key=True,
        )
