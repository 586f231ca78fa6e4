"""IMAP framing (RFC 9051): tags, untagged lines, continuations, literals, pipelining."""

from __future__ import annotations

import pytest

from runner.errors import ConnectionClosed, ProtocolError
from runner.protocols import create
from runner.protocols.imap import IMAP
from tests.support.framing import drain, greeted

GREETING = (
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
    b"AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready.\r\n"
)
SELECT = (
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n"
    b"* 2 EXISTS\r\n"
    b"* 0 RECENT\r\n"
    b"* OK [UIDVALIDITY 1795877602] UIDs valid\r\n"
    b"a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n"
)
TEXT = b"Hello Bob,\r\n.this line starts with a dot, so it is dot-stuffed on the wire.\r\n\r\n-- Alice\r\n"


def test_dovecot_session():
    p = create("imap")
    assert isinstance(p, IMAP)
    (g,) = drain(p, GREETING)
    assert g.code == "OK" and g.tag is None
    assert g.texts[0].startswith("OK [CAPABILITY IMAP4rev1 ")
    assert p.command("LOGIN bob builder") == b"a1 LOGIN bob builder\r\n"
    assert p.last_tag == "a1"
    (r,) = drain(p, b"a1 OK [CAPABILITY IMAP4rev1 SASL-IR] Logged in\r\n")
    assert (r.code, r.tag, r.texts) == ("OK", "a1", ("[CAPABILITY IMAP4rev1 SASL-IR] Logged in",))
    assert p.command("SELECT INBOX") == b"a2 SELECT INBOX\r\n"
    (r,) = drain(p, SELECT)
    assert r.raw == SELECT
    assert (r.code, r.tag) == ("OK", "a2")
    assert len(r.lines) == 6
    assert r.texts[2] == "2 EXISTS"
    assert r.texts[-1] == "[READ-WRITE] Select completed (0.001 + 0.000 secs)."
    assert p.command("FETCH 2 BODY.PEEK[TEXT]") == b"a3 FETCH 2 BODY.PEEK[TEXT]\r\n"
    wire = b"* 2 FETCH (BODY[TEXT] {%d}\r\n" % len(TEXT) + TEXT + b")\r\na3 OK Fetch completed.\r\n"
    assert len(TEXT) == 89  # as in the transcript
    (r,) = drain(p, wire)
    assert r.raw == wire
    assert r.lines == (
        "* 2 FETCH (BODY[TEXT] {89}",
        "Hello Bob,",
        ".this line starts with a dot, so it is dot-stuffed on the wire.",
        "",
        "-- Alice",
        ")",
        "a3 OK Fetch completed.",
    )
    assert r.texts[0] == "2 FETCH (BODY[TEXT] {89}"
    assert r.texts[1] == "Hello Bob,"
    p.command("LOGOUT")
    (r,) = drain(p, b"* BYE Logging out\r\na4 OK Logout completed.\r\n")
    assert r.code == "OK" and r.texts == ("BYE Logging out", "Logout completed.")
    p.receive_eof()
    assert p.next_reply() is None and p.at_eof


@pytest.mark.parametrize(
    "greeting, code",
    [(b"* OK ready", "OK"), (b"* PREAUTH hi", "PREAUTH"), (b"* BYE busy", "BYE"), (b"* ok lower", "OK")],
)
def test_greeting_codes(greeting, code):
    (r,) = drain(IMAP(), greeting + b"\r\n")
    assert r.code == code and r.tag is None


def test_untagged_lines_with_nothing_outstanding_are_one_line_replies():
    p = IMAP()
    rs = drain(p, b"* OK hi\r\n* 3 EXISTS\r\n* BYE Autologout; idle for too long\r\n")
    assert [r.code for r in rs] == ["OK", None, "BYE"]
    assert rs[1].texts == ("3 EXISTS",)


def test_tag_false_uses_the_lines_own_tag_and_does_not_advance_the_counter():
    p = IMAP()
    assert p.command("x9 NOOP", tag=False) == b"x9 NOOP\r\n"
    assert p.last_tag == "x9"
    assert p.command("NOOP") == b"a1 NOOP\r\n"
    assert p.outstanding == ("x9", "a1")
    a, b = drain(p, b"x9 OK done\r\na1 OK done\r\n")
    assert (a.tag, b.tag) == ("x9", "a1")
    assert p.outstanding == ()


def test_continuation_then_data_keeps_the_tag_outstanding():
    p = IMAP()
    assert p.command("AUTHENTICATE PLAIN") == b"a1 AUTHENTICATE PLAIN\r\n"
    (r,) = drain(p, b"+ \r\n")
    assert (r.code, r.tag, r.texts, r.lines) == ("+", None, ("",), ("+ ",))
    assert p.outstanding == ("a1",)
    assert p.command("AGJvYgBidWlsZGVy") == b"AGJvYgBidWlsZGVy\r\n"
    (r,) = drain(p, b"a1 OK Logged in\r\n")
    assert r.tag == "a1"
    assert p.command("NOOP") == b"a2 NOOP\r\n"


def test_synchronizing_literal_in_a_command():
    p = IMAP()
    assert p.command("LOGIN {5}") == b"a1 LOGIN {5}\r\n"
    (r,) = drain(p, b"+ Ready for literal data\r\n")
    assert r.code == "+" and r.texts == ("Ready for literal data",)
    assert p.command("alice {10}") == b"alice {10}\r\n"
    (r,) = drain(p, b"+\r\n")
    assert r.code == "+" and r.texts == ("",)
    assert p.command("wonderland") == b"wonderland\r\n"
    (r,) = drain(p, b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert (r.code, r.tag) == ("NO", "a1")


def test_untagged_lines_before_a_continuation_belong_to_it():
    p = IMAP()
    p.command("IDLE")
    (r,) = drain(p, b"* 4 EXISTS\r\n+ idling\r\n")
    assert r.code == "+" and r.lines == ("* 4 EXISTS", "+ idling")
    assert p.command("DONE") == b"DONE\r\n"
    (r,) = drain(p, b"* 5 EXISTS\r\na1 OK Idle completed.\r\n")
    assert r.tag == "a1" and r.texts[0] == "5 EXISTS"


def test_literals_hold_any_bytes_and_lines_continue_after_them():
    p = IMAP()
    p.command("FETCH 1 (BODY[1] BODY[2])")
    lit1 = b"a)\r\n{3}\r\n* x\r\n) a1 OK fake\r\n"
    lit2 = b"\x00\xff{"
    wire = (
        b"* 1 FETCH (BODY[1] {%d}\r\n" % len(lit1)
        + lit1
        + b" BODY[2] ~{%d}\r\n" % len(lit2)
        + lit2
        + b" X {0}\r\n)\r\na1 OK done\r\n"
    )
    (r,) = drain(p, wire)
    assert r.raw == wire
    assert r.lines == (
        "* 1 FETCH (BODY[1] {28}",
        "a)",
        "{3}",
        "* x",
        ") a1 OK fake",
        " BODY[2] ~{3}",
        "\x00\\xff{",
        " X {0}",
        ")",
        "a1 OK done",
    )
    assert r.tag == "a1" and r.code == "OK"


def test_non_synchronizing_literal_from_a_server_and_literal_without_trailing_line_end():
    p = IMAP()
    p.command("X")
    (r,) = drain(p, b"* X {3+}\r\nabc)\r\na1 OK\r\n")
    assert r.lines == ("* X {3+}", "abc", ")", "a1 OK")
    assert r.texts[-1] == ""


def test_literal_bytes_arriving_one_at_a_time():
    p = IMAP()
    p.command("FETCH 1 BODY[]")
    wire = b"* 1 FETCH (BODY[] {12}\r\nab\r\ncd\r\n\r\n\r\n)\r\na1 OK x\r\n"
    rs = []
    for i in range(len(wire)):
        rs += drain(p, wire[i : i + 1])
    (r,) = rs
    assert r.lines == ("* 1 FETCH (BODY[] {12}", "ab", "cd", "", "", ")", "a1 OK x")


def test_pipelined_commands_are_answered_in_fifo_order():
    p = IMAP()
    for c in ("NOOP", "CAPABILITY", "LOGOUT"):
        p.command(c)
    data = b"a1 OK NOOP done\r\n* CAPABILITY IMAP4rev1\r\na2 OK done\r\n* BYE bye\r\na3 OK out\r\n"
    rs = drain(p, data)
    assert [r.tag for r in rs] == ["a1", "a2", "a3"]
    assert rs[1].lines == ("* CAPABILITY IMAP4rev1", "a2 OK done")
    assert b"".join(r.raw for r in rs) == data


def test_out_of_order_completion_ends_the_reply_at_that_tag():
    p = IMAP()
    p.command("FETCH 1 FLAGS")
    p.command("NOOP")
    a, b = drain(p, b"a2 OK noop\r\n* 1 FETCH (FLAGS ())\r\na1 OK fetch\r\n")
    assert (a.tag, b.tag) == ("a2", "a1")
    assert p.outstanding == ()


def test_lowercase_status_is_normalised():
    p = IMAP()
    p.command("NOOP")
    (r,) = drain(p, b"a1 bad Error in IMAP command\r\n")
    assert r.code == "BAD" and r.texts == ("Error in IMAP command",)


@pytest.mark.parametrize("bad", [b"a1 FOO bar", b"a1", b"", b"HTTP/1.1 400 Bad Request"])
def test_malformed_tagged_line(bad):
    p = IMAP()
    p.command("NOOP")
    p.command("NOOP")
    p.receive_data(b"* 1 EXISTS\r\n" + bad + b"\r\na2 OK fine\r\n")
    with pytest.raises(ProtocolError, match=r"malformed reply: line 2 \(.*\) is not untagged") as ei:
        p.next_reply()
    assert ei.value.raw == b"* 1 EXISTS\r\n" + bad + b"\r\n"
    (r,) = drain(p)
    assert r.tag == "a2"


def test_sent_raw_parses_tags_and_skips_literal_data():
    p = IMAP()
    p.sent_raw(b"x1 NOOP\r\nx2 LOGIN {5+}\r\nalice {12+}\r\nsecret\r\nword\r\nx3 LOGOUT\r\n")
    assert p.outstanding == ("x1", "x2", "x3")
    assert p.last_tag == "x3"


def test_sent_raw_answering_a_continuation_has_no_tag():
    p = IMAP()
    p.command("APPEND INBOX {5}")
    drain(p, b"+ go\r\n")
    p.sent_raw(b"hello\r\n")
    assert p.outstanding == ("a1",)
    (r,) = drain(p, b"a1 OK [APPENDUID 1 2] Append completed.\r\n")
    assert r.tag == "a1"


def test_eof_in_the_middle_of_a_reply_and_of_a_literal():
    p = greeted(IMAP())  # (a first line `* BYE` would be the greeting)
    p.command("LOGOUT")
    p.receive_data(b"* BYE Logging out\r\n")
    assert p.next_reply() is None
    p.receive_eof()
    with pytest.raises(ConnectionClosed, match=r"\(19 bytes received\)") as ei:
        p.next_reply()
    assert ei.value.partial == b"* BYE Logging out\r\n"

    q = IMAP()
    q.command("FETCH 1 BODY[]")
    q.receive_data(b"* 1 FETCH (BODY[] {100}\r\nonly a little")
    assert q.next_reply() is None
    q.receive_eof()
    with pytest.raises(ConnectionClosed, match="connection closed in the middle of a reply"):
        q.next_reply()


def test_a_literal_over_the_reply_limit_fails_when_announced():
    p = IMAP(max_reply=1000)
    p.command("FETCH 1 BODY[]")
    p.receive_data(b"* 1 FETCH (BODY[] {5000}\r\n")
    with pytest.raises(ProtocolError, match="reply exceeded max_reply 1000 bytes"):
        p.next_reply()
    p.receive_data(b"x" * 5000)
    assert p.pending() == b""


def test_literal_content_is_not_subject_to_the_line_limit():
    p = IMAP(max_line=50)
    p.command("FETCH 1 BODY[]")
    (r,) = drain(p, b"* 1 FETCH (BODY[] {200}\r\n" + b"y" * 200 + b")\r\na1 OK\r\n")
    assert r.lines[1] == "y" * 200


def test_protocol_lines_are_subject_to_the_line_limit():
    p = IMAP(max_line=50)
    p.receive_data(b"* OK " + b"z" * 100)
    with pytest.raises(
        ProtocolError, match=r"^a line exceeded max_line 50 bytes; raise it with `connect: {max_line: BYTES}`"
    ):
        p.next_reply()
