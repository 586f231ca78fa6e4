"""Rendering `{{ ... }}` templates (parsed by runner.lang.templates) against a Context.

Secrets: a value that comes from a secret (a name listed in the scenario's `secrets`, a
`Secret`, or an env ref listed as 'env.NAME') stays secret through every filter and function;
each derived value is registered with the context's Redactor, and `Rendered.display` shows
`****` in place of it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from runner.lang.secrets import MASK, Redactor, Secret
from runner.lang.templates import (
    BUILTINS,
    MAX_RENDERED,
    NAME_FULL,
    Expr,
    Name,
    Str,
    Template,
    TemplateError,
    close_matches,
    parse,
)
from runner.records import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

__all__ = ["Context", "Rendered", "render"]


class Rendered(Record):
    """value: the real text (to send); display: the text with every secret-derived
    substitution, and every substituted value that holds a secret's value, replaced by MASK,
    exactly there (the literal text is shown as written, so a one-character password does
    not mask every such character); secret: any part came from a secret; pieces (None when
    no expression has `| literal`): (value, display) pairs in order, the text of the line and
    the IMAP literals alternating, text first and last (runner.engine.literals sends them)."""

    __slots__ = ("value", "display", "secret", "pieces")

    def __init__(
        self, value: str, display: str, secret: bool, pieces: tuple[tuple[str, str], ...] | None = None
    ):
        self.value = value
        self.display = display
        self.secret = secret
        self.pieces = pieces

    @property
    def outside_literals(self) -> str:
        """The value without its `| literal` values: the command line's own text (what may not
        hold CR or LF; a literal's bytes may)."""
        if self.pieces is None:
            return self.value
        return "".join(v for v, _ in self.pieces[::2])

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:  # never the value: it may hold a secret
        return f"Rendered(display={self.display!r}, secret={self.secret!r})"


class _Undefined:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Val:
    __slots__ = ("text", "secret")

    def __init__(self, text: str, secret: bool):
        self.text = text
        self.secret = secret


def _now() -> str:
    from email.utils import formatdate  # only when a scenario asks for `now`

    return formatdate(localtime=True)


class Context:
    """Variables, captures, env and built-ins that templates are rendered against.

    A child context (include scope) looks names up in its bindings first, then in its parent;
    set() on a child writes to the root so captures survive the fragment (and updates the
    name where a scope on the way binds it, so the newest capture is what the fragment sees).
    `outside` (on the root): the names the run was given from outside the file (--var,
    --vars-file, a --matrix provider), which a fragment's own defaults do not bind over."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        redactor: Redactor | None = None,
        run_id: str | None = None,
    ):
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.secret_names: frozenset[str] = frozenset(secrets)
        self.redactor: Redactor = redactor if redactor is not None else Redactor()
        self.run_id: str = run_id if run_id is not None else os.urandom(6).hex()
        self._vars: dict[str, str | Secret] = {}
        self.outside: frozenset[str] = frozenset()
        self._parent: Context | None = None
        self._root: Context = self
        #: the running session's capability list (runner.protocols.caps), None before one is
        #: seen; `caps.NAME` reads it (the engine sets it on the root: runner.engine.caps)
        self.caps: Mapping[str, str] | None = None

    # --- storing ---
    def _store_value(self, name: str, value: str | Secret) -> str | Secret:
        if isinstance(value, Secret):
            self.redactor.add(value.reveal())
            return value
        if not isinstance(value, str):
            raise TypeError(f"a variable's value is a str or Secret, got {type(value).__name__}")
        if name in self.secret_names:
            self.redactor.add(value)
            return Secret(value)
        return value

    def set(self, name: str, value: str | Secret) -> None:
        if not isinstance(name, str) or not NAME_FULL.match(name):
            raise TemplateError(f"invalid variable name {name!r} (want [A-Za-z_][A-Za-z0-9_]*)")
        value = self._store_value(name, value)
        scope: Context | None = self
        while scope is not None and scope is not self._root:
            if name in scope._vars:
                scope._vars[name] = value
            scope = scope._parent
        self._root._vars[name] = value

    def define_vars(self, values: Mapping[str, Any]) -> None:
        """Render each value in order (each sees the ones before) and set() it."""
        for name, raw in values.items():
            rendered = self._render_binding(name, raw, "var")
            self.set(name, Secret(rendered.value) if rendered.secret else rendered.value)

    def _render_binding(self, name: str, raw: Any, what: str) -> Rendered:
        if isinstance(raw, Secret):
            return Rendered(raw.reveal(), MASK, True)
        source = _scalar_source(name, raw, what)
        try:
            return render(source, self)
        except TemplateError as e:
            raise TemplateError(f"{what} '{name}': {e}", column=e.column) from None

    # --- looking up ---
    def _lookup(self, name: str) -> str | Secret | None:
        if name.startswith("caps."):
            caps = self._root.caps
            return None if caps is None else caps.get(name[5:].upper())
        if name.startswith("env."):
            key = name[4:]
            v = self.env.get(key)
            if v is None:
                return None
            if name in self.secret_names:
                self.redactor.add(v)
                return Secret(v)
            return v
        scope: Context | None = self
        while scope is not None:
            if name in scope._vars:
                return scope._vars[name]
            scope = scope._parent
        if name == "run_id":
            return self.run_id
        if name == "now":
            return _now()
        return None

    def _known_names(self) -> set[str]:
        out = set(BUILTINS)
        scope: Context | None = self
        while scope is not None:
            out.update(scope._vars)
            scope = scope._parent
        return out

    def _undefined_error(self, name: str) -> TemplateError:
        if name.startswith("caps."):
            if self._root.caps is None:
                return TemplateError(f"'{name}': no capability list seen yet in this session")
            offered = " ".join(sorted(self._root.caps)) or "nothing"
            return TemplateError(f"the server does not offer {name[5:].upper()} (offers {offered})")
        if name.startswith("env."):
            key = name[4:]
            close = close_matches(key, list(self.env), n=1)
            hint = f" (did you mean 'env.{close[0]}'?)" if close else ""
            return TemplateError(f"environment variable '{key}' is not set{hint}")
        close = close_matches(name, sorted(self._known_names()), n=3)
        hint = ""
        if close:
            hint = " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
        return TemplateError(f"undefined variable '{name}'{hint}")

    def get(self, name: str) -> str | Secret:
        v = self._lookup(name)
        if v is None:
            raise self._undefined_error(name)
        return v

    def set_caps(self, caps: Mapping[str, str] | None) -> None:
        """The running session's capability list (None: none seen), for every scope."""
        self._root.caps = caps

    def has(self, name: str) -> bool:
        return self._lookup(name) is not None

    def child(self, bindings: Mapping[str, Any], defaults: Iterable[str] = ()) -> Context:
        """An include scope: each binding is rendered in THIS context, except a name of
        `defaults` (a fragment's own default) that the run was given from outside: that name
        is left to the scopes above, where the outside value is."""
        values: dict[str, str | Secret] = {}
        skip = self._root.outside.intersection(defaults)
        for name, raw in bindings.items():
            if name in skip:
                continue
            if not isinstance(name, str) or not NAME_FULL.match(name):
                raise TemplateError(f"invalid variable name {name!r} (want [A-Za-z_][A-Za-z0-9_]*)")
            rendered = self._render_binding(name, raw, "include var")
            values[name] = self._store_value(
                name, Secret(rendered.value) if rendered.secret else rendered.value
            )
        c = Context.__new__(Context)
        c.env = self.env
        c.secret_names = self.secret_names
        c.redactor = self.redactor
        c.run_id = self.run_id
        c.outside = self._root.outside
        c._vars = values
        c._parent = self
        c._root = self._root
        return c

    def with_values(self, values: Mapping[str, str]) -> Context:
        """A child context where these names (dotted ones too: 'connect.host') have these plain
        values, taken as they are (not templates, not secrets)."""
        c = self.child({})
        c._vars.update(values)
        return c

    def __repr__(self) -> str:
        return f"<Context names={sorted(self._known_names())}>"


def _scalar_source(name: str, raw: Any, what: str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    if raw is None:
        raise TemplateError(f"{what} '{name}' has no value")
    raise TemplateError(f"{what} '{name}' must be a string or a number, got {type(raw).__name__}")


def _derive(ctx: Context, text: str, secret: bool) -> _Val:
    if secret:
        ctx.redactor.add(text)
    return _Val(text, secret)


def _b64decode(text: str, secret: bool) -> str:
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        shown = "its input" if secret else f"'{text[:40]}'"
        raise TemplateError(f"b64decode: {shown} is not valid base64") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError("b64decode: the decoded bytes are not UTF-8 text") from None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _eval_operand(op, ctx: Context) -> _Val | _Undefined:
    if isinstance(op, Str):
        return _Val(op.value, False)
    if isinstance(op, Name):
        v = ctx._lookup(op.name)
        if v is None:
            return _Undefined(op.name)
        if isinstance(v, Secret):
            ctx.redactor.add(v.reveal())
            return _Val(v.reveal(), True)
        return _Val(v, False)
    args = []
    for a in op.args:
        v = _eval_operand(a, ctx)
        if isinstance(v, _Undefined):
            return v
        args.append(v)
    secret = any(a.secret for a in args)
    if op.func == "auth_plain":
        text = _b64(f"\0{args[0].text}\0{args[1].text}")
    else:  # xoauth2
        text = _b64(f"user={args[0].text}\x01auth=Bearer {args[1].text}\x01\x01")
    return _derive(ctx, text, secret)


def _eval(expr: Expr, ctx: Context) -> _Val:
    v = _eval_operand(expr.operand, ctx)
    for f in expr.filters:
        if f.name == "default":
            if isinstance(v, _Undefined) or v.text == "":
                v = _Val(f.arg or "", False)
            continue
        if isinstance(v, _Undefined):
            continue
        if f.name == "b64":
            v = _derive(ctx, _b64(v.text), v.secret)
        elif f.name == "b64decode":
            v = _derive(ctx, _b64decode(v.text, v.secret), v.secret)
        elif f.name == "lower":
            v = _derive(ctx, v.text.lower(), v.secret)
        elif f.name == "upper":
            v = _derive(ctx, v.text.upper(), v.secret)
    if isinstance(v, _Undefined):
        raise ctx._undefined_error(v.name)
    return v


def render(template: str | Template, ctx: Context, *, regex: bool = False) -> Rendered:
    """Render against ctx. regex=True re.escape()s every substituted value (not the literal
    text), so a value rendered into a regular expression matches literally."""
    tpl = template if isinstance(template, Template) else parse(template)
    if tpl.is_constant:
        return Rendered(tpl.source, tpl.source, False)
    values: list[str] = []
    display: list[str] = []
    secret = False
    bounds: list[int] = []  # where the `| literal` values are among the parts
    size = 0  # checked as it grows: a template bomb stops at the limit, not at memory's end
    for part in tpl.parts:
        if isinstance(part, str):
            values.append(part)
            display.append(part)
            continue
        v = _eval(part, ctx)
        text = v.text
        size += len(text)
        if size > MAX_RENDERED:
            raise TemplateError(f"renders to more than {MAX_RENDERED >> 20} MiB (the limit of a template)")
        if regex:
            text = re.escape(text)
            if v.secret and text != v.text:
                ctx.redactor.add(text)
        if part.sends_literal:
            bounds.append(len(values))  # (the pieces are made at the end, from these bounds)
        values.append(text)
        if v.secret:
            secret = True
            display.append(MASK)
        elif ctx.redactor.active and ctx.redactor.contains(text):
            display.append(MASK)  # a plain value that holds a secret's (a captured echo)
        else:
            display.append(text)
    return Rendered("".join(values), "".join(display), secret, _pieces(values, display, bounds))


def _pieces(values: list[str], display: list[str], bounds: list[int]) -> tuple[tuple[str, str], ...] | None:
    """Rendered.pieces from the rendered parts and the indices of the `| literal` ones."""
    if not bounds:
        return None
    out: list[tuple[str, str]] = []
    start = 0
    for i in bounds:
        out.append(("".join(values[start:i]), "".join(display[start:i])))
        out.append((values[i], display[i]))
        start = i + 1
    out.append(("".join(values[start:]), "".join(display[start:])))
    return tuple(out)
