"""IMAP response framing (RFC 9051 / RFC 3501), sans-IO.

command() prefixes tags `a1`, `a2`, ... (one counter per protocol object). A reply is every
line up to and including the tagged status line of an outstanding command (`code` OK/NO/BAD),
or a `+` continuation line (code '+'; the command stays outstanding and the next command()
line is continuation data, sent untagged). The connection's first line, when it is `* OK`,
`* PREAUTH` or `* BYE`, is a reply of its own (the greeting), even when commands were sent
before it arrived; later, with no command outstanding, a reply is one untagged line too.

A server line ending in `{n}` (or `{n+}`, `~{n}`) is followed by a literal of exactly n bytes,
read as bytes whatever they hold (CRLF, '{', ')', binary); the line then continues after it.
Reply.lines holds the literal's content split on line ends, in order, and then the rest of the
line after the literal (when not empty).
"""

from __future__ import annotations

import re
from collections import deque

from runner.protocols.base import (
    DEFAULT_MAX_LINE,
    FramedProtocol,
    LimitError,
    Reply,
    decode,
)
from runner.protocols.lines import Layout, reply_lines

_LITERAL = re.compile(rb"~?\{(\d{1,19})\+?\}\Z")
_TAGGED_STATUS = frozenset({"OK", "NO", "BAD"})
_UNTAGGED_STATUS = frozenset({"OK", "NO", "BAD", "PREAUTH", "BYE"})
_GREETING_STATUS = frozenset({"OK", "PREAUTH", "BYE"})


def _literal_size(segment: bytes) -> int | None:
    m = _LITERAL.search(segment)
    return int(m.group(1)) if m else None


def _text_start(line: bytes) -> int:
    """Where the text of a logical line's first segment starts: after '+ ', '* ', or
    'tag STATUS ' (the end of the line when it has no text)."""
    if line == b"+" or line.startswith(b"+ ") or line == b"*" or line.startswith(b"* "):
        return min(2, len(line))
    first = line.find(b" ")
    second = line.find(b" ", first + 1) if first >= 0 else -1
    return second + 1 if second >= 0 else len(line)


class ImapLayout(Layout):
    """Each logical line's first segment (its text after '* ', '+ ' or 'tag STATUS '), a
    literal's content split on its line ends, the rest of a line after a literal when not empty:
    the order the bytes came in."""

    def _items(self, raw: bytes):
        """The reply in order: (start, text_start, end) for a line segment, (start, None, stop)
        for a literal's content (not empty)."""
        pos, n = 0, len(raw)
        find = raw.find
        after_literal = False
        while pos < n:
            i = find(b"\n", pos)
            if i < 0:
                return
            end = i - 1 if i > pos and raw[i - 1] == 0x0D else i
            if not after_literal:
                yield pos, pos + _text_start(raw[pos:end]), end
            elif end > pos:
                yield pos, pos, end
            size = (
                _literal_size(raw[max(pos, end - 24) : end]) if end > pos and raw[end - 1] == 0x7D else None
            )
            pos = i + 1
            after_literal = size is not None
            if size:
                yield pos, None, pos + size
                pos += size

    def spans(self, raw: bytes):
        find = raw.find
        for pos, text_start, stop in self._items(raw):
            if text_start is not None:
                yield pos, text_start, stop
                continue
            while pos < stop:  # the literal's content, split on LF (a CR before it dropped)
                j = find(b"\n", pos, stop)
                if j < 0:  # the content's last piece, with no LF (a CR at its end dropped too)
                    yield pos, pos, stop - 1 if raw[stop - 1] == 0x0D else stop
                    break
                yield pos, pos, j - 1 if j > pos and raw[j - 1] == 0x0D else j
                pos = j + 1

    def pieces(self, raw: bytes):
        """Layout.text's pieces, a literal's content as one piece (a FETCH of many short lines
        is not a Python loop per line): CRLF -> LF, then the last line's LF (or the CR ending a
        last piece without LF) dropped, as spans() splits it."""
        view = memoryview(raw)
        for pos, text_start, stop in self._items(raw):
            if text_start is not None:
                yield view[pos:stop]
                continue
            piece = raw[pos:stop].replace(b"\r\n", b"\n")
            yield memoryview(piece)[:-1] if piece[-1:] in (b"\n", b"\r") else piece


LAYOUT = ImapLayout()


def _count_literal_lines(data, start: int, stop: int) -> int:
    """How many lines ImapLayout makes of the literal content data[start:stop]."""
    if start == stop:
        return 0
    return data.count(b"\n", start, stop) + (data[stop - 1] != 0x0A)


class IMAP(FramedProtocol):
    name = "imap"

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int | None = None):
        super().__init__(max_line=max_line, max_reply=max_reply)
        self._counter = 0
        self._outstanding: deque[str] = deque()  # tags of commands not yet answered, oldest first
        self._continuation = False  # the last reply was '+': the next line is continuation data
        self.last_tag: str | None = None  # the tag of the last command sent
        # the reply being framed (its lines are ImapLayout's, from the raw bytes)
        self._kind: tuple[str, str | None, bytes] | None = None  # of the current logical line
        self._literal: int | None = None  # bytes of literal still to read, if in one
        self._after_literal = False  # the next line continues the current logical line
        self._line_count = 0  # lines of the reply so far (for messages)
        self._line_first = b""  # the start of the current logical line (for messages)
        self._line_index = 0  # its index among the reply's lines
        self._one_untagged = False  # next_untagged() is asking: an untagged response ends a reply

    # --- what the client sends -------------------------------------------------------
    def frame(self, line: str, *, tag: bool = True) -> bytes:
        return self._framed(line, tag)[0]

    def command(self, line: str, *, tag: bool = True, multiline: bool | None = None) -> bytes:
        data, t = self._framed(line, tag)
        if self._continuation:
            self._continuation = False
        elif t:
            if tag:
                self._counter += 1
            self._outstanding.append(t)
            self.last_tag = t
        return data

    def _framed(self, line: str, tag: bool) -> tuple[bytes, str | None]:
        """(the bytes for this line now, the tag it carries: None for continuation data)."""
        data = line.encode("utf-8", "surrogateescape")
        if self._continuation:
            return data + b"\r\n", None
        if tag:
            t = f"a{self._counter + 1}"
            return t.encode() + b" " + data + b"\r\n", t
        return data + b"\r\n", line.split(" ", 1)[0]

    def sent_raw(self, data: bytes, *, multiline: bool | None = None) -> None:
        """Best effort: the first token of each command line sent is its tag. Literals the
        client sends (`{n}` / `{n+}` at a line's end) are skipped, and the rest of that command
        is not a new command. Data answering a '+' continuation carries no tag."""
        if self._continuation:
            self._continuation = False
            return
        pos = 0
        in_command = False  # the next line continues a command (after a literal)
        while True:
            i = data.find(b"\n", pos)
            if i < 0:
                return
            line = data[pos:i].rstrip(b"\r")
            pos = i + 1
            if not in_command:
                word = line.split(b" ", 1)[0]
                if word and word.upper() != b"DONE":
                    t = decode(word)
                    self._outstanding.append(t)
                    self.last_tag = t
            n = _literal_size(line)
            if n is not None:
                pos += n
                in_command = True
            else:
                in_command = False

    def sent_literal(self, data: bytes) -> None:
        """The client sent a literal's bytes and the rest of its command's line (which may
        announce another literal): they continue the command last sent and carry no tag, whatever
        their lines hold. After a `+` (a synchronizing literal) or none (LITERAL+, `{n+}`)."""
        self._continuation = False

    @property
    def outstanding(self) -> tuple[str, ...]:
        """Tags of the commands not yet answered, oldest first."""
        return tuple(self._outstanding)

    # --- untagged responses while a command is outstanding (IDLE) ------------------------
    @property
    def in_continuation(self) -> bool:
        """The last reply was a `+` and nothing was sent since: the command (IDLE) is still
        running, and what the server sends meanwhile is untagged responses."""
        return self._continuation and bool(self._outstanding)

    def next_untagged(self) -> Reply | None:
        """The next complete response even while a command is outstanding: one untagged
        response (its literals included; code: its status word OK/NO/BAD/PREAUTH/BYE, else
        None), or a tagged completion or `+` as next_reply() gives them; None when more bytes
        are needed. A reply next_reply() had begun framing is framed again from its start, so
        any split and any mix of the two calls give the same responses."""
        if self._buf.cursor:  # next_reply() framed part of a reply: start it again
            self._buf.rewind()
            self._reset()
        self._one_untagged = True
        try:
            return self.next_reply()
        finally:
            self._one_untagged = False

    # --- what the server sends -------------------------------------------------------
    def _reset(self) -> None:
        self._line_count = 0
        self._kind = None
        self._literal = None
        self._after_literal = False

    def _frame(self) -> Reply | None:
        buf = self._buf
        while True:
            if self._literal is not None:
                span = buf.skip(self._literal)
                if span is None:
                    return None
                self._line_count += _count_literal_lines(buf.data, span[0], span[1])
                self._literal = None
                self._after_literal = True
                continue
            span = buf.next_line()
            if span is None:
                return None
            segment = bytes(buf.data[span[0] : span[1]])
            if self._after_literal:
                if segment:
                    self._line_count += 1
            else:
                self._kind = self._classify(segment)
            n = _literal_size(segment)
            if n is not None:
                if buf.cursor + n > self.max_reply:
                    raise LimitError("reply", f"a literal of {n} bytes was announced")
                self._literal = n
                continue
            self._after_literal = False
            # a logical line is complete: does it end the reply?
            assert self._kind is not None
            kind, tag, status = self._kind
            if kind == "+":
                self._continuation = True
                return self._complete("+", None)
            if kind == "tagged":
                return self._tagged(tag, status)
            if not self._outstanding or self._one_untagged or self._is_greeting(status):
                return self._untagged_reply(status)
            self._kind = None

    def _is_greeting(self, status: bytes) -> bool:
        """Is this untagged line the greeting: the connection's first line, `* OK`, `* PREAUTH`
        or `* BYE` (RFC 9051 7.1)? It is a reply of its own even when commands were sent before
        it arrived: they wait for the replies after it."""
        first = self._greeting and self._line_index == 0  # (a later `* OK` is part of a reply)
        return first and decode(status).upper() in _GREETING_STATUS

    def _untagged_reply(self, status: bytes) -> Reply:
        """An untagged line that is a reply by itself (the greeting, or a line no outstanding
        command can own); its code is the status word (OK, PREAUTH, BYE, ...)."""
        word = decode(status).upper()
        return self._complete(word if word in _UNTAGGED_STATUS else None, None)

    def _classify(self, line: bytes) -> tuple[str, str | None, bytes]:
        """Notes the first segment of a logical line; returns (kind, tag, status word)."""
        self._line_index = self._line_count
        self._line_count += 1
        self._line_first = line[:60]
        if line == b"+" or line.startswith(b"+ "):
            return "+", None, b""
        if line == b"*" or line.startswith(b"* "):
            return "untagged", None, line[2:].split(b" ", 1)[0]
        parts = line.split(b" ", 2)
        tag = decode(parts[0])
        status = parts[1] if len(parts) > 1 else b""
        return "tagged", tag, status

    def _tagged(self, tag: str | None, status: bytes) -> Reply:
        word = decode(status).upper()
        if word not in _TAGGED_STATUS:
            first = decode(self._line_first)
            raise self._malformed(
                f"malformed reply: line {self._line_index + 1} ({first!r}) is not untagged ('* ...'), "
                f"a continuation ('+ ...') or a tagged status (TAG OK|NO|BAD ...)"
            )
        try:
            self._outstanding.remove(tag)  # type: ignore[arg-type]
        except ValueError:
            pass  # a tag we did not send (or sent raw and did not recognise): still its reply
        return self._complete(word, tag)

    def _complete(self, code: str | None, tag: str | None) -> Reply:
        raw = self._buf.consume()
        lines, texts = reply_lines(raw, LAYOUT)
        reply = Reply(raw=raw, lines=lines, code=code, texts=texts, tag=tag)
        self._reset()
        return reply
