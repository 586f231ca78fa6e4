"""The sans-IO protocol interface.

A protocol object is fed the bytes received from the server and hands back complete replies.
It is told what the client sends (so it knows which framing the next reply uses: an IMAP tag,
a POP3 multi-line body). It never touches a socket, a clock or a thread: the engine owns those.

Shape (after h11):

    proto = SMTP()
    data = proto.command("EHLO x")      # bytes to write; the protocol now expects a reply
    proto.receive_data(b"250-a\\r\\n250 b\\r\\n")
    reply = proto.next_reply()          # Reply, or None when more bytes are needed
    proto.receive_eof()                 # the peer closed; next_reply() then raises
                                        # ConnectionClosed if a reply was half-received

Fed any split of the same byte stream, a protocol returns the same replies. The first reply
of a connection is its greeting, whatever command() or sent_raw() recorded before it arrived
(unless greeting_read_elsewhere() said a program read it).
"""

from __future__ import annotations

from runner.errors import ConnectionClosed, ProtocolError
from runner.records import Record

DEFAULT_MAX_LINE = 1 << 20  # 1 MiB
DEFAULT_MAX_REPLY = 256 << 20  # 256 MiB: a RETR or FETCH of 100 MB is normal


def decode(data: bytes | bytearray | memoryview) -> str:
    """Bytes as text for display and matching: UTF-8, invalid bytes as backslash escapes.
    Never lossy in the sense that the raw bytes are always kept beside the text. (Any buffer:
    a memoryview slice of a reply is decoded without copying it first.)"""
    return str(data, "utf-8", "backslashreplace")


def size_text(n: int) -> str:
    """4194304 -> '4 MiB', 1000 -> '1000 bytes' (for limit messages)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


class Reply(Record):
    """One complete server reply.

    raw:      the exact bytes received for this reply (CRLFs included)
    lines:    the reply's lines as text, without their line ends; a POP3 multi-line body is
              byte-unstuffed and its terminating '.' line is not included; an IMAP literal's
              content is split into lines and included in order. A tuple of str, or for a
              large reply a Lines (a sequence that decodes each line from `raw` when read)
    code:     SMTP '250'; POP3 '+OK' | '-ERR' | '+'; IMAP tagged status 'OK' | 'NO' | 'BAD',
              or '+' for a continuation, or for an untagged greeting 'OK' | 'PREAUTH' | 'BYE';
              line protocol: None
    texts:    per line, what follows the code (SMTP: after 'NNN-'/'NNN '; POP3: after the status
              on the first line, whole line for body lines; IMAP: after 'tag STATUS ' or '* ');
              TEXT patterns are substrings of any of these
    enhanced: SMTP enhanced status code (RFC 3463) of the last line, e.g. '2.1.0', or None
    note:     a display aid, e.g. the base64-decoded 334 challenge 'Username:', or None
    tag:      IMAP tag of the status line, or None
    multiline: POP3: the reply carried a dot-terminated body
    """

    # A plain record (runner.records): equality and repr cover everything but the timing fields.
    __slots__ = (
        "raw",
        "lines",
        "code",
        "texts",
        "enhanced",
        "note",
        "tag",
        "multiline",
        "first_byte_at",
        "completed_at",
    )
    _compared = ("raw", "lines", "code", "texts", "enhanced", "note", "tag", "multiline")

    def __init__(
        self,
        raw: bytes,
        lines: tuple[str, ...],
        code: str | None = None,
        texts: tuple[str, ...] = (),
        enhanced: str | None = None,
        note: str | None = None,
        tag: str | None = None,
        multiline: bool = False,
        first_byte_at: float | None = None,
        completed_at: float | None = None,
    ):
        self.raw = raw
        self.lines = lines
        self.code = code
        self.texts = texts
        self.enhanced = enhanced
        self.note = note
        self.tag = tag
        self.multiline = multiline
        # Timing, set by the engine when the reply is complete (the protocol has no clock):
        # monotonic seconds. The only fields anyone changes after a reply is made.
        self.first_byte_at = first_byte_at
        self.completed_at = completed_at

    def replace(self, **changes) -> Reply:
        """A copy with some fields changed (dataclasses.replace without dataclasses)."""
        values = {k: getattr(self, k) for k in self.__slots__}
        values.update(changes)
        return Reply(**values)

    @property
    def first_line(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def text(self) -> str:
        """The whole reply as text, lines joined with '\\n' (what `re:` patterns search). Built
        when asked, not kept: one str beside `raw`."""
        lines = self.lines  # a tuple, or runner.protocols.lines.Lines (which joins without a list)
        return "\n".join(lines) if isinstance(lines, tuple) else lines.text()

    def redacted(self, raw: bytes, redact) -> Reply:
        """A masked copy: `raw` (already masked) and every text passed through redact."""
        return self.replace(
            raw=raw,
            lines=_mapped(self.lines, redact),
            texts=_mapped(self.texts, redact),
            note=redact(self.note) if self.note else self.note,
        )


def _mapped(lines, fn):
    """lines (a tuple, or a Lines) with fn applied to each, in the same form."""
    return tuple(fn(x) for x in lines) if isinstance(lines, tuple) else lines.mapped(fn)


class Protocol:
    """Base class of the sans-IO framers. Subclasses: smtp, pop3, imap, line."""

    name = "base"
    #: True for expect-style protocols (line): the engine keeps reading replies (one per line)
    #: until the step's pattern matches or its deadline passes.
    expect_style = False

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int | None = None):
        self.max_line = max_line
        self.max_reply = DEFAULT_MAX_REPLY if max_reply is None else max_reply

    # --- what the client sends -------------------------------------------------------
    def frame(self, line: str, *, tag: bool = True) -> bytes:
        """The bytes command() would return for this `C:` line now, recording nothing (CRLF
        added; IMAP adds its next tag unless tag=False or the line answers a continuation).
        The engine checks them (transport.check_sendable) before the command is recorded."""
        return line.encode("utf-8", "surrogateescape") + b"\r\n"

    def command(self, line: str, *, tag: bool = True, multiline: bool | None = None) -> bytes:
        """frame()'s bytes for a `C:` line, and records that a reply to it is expected.
        `multiline` forces a POP3 multi-line (True) or single-line (False) response. The line
        must not contain CR or LF (the engine refuses such lines before calling this). The
        base records nothing: SMTP's and the line protocol's replies do not depend on it."""
        return self.frame(line, tag=tag)

    def sent_raw(self, data: bytes, *, multiline: bool | None = None) -> None:
        """Told that raw bytes (a `raw:` step or a message body) went out verbatim."""

    def greeting_read_elsewhere(self) -> None:
        """Told that the connection's greeting will not come through this framer (a program
        such as `openssl s_client -starttls` read it): the first reply answers a command."""

    # --- what the server sends -------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        raise NotImplementedError

    def receive_eof(self) -> None:
        raise NotImplementedError

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None if more bytes are needed.
        Raises ProtocolError for malformed framing or a line/reply over its limit, and
        ConnectionClosed when the peer closed in the middle of a reply."""
        raise NotImplementedError

    def pending(self) -> bytes:
        """Bytes received but not yet part of a returned reply (checked before STARTTLS:
        any such bytes mean the server spoke before the handshake)."""
        raise NotImplementedError

    @property
    def at_eof(self) -> bool:
        """True once receive_eof() was called and every complete reply has been returned."""
        raise NotImplementedError


# --- shared machinery for the framers (smtp, pop3, imap, line) -----------------------------


class LimitError(Exception):
    """Internal: a line or reply went over its limit (turned into a sticky ProtocolError that
    names the limit and how to raise it). kind: 'line' | 'reply'; detail: what showed it."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


class ReceiveBuffer:
    """Bytes received and not yet handed out as part of a reply.

    The reply being framed always starts at offset 0; `cursor` is where the next unparsed
    item (line or literal) begins. The search for a line end resumes where the previous,
    unsuccessful search stopped (`_scan`), so however the bytes arrive (1-byte chunks or
    64 KiB), every byte is searched once: framing stays linear. `scanned` counts the bytes
    searched, so tests can check that without a clock.
    """

    def __init__(self, max_line: int, max_reply: int = DEFAULT_MAX_REPLY):
        self.data = bytearray()
        self.cursor = 0
        self._scan = 0
        self.max_line = max_line
        self.max_reply = max_reply
        self.scanned = 0

    def __len__(self) -> int:
        return len(self.data)

    def append(self, data: bytes) -> None:
        self.data += data

    def available(self) -> int:
        """Bytes after the cursor."""
        return len(self.data) - self.cursor

    def next_line(self) -> tuple[int, int] | None:
        """The next line after the cursor as (start, content_end) — content_end excludes the
        CRLF or bare LF — and moves the cursor past its line end; None if no line end has
        arrived yet. Raises LimitError as soon as a line is known to exceed max_line, or the
        reply being framed (everything up to the cursor) max_reply."""
        data = self.data
        start = self.cursor
        scan = self._scan if self._scan > start else start
        i = data.find(b"\n", scan)
        if i < 0:
            n = len(data)
            self.scanned += n - scan
            self._scan = n
            # the unterminated part may still end in the CR of its CRLF
            if n - start > self.max_line + 1:
                raise LimitError("line")
            return None
        self.scanned += i + 1 - scan
        end = i - 1 if i > start and data[i - 1] == 0x0D else i
        if end - start > self.max_line:
            raise LimitError("line")
        self.cursor = self._scan = i + 1
        if i >= self.max_reply:
            raise LimitError("reply")
        return start, end

    def skip(self, n: int) -> tuple[int, int] | None:
        """The next n bytes (an IMAP literal) as (start, end), or None until they all arrived."""
        if self.available() < n:
            return None
        start = self.cursor
        self.cursor += n
        self._scan = max(self._scan, self.cursor)
        return start, self.cursor

    def rewind(self) -> None:
        """Back to the start of the reply being framed (everything received is searched again)."""
        self.cursor = self._scan = 0

    def consume(self) -> bytes:
        """Removes and returns everything before the cursor: the raw bytes of a framed reply."""
        n = self.cursor
        data = self.data
        if n == len(data):  # the whole buffer (the common case: one reply, nothing after it)
            self.data = bytearray()
            self.cursor = self._scan = 0
            return bytes(data)
        raw = bytes(data[:n])
        del data[:n]
        self.cursor = 0
        self._scan = self._scan - n if self._scan > n else 0
        return raw

    def clear(self) -> None:
        self.data = bytearray()
        self.cursor = self._scan = 0


def shown(data: bytes, limit: int = 60) -> str:
    """A short printable excerpt of server bytes for error messages."""
    text = decode(data[:limit])
    return repr(text + ("..." if len(data) > limit else ""))


class FramedProtocol(Protocol):
    """Common state of the framers: the receive buffer, EOF and limit handling.

    Subclasses implement `_frame()`: return the next Reply (taking its raw bytes with
    `self._buf.consume()`), or None when more bytes are needed; raise ProtocolError for a
    malformed reply after consuming its bytes (so the stream stays in sync), and LimitError
    for a line or reply over its limit. `_reset()` forgets a partially framed reply.
    """

    #: the max_reply of this protocol when the scenario sets none
    default_max_reply = DEFAULT_MAX_REPLY

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int | None = None):
        self._default_reply = max_reply is None
        if max_reply is None:
            max_reply = self.default_max_reply
        super().__init__(max_line=max_line, max_reply=max_reply)
        self._buf = ReceiveBuffer(max_line, max_reply)
        self._eof = False
        self._drained = False  # next_reply found no further complete reply after EOF
        self._fatal: Exception | None = None  # sticky: a limit error or the closed connection
        # The first reply of a connection is the greeting, whatever the client sent before it
        # arrived: the framers give it its own reply, and commands recorded earlier
        # (command(), sent_raw()) are answered by the replies after it.
        self._greeting = True

    def greeting_read_elsewhere(self) -> None:
        self._greeting = False

    # --- what the server sends -------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise RuntimeError("receive_data() called after receive_eof()")
        if self._fatal is not None or not data:
            return  # the stream is broken: do not keep buffering
        self._buf.append(data)

    def receive_eof(self) -> None:
        self._eof = True

    def next_reply(self) -> Reply | None:
        if self._fatal is not None:
            raise self._fatal
        if not self._buf.data and not self._eof:
            return None  # nothing received yet (every step asks once before reading)
        try:
            reply = self._frame()
            if reply is None and len(self._buf) > self.max_reply:
                raise LimitError("reply")
        except LimitError as exc:
            self._fatal = ProtocolError(self._limit_message(exc))
            self._buf.clear()
            self._reset()
            raise self._fatal from None
        if reply is not None:
            self._greeting = False
            return reply
        if self._eof:
            reply = self._at_eof()
            if reply is not None:
                return reply
            self._drained = True
            if len(self._buf):
                err = ConnectionClosed(
                    f"connection closed in the middle of a reply ({len(self._buf)} bytes received)"
                )
                err.partial = bytes(self._buf.data)  # type: ignore[attr-defined]
                self._fatal = err
                raise err
        return None

    def pending(self) -> bytes:
        return bytes(self._buf.data)

    @property
    def at_eof(self) -> bool:
        return self._eof and self._drained

    def limit_error(self, kind: str, detail: str = "") -> ProtocolError:
        """The ProtocolError for going over max_line ('line') or max_reply ('reply'), naming the
        limit and how to raise it (the engine's line-protocol reader uses it too)."""
        return ProtocolError(self._limit_message(LimitError(kind, detail)))

    def _limit_message(self, exc: LimitError) -> str:
        """'reply exceeded max_reply 4 MiB (the SMTP default); raise it with ...'"""
        if exc.kind == "line":
            key, limit, default = "max_line", self.max_line, self.max_line == DEFAULT_MAX_LINE
            what = "a line exceeded"
        else:
            key, limit, default = "max_reply", self.max_reply, self._default_reply
            what = "reply exceeded"
        note = f" (the {self.name.upper()} default)" if default else ""
        detail = f", {exc.detail}" if exc.detail else ""
        return (
            f"{what} {key} {size_text(limit)}{note}{detail}; raise it with "
            f"`connect: {{{key}: BYTES}}` on the session or the file"
        )

    # --- for subclasses ----------------------------------------------------------------
    def _frame(self) -> Reply | None:
        raise NotImplementedError

    def _reset(self) -> None:
        pass

    def _at_eof(self) -> Reply | None:
        """Called at EOF when no complete reply is left (the line protocol returns its final
        unterminated line here)."""
        return None

    def _malformed(self, message: str) -> ProtocolError:
        """Consumes the reply framed so far and returns the error to raise."""
        raw = self._buf.consume()
        self._reset()
        self._greeting = False  # (a malformed first reply was the greeting's slot)
        err = ProtocolError(message)
        err.raw = raw  # type: ignore[attr-defined]
        return err
