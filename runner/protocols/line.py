"""The line protocol, sans-IO: every line the server sends is one reply (expect-style).

For conversations with anything line-based (or a program's output through telnet/openssl):
the engine reads reply after reply until the step's pattern matches. Reply.code is None and
texts == lines == (the line,). Line ends are LF, CRLF (or CR CR LF from a pty); a last line
without a line end still counts once the connection closes.
"""

from __future__ import annotations

from runner.protocols.base import DEFAULT_MAX_LINE, FramedProtocol, Reply, decode


class Line(FramedProtocol):
    name = "line"
    expect_style = True
    #: the lines one step may gather while it waits for its pattern (runner.engine.receive)
    default_max_reply = 64 << 20

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int | None = None):
        super().__init__(max_line=max_line, max_reply=max_reply)

    def _frame(self) -> Reply | None:
        buf = self._buf
        span = buf.next_line()
        if span is None:
            return None
        return self._reply(bytes(buf.data[span[0] : span[1]]))

    def _at_eof(self) -> Reply | None:
        if not self._buf.available():
            return None
        self._buf.cursor = len(self._buf.data)
        return self._reply(bytes(self._buf.data))

    def _reply(self, line: bytes) -> Reply:
        text = decode(line.rstrip(b"\r"))
        return Reply(raw=self._buf.consume(), lines=(text,), code=None, texts=(text,))
