"""POP3 framing (RFC 1939, 2449, 5034): single-line, multi-line bodies, SASL continuations."""

from __future__ import annotations

import pytest

from runner.errors import ConnectionClosed, ProtocolError
from runner.protocols import create
from runner.protocols.pop3 import POP3
from tests.support.framing import drain, greeted

RETR_BODY = (
    b"Return-Path: <alice@example.test>\r\n"
    b"Subject: transcript test\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"..this line starts with a dot, so it is dot-stuffed on the wire.\r\n"
    b"\r\n"
    b"-- Alice\r\n"
)


def test_dovecot_session():
    p = create("pop3")
    assert isinstance(p, POP3)
    (g,) = drain(p, b"+OK Dovecot (Debian) ready.\r\n")
    assert (g.code, g.texts, g.multiline) == ("+OK", ("Dovecot (Debian) ready.",), False)
    assert p.command("USER bob") == b"USER bob\r\n"
    (r,) = drain(p, b"+OK\r\n")
    assert (r.code, r.texts, r.lines) == ("+OK", ("",), ("+OK",))
    p.command("STAT")
    (r,) = drain(p, b"+OK 2 1006\r\n")
    assert r.texts == ("2 1006",) and not r.multiline
    p.command("LIST")
    listing = b"+OK 2 messages:\r\n1 458\r\n2 548\r\n.\r\n"
    (r,) = drain(p, listing)
    assert r.multiline and r.raw == listing
    assert r.lines == ("+OK 2 messages:", "1 458", "2 548")
    assert r.texts == ("2 messages:", "1 458", "2 548")
    p.command("RETR 2")
    wire = b"+OK 548 octets\r\n" + RETR_BODY + b".\r\n"
    (r,) = drain(p, wire)
    assert r.raw == wire
    assert r.lines[0] == "+OK 548 octets"
    assert r.texts[0] == "548 octets"
    assert ".this line starts with a dot, so it is dot-stuffed on the wire." in r.lines
    assert r.lines[-1] == "-- Alice"
    assert r.lines[3] == ""
    p.command("QUIT")
    (r,) = drain(p, b"+OK Logging out.\r\n")
    assert r.code == "+OK"
    assert p.pending() == b""


def test_capa_is_multiline():
    p = greeted(POP3())
    p.command("CAPA")
    (r,) = drain(p, b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n")
    assert r.multiline and r.lines[1:] == ("CAPA", "TOP", "UIDL", "SASL PLAIN LOGIN")


@pytest.mark.parametrize(
    "command, multi",
    [
        ("RETR 1", True),
        ("retr 1", True),
        ("TOP 1 0", True),
        ("capa", True),
        ("LIST", True),
        ("list", True),
        ("UIDL", True),
        ("LIST 1", False),
        ("UIDL 1", False),
        ("STAT", False),
        ("DELE 1", False),
        ("NOOP", False),
        ("", False),
    ],
)
def test_which_commands_get_a_multiline_reply(command, multi):
    p = greeted(POP3())
    p.command(command)
    p.receive_data(b"+OK x\r\nbody\r\n.\r\n")
    r = p.next_reply()
    assert r.multiline is multi
    if not multi:
        assert r.lines == ("+OK x",)
        assert p.pending() == b"body\r\n.\r\n"


def test_err_to_a_multiline_command_is_single_line():
    p = greeted(POP3())
    p.command("RETR 9")
    p.command("NOOP")
    a, b = drain(p, b"-ERR There's no message 9.\r\n+OK\r\n")
    assert (a.code, a.texts, a.multiline) == ("-ERR", ("There's no message 9.",), False)
    assert b.code == "+OK"


def test_multiline_can_be_forced_either_way():
    p = greeted(POP3())
    p.command("XTND XLST", multiline=True)
    p.command("LIST", multiline=False)
    a, b = drain(p, b"+OK\r\nx\r\n.\r\n+OK 2 messages\r\n")
    assert a.multiline and a.lines == ("+OK", "x")
    assert not b.multiline and b.texts == ("2 messages",)


def test_byte_stuffing_is_removed_and_only_a_lone_dot_ends_the_body():
    p = greeted(POP3())
    p.command("RETR 1")
    (r,) = drain(p, b"+OK\r\n..\r\n...\r\n..x\r\n.y\r\n. \r\n\r\n.\r\n")
    assert r.lines == ("+OK", ".", "..", ".x", "y", " ", "")


def test_bare_lf_in_a_body():
    p = greeted(POP3())
    p.command("RETR 1")
    data = b"+OK\nline one\n..two\n.\n"
    (r,) = drain(p, data)
    assert r.raw == data and r.lines == ("+OK", "line one", ".two")


def test_sasl_continuations():
    p = greeted(POP3())
    p.command("AUTH LOGIN")
    (r,) = drain(p, b"+ VXNlcm5hbWU6\r\n")
    assert (r.code, r.texts, r.lines) == ("+", ("VXNlcm5hbWU6",), ("+ VXNlcm5hbWU6",))
    # the SASL response is not a command, even if it happens to read like one
    p.command("CAPA")
    (r,) = drain(p, b"+\r\n")
    assert (r.code, r.texts) == ("+", ("",))
    p.command("d29uZGVybGFuZA==")
    (r,) = drain(p, b"+OK Logged in.\r\n")
    assert r.code == "+OK" and not r.multiline
    # after the exchange, commands are commands again
    p.command("CAPA")
    (r,) = drain(p, b"+OK\r\nTOP\r\n.\r\n")
    assert r.multiline


def test_auth_failure_with_resp_code():
    p = greeted(POP3())
    p.command("PASS wrong")
    (r,) = drain(p, b"-ERR [AUTH] Authentication failed.\r\n")
    assert (r.code, r.texts) == ("-ERR", ("[AUTH] Authentication failed.",))


def test_pipelined_commands_keep_their_expectations_in_order():
    p = greeted(POP3())
    for c in ("STAT", "LIST", "RETR 1", "LIST 2", "UIDL", "QUIT"):
        p.command(c)
    assert p.outstanding == 6
    data = (
        b"+OK 2 10\r\n"
        b"+OK\r\n1 5\r\n2 5\r\n.\r\n"
        b"+OK\r\n..hi\r\n.\r\n"
        b"-ERR no such message\r\n"
        b"+OK\r\n1 abc\r\n.\r\n"
        b"+OK bye\r\n"
    )
    rs = drain(p, data)
    assert [r.code for r in rs] == ["+OK", "+OK", "+OK", "-ERR", "+OK", "+OK"]
    assert [r.multiline for r in rs] == [False, True, True, False, True, False]
    assert rs[2].lines == ("+OK", ".hi")
    assert b"".join(r.raw for r in rs) == data
    assert p.outstanding == 0


def test_sent_raw_parses_commands_including_lines_split_across_calls():
    p = greeted(POP3())
    p.sent_raw(b"STAT\r\nLIST\r\nRE")
    p.sent_raw(b"TR 1\r\n")
    assert p.outstanding == 3
    rs = drain(p, b"+OK 1 1\r\n+OK\r\n1 1\r\n.\r\n+OK\r\nbody\r\n.\r\n")
    assert [r.multiline for r in rs] == [False, True, True]


def test_sent_raw_multiline_forced():
    p = greeted(POP3())
    p.sent_raw(b"XFOO\r\n", multiline=True)
    (r,) = drain(p, b"+OK\r\nx\r\n.\r\n")
    assert r.multiline


def test_a_reply_with_nothing_expected_is_single_line():
    p = greeted(POP3())
    rs = drain(p, b"+OK ready\r\n-ERR autologout\r\n")
    assert [r.code for r in rs] == ["+OK", "-ERR"]


@pytest.mark.parametrize("bad", [b"OK fine", b"+OKAY", b"-ERROR x", b"", b"+ok lower"])
def test_malformed_status_line(bad):
    p = greeted(POP3())
    p.command("NOOP")
    p.command("NOOP")
    p.receive_data(bad + b"\r\n+OK\r\n")
    with pytest.raises(ProtocolError, match="malformed reply: expected \\+OK, -ERR or \\+") as ei:
        p.next_reply()
    assert ei.value.raw == bad + b"\r\n"
    (r,) = drain(p)
    assert r.code == "+OK"


def test_eof_in_the_middle_of_a_body():
    p = greeted(POP3())
    p.command("RETR 1")
    p.receive_data(b"+OK\r\nline\r\n")
    assert p.next_reply() is None
    p.receive_eof()
    with pytest.raises(ConnectionClosed, match=r"\(11 bytes received\)") as ei:
        p.next_reply()
    assert ei.value.partial == b"+OK\r\nline\r\n"


def test_eof_after_quit():
    p = greeted(POP3())
    p.command("QUIT")
    p.receive_data(b"+OK Logging out.\r\n")
    p.receive_eof()
    assert p.next_reply().code == "+OK"
    assert p.next_reply() is None and p.at_eof


def test_body_over_the_reply_limit():
    p = greeted(POP3(max_reply=1000))
    p.command("RETR 1")
    p.receive_data(b"+OK\r\n")
    with pytest.raises(ProtocolError, match="reply exceeded max_reply 1000 bytes"):
        for _ in range(100):
            p.receive_data(b"0123456789012345678\r\n")
            assert p.next_reply() is None
    assert p.pending() == b""


def test_body_longer_than_a_line_limit_is_fine_when_its_lines_are_short():
    p = greeted(POP3(max_line=100))
    p.command("RETR 1")
    (r,) = drain(p, b"+OK\r\n" + b"x" * 99 + b"\r\n" * 50 + b".\r\n")
    assert len(r.lines) == 51


def test_one_byte_chunks_of_a_two_megabyte_body_are_framed_in_linear_work():
    line = b"0123456789" * 7 + b"..\r\n"  # 74 bytes, a line ending in dots
    body = line * (2_000_000 // len(line))
    wire = b"+OK big\r\n" + body + b".\r\n"
    p = greeted(POP3())
    greeting = p._buf.scanned  # the greeting's bytes, searched before
    p.command("RETR 1")
    receive, next_reply = p.receive_data, p.next_reply
    positions = 0
    last = 0
    reply = None
    for i in range(len(wire)):
        receive(wire[i : i + 1])
        reply = next_reply()
        if i % 100_000 == 0:
            # the search position advances as bytes arrive
            assert p._buf.scanned > last or i == 0
            last = p._buf.scanned
            positions += 1
    assert reply is not None and reply.raw == wire
    assert len(reply.lines) == 1 + len(body) // len(line)
    # every byte was searched for a line end exactly once: linear, whatever the chunking
    assert p._buf.scanned - greeting == len(wire)
    assert positions > 10


def test_large_chunks_scan_each_byte_once():
    body = b"abc\r\n" * 100_000
    wire = b"+OK\r\n" + body + b".\r\n"
    p = greeted(POP3())
    greeting = p._buf.scanned
    p.command("RETR 1")
    rs = []
    for i in range(0, len(wire), 65536):
        rs += drain(p, wire[i : i + 65536])
    assert len(rs) == 1 and rs[0].raw == wire
    assert p._buf.scanned - greeting == len(wire)
