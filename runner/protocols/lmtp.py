"""LMTP (RFC 2033): SMTP's framing, with LHLO, and one reply per accepted recipient after the
message.

The framer counts the recipients the server accepted (a 2xx reply to RCPT; a new MAIL, RSET or
LHLO starts over). After the message's final `.` (or a `BDAT ... LAST` chunk) the server sends
one reply per accepted recipient, in RCPT order: those come back as ONE Recipients reply,
whose `parts` are the per-recipient replies (lines, texts and raw are theirs joined), so a step
reads them together and its `S:` is matched per recipient (runner.lang.patterns). Sans-IO like
every framer: any split of the same bytes gives the same replies.
"""

from __future__ import annotations

from collections import deque

from runner.protocols.base import DEFAULT_MAX_LINE, Reply
from runner.protocols.smtp import SMTP

_RESETS = frozenset({"MAIL", "RSET", "LHLO", "HELO", "EHLO"})


class Recipients(Reply):
    """The replies to one message, one per accepted recipient (`parts`, in RCPT order)."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[Reply, ...], **fields):
        if not fields:
            last = parts[-1]
            fields = dict(
                raw=b"".join(p.raw for p in parts),
                lines=tuple(line for p in parts for line in p.lines),
                code=last.code,
                texts=tuple(t for p in parts for t in p.texts),
                enhanced=last.enhanced,
            )
        super().__init__(**fields)
        self.parts = parts

    def replace(self, **changes) -> Recipients:
        values = {k: getattr(self, k) for k in Reply.__slots__}
        values.update(changes)
        return Recipients(self.parts, **values)


class LMTP(SMTP):
    name = "lmtp"

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int | None = None):
        super().__init__(max_line=max_line, max_reply=max_reply)
        self._sent: deque[str] = deque()  # per command sent, oldest first: its verb
        self._accepted = 0  # recipients accepted in this transaction
        self._data = False  # DATA was answered 354: the next raw data is the message
        self._parts: list[Reply] = []  # per-recipient replies of the message so far
        self._want = 0  # how many the message's reply has
        self._chunk = 0  # bytes of a `BDAT n` chunk still to go out after its command line

    # --- what the client sends -------------------------------------------------------
    def command(self, line: str, *, tag: bool = True, multiline: bool | None = None) -> bytes:
        words = line.upper().split()
        if words[:1] == ["BDAT"]:  # `C: BDAT n [LAST]`, its chunk sent next as raw data
            self._sent.append("BDAT LAST" if words[-1:] == ["LAST"] else "BDAT")
            self._chunk = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
        else:
            self._sent_verb(line.split(" ", 1)[0].split(":", 1)[0].upper())
        return super().command(line, tag=tag, multiline=multiline)

    def sent_raw(self, data: bytes, *, multiline: bool | None = None) -> None:
        if self._chunk:  # the chunk of a BDAT command line: message bytes, not commands
            taken = min(self._chunk, len(data))
            self._chunk -= taken
            data = data[taken:]
            if not data:
                return
        if self._data:
            if data.endswith(b"\r\n.\r\n") or data == b".\r\n":
                self._data = False
                self._sent.append(".")
            return
        if data[:5].upper() == b"BDAT ":
            first = data.split(b"\r\n", 1)[0].upper().split()
            self._sent.append("BDAT LAST" if first[-1:] == [b"LAST"] else "BDAT")
            return
        for line in data.split(b"\r\n")[:-1]:  # pipelined commands sent as raw lines
            self._sent_verb(line.split(b" ", 1)[0].split(b":", 1)[0].decode("ascii", "replace").upper())

    def _sent_verb(self, verb: str) -> None:
        if verb in _RESETS:
            self._accepted = 0
        self._sent.append(verb)

    # --- what the server sends -------------------------------------------------------
    def next_reply(self) -> Reply | None:
        while True:
            greeting = self._greeting  # the greeting answers no command sent before it came
            reply = super().next_reply()
            if reply is None or greeting:
                return reply
            if self._want:
                self._parts.append(reply)
                if len(self._parts) < self._want:
                    continue
                parts, self._parts, self._want = tuple(self._parts), [], 0
                return Recipients(parts)
            verb = self._sent.popleft() if self._sent else None
            code = reply.code or ""
            if verb == "RCPT" and code.startswith("2"):
                self._accepted += 1
            elif verb == "DATA":
                self._data = code == "354"
            elif verb in (".", "BDAT LAST") and self._accepted > 1:
                self._want = self._accepted  # this is the first recipient's reply
                self._accepted = 0
                self._parts = [reply]
                continue
            elif verb in (".", "BDAT LAST"):
                self._accepted = 0
                return Recipients((reply,))
            return reply

    def pending(self) -> bytes:
        return b"".join(p.raw for p in self._parts) + super().pending()
