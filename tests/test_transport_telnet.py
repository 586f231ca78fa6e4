"""Telnet transport: the real inetutils telnet under a pty, measured on the wire."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import socket
import struct
import termios
import time
import tty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import ConnectionClosed, ScenarioError, UsageError
from runner.model.config import ConnectConfig
from runner.transports import create
from runner.transports.telnet import CLOSED_MARK, TelnetTransport, check_sendable
from tests.support.servers import (
    WIRE_PAYLOADS,
    Server,
    close_mid_reply,
    ipv6_available,
    read_until,
    record,
)

pytestmark = [
    pytest.mark.telnet,
    pytest.mark.skipif(shutil.which("telnet") is None, reason="no telnet binary"),
]


def soon(seconds: float = 10.0) -> float:
    """A send deadline: seconds from now."""
    return time.monotonic() + seconds


def cfg(port, host="127.0.0.1", transport="telnet", **kw) -> ConnectConfig:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("connect_timeout", 5.0)
    return ConnectConfig(host=host, port=port, transport=transport, **kw)


def sent_over(transport: str, payload: bytes, host: str = "127.0.0.1") -> bytes | str:
    """What the recording server got for `payload`, or the refusal message."""
    with Server(record(b"220 rec\r\n"), host=host) as srv, create(cfg(srv.port, host, transport)) as t:
        t.connect()
        assert read_until(t, b"220 rec\r\n") == b"220 rec\r\n"
        try:
            t.send(payload, soon())
        except ScenarioError as e:
            return str(e)
        t.send(b"END\r\n", soon())
        conn = srv.wait_connection()
        got = conn.wait_received(b"END\r\n")
        assert got.endswith(b"END\r\n")
        return got[: -len(b"END\r\n")]


@pytest.mark.parametrize("name", list(WIRE_PAYLOADS))
def test_wire_identity_with_socket_or_clear_refusal(name):
    payload = WIRE_PAYLOADS[name]
    assert sent_over("socket", payload) == payload
    got = sent_over("telnet", payload)
    if isinstance(got, str):
        assert name in ("raw bare CR", "raw bare LF", "byte 0xff"), got
        assert "use transport: socket" in got
        assert check_sendable(payload) == got
    else:
        assert got == payload, f"telnet altered {name!r}"


def test_refusal_messages():
    assert check_sendable(b"EHLO x\r\n") is None
    assert check_sendable(b"a\xffb\r\n") == (
        "telnet cannot send byte 0xff exactly (it escapes it as IAC IAC); use transport: socket"
    )
    assert "bare CR" in check_sendable(b"a\r")
    assert "bare LF" in check_sendable(b"\n")
    assert "bare LF" in check_sendable(b"a\n")
    assert "0x05" in check_sendable(b"\x05\r\n")
    assert "0x85" in check_sendable(b"\x85\r\n")


def test_check_sendable_is_the_transports_method():
    """The engine asks the transport (every transport has the method): telnet's is its rule, the
    socket transport sends every byte exactly."""
    telnet_t, socket_t = create(cfg(1)), create(cfg(1, transport="socket"))
    for data in (b"EHLO x\r\n", b"a\n", b"a\r", b"\xff\r\n", b"\x05\r\n"):
        assert telnet_t.check_sendable(data) == check_sendable(data)
        assert socket_t.check_sendable(data) is None
    assert "bare LF" in telnet_t.check_sendable(b"RETR 1\n")


def test_split_sends_and_several_lines_in_one_send():
    with Server(record()) as srv, create(cfg(srv.port)) as t:
        t.connect()
        read_until(t, b"\r\n")
        t.send(b"RCPT TO:<", soon())
        t.send(b"b@example.test>\r\nQUIT\r\n", soon())
        conn = srv.wait_connection()
        assert conn.wait_received(b"QUIT\r\n") == b"RCPT TO:<b@example.test>\r\nQUIT\r\n"


def test_server_bytes_come_back_unchanged_except_documented_limits():
    high = bytes(b for b in range(256) if b not in (0x0A, 0x0D, 0xFF))
    reply = b"250-first\r\n250-" + high + b"\r\n250 last\r\n"

    def handler(conn):
        conn.send(b"220 hi\r\n")
        conn.recv_line(10)
        conn.send(reply)
        conn.read_some(10)

    with Server(handler) as srv, create(cfg(srv.port)) as t:
        t.connect()
        assert read_until(t, b"\r\n") == b"220 hi\r\n"
        t.send(b"EHLO x\r\n", soon())
        assert read_until(t, b"250 last\r\n") == reply


def test_server_lf_and_split_crlf_become_crlf():
    def handler(conn):
        conn.send(b"220 a\r")
        time.sleep(0.1)
        conn.send(b"\n220 b\n")  # CR | LF split across segments, then a bare LF
        conn.read_some(10)

    with Server(handler) as srv, create(cfg(srv.port)) as t:
        t.connect()
        assert read_until(t, b"b\r\n") == b"220 a\r\n220 b\r\n"


def test_chatter_goes_to_notes_not_data():
    notes = []
    with Server(close_mid_reply(partial=b"250-first\r\n250-sec")) as srv:
        t = create(cfg(srv.port), on_note=lambda kind, text: notes.append((kind, text)))
        with t:
            info = t.connect()
            assert info.transport == "telnet" and info.tls is None
            assert info.note and info.note.startswith("telnet -E -c 127.0.0.1 ")
            assert read_until(t, b"\r\n") == b"220 ready\r\n"
            t.send(b"EHLO x\r\n", soon())
            assert read_until(t, b"never") == b"250-first\r\n250-sec"
            assert t.recv(time.monotonic() + 2) == b""
            with pytest.raises(ConnectionClosed):
                t.send(b"NOOP\r\n", soon())
    texts = [text for kind, text in notes if kind == "chatter"]
    assert "Trying 127.0.0.1..." in texts
    assert "Connected to 127.0.0.1." in texts
    assert any(x.startswith("Escape character is") for x in texts)
    assert "Connection closed by foreign host." in texts


def test_server_text_resembling_chatter_prefix_is_delivered():
    def handler(conn):
        conn.send(b"220 Conn")
        time.sleep(0.2)
        conn.send(b"ected fine\r\n")
        conn.read_some(10)

    with Server(handler) as srv, create(cfg(srv.port)) as t:
        t.connect()
        assert read_until(t, b"\r\n") == b"220 Connected fine\r\n"


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_ipv6():
    assert sent_over("telnet", b"EHLO v6\r\n", host="::1") == b"EHLO v6\r\n"


def test_tls_refused_with_alternatives():
    for mode in ("implicit", "starttls"):
        with pytest.raises(UsageError, match="transport: socket.*transport: openssl"):
            create(cfg(465, tls=mode))


def test_missing_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match=r"telnet not found: install the Debian package 'telnet'"):
        TelnetTransport(cfg(25)).connect()


def test_close_sends_nothing_more():
    with Server(record()) as srv:
        t = create(cfg(srv.port))
        t.connect()
        read_until(t, b"\r\n")
        t.send(b"QUIT\r\n", soon())
        conn = srv.wait_connection()
        conn.wait_received(b"QUIT\r\n")
        t.close()
        assert conn.wait_closed(5) == b"QUIT\r\n"


def test_a_pty_write_is_counted_once_the_terminal_is_polled():
    """What spawned.wait_until_flushed builds on: bytes written to a pty master can sit in the
    kernel's flip buffer for milliseconds, not yet counted by FIONREAD on the terminal (telnet,
    asleep in poll, looked done and the last line was lost); a poll() of the terminal moves them
    on first, so FIONREAD then counts every byte, every time."""
    master, slave = pty.openpty()
    try:
        tty.setraw(slave)
        terminal = select.poll()
        terminal.register(slave, select.POLLIN)
        for i in range(2000):
            os.write(master, b"QUIT\n")
            terminal.poll(0)
            unread = struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            assert unread == 5, f"write {i}: FIONREAD {unread} after poll()"
            assert os.read(slave, 64) == b"QUIT\n"
    finally:
        os.close(master)
        os.close(slave)


def test_measure_per_send_cost(capsys):
    """Measured, not asserted: one request/reply round trip through socket and through telnet."""

    def echo(conn):
        conn.send(b"220 hi\r\n")
        while (line := conn.recv_line(10)) is not None:
            conn.send(b"250 " + line)

    rounds = 200
    results = {}
    for transport in ("socket", "telnet"):
        with Server(echo) as srv:
            t0 = time.perf_counter()
            t = create(cfg(srv.port, transport=transport))
            t.connect()
            read_until(t, b"\r\n")
            spawn = time.perf_counter() - t0
            t1 = time.perf_counter()
            for i in range(rounds):
                t.send(b"NOOP %d\r\n" % i, soon())
                assert read_until(t, b"\r\n") == b"250 NOOP %d\r\n" % i
            per = (time.perf_counter() - t1) / rounds
            t.close()
        results[transport] = (spawn, per)
    with capsys.disabled():
        for name, (spawn, per) in results.items():
            print(f"\n  {name:7s} connect {spawn * 1000:6.1f} ms, round trip {per * 1e6:7.0f} us", end="")
        print(f"\n  telnet/socket per round trip: {results['telnet'][1] / results['socket'][1]:.1f}x")


def test_sockets_unaffected_by_stray_telnet_listener_close():
    # A server that closes right away: telnet connects, then exits; recv gives EOF, not chatter.
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    try:
        t = create(cfg(port))
        import threading

        def accept_close():
            c, _ = lst.accept()
            time.sleep(0.3)
            c.close()

        th = threading.Thread(target=accept_close)
        th.start()
        with t:
            t.connect()
            assert t.recv(time.monotonic() + 5) == b""
        th.join(5)
    finally:
        lst.close()


# ----------------------------------------------------------------- the byte handling, exhaustively
# (no telnet process: these are the transport's own rules for what telnet printed)

_PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"C", b"Conn", b"\xff", b"\x05", b"\x85", b"\x00"])
_BYTES = st.lists(_PIECES, max_size=12).map(b"".join)


def _spec_unsendable(data: bytes) -> str | None:
    """Which rule check_sendable must apply first (None: sendable)."""
    if b"\xff" in data:
        return "0xff"
    if b"\x05" in data:
        return "0x05"
    if b"\x85" in data:
        return "0x85"
    if any(data[i + 1 : i + 2] != b"\n" for i, c in enumerate(data) if c == 0x0D):
        return "bare CR"
    if any(i == 0 or data[i - 1] != 0x0D for i, c in enumerate(data) if c == 0x0A):
        return "bare LF"
    return None


@settings(max_examples=400, deadline=None)
@given(_BYTES)
def test_check_sendable_matches_its_rules(data):
    why = _spec_unsendable(data)
    got = check_sendable(data)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got and "use transport: socket" in got


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=12).map(b"".join), st.integers(0, len(CLOSED_MARK) - 1))
def test_take_holds_back_exactly_a_possible_start_of_the_closing_line(head, k):
    buf = head + CLOSED_MARK[:k]
    t = TelnetTransport(cfg(1))
    t._buf = buf
    out = t._take()
    held = t._buf
    # the longest tail of buf that could still become the closing line is held, the rest handed out
    longest = max(
        j
        for j in range(min(len(buf), len(CLOSED_MARK) - 1) + 1)
        if CLOSED_MARK.startswith(buf[len(buf) - j :])
    )
    assert held == buf[len(buf) - longest :]
    t2 = TelnetTransport(cfg(1))
    assert out == t2._fix_newlines(buf[: len(buf) - longest])


def test_take_stops_at_the_closing_line_and_says_it_once():
    notes = []
    t = TelnetTransport(cfg(1), on_note=lambda kind, text: notes.append((kind, text)))
    t._buf = b"221 bye\n" + CLOSED_MARK + b"\r\n"
    assert t.recv(time.monotonic() + 1) == b"221 bye\r\n"
    assert t.recv(time.monotonic() + 1) == b""
    assert notes == [("chatter", CLOSED_MARK.decode())]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"x", b"\r\r\n"]), max_size=12).map(b"".join), st.data()
)
def test_fix_newlines_turns_every_lone_lf_into_crlf_whatever_the_reads(data, draw):
    expect = bytearray()
    for i, c in enumerate(data):
        if c == 0x0A and (i == 0 or data[i - 1] != 0x0D):
            expect += b"\r"
        expect.append(c)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=4)))
    t = TelnetTransport(cfg(1))
    got = b"".join(t._fix_newlines(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True))
    assert got == bytes(expect)


def test_a_program_that_exited_is_told_apart_from_one_that_runs():
    """wait_until_flushed stops looking once the program has exited (a zombie not yet reaped):
    it forwards nothing more. It used to wait out its whole bound, 1 s at every close after the
    server had closed the connection (bench/benchmark.py, telnet: close)."""
    import subprocess
    import sys

    from runner.transports.spawned import _ended

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not _ended(child.pid)
    finally:
        child.kill()
    deadline = time.monotonic() + 10
    while not _ended(child.pid) and time.monotonic() < deadline:  # dead, not reaped: a zombie
        time.sleep(0.01)
    assert _ended(child.pid)
    with open(f"/proc/{child.pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "Z"  # (still there: Popen has not reaped it)
    child.wait()
    assert _ended(child.pid)  # gone
