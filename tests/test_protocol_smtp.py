"""SMTP framing (RFC 5321 4.2), encode_body and decode_challenge: bytes in, replies out."""

from __future__ import annotations

import base64

import pytest

from runner.errors import ConnectionClosed, ProtocolError
from runner.protocols import create
from runner.protocols.smtp import SMTP, decode_challenge, encode_body
from tests.support.framing import drain

EHLO = (
    b"250-mail.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
    b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
    b"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
)


def test_greeting_and_multiline_ehlo_from_postfix():
    p = create("smtp")
    assert isinstance(p, SMTP) and p.expect_style is False
    (greeting,) = drain(p, b"220 mail.example.test ESMTP Postfix\r\n")
    assert greeting.code == "220"
    assert greeting.lines == ("220 mail.example.test ESMTP Postfix",)
    assert greeting.texts == ("mail.example.test ESMTP Postfix",)
    assert greeting.enhanced is None and greeting.note is None
    assert p.command("EHLO client.example.test") == b"EHLO client.example.test\r\n"
    (ehlo,) = drain(p, EHLO)
    assert ehlo.raw == EHLO
    assert ehlo.code == "250"
    assert len(ehlo.lines) == 12
    assert ehlo.texts[0] == "mail.example.test"
    assert ehlo.texts[6] == "AUTH PLAIN LOGIN"
    assert ehlo.texts[-1] == "CHUNKING"
    assert ehlo.lines[-1] == "250 CHUNKING"
    assert ehlo.enhanced is None
    assert p.pending() == b""


@pytest.mark.parametrize(
    "line, enhanced",
    [
        (b"250 2.1.0 Ok", "2.1.0"),
        (b"550 5.1.1 <nobody@example.test>: Recipient address rejected", "5.1.1"),
        (b"221 2.0.0 Bye", "2.0.0"),
        (b"235 2.7.0", "2.7.0"),
        (b"452 4.3.1 Insufficient system storage", "4.3.1"),
        (b"250 2.1.0Ok", None),
        (b"220 mail.example.test ESMTP", None),
        (b"250 1.2.3 not a class", None),
        (b"250 Ok 2.1.0", None),
    ],
)
def test_enhanced_status_code_of_the_last_line(line, enhanced):
    (r,) = drain(SMTP(), line + b"\r\n")
    assert r.enhanced == enhanced


def test_enhanced_code_comes_from_the_last_line():
    (r,) = drain(SMTP(), b"250-2.1.0 first\r\n250 2.1.5 last\r\n")
    assert r.enhanced == "2.1.5"


def test_auth_login_challenges_are_decoded_for_display():
    p = SMTP()
    a, b = drain(p, b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n")
    assert (a.code, a.texts, a.note) == ("334", ("VXNlcm5hbWU6",), "Username:")
    assert b.note == "Password:"
    (c,) = drain(p, b"334 \r\n")
    assert c.note is None


def test_decode_challenge():
    assert decode_challenge("334 VXNlcm5hbWU6") == "Username:"
    assert decode_challenge("UGFzc3dvcmQ6") == "Password:"
    cram = "<1896.697170952@postoffice.example.net>"
    assert decode_challenge("334 " + base64.b64encode(cram.encode()).decode()) == cram
    assert decode_challenge("334 not base64!") is None
    assert decode_challenge("334 " + base64.b64encode(b"\x00\x01\xff").decode()) is None
    assert decode_challenge("334") is None
    assert decode_challenge("") is None
    assert decode_challenge("VXNlcm5hbWU") is None  # bad padding


def test_reply_of_exactly_three_digits_ends_the_reply():
    (r,) = drain(SMTP(), b"250-first\r\n250\r\n")
    assert r.lines == ("250-first", "250")
    assert r.texts == ("first", "")


def test_bare_lf_line_ends_are_line_ends_and_raw_stays_exact():
    data = b"250-a\n250-b\r\n250 c\n"
    (r,) = drain(SMTP(), data)
    assert r.raw == data
    assert r.lines == ("250-a", "250-b", "250 c")


def test_a_bare_cr_inside_a_line_is_text():
    (r,) = drain(SMTP(), b"250 a\rb\r\n")
    assert r.texts == ("a\rb",)


def test_code_mismatch_is_raised_after_the_whole_reply_and_the_stream_stays_in_sync():
    p = SMTP()
    p.receive_data(b"250-a\r\n251 b\r\n220 next\r\n")
    with pytest.raises(ProtocolError, match=r"^malformed reply: line 2 has code 251, line 1 had 250$") as ei:
        p.next_reply()
    assert ei.value.raw == b"250-a\r\n251 b\r\n"
    (r,) = drain(p)
    assert r.code == "220" and r.lines == ("220 next",)


def test_code_mismatch_on_a_later_line_names_that_line():
    p = SMTP()
    p.receive_data(b"250-a\r\n250-b\r\n252 c\r\n")
    with pytest.raises(ProtocolError, match="line 3 has code 252, line 1 had 250"):
        p.next_reply()
    assert p.pending() == b""


@pytest.mark.parametrize("bad", [b"HTTP/1.1 400 Bad Request", b"", b"25", b"ab0 x", b"\xff\xfe1 x"])
def test_a_line_without_a_three_digit_code_is_malformed(bad):
    p = SMTP()
    p.receive_data(b"250-ok\r\n" + bad + b"\r\n220 again\r\n")
    with pytest.raises(ProtocolError, match="line 2 does not start with a 3-digit code") as ei:
        p.next_reply()
    assert ei.value.raw == b"250-ok\r\n" + bad + b"\r\n"
    assert drain(p)[0].code == "220"


def test_malformed_separator_after_the_code():
    p = SMTP()
    p.receive_data(b"250x hello\r\n250 fine\r\n")
    with pytest.raises(ProtocolError, match="line 1 has 'x' after the code"):
        p.next_reply()
    assert drain(p)[0].texts == ("fine",)


def test_pipelined_replies_in_one_chunk_come_out_one_by_one():
    p = SMTP()
    for c in ("MAIL FROM:<a@x>", "RCPT TO:<b@x>", "DATA"):
        p.command(c)
    p.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    assert p.next_reply().enhanced == "2.1.0"
    assert p.pending() == b"250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    assert p.next_reply().enhanced == "2.1.5"
    assert p.next_reply().code == "354"
    assert p.next_reply() is None


def test_need_data_until_the_last_line_arrives():
    p = SMTP()
    assert drain(p, b"250-a\r\n250") == []
    assert p.pending() == b"250-a\r\n250"
    assert drain(p, b" b\r") == []
    (r,) = drain(p, b"\n")
    assert r.lines == ("250-a", "250 b")


def test_eof_after_complete_replies_returns_them_then_none():
    p = SMTP()
    p.receive_data(b"221 2.0.0 Bye\r\n")
    p.receive_eof()
    assert not p.at_eof
    assert p.next_reply().code == "221"
    assert p.next_reply() is None
    assert p.at_eof
    assert p.next_reply() is None


def test_eof_in_the_middle_of_a_reply():
    p = SMTP()
    p.receive_data(b"250 ok\r\n250-a\r\n250 b")
    p.receive_eof()
    assert p.next_reply().texts == ("ok",)
    with pytest.raises(
        ConnectionClosed, match=r"connection closed in the middle of a reply \(12 bytes received\)"
    ) as ei:
        p.next_reply()
    assert ei.value.partial == b"250-a\r\n250 b"
    assert p.at_eof
    with pytest.raises(ConnectionClosed):
        p.next_reply()


def test_receive_data_after_eof_is_a_programming_error():
    p = SMTP()
    p.receive_eof()
    with pytest.raises(RuntimeError):
        p.receive_data(b"x")


def test_line_limit_boundaries():
    p = SMTP(max_line=10)
    (r,) = drain(p, b"250 67890\r\n")  # 9 bytes
    (r,) = drain(p, b"250 67890\n")
    assert r.texts == ("67890",)
    (r,) = drain(p, b"250 678901\r\n")  # exactly 10
    assert r.texts == ("678901",)
    with pytest.raises(
        ProtocolError, match=r"^a line exceeded max_line 10 bytes; raise it with `connect: {max_line: BYTES}`"
    ):
        drain(p, b"250 6789012\r\n")


def test_two_mib_line_fails_without_buffering_beyond_the_limit():
    limit = 1 << 20
    chunk = b"250-" + b"x" * (64 * 1024 - 4)
    p = SMTP(max_line=limit)
    fed = 0
    with pytest.raises(
        ProtocolError,
        match=r"^a line exceeded max_line 1 MiB \(the SMTP default\); raise it with `connect: {max_line: BYTES}`",
    ):
        while fed < 2 * limit:
            p.receive_data(chunk if fed == 0 else b"x" * len(chunk))
            fed += len(chunk)
            # never more than the limit plus the chunk just received
            assert len(p.pending()) <= limit + 1 + len(chunk)
            p.next_reply()
    assert fed <= limit + 2 * len(chunk)
    # the error is sticky and nothing more is buffered
    p.receive_data(b"\r\n250 ok\r\n")
    assert p.pending() == b""
    with pytest.raises(ProtocolError, match="a line exceeded max_line"):
        p.next_reply()


def test_reply_limit_counts_the_whole_reply():
    p = SMTP(max_reply=100)
    p.receive_data(b"250-" + b"a" * 40 + b"\r\n")
    assert p.next_reply() is None
    p.receive_data(b"250-" + b"b" * 40 + b"\r\n")
    assert p.next_reply() is None
    p.receive_data(b"250-" + b"c" * 40 + b"\r\n")
    with pytest.raises(ProtocolError, match=r"^reply exceeded max_reply 100 bytes; raise it"):
        p.next_reply()


def test_reply_limit_applies_to_an_unterminated_tail_too():
    p = SMTP(max_reply=100, max_line=1000)
    p.receive_data(b"250 " + b"z" * 200)
    with pytest.raises(ProtocolError, match="reply exceeded max_reply 100 bytes"):
        p.next_reply()


def test_replies_under_the_limit_in_one_chunk_are_each_measured_alone():
    p = SMTP(max_reply=20)
    replies = drain(p, b"250 0123456789\r\n" * 10)
    assert len(replies) == 10


def test_undecodable_bytes_are_backslash_escaped_and_raw_is_kept():
    (r,) = drain(SMTP(), b"250 caf\xe9 \xc3\xa9\r\n")
    assert r.texts == ("caf\\xe9 \u00e9",)
    assert r.raw == b"250 caf\xe9 \xc3\xa9\r\n"


def test_create_rejects_unknown_protocols():
    with pytest.raises(ValueError, match="unknown protocol 'ftp'"):
        create("ftp")


# --- encode_body -----------------------------------------------------------------------


def test_encode_body_matches_the_postfix_transcript():
    body = (
        b"From: Alice <alice@example.test>\nTo: Bob <bob@example.test>\nSubject: transcript test\n"
        b"Date: Sat, 01 Jan 2022 12:00:00 +0000\nMessage-ID: <transcript-1@client.example.test>\n\n"
        b"Hello Bob,\n.this line starts with a dot, so it is dot-stuffed on the wire.\n\n-- Alice\n"
    )
    wire = (
        b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: transcript test\r\n"
        b"Date: Sat, 01 Jan 2022 12:00:00 +0000\r\nMessage-ID: <transcript-1@client.example.test>\r\n\r\n"
        b"Hello Bob,\r\n..this line starts with a dot, so it is dot-stuffed on the wire.\r\n\r\n"
        b"-- Alice\r\n.\r\n"
    )
    assert encode_body(body) == wire


@pytest.mark.parametrize(
    "body, wire",
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a\rb\nc\r\nd", b"a\r\nb\r\nc\r\nd\r\n.\r\n"),
        (b"\n\n", b"\r\n\r\n.\r\n"),
        (b"\r\r\n", b"\r\n\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"..x\n.\n", b"...x\r\n..\r\n.\r\n"),
        (b"a\r.b\n.c", b"a\r\n..b\r\n..c\r\n.\r\n"),
        (b"a.b\n", b"a.b\r\n.\r\n"),
        (b"\xff\x00", b"\xff\x00\r\n.\r\n"),
    ],
)
def test_encode_body_cases(body, wire):
    assert encode_body(body) == wire


def test_encoded_body_never_ends_early():
    # no line of the encoded body (before the terminator) is a lone '.'
    wire = encode_body(b".\n..\n.\r\n.\r.\n")
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    assert b"." not in lines[:-2]
