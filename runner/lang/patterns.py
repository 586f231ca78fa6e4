"""`S:` reply patterns: parsed from the scenario value, matched against a Reply.

Forms (per protocol: smtp, pop3, imap, line):
  scalar   `CODE [TEXT]`. CODE: smtp three chars of digits or `x` (`250`, `2xx`); pop3 `+OK`,
           `-ERR`, `+`; imap `OK`, `NO`, `BAD`, `PREAUTH`, `BYE`, `+`. TEXT is a case-sensitive
           substring of any of reply.texts. An integer is an SMTP code. For `line`, the whole
           scalar is a regex searched in each line. `EOF` expects the server to close.
  list     alternatives: passes when any one matches.
  mapping  checks that must all hold: `code`, `text`, `re` (regex searched in reply.text),
           `lines` (regexes, each must match some line), `not` (a pattern that must NOT match).

runner.lang.pattern_parse turns an `S:` value into these Pattern classes (with every problem
listed); this module holds the classes, how they match a Reply, and capture.

Templates may appear in every pattern string: CODE and TEXT are rendered normally, regexes
with regex=True (substituted values match literally). Regexes are searched with re.MULTILINE,
so `^` and `$` anchor at line boundaries.
"""

from __future__ import annotations

import re

from runner.errors import ExitClass, MailrunError
from runner.lang.line_checks import flags_problem, lines_problem
from runner.lang.render import render
from runner.lang.templates import Template
from runner.records import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from runner.lang.render import Context
    from runner.protocols.base import Reply

__all__ = [
    "MatchResult",
    "Pattern",
    "PatternError",
    "capture",
]

POP3_CODES = ("+OK", "-ERR", "+")
IMAP_CODES = ("OK", "NO", "BAD", "PREAUTH", "BYE", "+")
_SMTP_CODE = re.compile(r"[0-9xX]{3}\Z")
_SUMMARY_MAX = 200


class PatternError(MailrunError):
    """A pattern is unusable at match time (e.g. a templated code renders to something that is
    not a code, or a templated regex does not compile)."""

    exit_class = ExitClass.INVALID


class MatchResult(Value):
    __slots__ = ("ok", "reason")

    def __init__(self, ok: bool, reason: str | None = None):
        self.ok = ok
        self.reason = reason


MATCHED = MatchResult(True)  # shared: a pass carries no reason


# --- helpers ---------------------------------------------------------------------------


def code_problem(code: str, protocol: str) -> str | None:
    """None when `code` is a valid CODE for the protocol, else the message."""
    if protocol == "smtp":
        if _SMTP_CODE.match(code):
            return None
        return f"'{code}' is not a reply-code pattern for smtp (want 3 chars of digits or x)"
    if protocol == "pop3":
        if code.upper() in POP3_CODES:
            return None
        hint = ""
        if code.upper() in ("OK", "ERR"):
            hint = f"; did you mean '{'+OK' if code.upper() == 'OK' else '-ERR'}'?"
        return f"'{code}' is not a pop3 status (want +OK, -ERR or +{hint})"
    if protocol == "imap":
        if code.upper() in IMAP_CODES:
            return None
        return f"'{code}' is not an imap status (want OK, NO, BAD, PREAUTH, BYE or +)"
    return f"the {protocol} protocol has no reply codes (use re, lines or text)"


def _normalize_code(code: str, protocol: str) -> str:
    return code.lower() if protocol == "smtp" else code.upper()


def _code_matches(code: str, reply: Reply, protocol: str) -> bool:
    got = reply.code
    if got is None:
        return False
    if protocol == "smtp":
        if len(got) != 3:
            return False
        return all(p == "x" or p == g for p, g in zip(code, got, strict=True))
    return got.upper() == code


def _texts(reply: Reply) -> tuple[str, ...]:
    return reply.texts if reply.texts else reply.lines


def summarize(reply: Reply, protocol: str) -> str:
    """The reply's status line (SMTP/IMAP: last, POP3/line: first) plus how many more lines."""
    lines = reply.lines
    if not lines:
        return "an empty reply"
    line = lines[-1] if protocol in ("smtp", "imap") else lines[0]
    if len(line) > _SUMMARY_MAX:
        line = line[: _SUMMARY_MAX - 3] + "..."
    more = len(lines) - 1
    if more:
        line += f" (+{more} more line{'s' if more > 1 else ''})"
    return line


def _got(reply: Reply, protocol: str, ctx: Context) -> str:
    return ctx.redactor.redact(summarize(reply, protocol))


_regex_cache: dict[str, re.Pattern] = {}


def _compile(regex: str) -> re.Pattern:
    rx = _regex_cache.get(regex)
    if rx is None:
        rx = re.compile(regex, re.MULTILINE)
        if len(_regex_cache) > 2048:
            _regex_cache.clear()
        _regex_cache[regex] = rx
    return rx


def _compile_rendered(source: str, ctx: Context) -> tuple[re.Pattern, str]:
    """Render a regex template (regex=True) and compile it; (compiled, display)."""
    r = render(source, ctx, regex=True)
    try:
        return _compile(r.value), r.display
    except re.error as e:
        raise PatternError(f"invalid regular expression '{r.display}': {e}") from None
    except (OverflowError, RecursionError, ValueError) as e:
        raise PatternError(f"invalid regular expression '{r.display}': {e}") from None


def split_code(source: str, spans: list[tuple[int, int]] = ()) -> tuple[str, str | None]:
    """Split `CODE [TEXT]` at the first whitespace outside the given `{{ }}` spans."""
    i = 0
    n = len(source)
    k = 0
    while i < n:
        if k < len(spans) and i == spans[k][0]:
            i = spans[k][1]
            k += 1
            continue
        if source[i].isspace():
            return source[:i], source[i:].lstrip()
        i += 1
    return source, None


# --- pattern classes -------------------------------------------------------------------


class Pattern:
    """Base class. `is_eof`: the pattern is `EOF` (expects the server to close)."""

    is_eof: bool = False

    @property
    def accepts_eof(self) -> bool:
        """True when the server closing the connection satisfies the pattern (EOF, or a list
        with EOF among its alternatives)."""
        return self.is_eof

    def match(self, reply: Reply, ctx: Context) -> MatchResult:
        raise NotImplementedError

    def match_eof(self, ctx: Context) -> MatchResult:
        """The verdict when the server closed instead of replying."""
        if self.accepts_eof:
            return MATCHED
        return MatchResult(False, f"expected {self.describe()}, got connection closed by the server")

    def describe(self) -> str:
        raise NotImplementedError

    def templates(self) -> list[str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class EOFPattern(Pattern):
    is_eof = True

    def match(self, reply: Reply, ctx: Context) -> MatchResult:
        return MatchResult(False, f"expected the server to close the connection, got {_got(reply, '', ctx)}")

    def describe(self) -> str:
        return "EOF"

    def templates(self) -> list[str]:
        return []


class CodePattern(Pattern):
    """`CODE [TEXT]` for smtp, pop3 and imap."""

    def __init__(self, source: str, protocol: str, tpl: Template, code: str, text: str | None):
        self.source = source
        self.protocol = protocol
        self.constant = tpl.is_constant
        self.code = _normalize_code(code, protocol) if self.constant else code
        self.text = text
        # the common case, a constant code without 'x' and no text: one comparison
        self._exact = self.code if self.constant and not text and "x" not in self.code else None

    def _resolve(self, ctx: Context) -> tuple[str, str | None, str]:
        """(code, text, display) at match time."""
        if self.constant:
            return self.code, self.text, self.source
        r = render(self.source, ctx)
        code, text = split_code(r.value)
        problem = code_problem(code, self.protocol) if code else "the pattern rendered to nothing"
        if problem:
            dcode = split_code(r.display)[0]
            if r.secret:
                problem = "the pattern's code comes from a secret and is not a valid code"
            else:
                problem = code_problem(dcode, self.protocol) if dcode else "the pattern rendered to nothing"
            raise PatternError(f"'{self.source}' rendered to '{r.display}': {problem}")
        return _normalize_code(code, self.protocol), text, r.display

    def match(self, reply: Reply, ctx: Context) -> MatchResult:
        exact = self._exact
        if exact is not None:
            got = reply.code
            if got == exact or (got is not None and self.protocol != "smtp" and got.upper() == exact):
                return MATCHED
        code, text, display = self._resolve(ctx)
        if not _code_matches(code, reply, self.protocol):
            return MatchResult(False, f"expected {display}, got {_got(reply, self.protocol, ctx)}")
        if text and not any(text in t for t in _texts(reply)):
            shown_text = split_code(display)[1] or text
            return MatchResult(
                False, f"expected text '{shown_text}' in the reply, got {_got(reply, self.protocol, ctx)}"
            )
        return MATCHED

    def describe(self) -> str:
        return self.source

    def templates(self) -> list[str]:
        return [self.source]


class LinePattern(Pattern):
    """line protocol scalar: a regex searched in each line of the reply."""

    def __init__(self, source: str):
        self.source = source

    def match(self, reply: Reply, ctx: Context) -> MatchResult:
        rx, display = _compile_rendered(self.source, ctx)
        if any(rx.search(line) for line in reply.lines):
            return MATCHED
        return MatchResult(False, f"expected a line matching '{display}', got {_got(reply, 'line', ctx)}")

    def describe(self) -> str:
        return self.source

    def templates(self) -> list[str]:
        return [self.source]


class AnyPattern(Pattern):
    def __init__(self, alternatives: list[Pattern]):
        self.alternatives = tuple(alternatives)
        # `[235, 250]`: a set lookup before the alternatives are tried (and explained) one by one
        self._exact_codes = frozenset(
            a._exact
            for a in self.alternatives
            if isinstance(a, CodePattern) and a._exact is not None and a.protocol == "smtp"
        )

    @property
    def accepts_eof(self) -> bool:
        return any(a.accepts_eof for a in self.alternatives)

    def match(self, reply: Reply, ctx: Context) -> MatchResult:
        if reply.code in self._exact_codes:
            return MATCHED
        reasons = []
        for alt in self.alternatives:
            r = alt.match(reply, ctx)
            if r.ok:
                return r
            reasons.append(r.reason)
        if len(self.alternatives) == 1:
            return MatchResult(False, reasons[0])
        protocol = next(
            (getattr(a, "protocol", None) for a in self.alternatives if hasattr(a, "protocol")), ""
        )
        return MatchResult(
            False, f"expected one of {self.describe()}, got {_got(reply, protocol or '', ctx)}"
        )

    def describe(self) -> str:
        return "[" + ", ".join(a.describe() for a in self.alternatives) + "]"

    def templates(self) -> list[str]:
        out: list[str] = []
        for a in self.alternatives:
            out.extend(a.templates())
        return out


class AllPattern(Pattern):
    """A mapping: every given check must hold."""

    def __init__(
        self,
        protocol: str,
        *,
        code: str | None = None,
        text: str | None = None,
        regex: str | None = None,
        lines: list[str] | None = None,
        order: str | None = None,
        flags: list[str] | None = None,
        not_: Pattern | None = None,
    ):
        self.protocol = protocol
        self.code = code
        self.text = text
        self.regex = regex
        self.lines = tuple(lines) if lines is not None else None
        self.order = order  # with lines: None (each matches some line), 'any', 'sequence'
        self.flags = tuple(flags) if flags is not None else None
        self.not_ = not_

    def match(self, reply: Reply, ctx: Context) -> MatchResult:
        got = _got(reply, self.protocol, ctx)
        if self.code is not None:
            r = render(self.code, ctx)
            code = r.value
            problem = code_problem(code, self.protocol)
            if problem:
                raise PatternError(
                    f"code '{self.code}' rendered to '{r.display}', which is not a valid code for {self.protocol}"
                )
            if not _code_matches(_normalize_code(code, self.protocol), reply, self.protocol):
                return MatchResult(False, f"expected {r.display}, got {got}")
        if self.text is not None:
            r = render(self.text, ctx)
            if not any(r.value in t for t in _texts(reply)):
                return MatchResult(False, f"expected text '{r.display}' in the reply, got {got}")
        if self.regex is not None:
            rx, display = _compile_rendered(self.regex, ctx)
            if not rx.search(reply.text):
                return MatchResult(False, f"expected the reply to match '{display}', got {got}")
        if self.lines is not None:
            problem = lines_problem([_compile_rendered(x, ctx) for x in self.lines], self.order, reply)
            if problem is not None:
                return MatchResult(False, f"{problem}, got {got}")
        if self.flags is not None:
            problem = flags_problem(self.flags, reply)
            if problem is not None:
                return MatchResult(False, problem)
        if self.not_ is not None and self.not_.match(reply, ctx).ok:
            return MatchResult(False, f"reply matched the `not` pattern {self.not_.describe()}: {got}")
        return MATCHED

    def describe(self) -> str:
        parts = []
        if self.code is not None:
            parts.append(f"code: {self.code}")
        if self.text is not None:
            parts.append(f"text: {self.text}")
        if self.regex is not None:
            parts.append(f"re: {self.regex}")
        if self.lines is not None:
            parts.append("lines: [" + ", ".join(self.lines) + "]")
        if self.order is not None:
            parts.append(f"order: {self.order}")
        if self.flags is not None:
            parts.append("flags: [" + ", ".join(self.flags) + "]")
        if self.not_ is not None:
            parts.append(f"not: {self.not_.describe()}")
        return "{" + ", ".join(parts) + "}"

    def templates(self) -> list[str]:
        out = [t for t in (self.code, self.text, self.regex) if t is not None]
        out.extend(self.lines or ())
        if self.not_ is not None:
            out.extend(self.not_.templates())
        return out


def capture(reply: Reply, regex_template: str, ctx: Context) -> str | None:
    """Render the regex (regex=True), search reply.text (re.MULTILINE); group 1 if the regex
    has groups, else the whole match; '' when group 1 took no part; None when no match."""
    rx, _display = _compile_rendered(regex_template, ctx)
    m = rx.search(reply.text)
    if m is None:
        return None
    if rx.groups:
        return m.group(1) or ""
    return m.group(0)
