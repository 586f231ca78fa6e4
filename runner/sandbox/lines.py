"""Line framing on asyncio streams for the sandbox's POP3 and IMAP servers.

The connection keeps its own buffer (remembering how far it already searched for a line end, so
framing stays linear however the bytes arrive), reads with an idle deadline, caps line length,
and on STARTTLS/STLS throws away whatever plaintext the client sent after the command before
upgrading the stream.
"""

from __future__ import annotations

import asyncio
import ssl


class ConnectionGone(Exception):
    """The client closed the connection or stayed idle past the deadline."""


class LineTooLong(Exception):
    """A line exceeded the limit; it has been consumed and discarded."""


class LineConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        idle_timeout: float,
        max_line: int,
    ):
        self.reader = reader
        self.writer = writer
        self.idle_timeout = idle_timeout
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0
        self.tls = writer.get_extra_info("sslcontext") is not None

    @property
    def peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    async def _fill(self) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), self.idle_timeout)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as e:
            raise ConnectionGone(type(e).__name__) from e
        if not data:
            raise ConnectionGone("EOF")
        self._buf += data

    async def readline(self) -> bytes:
        """One line without its line end (CRLF, or a bare LF as telnet may send)."""
        too_long = False
        while True:
            i = self._buf.find(b"\n", self._scanned)
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                self._scanned = 0
                if too_long or len(line) > self.max_line:
                    raise LineTooLong()
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) > self.max_line:
                too_long = True
                self._buf.clear()
            self._scanned = len(self._buf)
            await self._fill()

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._scanned = 0
        return data

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await asyncio.wait_for(self.writer.drain(), self.idle_timeout)
        except (TimeoutError, ConnectionError, OSError) as e:
            raise ConnectionGone(type(e).__name__) from e

    async def start_tls(self, context: ssl.SSLContext, reply: bytes) -> None:
        """Send `reply` (the go-ahead to STARTTLS/STLS) and switch the stream to TLS.

        Reading is paused before the reply goes out, so the client's TLS handshake stays in the
        socket until the TLS layer is in place; whatever already arrived was sent before the
        go-ahead, i.e. plaintext pipelined after the command, and is thrown away unread
        (RFC 3207 section 4.2, RFC 2595 section 3.1; the CVE-2011-0411 injection)."""
        transport = self.writer.transport
        transport.pause_reading()
        self._buf.clear()
        self._scanned = 0
        pending = getattr(self.reader, "_buffer", None)  # StreamReader has no public discard
        if pending:
            pending.clear()
        self.writer.write(reply)
        try:
            await asyncio.wait_for(self.writer.start_tls(context), self.idle_timeout)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as e:
            raise ConnectionGone(f"TLS handshake failed: {type(e).__name__}") from e
        self.tls = True

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass
