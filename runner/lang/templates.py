"""`{{ ... }}` templates in scenario strings.

Syntax: `{{ expr }}` where

    expr    = operand ( '|' filter )*
    operand = NAME | 'env.' NAME | 'caps.' NAME | 'connect.' NAME | STRING | FUNC '(' arg ',' arg ')'
    arg     = NAME | 'env.' NAME | 'caps.' NAME | 'connect.' NAME | STRING
    filter  = 'b64' | 'b64decode' | 'lower' | 'upper' | 'default' '(' STRING ')' | 'literal'
    NAME    = [A-Za-z_][A-Za-z0-9_]*
    STRING  = '...' | "..."   (a backslash escapes the next character)
    FUNC    = 'auth_plain' | 'xoauth2'

`literal` (the last filter only) changes nothing in the value: it marks it as an IMAP literal of
a `C:` line, sent as `{N}` and then its bytes (runner.engine.literals; the loader refuses it
anywhere else).

`caps.NAME` is the session's capability list (runner.protocols.caps): `{{ caps.SIZE }}`.
Text outside `{{ }}` is literal. Nothing else is evaluated: no attribute access but `env.`, `caps.` (and
`connect.` where the loader defines those names: tls_expect's `name`),
no arithmetic, no code. Built-in names: `run_id` (unique per mailrun invocation) and `now`
(RFC 5322 date). Variables defined by the scenario shadow the built-ins.

This module is the one `{{ }}` parser: the loader's checks, the secret-literal policy, the
patterns and runner.lang.render all work on its Template. Rendering is in runner.lang.render.
"""

from __future__ import annotations

import functools
import re

from runner.errors import ExitClass, MailrunError
from runner.records import Frozen, Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    pass


def close_matches(word: str, possibilities, n: int) -> list[str]:
    import difflib  # only for a "did you mean" hint in an error message

    return difflib.get_close_matches(word, possibilities, n=n)


__all__ = ["BUILTINS", "FILTERS", "FUNCTIONS", "Template", "TemplateError", "parse"]

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME_FULL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
BUILTINS = frozenset({"run_id", "now"})
#: NAME.X forms: environment variables, the session's capability list (runner.lang.render),
#: and connect.host (the session's connect values) where the loader defines them (tls_expect's
#: `name`), like any other name
NAMESPACES = frozenset({"env", "caps", "connect"})
FILTERS = ("b64", "b64decode", "default", "literal", "lower", "upper")
FUNCTIONS = {"auth_plain": 2, "xoauth2": 2}


class TemplateError(MailrunError):
    """A template is malformed, or names something undefined. The message never holds a
    secret's value. `column` (1-based, within the template source) is set for syntax errors."""

    exit_class = ExitClass.INVALID

    def __init__(self, message: str, *, column: int | None = None):
        super().__init__(message)
        self.column = column


# --- syntax tree ---------------------------------------------------------------------
# Plain record classes (runner.records), compared and hashed by value; runner.lang.render
# evaluates them.


class Name(Value):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name  # 'x', 'env.X' or 'caps.X'


class Str(Value):
    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value


class Call(Value):
    __slots__ = ("func", "args")

    def __init__(self, func: str, args: tuple[Name | Str, ...]):
        self.func = func
        self.args = args


class Filter(Value):
    __slots__ = ("name", "arg")

    def __init__(self, name: str, arg: str | None = None):
        self.name = name
        self.arg = arg


class Expr(Value):
    __slots__ = ("operand", "filters", "start", "end")

    def __init__(self, operand: Name | Str | Call, filters: tuple[Filter, ...], start: int, end: int):
        self.operand = operand
        self.filters = filters
        self.start = start  # offset of '{{' in the source
        self.end = end  # offset just after '}}'

    @property
    def has_default(self) -> bool:
        return any(f.name == "default" for f in self.filters)

    @property
    def sends_literal(self) -> bool:
        """Is the value sent as an IMAP literal (`| literal`, always the last filter)?"""
        return bool(self.filters) and self.filters[-1].name == "literal"

    @property
    def encodes(self) -> bool:
        """Is the value base64 (a b64 filter or an auth_plain/xoauth2 call, not undone by a
        later b64decode)? Then it holds no CR or LF, whatever its inputs hold."""
        encoded = isinstance(self.operand, Call)
        for f in self.filters:
            if f.name in ("b64", "b64decode"):
                encoded = f.name == "b64"
        return encoded

    def names(self) -> list[str]:
        op = self.operand
        if isinstance(op, Name):
            return [op.name]
        if isinstance(op, Call):
            return [a.name for a in op.args if isinstance(a, Name)]
        return []

    def strings(self) -> list[str]:
        """The quoted strings written in the expression (operand, call arguments, default())."""
        op = self.operand
        out = [op.value] if isinstance(op, Str) else []
        if isinstance(op, Call):
            out.extend(a.value for a in op.args if isinstance(a, Str))
        out.extend(f.arg for f in self.filters if f.arg is not None)
        return out


#: the most a template may render to, in characters: a body of a few MB is normal, while a
#: variable made of ten copies of the one before, ten times over, is a bomb
MAX_RENDERED = 16 << 20


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

    def parse(self) -> Expr:
        if not self.tokens:
            raise self.error("empty expression")
        operand = self.operand()
        filters = []
        while self.peek() is not None:
            tok = self.take()
            if tok[0] != "|":
                raise self.error(f"unexpected {tok[1]!r} (filters follow '|')", tok[2])
            filters.append(self.filter())
            if filters[-1].name == "literal" and self.peek() is not None:
                raise self.error("'literal' is the last filter (it sends the value as it is)", self.peek()[2])
        return Expr(operand, tuple(filters), self.start, self.end)

    def name_ref(self, tok) -> Name:
        """tok is a 'name' token just taken: NAME or env.NAME."""
        name = tok[1]
        nxt = self.peek()
        if nxt is not None and nxt[0] == ".":
            self.take()
            attr = self.peek()
            if attr is None or attr[0] != "name":
                raise self.error(f"expected a name after '{name}.'", nxt[2])
            self.take()
            if name not in NAMESPACES:
                raise self.error(
                    f"attribute access '{name}.{attr[1]}' is not supported (only env.NAME, caps.NAME)",
                    tok[2],
                )
            if self.peek() is not None and self.peek()[0] == ".":
                raise self.error(
                    "attribute access is not supported (only env.NAME, caps.NAME)", self.peek()[2]
                )
            return Name(f"{name}.{attr[1]}")
        if name == "env":
            raise self.error("'env' needs a variable name: env.NAME", tok[2])
        return Name(name)

    def operand(self):
        tok = self.take()
        kind, val, at = tok
        if kind == "str":
            return Str(val)
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
                        args.append(Str(a[1]))
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
            return Call(val, tuple(args))
        return self.name_ref(tok)

    def filter(self) -> Filter:
        tok = self.peek()
        if tok is None or tok[0] != "name":
            got = "nothing" if tok is None else repr(tok[1])
            raise self.error(f"expected a filter name after '|', got {got}", tok[2] if tok else None)
        self.take()
        name = tok[1]
        if name not in FILTERS:
            known = ", ".join(FILTERS)
            close = close_matches(name, FILTERS, n=1)
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
            return Filter("default", arg[1])
        if has_parens:
            raise self.error(f"filter '{name}' takes no arguments", nxt[2])
        return Filter(name)


def _parse_parts(source: str) -> tuple[str | Expr, ...]:
    parts: list[str | Expr] = []
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

    __slots__ = ("source", "parts", "is_constant")
    _compared = ("source",)

    def __init__(self, source: str):
        if not isinstance(source, str):
            raise TypeError(f"a template source is a str, got {type(source).__name__}")
        parts = _parse_parts(source)
        setattr_ = object.__setattr__
        setattr_(self, "source", source)
        setattr_(self, "parts", parts)  # literal text (str) and Expr, in order
        setattr_(self, "is_constant", not any(isinstance(p, Expr) for p in parts))

    @property
    def expressions(self) -> tuple[Expr, ...]:
        return tuple(p for p in self.parts if isinstance(p, Expr))

    @property
    def sends_literal(self) -> bool:
        """Does an expression send its value as an IMAP literal (`| literal`)?"""
        return any(e.sends_literal for e in self.expressions)

    def literal_text(self) -> str:
        """The text outside `{{ }}`, joined."""
        return "".join(p for p in self.parts if isinstance(p, str))

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
