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

Fed any split of the same byte stream, a protocol returns the same replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MAX_LINE = 1 << 20  # 1 MiB
DEFAULT_MAX_REPLY = 256 << 20  # 256 MiB


def decode(data: bytes) -> str:
    """Bytes as text for display and matching: UTF-8, invalid bytes as backslash escapes.
    Never lossy in the sense that the raw bytes are always kept beside the text."""
    return data.decode("utf-8", errors="backslashreplace")


@dataclass(frozen=True)
class Reply:
    """One complete server reply.

    raw:      the exact bytes received for this reply (CRLFs included)
    lines:    the reply's lines as text, without their line ends; a POP3 multi-line body is
              byte-unstuffed and its terminating '.' line is not included; an IMAP literal's
              content is split into lines and included in order
    code:     SMTP '250'; POP3 '+OK' | '-ERR' | '+'; IMAP tagged status 'OK' | 'NO' | 'BAD',
              or '+' for a continuation, or for an untagged greeting 'OK' | 'PREAUTH' | 'BYE';
              line protocol: None
    texts:    per line, what follows the code (SMTP: after 'NNN-'/'NNN '; POP3: after the status
              on the first line, whole line for body lines; IMAP: after 'tag STATUS ' or '* ');
              TEXT patterns are substrings of any of these
    enhanced: SMTP enhanced status code (RFC 3463) of the last line, e.g. '2.1.0', or None
    note:     a display aid, e.g. the base64-decoded 334 challenge '(Username:)', or None
    tag:      IMAP tag of the status line, or None
    multiline: POP3: the reply carried a dot-terminated body
    """

    raw: bytes
    lines: tuple[str, ...]
    code: str | None = None
    texts: tuple[str, ...] = ()
    enhanced: str | None = None
    note: str | None = None
    tag: str | None = None
    multiline: bool = False
    # Timing, filled in by the engine (the protocol has no clock): monotonic seconds.
    first_byte_at: float | None = field(default=None, compare=False)
    completed_at: float | None = field(default=None, compare=False)

    @property
    def first_line(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def text(self) -> str:
        """The whole reply as text, lines joined with '\\n' (what `re:` patterns search)."""
        return "\n".join(self.lines)


class Protocol:
    """Base class of the sans-IO framers. Subclasses: smtp, pop3, imap, line."""

    name = "base"
    #: True for expect-style protocols (line): the engine keeps reading replies (one per line)
    #: until the step's pattern matches or its deadline passes.
    expect_style = False

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int = DEFAULT_MAX_REPLY):
        self.max_line = max_line
        self.max_reply = max_reply

    # --- what the client sends -------------------------------------------------------
    def command(self, line: str, *, tag: bool = True, multiline: bool | None = None) -> bytes:
        """Bytes to send for a `C:` line (CRLF added; IMAP adds its tag unless tag=False or the
        line answers a continuation). Records that a reply to it is expected. `multiline`
        forces a POP3 multi-line (True) or single-line (False) response. The line must not
        contain CR or LF (the engine refuses such lines before calling this)."""
        raise NotImplementedError

    def sent_raw(self, data: bytes, *, multiline: bool | None = None) -> None:
        """Told that raw bytes (a `raw:` step or a message body) went out verbatim."""
        raise NotImplementedError

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
