"""The line protocol: one reply per line, expect-style."""

from __future__ import annotations

import pytest

from runner.errors import ProtocolError
from runner.protocols import create
from runner.protocols.line import Line
from tests.support.framing import drain


def test_each_line_is_one_reply():
    p = create("line")
    assert isinstance(p, Line) and p.expect_style is True
    rs = drain(p, b"first\r\nsecond\nthird\r\r\n\r\nfourth partial")
    assert [r.lines for r in rs] == [("first",), ("second",), ("third",), ("",)]
    assert [r.texts for r in rs] == [r.lines for r in rs]
    assert all(r.code is None and r.tag is None for r in rs)
    assert [r.raw for r in rs] == [b"first\r\n", b"second\n", b"third\r\r\n", b"\r\n"]
    assert p.pending() == b"fourth partial"


def test_a_final_unterminated_line_before_eof_is_a_line():
    p = Line()
    assert drain(p, b"220 ready\r\nConnection closed by foreign host.") == [
        drain(Line(), b"220 ready\r\n")[0]
    ]
    p.receive_eof()
    (r,) = drain(p)
    assert r.lines == ("Connection closed by foreign host.",)
    assert r.raw == b"Connection closed by foreign host."
    assert p.next_reply() is None
    assert p.at_eof
    assert p.pending() == b""


def test_eof_with_nothing_buffered():
    p = Line()
    drain(p, b"x\n")
    p.receive_eof()
    assert p.next_reply() is None and p.at_eof


def test_command_adds_crlf():
    assert Line().command("EHLO x") == b"EHLO x\r\n"


def test_text_is_decoded_with_backslash_escapes():
    (r,) = drain(Line(), b"caf\xe9\r\n")
    assert r.lines == ("caf\\xe9",) and r.raw == b"caf\xe9\r\n"


def test_line_limit():
    p = Line(max_line=8)
    assert drain(p, b"12345678\r\n")[0].lines == ("12345678",)
    p.receive_data(b"123456789")  # could still be 8 bytes and the CR of a CRLF...
    assert p.next_reply() is None
    p.receive_data(b"0")
    with pytest.raises(ProtocolError, match="a line exceeded max_line 8 bytes"):
        p.next_reply()


def test_lines_split_across_chunks():
    p = Line()
    out = []
    for b in b"ab\r\ncd\r\n":
        out += drain(p, bytes([b]))
    assert [r.lines for r in out] == [("ab",), ("cd",)]
