"""SMTP reply framing (RFC 5321 4.2), sans-IO. The same framing serves FTP-style protocols.

A reply is one or more lines `NNN-text` ... ending with `NNN text` (or a line of exactly the
three digits). Every line's code must agree. Bare LF line ends are tolerated; `raw` keeps the
bytes exactly as received.
"""

from __future__ import annotations

import base64
import binascii
import re

from runner.protocols.base import DEFAULT_MAX_LINE, DEFAULT_MAX_REPLY, FramedProtocol, Reply, decode, shown

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


class SMTP(FramedProtocol):
    name = "smtp"

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int = DEFAULT_MAX_REPLY):
        super().__init__(max_line=max_line, max_reply=max_reply)
        self._codes: list[bytes] = []
        self._lines: list[str] = []
        self._texts: list[str] = []

    # SMTP replies do not depend on the command: nothing to remember.
    def command(self, line: str, *, tag: bool = True, multiline: bool | None = None) -> bytes:
        return line.encode("utf-8", "surrogateescape") + b"\r\n"

    def sent_raw(self, data: bytes, *, multiline: bool | None = None) -> None:
        pass

    def _reset(self) -> None:
        self._codes, self._lines, self._texts = [], [], []

    def _frame(self) -> Reply | None:
        buf = self._buf
        while True:
            span = buf.next_line()
            if span is None:
                return None
            self._check_reply_size()
            line = bytes(buf.data[span[0] : span[1]])
            n = len(self._codes) + 1
            code = line[:3]
            if len(code) < 3 or not code.isdigit():
                raise self._malformed(
                    f"malformed reply: line {n} does not start with a 3-digit code: {shown(line)}"
                )
            self._codes.append(code)
            self._lines.append(decode(line))
            self._texts.append(decode(line[4:]))
            sep = line[3:4]
            if sep == b"-":
                continue
            return self._complete(sep)

    def _complete(self, sep: bytes) -> Reply:
        codes, lines, texts = self._codes, self._lines, self._texts
        n = len(codes)
        if sep not in (b" ", b""):
            raise self._malformed(
                f"malformed reply: line {n} has {decode(sep)!r} after the code (expected ' ' or '-')"
            )
        for i, c in enumerate(codes[1:], 2):
            if c != codes[0]:
                raise self._malformed(
                    f"malformed reply: line {i} has code {c.decode()}, line 1 had {codes[0].decode()}"
                )
        raw = self._buf.consume()
        self._reset()
        code = codes[0].decode()
        m = _ENHANCED.match(texts[-1])
        note = decode_challenge(texts[-1]) if code == "334" else None
        return Reply(
            raw=raw,
            lines=tuple(lines),
            code=code,
            texts=tuple(texts),
            enhanced=m.group(1) if m else None,
            note=note,
        )
