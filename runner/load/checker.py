"""The semantic checks' shared state: every file's problems, the names in scope, template checks.

A Checker collects the problems of a scenario and of the fragments it includes; register()
validates each file against the schema first (runner.load.schema), so the checks here and in
runner.load.steps / runner.load.build look only at values the schema accepted (Doc.accepted).
Templates are checked with the one `{{ }}` parser, runner.lang.templates.
"""

from __future__ import annotations

from runner.lang.template_size import rendered_size
from runner.lang.templates import MAX_RENDERED, TemplateError, close_matches, parse
from runner.load import schema
from runner.load.yaml_doc import json_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from typing import Any

    from runner.lang.templates import Template
    from runner.load.yaml_doc import Doc, Path_
    from runner.model.scenario import Location

__all__ = ["UNKNOWN_PROTOCOL", "Checker", "Scope", "is_literal"]

UNKNOWN_PROTOCOL = ""  # Scope.protocol of a session whose protocol the schema rejected


def is_literal(v: Any) -> bool:
    """A value with no `{{ }}` in it (known at load time)."""
    if not isinstance(v, str):
        return True
    try:
        return parse(v).is_constant
    except TemplateError:
        return False


class Scope:
    """The names a place in a file can use. protocol: the session's; None in a fragment (any
    session may include it); UNKNOWN_PROTOCOL when the schema rejected it. tainted: names whose known value holds CR or LF;
    chain: (real path, "file:line") of each include on the way; check_undefined: False in a
    fragment checked alone (its includer defines its names). bindings and defaults: what
    Step.bindings and Step.defaults say of the steps here."""

    __slots__ = ("defined", "tainted", "protocol", "via", "bindings", "defaults", "chain", "check_undefined")

    def __init__(
        self,
        defined: set[str],
        tainted: set[str],
        protocol: str | None,
        via: tuple[Location, ...] = (),
        bindings: tuple[Mapping[str, Any], ...] = (),
        defaults: tuple[frozenset[str], ...] = (),
        chain: tuple[tuple[Path, str], ...] = (),
        check_undefined: bool = True,
    ):
        self.defined = defined
        self.tainted = tainted
        self.protocol = protocol
        self.via = via
        self.bindings = bindings
        self.defaults = defaults
        self.chain = chain
        self.check_undefined = check_undefined

    def copy(self) -> Scope:
        return Scope(
            set(self.defined),
            set(self.tainted),
            self.protocol,
            self.via,
            self.bindings,
            self.defaults,
            self.chain,
            self.check_undefined,
        )


class Checker:
    """Problems as (doc order, line, col, text); what the model depends on besides the main
    file (for the model cache): `includes` as (path as joined, resolved path, bytes) and
    `must_exist`, the files that must stay files."""

    def __init__(self, defined: Iterable[str], *, use_cache: bool):
        self.problems: list[tuple[int, int, int, str]] = []
        self.docs: dict[Path, Doc] = {}
        self.order: list[Doc] = []
        self.kinds: dict[Path, str] = {}  # real path -> schema def name
        self.external = set(defined)
        self.use_cache = use_cache
        self.secrets: set[str] = set()
        self.env_refs: dict[str, list[str]] = {}
        self.starttls: list[tuple[Doc, Path_]] = []  # the starttls steps of the session being built
        self.cap_steps: list[tuple[Doc, Path_, dict]] = []  # its steps, for caps_check.check_seen
        self.includes: list[tuple[str, str, bytes]] = []
        # the `idle:` steps' `during` (doc, path, name, the session the step is in): build.py
        # checks each names another session of the file
        self.during: list[tuple[Doc, Path_, str, str | None]] = []
        self.session_name: str | None = None  # the session being built
        self.must_exist: list[str] = []
        self.expanded = 0  # steps and includes expanded so far (runner.load.includes.MAX_STEPS)
        # includes.py: (directory, target) -> resolved path; dependencies recorded; steps a
        # fragment expands to; fragments read to count them, before they are registered
        self.resolved: dict = {}
        self.recorded: set = set()
        self.planned: dict = {}
        self.peeked: dict = {}
        self.sizes: dict[str, int] = {}  # var -> about how long it renders (templates.rendered_size)

    # -- reporting
    def add(self, doc: Doc, path: Path_, message: str, key: bool = False) -> None:
        line, col = doc.pos(path, key)
        self.problems.append((self._order(doc), line, col, doc.msg(path, message, key)))

    def _order(self, doc: Doc) -> int:
        for i, d in enumerate(self.order):
            if d is doc:
                return i
        return len(self.order)

    def register(self, doc: Doc, kind: str) -> None:
        """Take a file in: its YAML problems, then its schema problems (marking what the
        schema rejected), before any semantic check looks at it."""
        if doc.real in self.docs:
            return
        self.docs[doc.real] = doc
        self.order.append(doc)
        self.kinds[doc.real] = kind
        n = self._order(doc)
        for line, col, text in doc.problems:
            self.problems.append((n, line, col, f"{doc.display}:{line}:{col}: {text}"))
        for line, col, text in schema.check(doc, kind, use_cache=self.use_cache):
            self.problems.append((n, line, col, text))

    def problem_texts(self) -> list[str]:
        """Every problem once, in file order, then line and column."""
        seen: dict[str, None] = {}
        for _, _, _, text in sorted(self.problems, key=lambda p: (p[0], p[1], p[2])):
            seen.setdefault(text)
        return list(seen)

    # -- templates
    def template(
        self, doc: Doc, path: Path_, source: Any, scope: Scope, *, in_c: bool = False
    ) -> Template | None:
        """Check one value that may hold templates: syntax, every required name defined (env
        refs are recorded), and in a C line no name whose value holds a line break.
        -> the Template (None for a non-string or a syntax error)."""
        if not isinstance(source, str):
            return None  # a number or true/false in vars
        try:
            t = parse(source)
        except TemplateError as e:
            self.add(doc, path, f"template error: {e}")
            return None
        if t.sends_literal:
            self._literal_place(doc, path, scope, in_c)
        loc = f"{doc.display}:{doc.pos(path)[0]}: {json_path(path)}"
        for name in sorted(t.required_names()):
            if name.startswith("env."):
                refs = self.env_refs.setdefault(name[4:], [])
                if loc not in refs:
                    refs.append(loc)
            elif name.startswith("caps."):
                continue  # the session's capability list: known when the server sends it
            elif scope.check_undefined and name not in scope.defined:
                close = close_matches(name, sorted(scope.defined), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.add(
                    doc,
                    path,
                    f"undefined variable '{name}'{hint}: define it in vars, with --var or --vars-file, "
                    "or capture it in an earlier step",
                )
        if in_c:
            for e in t.expressions:
                bad = (
                    [] if e.encodes or e.sends_literal else sorted(n for n in e.names() if n in scope.tainted)
                )
                if bad:
                    self.add(
                        doc,
                        path,
                        f"variable '{bad[0]}' holds a line break (CR or LF), which would inject a command "
                        "into this C line; only raw, body and body_file may carry line breaks",
                    )
        return t

    def _literal_place(self, doc: Doc, path: Path_, scope: Scope, in_c: bool) -> None:
        """`| literal` is sent as an IMAP literal: only in a `C:` line of an IMAP session."""
        if not in_c:
            self.add(doc, path, "'| literal' is only for a C: line (an IMAP literal the runner counts)")
        elif scope.protocol not in (None, "imap", UNKNOWN_PROTOCOL):
            self.add(doc, path, f"'| literal' is IMAP's (this session is {scope.protocol})")

    def taints(self, source: Any, scope: Scope) -> bool:
        """Would this (var) value hold CR or LF, as far as we know? (base64 never does.)"""
        if not isinstance(source, str):
            return False
        try:
            t = parse(source)
        except TemplateError:
            return False
        literal = t.literal_text()
        if "\r" in literal or "\n" in literal:
            return True
        return any(not e.encodes and not scope.tainted.isdisjoint(e.names()) for e in t.expressions)

    # -- vars and secrets
    def vars_block(self, doc: Doc, path: Path_, values: Any, scope: Scope, *, sequential: bool) -> dict:
        """Check a `vars:` mapping. sequential: each value sees the ones before (top-level vars)."""
        if values is None or path in doc.rejected:
            return {}
        out = {}
        new_defined, new_tainted = set(), set()
        for name, value in values.items():
            if doc.accepted(path + (name,)):
                t = self.template(doc, path + (name,), value, scope)
                if t is not None and sequential:  # each var sees the ones before: a bomb shows
                    size = self.sizes[name] = rendered_size(t, self.sizes)
                    if size > MAX_RENDERED:
                        self.add(
                            doc,
                            path + (name,),
                            f"renders to about {size:,} characters, more than the {MAX_RENDERED >> 20} MiB "
                            "a template may (does each variable repeat the one before?)",
                        )
                        self.sizes[name] = 0  # reported once, not again in every var built on it
            else:  # the schema reported the value; the name is still defined, so its uses are not
                value = ""  # reported as undefined too (no model is built from a file with problems)
            tainted = self.taints(value, scope)
            out[name] = value
            if sequential:
                scope.defined.add(name)
                (scope.tainted.add if tainted else scope.tainted.discard)(name)
            else:
                new_defined.add(name)
                if tainted:
                    new_tainted.add(name)
        if not sequential:
            scope.defined |= new_defined
            scope.tainted |= new_tainted
        return out

    def secrets_block(self, doc: Doc, path: Path_, values: Any, scope: Scope, bound: set[str]) -> None:
        if values is None or path in doc.rejected:
            return
        for i, name in enumerate(values):
            if not doc.accepted(path + (i,)):
                continue  # the schema reported it
            if name.startswith("env."):  # the schema checked the name after it
                self.secrets.add(name)
                continue
            if name not in bound and name not in self.external and name not in scope.defined:
                self.add(
                    doc,
                    path + (i,),
                    f"secret '{name}' is not a defined variable (define it in vars or with --var)",
                )
            self.secrets.add(name)
