"""POP3 reply framing (RFC 1939, RFC 2449, RFC 5034), sans-IO.

Replies are `+OK ...` / `-ERR ...` single lines, or `+ ...` SASL continuations. After RETR,
TOP, CAPA, and LIST/UIDL without an argument, a `+OK` starts a multi-line response ended by a
line holding a single '.'; its byte-stuffing ('..x') is removed in Reply.lines. Commands may
be pipelined: each command queues whether its reply may be multi-line (FIFO). The first reply
of a connection is the greeting, single-line, whatever was queued before it arrived; a later
reply that arrives with nothing queued is single-line too.
"""

from __future__ import annotations

from collections import deque

from runner.protocols.base import DEFAULT_MAX_LINE, FramedProtocol, Reply, decode, shown
from runner.protocols.lines import Layout, reply_lines

#: Commands whose +OK reply carries a body; LIST and UIDL only without an argument, and AUTH
#: without one lists the mechanisms (Dovecot and the sandbox do, as many servers since Outlook)
MULTILINE_ALWAYS = frozenset({"RETR", "TOP", "CAPA"})
MULTILINE_WITHOUT_ARGUMENT = frozenset({"LIST", "UIDL", "AUTH"})

_RAW_CARRY_MAX = 8192


def is_multiline_command(line: str) -> bool:
    """Whether a +OK reply to this command line is multi-line."""
    words = line.split()
    if not words:
        return False
    verb = words[0].upper()
    return verb in MULTILINE_ALWAYS or (verb in MULTILINE_WITHOUT_ARGUMENT and len(words) == 1)


def _status(line: bytes) -> tuple[str, bytes] | None:
    """(code, text) of a status line, or None if it is not one."""
    for code in (b"+OK", b"-ERR", b"+"):
        if line == code:
            return code.decode(), b""
        if line.startswith(code + b" "):
            return code.decode(), line[len(code) + 1 :]
    return None


def _status_length(raw: bytes, end: int) -> int:
    """Where the text of a status line raw[:end] starts (after '+OK ', '-ERR ', '+ ')."""
    for code in (b"+OK", b"-ERR", b"+"):
        n = len(code)
        if raw.startswith(code) and (end == n or raw[n] == 0x20):
            return min(n + 1, end)
    return 0  # pragma: no cover - the framer accepted only status lines


def _line_end(raw: bytes, start: int, lf: int) -> int:
    return lf - 1 if lf > start and raw[lf - 1] == 0x0D else lf


class Pop3Layout(Layout):
    """The status line (its text after the status), then for a multi-line reply each body line
    unstuffed ('..x' is '.x'), without the terminating '.' line."""

    def __init__(self, multiline: bool):
        self.multiline = multiline

    def spans(self, raw: bytes):
        i = raw.find(b"\n")
        end = _line_end(raw, 0, i)
        yield 0, _status_length(raw, end), end
        if not self.multiline:
            return
        pos = i + 1
        stop = raw.rfind(b"\n", 0, len(raw) - 1) + 1  # where the terminating '.' line starts
        find = raw.find
        while pos < stop:
            i = find(b"\n", pos)
            end = _line_end(raw, pos, i)
            start = pos + 1 if raw[pos] == 0x2E else pos  # byte-stuffing
            yield start, start, end
            pos = i + 1

    def count(self, raw: bytes) -> int:
        return raw.count(b"\n") - 1 if self.multiline else 1

    def last(self, raw: bytes) -> tuple[int, int, int] | None:
        if not self.multiline or self.count(raw) == 1:  # no body line: the status line
            i = raw.find(b"\n")
            end = _line_end(raw, 0, i)
            return 0, _status_length(raw, end), end
        stop = raw.rfind(b"\n", 0, len(raw) - 1)  # the LF before the terminating '.' line
        pos = raw.rfind(b"\n", 0, stop) + 1
        end = _line_end(raw, pos, stop)
        start = pos + 1 if raw[pos] == 0x2E else pos
        return start, start, end

    def text(self, raw: bytes) -> str:
        """As Layout.text, the body in one piece: CRLF -> LF, then a '.' after each LF removed
        (the byte-stuffing), the terminating line dropped."""
        if not self.multiline or self.count(raw) == 1:
            return decode(raw[: _line_end(raw, 0, raw.find(b"\n"))])
        # the terminating '.' line becomes a lone LF after the last body line's: both dropped
        # (no slice of raw first: one copy of the reply at a time beside it)
        joined = raw.replace(b"\r\n", b"\n").replace(b"\n.", b"\n")
        return decode(memoryview(joined)[:-2])


SINGLE, MULTI = Pop3Layout(False), Pop3Layout(True)


class POP3(FramedProtocol):
    name = "pop3"

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int | None = None):
        super().__init__(max_line=max_line, max_reply=max_reply)
        self._expect: deque[bool] = deque()  # per command sent: may its reply be multi-line?
        self._continuation = False  # the last reply was '+': the next line is a SASL response
        self._raw_carry = b""
        # the reply being framed
        self._body = False
        self._code: str | None = None

    # --- what the client sends -------------------------------------------------------
    def command(self, line: str, *, tag: bool = True, multiline: bool | None = None) -> bytes:
        self._expect_reply(line, multiline)
        return self.frame(line)

    def sent_raw(self, data: bytes, *, multiline: bool | None = None) -> None:
        """Every complete (LF-terminated) line in data counts as a command; a partial last line
        is kept and completed by the next sent_raw() call."""
        data = self._raw_carry + data
        *lines, rest = data.split(b"\n")
        self._raw_carry = rest[-_RAW_CARRY_MAX:]
        for raw_line in lines:
            self._expect_reply(decode(raw_line.rstrip(b"\r")), multiline)

    def _expect_reply(self, line: str, multiline: bool | None) -> None:
        if multiline is None:
            multiline = False if self._continuation else is_multiline_command(line)
        self._continuation = False
        self._expect.append(multiline)

    @property
    def outstanding(self) -> int:
        """Number of commands whose reply has not started to arrive."""
        return len(self._expect)

    # --- what the server sends -------------------------------------------------------
    def _reset(self) -> None:
        self._body = False
        self._code = None

    def _frame(self) -> Reply | None:
        buf = self._buf
        while True:
            span = buf.next_line()
            if span is None:
                return None
            start, end = span
            if self._body:  # a body line: only the terminating '.' matters here (Pop3Layout)
                if end - start == 1 and buf.data[start] == 0x2E:
                    return self._complete(multiline=True)
                continue
            # the first line of a reply
            line = bytes(buf.data[start:end])
            multi = self._expects_body()
            status = _status(line)
            if status is None:
                raise self._malformed(f"malformed reply: expected +OK, -ERR or +, got {shown(line)}")
            self._code = status[0]
            if self._code == "+OK" and multi:
                self._body = True
                continue
            if self._code == "+":
                self._continuation = True
            return self._complete(multiline=False)

    def _expects_body(self) -> bool:
        """Whether the reply starting now may be multi-line: the greeting never is, and answers
        no command (one sent before it arrived waits for the next reply)."""
        if self._greeting:
            return False
        return self._expect.popleft() if self._expect else False

    def _complete(self, *, multiline: bool) -> Reply:
        raw = self._buf.consume()
        lines, texts = reply_lines(raw, MULTI if multiline else SINGLE)
        reply = Reply(raw=raw, lines=lines, code=self._code, texts=texts, multiline=multiline)
        self._reset()
        return reply
