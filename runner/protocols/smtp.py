"""SMTP reply framing (RFC 5321 4.2), sans-IO. The same framing serves FTP-style protocols.

A reply is one or more lines `NNN-text` ... ending with `NNN text` (or a line of exactly the
three digits). Every line's code must agree. Bare LF line ends are tolerated; `raw` keeps the
bytes exactly as received.
"""

from __future__ import annotations

import base64
import binascii
import re

from runner.protocols.base import (
    DEFAULT_MAX_LINE,
    FramedProtocol,
    Reply,
    decode,
    shown,
)
from runner.protocols.lines import Layout, reply_lines

_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?=\s|$)")
_LINE_END = re.compile(rb"\r\n|\r|\n")


def encode_body(data: bytes) -> bytes:
    """A message body ready to send after DATA's 354: every CRLF, bare CR and bare LF becomes
    CRLF, a line starting with '.' gets another '.' (RFC 5321 4.5.2), the body ends with CRLF
    (unless empty) and the terminating '.' line is appended."""
    data = _LINE_END.sub(b"\r\n", data)
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def bdat_chunks(content: bytes, size: int | None) -> list[bytes]:
    """A message for BDAT (RFC 3030): line ends made CRLF, no dot-stuffing, no final dot, cut
    into chunks of `size` bytes (one chunk when None); each chunk is `BDAT n` with exactly n
    bytes after it, the last `BDAT n LAST`. An empty message is one `BDAT 0 LAST`."""
    data = _LINE_END.sub(b"\r\n", content)
    step = size or max(len(data), 1)
    pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    last = len(pieces) - 1
    return [
        f"BDAT {len(piece)}{' LAST' if i == last else ''}\r\n".encode() + piece
        for i, piece in enumerate(pieces)
    ]


def decode_challenge(text: str) -> str | None:
    """The base64-decoded text of a 334 challenge, for display: '334 VXNlcm5hbWU6' (or just
    'VXNlcm5hbWU6') -> 'Username:'. None when it is empty, not base64, or not printable text."""
    text = text.strip()
    if text[:4] in ("334 ", "334-"):
        text = text[4:].strip()
    elif text == "334":
        return None
    if not text:
        return None
    try:
        value = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not value or not value.isprintable():
        return None
    return value


class SmtpLayout(Layout):
    """Every line of the reply; its text follows 'NNN-' / 'NNN '."""

    def spans(self, raw: bytes):
        pos, n = 0, len(raw)
        find = raw.find
        while pos < n:
            i = find(b"\n", pos)
            if i < 0:
                return
            end = i - 1 if i > pos and raw[i - 1] == 0x0D else i
            yield pos, min(pos + 4, end), end
            pos = i + 1

    def count(self, raw: bytes) -> int:
        return raw.count(b"\n")

    def last(self, raw: bytes) -> tuple[int, int, int] | None:
        i = len(raw) - 1  # the LF ending the reply
        if i < 0:
            return None
        start = raw.rfind(b"\n", 0, i) + 1
        end = i - 1 if i > start and raw[i - 1] == 0x0D else i
        return start, min(start + 4, end), end

    def text(self, raw: bytes) -> str:
        return decode(raw.replace(b"\r\n", b"\n")[:-1])


LAYOUT = SmtpLayout()


class SMTP(FramedProtocol):
    name = "smtp"
    #: an SMTP reply is a few lines; megabytes of them are an attack, not a reply
    default_max_reply = 4 << 20

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int | None = None):
        super().__init__(max_line=max_line, max_reply=max_reply)
        self._reset()

    # SMTP replies do not depend on the command: Protocol's command() and sent_raw() record nothing.

    def _reset(self) -> None:
        # the reply being framed: its first line's code, its line count, the first line whose
        # code differs (reported once the reply is complete, so the stream stays in sync)
        self._code: bytes | None = None
        self._count = 0
        self._mismatch: tuple[int, bytes] | None = None

    def _frame(self) -> Reply | None:
        buf = self._buf
        while True:
            span = buf.next_line()
            if span is None:
                return None
            start, end = span
            data = buf.data
            code = bytes(data[start : start + 3])
            self._count += 1
            if end - start < 3 or not code.isdigit():
                line = bytes(data[start:end])
                raise self._malformed(
                    f"malformed reply: line {self._count} does not start with a 3-digit code: {shown(line)}"
                )
            if self._code is None:
                self._code = code
            elif code != self._code and self._mismatch is None:
                self._mismatch = (self._count, code)
            if end - start == 3:
                return self._complete(b"")
            sep = data[start + 3]
            if sep == 0x2D:  # '-'
                continue
            return self._complete(bytes((sep,)))

    def _complete(self, sep: bytes) -> Reply:
        n = self._count
        if sep not in (b" ", b""):
            raise self._malformed(
                f"malformed reply: line {n} has {decode(sep)!r} after the code (expected ' ' or '-')"
            )
        first = self._code
        assert first is not None
        if self._mismatch is not None:
            i, code = self._mismatch
            raise self._malformed(
                f"malformed reply: line {i} has code {code.decode()}, line 1 had {first.decode()}"
            )
        raw = self._buf.consume()
        self._reset()
        lines, texts = reply_lines(raw, LAYOUT)
        return _reply(raw, lines, texts, first.decode())


def _reply(raw: bytes, lines, texts, code: str) -> Reply:
    """The Reply, with the enhanced status code (RFC 3463) of its last line and, for a 334
    challenge, its decoded text."""
    last = texts[-1]
    m = _ENHANCED.match(last) if last[:1] in ("2", "4", "5") else None
    note = decode_challenge(last) if code == "334" else None
    return Reply(raw, lines, code, texts, m.group(1) if m else None, note)
