"""A fault server: a loopback server that misbehaves on purpose, and a way to run a real
`mailrun` child process against it and measure it (exit status, wall time, peak RSS).

    from tests.support.faultserver import Fault, Stream, Drip, Close, Reset, Silence, run_mailrun

    answers = {b"RETR": [b"+OK\\r\\n", Stream(b"abc\\r\\n", 20_000_000), b".\\r\\n"]}
    with Fault(b"+OK pop3\\r\\n", answers) as srv:
        res = run_mailrun(tmp_path, scenario_text(srv.port), timeout=60)
    res.status, res.seconds, res.peak_mib, res.output

A connection gets the greeting (a list of actions, or bytes), then for each line the client
sends, the actions listed for its first word (upper case; an IMAP tag `a1` is skipped, so the
word is the command), else those of b"*", else nothing. An action is bytes (sent as they are),
or one of the classes below. Every server-side read has a timeout; the server never blocks
forever (Silence holds for a bounded time).
"""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import Conn, Server

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stream:
    """`unit` repeated `count` times, sent in chunks of about 1 MiB (a huge reply, fast)."""

    unit: bytes
    count: int

    def run(self, conn: Conn) -> None:
        per = max(1, (1 << 20) // len(self.unit))
        chunk = self.unit * per
        left = self.count
        while left >= per:
            conn.send(chunk)
            left -= per
        if left:
            conn.send(self.unit * left)


@dataclass
class Drip:
    """`data` sent `step` bytes at a time, `interval` seconds apart (until `data` or the
    connection ends)."""

    data: bytes
    interval: float = 0.01
    step: int = 1

    def run(self, conn: Conn) -> None:
        for i in range(0, len(self.data), self.step):
            conn.send(self.data[i : i + self.step])
            time.sleep(self.interval)


@dataclass
class Endless:
    """`unit` sent again and again for `seconds` (a stream that never ends in time)."""

    unit: bytes
    seconds: float

    def run(self, conn: Conn) -> None:
        end = time.monotonic() + self.seconds
        chunk = self.unit * max(1, 8192 // len(self.unit))
        while time.monotonic() < end:
            conn.send(chunk)


@dataclass
class Silence:
    """Send nothing for `seconds` (reading and dropping what arrives)."""

    seconds: float

    def run(self, conn: Conn) -> None:
        end = time.monotonic() + self.seconds
        while (left := end - time.monotonic()) > 0:
            try:
                if not conn.read_some(min(0.2, left)):
                    return
            except TimeoutError:
                continue


class Close:
    """Close the connection (FIN)."""

    def run(self, conn: Conn) -> None:
        raise _Done


class Reset:
    """Close the connection with a TCP RST (SO_LINGER 0)."""

    def run(self, conn: Conn) -> None:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise _Done


@dataclass
class StartTLS:
    """Wrap the connection in TLS (server side) now; with `stall`, accept the TCP bytes of the
    handshake but never answer them for that many seconds."""

    context: ssl.SSLContext | None = None
    stall: float = 0.0

    def run(self, conn: Conn) -> None:
        if self.stall:
            Silence(self.stall).run(conn)
            raise _Done
        assert self.context is not None
        conn.start_tls(self.context)


class _Done(Exception):
    """Internal: an action ended the conversation."""


Action = bytes | Stream | Drip | Endless | Silence | Close | Reset | StartTLS


def _play(conn: Conn, actions) -> None:
    if isinstance(actions, bytes):
        actions = [actions]
    for a in actions:
        if isinstance(a, bytes):
            conn.send(a)
        else:
            a.run(conn)


def _word(line: bytes) -> bytes:
    words = line.split()
    if len(words) > 1 and words[0][:1].isalpha() and words[0][1:].isdigit():  # an IMAP tag
        return words[1].upper()
    return words[0].upper() if words else b""


def fault_handler(greeting, answers: dict, timeout: float = 30.0):
    """The Server handler: the greeting, then `answers` by first word (see the module doc)."""

    def handler(conn: Conn) -> None:
        try:
            _play(conn, greeting)
            while True:
                line = conn.recv_line(timeout)
                if line is None:
                    return
                word = _word(line)
                _play(conn, answers.get(word, answers.get(b"*", [])))
                if word in (b"QUIT", b"LOGOUT") and word not in answers:
                    return
        except (_Done, TimeoutError, BrokenPipeError, ConnectionResetError):
            return

    return handler


class Fault(Server):
    """A Server (tests.support.servers) playing fault_handler(greeting, answers)."""

    def __init__(self, greeting, answers: dict | None = None, *, tls: ssl.SSLContext | None = None):
        super().__init__(fault_handler(greeting, answers or {}), tls=tls)


# --- running mailrun against it ---------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    seconds: float
    peak_mib: float  # the child's peak RSS (VmHWM of its own memory, see run_mailrun)
    output: str


def run_mailrun(args: list[str], *, timeout: float = 120.0, cwd: Path | None = None) -> Outcome:
    """`python -m runner ARGS` as a child process: its exit status, wall time, and peak RSS.

    The peak is the child's VmHWM (/proc/PID/status), read every few milliseconds while it
    runs: a high-water mark, so the last reading holds every earlier peak. (ru_maxrss from
    wait4 would not do: Linux carries the parent's RSS at the fork over the exec, so a child of
    a big test process would report the test process.)"""
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    start = time.monotonic()
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            stdin=devnull,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd or REPO,
            env=env,
        )
    try:
        out, peak_kib = _communicate(proc, timeout)
    except BaseException:
        proc.kill()
        raise
    proc.wait()
    seconds = time.monotonic() - start
    return Outcome(proc.returncode, seconds, peak_kib / 1024, out.decode("utf-8", "replace"))


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None  # gone, or a zombie (its memory already released)


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[bytes, int]:
    """Reads the child's output until EOF or `timeout` (then kills it), sampling its VmHWM:
    (output, peak KiB)."""
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    chunks = []
    peak = 0
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            hwm = _hwm_kib(proc.pid)
            if hwm is not None:
                peak = max(peak, hwm)
            left = end - time.monotonic()
            if left <= 0:
                proc.kill()
                chunks.append(b"\n[killed by the test: still running after %.0f s]\n" % timeout)
                break
            if not sel.select(min(left, 0.005)):
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
    proc.stdout.close()
    return b"".join(chunks), peak


def scenario(
    path: Path, protocol: str, port: int, steps: str, *, timeout: float = 10.0, extra: str = ""
) -> Path:
    """Writes a one-session scenario file for `protocol` on 127.0.0.1:port; `steps` is the YAML
    of the steps list (indented by two spaces)."""
    path.write_text(
        f"name: fault\nprotocol: {protocol}\n"
        f"connect: {{host: 127.0.0.1, port: {port}, timeout: {timeout}{extra}}}\n"
        f"steps:\n{steps}"
    )
    return path
