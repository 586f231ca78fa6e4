"""The sandbox's FETCH ENVELOPE, BODY, BODYSTRUCTURE and MIME part sections (BODY[1.2],
BODY[3.HEADER], ...), read with imaplib, and compared with Dovecot's answers for the same
messages (the test bed): where both follow RFC 3501 they must agree exactly."""

from __future__ import annotations

import imaplib
import re
import time

import pytest

from runner.sandbox.server import Sandbox

PLAIN = (
    b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>, carol@example.org\r\n"
    b"Subject: Lunch\r\n plans\r\nDate: Mon, 7 Dec 2026 01:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n"
    b"\r\nPizza at noon?\r\nno final line end"
)
MIXED = (
    b'From: "Smith, J." <j@x.org> (a comment)\r\nTo: undisclosed-recipients:;\r\n'
    b'Cc: team: a@b.c, "Q" <q@r.s>;, d@e.f\r\nReply-To: r@x.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n'
    b'In-Reply-To: <p@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"preamble\r\n--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9\r\n--YY\r\nContent-Type: text/html\r\nContent-ID: <h@x>\r\n"
    b"Content-Description: the html\r\n\r\n<p>cafe</p>\r\n--YY--\r\n--XX\r\n"
    b'Content-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; filename="a.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\nContent-Language: en, de\r\nContent-Location: http://x/a.pdf\r\n"
    b"Content-MD5: abc=\r\n\r\nJVBERi0x\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: inner@x.org\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\ninner body\r\n"
    b"--XX\r\n\r\nno header part\r\n--XX--\r\nepilogue\r\n"
)
DIGEST = (
    b"From: d@x.org\r\nSubject: digest\r\nContent-Type: multipart/digest; boundary=D\r\n\r\n"
    b"--D\r\n\r\nSubject: one\r\n\r\n1\r\n--D\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--D--\r\n"
)
ODD = (
    b'From: <@a.x,@b.y:u@c.z>\r\nSender: s@x\r\nTo: nodomain\r\nSubject: "q" \\ back\r\n'
    b"Content-Type: Text/Plain; Format=flowed\r\n\r\nx\r\n"
)
NAMES = (
    b"From: J. Q. Doe <jq@x.y>\r\nTo: John.Doe <j@d>, Mary  (the boss)  Smith <m@s>\r\nCc: <>\r\n"
    b"Bcc: a@, @b\r\nSubject: names\tand a tab\r\n\r\nx\r\n"
)
FIELDS = (
    b"Subject: \r\nX: 1\r\nFrom: a@b\r\nFrom: c@d\r\nTo: \r\nDate: Mon,\t7 Dec 2026\r\n 01:00:00 +0000\r\n"
    b"In-Reply-To:   <x@y>  \r\n\r\nx\r\n"
)
ODD_PARTS = (
    b"Subject: odd parts\r\nContent-Type: multipart/mixed; boundary=top\r\n\r\n--top\r\n"
    b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\na\r\n--x--\r\n--top\r\n"  # no boundary given
    b"Content-Type: multipart/mixed; boundary=nothere\r\n\r\nplain text\r\n--top\r\n"
    b"Content-Type: foo\r\n\r\nx\r\n--top\r\n"  # a type without a subtype
    b"Content-Type: text/plain;\r\nContent-ID:  <a@b>  \r\nContent-Language: fr\r\n"
    b"Content-Disposition: inline\r\n\r\nx\r\n--top--\r\n"
)
EIGHT_BIT = "From: Zo\u00eb <zoe@example.test>\r\nSubject: Gr\u00fc\u00dfe\r\n\r\n\u00e9t\u00e9\r\n".encode()
CORPUS = {
    "plain": PLAIN,
    "mixed": MIXED,
    "digest": DIGEST,
    "odd": ODD,
    "eight_bit": EIGHT_BIT,
    "names": NAMES,
    "fields": FIELDS,
    "odd_parts": ODD_PARTS,
}
# sections where RFC 3501 and RFC 2046 leave nothing open (not BODY[n] of a nested multipart,
# where Dovecot keeps the CRLF that RFC 2046 gives to the next delimiter: see imap_mime)
SECTIONS = ["HEADER", "TEXT", "1", "1.1", "1.2", "1.MIME", "2", "2.MIME", "3", "3.HEADER", "3.TEXT"]
SECTIONS += ["3.1", "3.MIME", "4", "4.MIME", "4.HEADER", "4.1", "4.1.1", "1.1.1", "1.1.1.1", "7"]
SECTIONS += ["HEADER.FIELDS (SUBJECT FROM)"]


# --- reading the answers: imaplib's list of lines and literals, then RFC 3501 syntax ----------
def joined(data: list) -> bytes:
    """imaplib's FETCH data (bytes, and (line ending in {n}, literal) pairs) as the wire had it."""
    out = b""
    for item in data:
        out += item[0] + b"\r\n" + item[1] if isinstance(item, tuple) else item
    return out


def parse(text: bytes):
    """One parenthesised list (or atom, string, NIL) and what follows it."""
    value, pos = _value(text, 0)
    return value, text[pos:]


def _value(text: bytes, pos: int):
    while text[pos : pos + 1] == b" ":
        pos += 1
    c = text[pos : pos + 1]
    if c == b"(":
        out, pos = [], pos + 1
        while True:
            while text[pos : pos + 1] == b" ":
                pos += 1
            if text[pos : pos + 1] == b")":
                return out, pos + 1
            item, pos = _value(text, pos)
            out.append(item)
    if c == b'"':
        m = re.compile(rb'"((?:[^"\\]|\\.)*)"').match(text, pos)
        return ("str", re.sub(rb"\\(.)", rb"\1", m[1])), m.end()
    m = re.compile(rb"\{(\d+)\}\r\n").match(text, pos)
    if m:
        end = m.end() + int(m[1])
        return ("str", text[m.end() : end]), end
    m = re.compile(rb"(?:[^ ()\[]|\[[^\]]*\])+").match(text, pos)  # BODY[1.HEADER.FIELDS (A)]
    return (None if m[0] == b"NIL" else m[0]), m.end()


def fetched(m: imaplib.IMAP4, seq: str, items: str) -> dict:
    typ, data = m.fetch(seq, items)
    assert typ == "OK", data
    value, rest = parse(joined(data).split(b" ", 1)[1])
    assert rest == b""
    names = [v.decode() if isinstance(v, bytes) else v for v in value[0::2]]
    return dict(zip(names, value[1::2], strict=True))


# --- the sandbox alone --------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox_imap():
    with Sandbox() as sb:
        m = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
        m.login("alice", "wonderland")
        for data in CORPUS.values():
            assert m.append("INBOX", None, None, data)[0] == "OK"
        m.select("INBOX")
        yield m
        m.logout()


def seq_of(name: str) -> str:
    return str(list(CORPUS).index(name) + 1)


def s(text: str):
    return ("str", text.encode())


def test_envelope_fields_addresses_and_groups(sandbox_imap):
    env = fetched(sandbox_imap, seq_of("plain"), "(ENVELOPE)")["ENVELOPE"]
    assert env[0] == s("Mon, 7 Dec 2026 01:00:00 +0000")
    assert env[1] == s("Lunch plans")  # unfolded
    alice = [s("Alice"), None, s("alice"), s("example.test")]
    assert env[2] == env[3] == env[4] == [alice]  # sender and reply-to default to from
    assert env[5] == [
        [s("Bob"), None, s("bob"), s("example.test")],
        [None, None, s("carol"), s("example.org")],
    ]
    assert env[6:9] == [None, None, None] and env[9] == s("<m1@example.test>")
    env = fetched(sandbox_imap, seq_of("mixed"), "(ENVELOPE)")["ENVELOPE"]
    assert env[2] == [[s("Smith, J."), None, s("j"), s("x.org")]]  # quoted name, comment dropped
    assert env[4] == [[None, None, s("r"), s("x.org")]]
    group_end = [None, None, None, None]
    assert env[5] == [[None, None, s("undisclosed-recipients"), None], group_end]
    assert env[6] == [
        [None, None, s("team"), None],
        [None, None, s("a"), s("b.c")],
        [s("Q"), None, s("q"), s("r.s")],
        group_end,
        [None, None, s("d"), s("e.f")],
    ]
    assert env[1] == s("=?utf-8?q?caf=C3=A9?=")  # as in the header: no decoding
    env = fetched(sandbox_imap, seq_of("odd"), "(ENVELOPE)")["ENVELOPE"]
    assert env[1] == s('"q" \\ back')
    assert env[2] == [[None, s("@a.x,@b.y"), s("u"), s("c.z")]]  # the obsolete route as adl
    assert env[3] == [[None, None, s("s"), s("x")]]
    assert env[5] == [[None, None, s("nodomain"), s("MISSING_DOMAIN")]]
    env = fetched(sandbox_imap, seq_of("names"), "(ENVELOPE)")["ENVELOPE"]
    assert env[2] == [[s("J. Q. Doe"), None, s("jq"), s("x.y")]]  # spacing as written
    assert env[5] == [[s("John.Doe"), None, s("j"), s("d")], [s("Mary Smith"), None, s("m"), s("s")]]
    assert env[6] == [[None, None, s("MISSING_MAILBOX"), s("MISSING_DOMAIN")]]  # <>, named as Dovecot does
    assert env[7] == [[None, None, s("a"), s("MISSING_DOMAIN")], [None, None, s("MISSING_MAILBOX"), s("b")]]
    env = fetched(sandbox_imap, seq_of("fields"), "(ENVELOPE)")["ENVELOPE"]
    assert env[:2] == [s("Mon,\t7 Dec 2026 01:00:00 +0000"), s("")]  # unfolded; empty kept
    assert env[2] == [[None, None, s("a"), s("b")], [None, None, s("c"), s("d")]]  # both From fields
    assert env[5] is None and env[8] == s("<x@y>  ")


def test_eight_bit_strings_come_as_literals_imaplib_reads(sandbox_imap):
    typ, data = sandbox_imap.fetch(seq_of("eight_bit"), "(ENVELOPE)")
    assert typ == "OK" and isinstance(data[0], tuple)  # imaplib split out the literal
    assert data[0][1] == "Gr\u00fc\u00dfe".encode()
    env = fetched(sandbox_imap, seq_of("eight_bit"), "(ENVELOPE)")["ENVELOPE"]
    assert env[2] == [[("str", "Zo\u00eb".encode()), None, s("zoe"), s("example.test")]]


def test_bodystructure_of_a_nested_multipart(sandbox_imap):
    got = fetched(sandbox_imap, seq_of("mixed"), "(BODYSTRUCTURE BODY)")
    bs, body = got["BODYSTRUCTURE"], got["BODY"]
    alternative, pdf, inner, bare, *rest = bs
    assert rest == [s("mixed"), [s("boundary"), s("XX")], None, None, None]
    assert alternative[2:] == [s("alternative"), [s("boundary"), s("YY")], None, None, None]
    text, html = alternative[:2]
    assert text[:8] == [
        s("text"),
        s("plain"),
        [s("charset"), s("utf-8")],
        None,
        None,
        s("quoted-printable"),
        b"9",
        b"0",
    ]
    # no charset given: RFC 2045's default is said; Content-ID and Content-Description
    assert html[:6] == [
        s("text"),
        s("html"),
        [s("charset"), s("us-ascii")],
        s("<h@x>"),
        s("the html"),
        s("7bit"),
    ]
    assert html[6:8] == [b"11", b"0"]
    assert pdf == [
        s("application"), s("pdf"), [s("name"), s("a.pdf")], None, None, s("base64"), b"8",
        s("abc="), [s("attachment"), [s("filename"), s("a.pdf")]], [s("en"), s("de")], s("http://x/a.pdf"),
    ]  # fmt: skip
    assert inner[:7] == [s("message"), s("rfc822"), None, None, None, s("7bit"), b"73"]
    assert inner[7][1] == s("inner") and inner[8][:2] == [s("text"), s("plain")] and inner[9] == b"4"
    assert bare[:2] == [s("text"), s("plain")] and bare[6] == b"14"
    # BODY: the same without extension data
    assert body[-1] == s("mixed") and body[1] == pdf[:7] and len(body[0][0]) == 8


def test_fetch_all_and_full_macros(sandbox_imap):
    got = fetched(sandbox_imap, seq_of("digest"), "ALL")
    assert set(got) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"}
    got = fetched(sandbox_imap, seq_of("digest"), "FULL")
    assert set(got) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"}
    first = got["BODY"][0]  # a digest's parts are message/rfc822 unless they say otherwise
    assert first[:2] == [s("message"), s("rfc822")] and first[7][1] == s("one")
    no_boundary, not_there, foo, last = fetched(sandbox_imap, seq_of("odd_parts"), "(BODYSTRUCTURE)")[
        "BODYSTRUCTURE"
    ][:4]
    empty = [s("text"), s("plain"), [s("charset"), s("us-ascii")], None, None, s("7bit"), b"0", b"0"]
    assert no_boundary[0][:8] == not_there[0][:8] == empty  # no parts found: one empty part
    assert foo[:7] == [s("foo"), s(""), None, None, None, s("7bit"), b"1"]
    assert last[3] == s("<a@b>  ") and last[9:11] == [[s("inline"), None], [s("fr")]]
    # type and parameters as written (Dovecot keeps their case), the default charset said
    assert fetched(sandbox_imap, seq_of("odd"), "(BODY)")["BODY"][:3] == [
        s("Text"),
        s("Plain"),
        [s("Format"), s("flowed"), s("charset"), s("us-ascii")],
    ]


def test_part_sections(sandbox_imap):
    n = seq_of("mixed")

    def part(section: str) -> bytes:
        got = fetched(sandbox_imap, n, f"(BODY.PEEK[{section}])")
        assert len(got) == 1, got
        (value,) = got.values()
        return value[1]

    assert part("1.1") == b"caf=C3=A9"
    assert part("1.2") == b"<p>cafe</p>"
    assert (
        part("1.2.MIME")
        == b"Content-Type: text/html\r\nContent-ID: <h@x>\r\nContent-Description: the html\r\n\r\n"
    )
    assert part("2") == b"JVBERi0x"
    assert part("3.HEADER") == b"From: inner@x.org\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\n"
    assert part("3.TEXT") == part("3.1") == b"inner body"
    assert part("3.HEADER.FIELDS (SUBJECT)") == b"Subject: inner\r\n\r\n"
    assert part("4") == b"no header part" and part("4.MIME") == b"\r\n"
    assert part("9") == b"" and part("2.HEADER") == b""  # no part 9; part 2 holds no message
    assert part("2.MIME").startswith(b"Content-Type: application/pdf") and part("1.2")
    assert fetched(sandbox_imap, seq_of("plain"), "(BODY.PEEK[1])")["BODY[1]"][1].startswith(b"Pizza")
    got = fetched(sandbox_imap, n, "(BODY.PEEK[1.1]<2.3>)")
    assert got == {"BODY[1.1]<2>": s("f=C")}
    with pytest.raises(imaplib.IMAP4.error, match="Unsupported body section"):
        sandbox_imap.fetch(n, "(BODY.PEEK[1.FOO])")
    with pytest.raises(imaplib.IMAP4.error, match="Unsupported body section"):
        sandbox_imap.fetch(n, "(BODY.PEEK[MIME])")  # MIME needs a part number


# --- the same messages on Dovecot -----------------------------------------------------------
@pytest.mark.testbed
def test_envelope_and_bodystructure_match_dovecots(testbed, sandbox_imap):
    dove = imaplib.IMAP4(testbed.host, testbed.ports["imap"], timeout=10)
    dove.login("bob", testbed.users["bob"])
    try:
        dove.delete("imap-structure")  # from an earlier run in this test bed, if any
        assert dove.create("imap-structure")[0] == "OK"
        for data in CORPUS.values():
            assert dove.append("imap-structure", None, None, data)[0] == "OK"
        dove.select("imap-structure")
        for name in CORPUS:
            n = seq_of(name)
            ours = fetched(sandbox_imap, n, "(ENVELOPE BODY BODYSTRUCTURE)")
            theirs = fetched(dove, n, "(ENVELOPE BODY BODYSTRUCTURE)")
            for item in ("ENVELOPE", "BODY", "BODYSTRUCTURE"):
                assert ours[item] == theirs[item], (name, item)
            for section in SECTIONS:
                if name == "mixed" and section == "1":
                    continue  # a nested multipart's own body: see SECTIONS
                spec = f"(BODY.PEEK[{section}])"
                assert fetched(sandbox_imap, n, spec) == fetched(dove, n, spec), (name, section)
    finally:
        dove.logout()


def test_hostile_structure_is_answered_bounded_and_quickly(sandbox_imap):
    deep = b"Subject: deep\r\n"
    for n in range(200):  # multipart inside multipart, 200 levels
        deep += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n)
    deep += b"\r\nleaf\r\n"
    many = (
        b"To: "
        + b", ".join(b"<u%d@x>" % n for n in range(20000))
        + b"\r\nCc: "
        + b"g: " * 5000
        + b"\r\n\r\nx\r\n"
    )
    for data in (deep, many):
        assert sandbox_imap.append("INBOX", None, None, data)[0] == "OK"
    count = sandbox_imap.select("INBOX")[1][0].decode()
    began = time.monotonic()
    got = fetched(sandbox_imap, str(int(count) - 1), "(BODYSTRUCTURE)")["BODYSTRUCTURE"]
    depth = 0
    while isinstance(got, list) and isinstance(got[0], list):
        got, depth = got[0], depth + 1
    assert 25 <= depth <= 31  # nesting past imap_mime.MAX_DEPTH is one opaque part
    env = fetched(sandbox_imap, count, "(ENVELOPE)")["ENVELOPE"]
    assert len(env[5]) == 20000 and env[5][-1] == [None, None, s("u19999"), s("x")]
    assert time.monotonic() - began < 10
    sandbox_imap.store(f"{int(count) - 1}:{count}", "+FLAGS", "(\\Deleted)")
    sandbox_imap.expunge()
