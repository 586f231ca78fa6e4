"""`{{ ... }}` templates in scenario strings.

Syntax: `{{ expr }}` where

    expr    = operand ( '|' filter )*
    operand = NAME | 'env.' NAME | STRING | FUNC '(' arg ',' arg ')'
    arg     = NAME | 'env.' NAME | STRING
    filter  = 'b64' | 'b64decode' | 'lower' | 'upper' | 'default' '(' STRING ')'
    NAME    = [A-Za-z_][A-Za-z0-9_]*
    STRING  = '...' | "..."   (a backslash escapes the next character)
    FUNC    = 'auth_plain' | 'xoauth2'

Text outside `{{ }}` is literal. Nothing else is evaluated: no attribute access but `env.`,
no arithmetic, no code. Built-in names: `run_id` (unique per mailrun invocation) and `now`
(RFC 5322 date). Variables defined by the scenario shadow the built-ins.

Secrets: a value that comes from a secret (a name listed in the scenario's `secrets`, a
`Secret`, or an env ref listed as 'env.NAME') stays secret through every filter and function;
each derived value is registered with the context's Redactor, and `Rendered.display` shows
`****` in place of it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re

from runner.errors import ExitClass, MailrunError
from runner.lang.secrets import MASK, Redactor, Secret
from runner.records import Frozen, Record, Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any


def _close_matches(word: str, possibilities, n: int) -> list[str]:
    import difflib  # only for a "did you mean" hint in an error message

    return difflib.get_close_matches(word, possibilities, n=n)


__all__ = [
    "BUILTINS",
    "FILTERS",
    "FUNCTIONS",
    "Context",
    "Rendered",
    "Template",
    "TemplateError",
    "parse",
    "render",
]

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_FULL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
BUILTINS = frozenset({"run_id", "now"})
FILTERS = ("b64", "b64decode", "default", "lower", "upper")
FUNCTIONS = {"auth_plain": 2, "xoauth2": 2}


class TemplateError(MailrunError):
    """A template is malformed, or names something undefined. The message never holds a
    secret's value. `column` (1-based, within the template source) is set for syntax errors."""

    exit_class = ExitClass.INVALID

    def __init__(self, message: str, *, column: int | None = None):
        super().__init__(message)
        self.column = column


# --- syntax tree ---------------------------------------------------------------------
# Plain record classes (runner.records), compared and hashed by value.


class _Name(Value):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name  # 'x' or 'env.X'

    @property
    def is_env(self) -> bool:
        return self.name.startswith("env.")


class _Str(Value):
    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value


class _Call(Value):
    __slots__ = ("func", "args")

    def __init__(self, func: str, args: tuple[_Name | _Str, ...]):
        self.func = func
        self.args = args


class _Filter(Value):
    __slots__ = ("name", "arg")

    def __init__(self, name: str, arg: str | None = None):
        self.name = name
        self.arg = arg


class _Expr(Value):
    __slots__ = ("operand", "filters", "start", "end")

    def __init__(self, operand: _Name | _Str | _Call, filters: tuple[_Filter, ...], start: int, end: int):
        self.operand = operand
        self.filters = filters
        self.start = start  # offset of '{{' in the source
        self.end = end  # offset just after '}}'

    @property
    def has_default(self) -> bool:
        return any(f.name == "default" for f in self.filters)

    def names(self) -> list[str]:
        op = self.operand
        if isinstance(op, _Name):
            return [op.name]
        if isinstance(op, _Call):
            return [a.name for a in op.args if isinstance(a, _Name)]
        return []


# --- parser ----------------------------------------------------------------------------

_PUNCT = "|(),."


def _quote_expr(source: str, start: int, end: int) -> str:
    text = source[start:end]
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _tokenize(source: str, pos: int, open_at: int) -> tuple[list[tuple[str, str, int]], int]:
    """Tokens of the expression starting at `pos` (just after '{{'), and the offset just
    after the closing '}}'. Token kinds: 'name', 'str', and the punctuation itself."""
    tokens: list[tuple[str, str, int]] = []
    n = len(source)
    i = pos
    while True:
        while i < n and source[i].isspace():
            i += 1
        if i >= n:
            raise TemplateError(
                f"unclosed '{{{{' at column {open_at + 1} (no matching '}}}}')", column=open_at + 1
            )
        if source.startswith("}}", i):
            return tokens, i + 2
        c = source[i]
        if c in "'\"":
            quote = c
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise TemplateError(
                        f"unterminated string starting at column {i + 1} (missing closing {quote})",
                        column=i + 1,
                    )
                ch = source[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(source[j + 1])
                    j += 2
                    continue
                if ch == quote:
                    break
                buf.append(ch)
                j += 1
            tokens.append(("str", "".join(buf), i))
            i = j + 1
            continue
        m = NAME_RE.match(source, i)
        if m:
            tokens.append(("name", m.group(), i))
            i = m.end()
            continue
        if c in _PUNCT:
            tokens.append((c, c, i))
            i += 1
            continue
        if c == "}":
            raise TemplateError(
                f"unexpected '}}' at column {i + 1} (a template ends with '}}}}')", column=i + 1
            )
        raise TemplateError(
            f"unexpected character {c!r} at column {i + 1} in "
            f"'{_quote_expr(source, open_at, min(n, i + 20))}'",
            column=i + 1,
        )


class _ExprParser:
    def __init__(self, source: str, tokens: list[tuple[str, str, int]], start: int, end: int):
        self.source = source
        self.tokens = tokens
        self.i = 0
        self.start = start
        self.end = end

    @property
    def shown(self) -> str:
        return _quote_expr(self.source, self.start, self.end)

    def error(self, message: str, at: int | None = None, hint: str = "") -> TemplateError:
        col = (at if at is not None else self.start) + 1
        hint = f" ({hint})" if hint else ""
        return TemplateError(f"{message} in '{self.shown}' at column {col}{hint}", column=col)

    def peek(self, k: int = 0):
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, kind: str, what: str):
        tok = self.peek()
        if tok is None or tok[0] != kind:
            got = "the end of the expression" if tok is None else repr(tok[1])
            raise self.error(f"expected {what}, got {got}", tok[2] if tok else None)
        return self.take()

    def parse(self) -> _Expr:
        if not self.tokens:
            raise self.error("empty expression")
        operand = self.operand()
        filters = []
        while self.peek() is not None:
            tok = self.take()
            if tok[0] != "|":
                raise self.error(f"unexpected {tok[1]!r} (filters follow '|')", tok[2])
            filters.append(self.filter())
        return _Expr(operand, tuple(filters), self.start, self.end)

    def name_ref(self, tok) -> _Name:
        """tok is a 'name' token just taken: NAME or env.NAME."""
        name = tok[1]
        nxt = self.peek()
        if nxt is not None and nxt[0] == ".":
            self.take()
            attr = self.peek()
            if attr is None or attr[0] != "name":
                raise self.error(f"expected a name after '{name}.'", nxt[2])
            self.take()
            if name != "env":
                raise self.error(
                    f"attribute access '{name}.{attr[1]}' is not supported (only env.NAME)", tok[2]
                )
            if self.peek() is not None and self.peek()[0] == ".":
                raise self.error("attribute access is not supported (only env.NAME)", self.peek()[2])
            return _Name(f"env.{attr[1]}")
        if name == "env":
            raise self.error("'env' needs a variable name: env.NAME", tok[2])
        return _Name(name)

    def operand(self):
        tok = self.take()
        kind, val, at = tok
        if kind == "str":
            return _Str(val)
        if kind != "name":
            raise self.error(f"expected a name, a quoted string or a function call, got {val!r}", at)
        nxt = self.peek()
        if nxt is not None and nxt[0] == "(":
            if val not in FUNCTIONS:
                known = ", ".join(sorted(FUNCTIONS))
                if val in FILTERS:
                    raise self.error(f"'{val}' is a filter: write `value | {val}`", at)
                raise self.error(f"unknown function '{val}'", at, f"known: {known}")
            self.take()
            args = []
            if self.peek() is not None and self.peek()[0] == ")":
                self.take()
            else:
                while True:
                    a = self.peek()
                    if a is None:
                        raise self.error(f"unclosed '(' in call of {val}()", nxt[2])
                    if a[0] == "str":
                        self.take()
                        args.append(_Str(a[1]))
                    elif a[0] == "name":
                        self.take()
                        if self.peek() is not None and self.peek()[0] == "(":
                            raise self.error(f"nested calls are not supported in {val}()", a[2])
                        args.append(self.name_ref(a))
                    else:
                        raise self.error(
                            f"bad call of {val}(): arguments are names or quoted strings, got {a[1]!r}",
                            a[2],
                        )
                    sep = self.peek()
                    if sep is None:
                        raise self.error(f"unclosed '(' in call of {val}()", nxt[2])
                    self.take()
                    if sep[0] == ")":
                        break
                    if sep[0] != ",":
                        raise self.error(f"bad call of {val}(): expected ',' or ')', got {sep[1]!r}", sep[2])
            want = FUNCTIONS[val]
            if len(args) != want:
                raise self.error(f"bad call: {val}() takes {want} arguments, got {len(args)}", at)
            return _Call(val, tuple(args))
        return self.name_ref(tok)

    def filter(self) -> _Filter:
        tok = self.peek()
        if tok is None or tok[0] != "name":
            got = "nothing" if tok is None else repr(tok[1])
            raise self.error(f"expected a filter name after '|', got {got}", tok[2] if tok else None)
        self.take()
        name = tok[1]
        if name not in FILTERS:
            known = ", ".join(FILTERS)
            close = _close_matches(name, FILTERS, n=1)
            hint = f"known: {known}" + (f"; did you mean '{close[0]}'?" if close else "")
            raise self.error(f"unknown filter '{name}'", tok[2], hint)
        nxt = self.peek()
        has_parens = nxt is not None and nxt[0] == "("
        if name == "default":
            if not has_parens:
                raise self.error('default needs a value: default("x")', tok[2])
            self.take()
            arg = self.expect("str", 'a quoted string, as in default("x")')
            self.expect(")", "')'")
            return _Filter("default", arg[1])
        if has_parens:
            raise self.error(f"filter '{name}' takes no arguments", nxt[2])
        return _Filter(name)


def _parse_parts(source: str) -> tuple[str | _Expr, ...]:
    parts: list[str | _Expr] = []
    pos = 0
    n = len(source)
    while pos < n:
        at = source.find("{{", pos)
        if at == -1:
            parts.append(source[pos:])
            break
        if at > pos:
            parts.append(source[pos:at])
        tokens, end = _tokenize(source, at + 2, at)
        parts.append(_ExprParser(source, tokens, at, end).parse())
        pos = end
    return tuple(parts)


class Template(Frozen):
    """A parsed template. `Template(source)` parses (TemplateError on bad syntax).
    `is_constant`: no `{{ }}` in it (rendering returns the source). Read-only; equal when the
    sources are."""

    __slots__ = ("source", "_parts", "is_constant")
    _compared = ("source",)

    def __init__(self, source: str, _parts: tuple | None = None):
        if not isinstance(source, str):
            raise TypeError(f"a template source is a str, got {type(source).__name__}")
        parts = _parse_parts(source) if _parts is None else _parts
        setattr_ = object.__setattr__
        setattr_(self, "source", source)
        setattr_(self, "_parts", parts)
        setattr_(self, "is_constant", not any(isinstance(p, _Expr) for p in parts))

    @property
    def expressions(self) -> tuple[_Expr, ...]:
        return tuple(p for p in self._parts if isinstance(p, _Expr))

    def spans(self) -> list[tuple[int, int]]:
        """(start, end) offsets of every `{{ ... }}` in the source."""
        return [(e.start, e.end) for e in self.expressions]

    def names(self) -> set[str]:
        """Every referenced name (built-ins included); env refs as 'env.NAME'."""
        out: set[str] = set()
        for e in self.expressions:
            out.update(e.names())
        return out

    def required_names(self) -> set[str]:
        """Names whose absence is an error: those not under a default() filter."""
        out: set[str] = set()
        for e in self.expressions:
            if not e.has_default:
                out.update(e.names())
        return out


@functools.lru_cache(maxsize=4096)
def parse(source: str) -> Template:
    """Parse a template (cached). TemplateError on bad syntax."""
    return Template(source)


# --- rendering -------------------------------------------------------------------------


class Rendered(Record):
    """value: the real text (to send); display: the text with every secret-derived
    substitution replaced by MASK; secret: any part came from a secret."""

    __slots__ = ("value", "display", "secret")

    def __init__(self, value: str, display: str, secret: bool):
        self.value = value
        self.display = display
        self.secret = secret

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
    name where a scope on the way binds it, so the newest capture is what the fragment sees)."""

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
        self._parent: Context | None = None
        self._root: Context = self

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
        if not isinstance(name, str) or not _NAME_FULL.match(name):
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
        if name.startswith("env."):
            key = name[4:]
            close = _close_matches(key, list(self.env), n=1)
            hint = f" (did you mean 'env.{close[0]}'?)" if close else ""
            return TemplateError(f"environment variable '{key}' is not set{hint}")
        close = _close_matches(name, sorted(self._known_names()), n=3)
        hint = ""
        if close:
            hint = " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
        return TemplateError(f"undefined variable '{name}'{hint}")

    def get(self, name: str) -> str | Secret:
        v = self._lookup(name)
        if v is None:
            raise self._undefined_error(name)
        return v

    def has(self, name: str) -> bool:
        return self._lookup(name) is not None

    def child(self, bindings: Mapping[str, Any]) -> Context:
        """An include scope: each binding is rendered in THIS context."""
        values: dict[str, str | Secret] = {}
        for name, raw in bindings.items():
            if not isinstance(name, str) or not _NAME_FULL.match(name):
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
        c._vars = values
        c._parent = self
        c._root = self._root
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
    if isinstance(op, _Str):
        return _Val(op.value, False)
    if isinstance(op, _Name):
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


def _eval(expr: _Expr, ctx: Context) -> _Val:
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
        return Rendered(
            tpl.source, ctx.redactor.redact(tpl.source) if ctx.redactor.active else tpl.source, False
        )
    values: list[str] = []
    display: list[str] = []
    secret = False
    for part in tpl._parts:
        if isinstance(part, str):
            values.append(part)
            display.append(part)
            continue
        v = _eval(part, ctx)
        text = v.text
        if regex:
            text = re.escape(text)
            if v.secret and text != v.text:
                ctx.redactor.add(text)
        values.append(text)
        if v.secret:
            secret = True
            display.append(MASK)
        else:
            display.append(text)
    shown = "".join(display)
    if ctx.redactor.active:
        shown = ctx.redactor.redact(shown)
    return Rendered("".join(values), shown, secret)
