"""The telnet transport: the system `telnet` (Debian: inetutils-telnet 2.4) under a pty.

It exists so a scenario can be shown to behave the same through the program people type into.
Everything below was measured on the wire with a recording loopback server
(tests/test_transport_telnet.py keeps measuring it).

How it is driven
  `telnet -E -c [-4|-6] HOST PORT` under pexpect (no shell, LC_ALL=C, no per-send delay):
  -E: no escape character (0x1d would otherwise open the `telnet>` prompt); -c: ignore ~/.telnetrc.
  Before exec the pty's special characters (intr, quit, susp, flush, eof, ...) are set to 0xff:
  telnet traps them locally ("localchars") and sends IAC IP / IAC BRK / ... instead; 0xff is a
  byte we refuse anyway (setting them to 0, "disabled", made NUL act as intr). Once telnet has set
  its terminal mode after connecting, the pty is put in raw mode, so neither direction is
  translated by the tty and lines have no 4095-byte canonical-mode limit.
  telnet's own output ("Trying ...", "Connected to ...", "Escape character is 'off'.",
  "Connection closed by foreign host.", errors) is kept out of the data and handed to
  on_note('chatter', line). On close telnet is killed before the pty is closed (telnet reading EOF
  from its terminal sends the terminal's eof character to the server, over and over).

Client -> server (what telnet does to our bytes in its default NVT, non-binary mode)
  LF -> CR LF, CR -> CR NUL, 0xff -> IAC IAC (0xff 0xff), 0x05 and 0x85 are dropped.
  Every other byte (NUL, controls, 0x1d, 0x80-0xfe, UTF-8) arrives unchanged.
  So the transport sends `\\r\\n` as `\\n`, which arrives as exactly `\\r\\n`; a bare CR, a bare LF,
  0xff, 0x05 and 0x85 cannot be sent exactly: check_sendable() names the problem (the engine
  asks before the protocol records the step), and send() refuses such bytes too, with
  ScenarioError, before writing anything.
  Switching telnet to binary mode or `set crlf` needs option negotiation (IAC bytes on the wire)
  or makes `\\r\\n` arrive as `\\r\\n\\r\\n`, so neither is used.

Server -> client (what telnet does to the server's bytes)
  CR LF is printed as LF (telnet relies on the terminal's newline mapping); this transport turns
  every LF that is not preceded by CR back into CR LF. So the protocol layer sees CR LF lines
  unchanged, but it cannot tell a server's bare LF from CR LF (both arrive as CR LF), CR NUL
  arrives as CR, and in CR CR LF one CR is lost. 0xff is telnet's IAC: a server's 0xff byte is
  taken as a telnet command (IAC IAC arrives as one 0xff; IAC x swallows x), and a server that
  sends real option negotiation makes telnet answer it on the wire and change its terminal mode.
  NUL, other controls and 0x80-0xfe arrive unchanged. Mail servers send none of these in
  practice; use `transport: socket` to see a server's exact bytes.

No TLS: `tls: implicit|starttls` is refused (use transport: socket or transport: openssl).
Cost: one telnet process per connection (spawn ~ a few ms); each send is a pty write plus
telnet's copy to the socket (see the measurement in tests/test_transport_telnet.py).
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import termios
import time
import tty

import pexpect

from runner.errors import (
    ConnectError,
    ConnectionClosed,
    DeadlineError,
    NetworkError,
    ScenarioError,
    UsageError,
)
from runner.transports.base import CHUNK, ConnectInfo, NoteSink, TLSInfo, Transport
from runner.transports.socket import format_peer
from runner.transports.spawned import kill, spawn, stop, write_all

CLOSED_MARK = b"Connection closed by foreign host."
assert b"C" not in CLOSED_MARK[1:]  # _take relies on it
_SPECIAL = (
    "VINTR",
    "VQUIT",
    "VSUSP",
    "VDISCARD",
    "VEOF",
    "VSTART",
    "VSTOP",
    "VLNEXT",
    "VWERASE",
    "VREPRINT",
    "VKILL",
    "VERASE",
    "VEOL",
    "VEOL2",
)
_DROPPED = {0x05: "drops", 0x85: "drops"}


def check_sendable(data: bytes) -> str | None:
    """Why telnet cannot deliver `data` byte for byte (None when it can): TelnetTransport's
    check_sendable, so nothing different from what the scenario says ever goes out."""
    crlf = data.count(b"\r\n")
    if (
        data.count(b"\r") == crlf
        and data.count(b"\n") == crlf
        and b"\xff" not in data
        and b"\x05" not in data
        and b"\x85" not in data
    ):
        return None  # every CR and every LF is part of a CR LF (the common case, checked cheaply)
    if b"\xff" in data:
        return "telnet cannot send byte 0xff exactly (it escapes it as IAC IAC); use transport: socket"
    for b, what in _DROPPED.items():
        if bytes([b]) in data:
            return f"telnet cannot send byte 0x{b:02x} ({what} it); use transport: socket"
    if data.count(b"\r") != crlf:
        return "telnet cannot send a bare CR exactly (it sends CR NUL); use transport: socket"
    return "telnet cannot send a bare LF exactly (it sends CR LF); use transport: socket"


def _prepare_pty() -> None:  # runs in the child, before exec
    attrs = termios.tcgetattr(0)
    for name in _SPECIAL:
        idx = getattr(termios, name, None)
        if idx is not None:
            attrs[6][idx] = b"\xff"
    attrs[3] &= ~termios.ECHO  # telnet turns ECHO on when it sets its mode: our "ready" sign
    termios.tcsetattr(0, termios.TCSANOW, attrs)


class TelnetTransport(Transport):
    name = "telnet"
    check_sendable = staticmethod(check_sendable)

    def __init__(self, config, *, on_note: NoteSink | None = None):
        super().__init__(config, on_note=on_note)
        if config.tls != "none":
            raise UsageError(
                f"transport: telnet cannot do TLS (tls: {config.tls}); use transport: socket, "
                "or transport: openssl to drive `openssl s_client` the way people do by hand"
            )
        self.child: pexpect.spawn | None = None
        self.fd: int | None = None
        self._poll = None  # select.poll() on the pty once connected
        self.peer = format_peer(config.host, config.port)
        self._buf = b""  # data read but not yet returned (held back: may be chatter)
        self._last = b""  # last byte returned, for the LF -> CR LF fix-up across reads
        self._eof = False
        self._closing_note: str | None = None  # telnet's "Connection closed ..." line, said at EOF
        self._chatter_done = False

    @property
    def encrypted(self) -> bool:
        return False

    def command(self) -> list[str]:
        cfg = self.config
        args = ["telnet", "-E", "-c"]
        if cfg.family in (4, 6):
            args.append(f"-{cfg.family}")
        return [*args, cfg.host, str(cfg.port)]

    # -- connect ---------------------------------------------------------------------------------
    def connect(self) -> ConnectInfo:
        cfg = self.config
        exe = shutil.which("telnet")
        if exe is None:
            raise UsageError("telnet not found: install the Debian package 'telnet' (apt-get install telnet)")
        argv = self.command()
        self.child = spawn(exe, argv, _prepare_pty)
        self.fd = self.child.child_fd
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        deadline = time.monotonic() + cfg.connect_timeout
        trying = None
        pending = b""
        while True:
            while b"\n" in pending:
                raw, _, pending = pending.partition(b"\n")
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                self.on_note("chatter", line)
                m = re.match(r"Trying (.+)\.\.\.$", line)
                if m:
                    trying = m.group(1)
                    self.peer = format_peer(trying, cfg.port)
                elif line.startswith("Escape character is"):
                    self._buf = pending
                    self._enter_raw(deadline)
                    return ConnectInfo(peer=self.peer, transport=self.name, note=" ".join(argv))
                elif line.startswith("Connected to"):
                    pass
                else:
                    err = self._connect_error(line, trying)
                    if err:
                        self.close()
                        raise err
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                target = self.peer if trying else f"{cfg.host}:{cfg.port}"
                raise ConnectError(f"connect to {target} timed out after {cfg.connect_timeout:g}s")
            data = self._read(remaining)
            if data is None:
                continue
            if data == b"":
                self.close()
                if pending.strip():
                    self.on_note("chatter", pending.decode("utf-8", "replace").strip())
                raise ConnectError(f"telnet exited before connecting to {cfg.host}:{cfg.port}")
            pending += data

    def _connect_error(self, line: str, trying: str | None) -> ConnectError | None:
        cfg = self.config
        low = line.lower()
        if "lookup failure" in low or "could not resolve" in low:
            reason = line.rsplit(",", 1)[-1].strip() if "," in line else line
            return ConnectError(f"cannot resolve '{cfg.host}': {reason}")
        if "unable to connect to remote host" in low:
            reason = line.rsplit(":", 1)[-1].strip()
            if "refused" in low:
                return ConnectError(f"connection to {self.peer} refused")
            return ConnectError(f"connect to {self.peer} failed: {reason}")
        return None

    def _enter_raw(self, deadline: float) -> None:
        # telnet sets its terminal mode right after printing the escape line; wait until it did
        # (ECHO comes back on), then switch the pty to raw so nothing is translated.
        assert self.fd is not None
        end = min(deadline, time.monotonic() + 1.0)
        while time.monotonic() < end:
            if termios.tcgetattr(self.fd)[3] & termios.ECHO:
                break
            time.sleep(0.002)
        tty.setraw(self.fd)

    # -- low-level pty I/O -------------------------------------------------------------------------
    def _read(self, timeout: float) -> bytes | None:
        """Bytes from the pty, b'' when telnet is gone, None when nothing came within timeout."""
        if self.fd is None:
            return b""
        if not self._poll.poll(int(timeout * 1000) + 1 if timeout > 0 else 0):  # ms, rounded up
            return None
        try:
            return os.read(self.fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EIO:  # the child closed the pty: telnet exited
                return b""
            raise NetworkError(f"reading from telnet failed: {e.strerror}") from None

    # -- data ------------------------------------------------------------------------------------
    def send(self, data: bytes, deadline: float) -> None:
        problem = check_sendable(data)
        if problem:
            raise ScenarioError(problem)
        if self.fd is None or self._eof:
            raise ConnectionClosed(f"connection to {self.peer} is closed (telnet exited)")
        write_all(
            self.fd,
            data.replace(b"\r\n", b"\n"),
            peer=self.peer,
            deadline=deadline,
            program="telnet",
        )

    def recv(self, deadline: float) -> bytes:
        while True:
            out = self._take()
            if out:
                return out
            if self._eof:
                self._say_closing()
                return b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineError(f"no data from {self.peer} before the deadline", partial=self._buf)
            data = self._read(remaining)
            if data is None:
                continue
            if data == b"":
                self._eof = True
            else:
                self._buf += data

    def _take(self) -> bytes:
        """Return what can be handed out now: everything before telnet's closing chatter, and
        hold back a tail that may be the start of it (unless telnet has exited)."""
        buf = self._buf
        if not buf:
            return b""
        i = buf.find(CLOSED_MARK)
        if i != -1:
            # said once the bytes before it were handed out (at EOF), so -v shows the server's
            # last reply first, as the terminal did
            self._closing_note = buf[i:].decode("utf-8", "replace").strip()
            buf = buf[:i]
            self._buf = b""
            self._eof = True  # telnet prints this only when the server closed
        elif self._eof:
            self._buf = b""
        else:
            # Hold back a tail that may be the start of the mark. Such a tail begins with the
            # mark's "C", a byte the rest of the mark does not contain: only the last "C" in the
            # last len(mark) - 1 bytes can start one.
            j = buf.rfind(b"C", max(0, len(buf) - len(CLOSED_MARK) + 1))
            if j != -1 and CLOSED_MARK.startswith(buf[j:]):
                buf, self._buf = buf[:j], buf[j:]
            else:
                self._buf = b""
        return self._fix_newlines(buf)

    def _fix_newlines(self, data: bytes) -> bytes:
        """telnet prints the server's CR LF as LF: every LF not preceded by CR becomes CR LF."""
        if not data:
            return data
        if b"\r" in data:  # CR LF -> LF, then every LF -> CR LF: only lone LFs change
            fixed = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        else:
            fixed = data.replace(b"\n", b"\r\n")
        if data[:1] == b"\n" and self._last == b"\r":
            fixed = fixed[1:]  # that CR ended the previous read
        self._last = data[-1:]
        return fixed

    def start_tls(self) -> TLSInfo:
        raise UsageError("transport: telnet cannot do TLS; use transport: socket or transport: openssl")

    def _say_closing(self) -> None:
        note, self._closing_note = self._closing_note, None
        if note:
            self.on_note("chatter", note)

    def abort(self) -> None:
        kill(self.child)

    def close(self) -> None:
        child, self.child = self.child, None
        self.fd = None
        self._eof = True
        self._say_closing()
        if child is not None:
            stop(child)
