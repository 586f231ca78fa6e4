"""The sandbox's IMAP server against imaplib and raw sockets."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import ssl

import pytest

from runner.sandbox.server import Sandbox

FIRST = b"From: Alice <alice@mailrun.test>\r\nSubject: Lunch plans\r\n\r\nPizza at noon?\r\n"
SECOND = b"From: Carol <carol@example.org>\r\nSubject: Report\r\nX-Run: 42\r\n\r\n.dotted line\r\nquarterly numbers\r\n"


class Raw:
    def __init__(self, host: str, port: int, timeout: float = 5.0, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(self.buf)
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def cmd(self, command: bytes) -> list[bytes]:
        """Send a tagged command, return every line up to and including the tagged reply."""
        tag = command.split(b" ", 1)[0]
        self.sock.sendall(command + b"\r\n")
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if ln.startswith(tag + b" "):
                return lines


def send(sb: Sandbox, to: str, message: bytes) -> None:
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.sendmail("alice@mailrun.test", [to], message)


@pytest.fixture
def sb():
    with Sandbox() as s:
        send(s, "bob@mailrun.test", FIRST)
        send(s, "bob@mailrun.test", SECOND)
        yield s


@pytest.fixture
def imap(sb: Sandbox):
    m = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
    yield m
    try:
        m.logout()
    except (imaplib.IMAP4.error, OSError, EOFError):
        pass


def flags_of(m: imaplib.IMAP4, seq: str) -> bytes:
    typ, data = m.fetch(seq, "(FLAGS)")
    assert typ == "OK"
    return re.search(rb"FLAGS \(([^)]*)\)", data[0])[1]


def test_login_select_and_fetch_body_with_literal(sb: Sandbox, imap: imaplib.IMAP4):
    typ, data = imap.login("bob", "builder")
    assert typ == "OK" and data[0].startswith(b"[CAPABILITY IMAP4rev1")
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"2"])
    assert imap.untagged_responses.get("UIDVALIDITY") and imap.untagged_responses.get("UIDNEXT") == [b"3"]
    typ, data = imap.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
    assert typ == "OK"
    assert re.fullmatch(rb"1 \(UID 1 FLAGS \(\\Recent\) RFC822.SIZE \d+\)", data[0])  # new to this session
    typ, data = imap.fetch("2", "(BODY.PEEK[])")
    header, body = data[0]
    size = int(re.search(rb"\{(\d+)\}$", header)[1])
    assert len(body) == size
    assert body.endswith(b"\r\n\r\n.dotted line\r\nquarterly numbers\r\n")  # no dot-stuffing in IMAP
    assert body.startswith(b"Return-Path: <alice@mailrun.test>\r\n")
    assert flags_of(imap, "2") == b"\\Recent"  # PEEK leaves \Seen alone
    typ, data = imap.fetch("2", "(BODY[])")
    assert b"FLAGS (\\Seen \\Recent)" in data[1] or b"FLAGS (\\Seen \\Recent)" in data[0][0]  # reported
    assert flags_of(imap, "2") == b"\\Seen \\Recent"


def test_fetch_sections_and_partials(sb: Sandbox, imap: imaplib.IMAP4):
    imap.login("bob", "builder")
    imap.select("INBOX")
    _, data = imap.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-RUN)])")
    assert data[0][1] == b"Subject: Report\r\nX-Run: 42\r\n\r\n"
    _, data = imap.fetch("2", "(BODY.PEEK[TEXT])")
    assert data[0][1] == b".dotted line\r\nquarterly numbers\r\n"
    _, data = imap.fetch("2", "(BODY.PEEK[HEADER])")
    assert data[0][1].endswith(b"X-Run: 42\r\n\r\n") and b"quarterly" not in data[0][1]
    _, data = imap.fetch("2", "(BODY.PEEK[TEXT]<1.6>)")
    assert data[0][0].endswith(b"BODY[TEXT]<1> {6}") and data[0][1] == b"dotted"
    _, data = imap.fetch("1", "(RFC822.SIZE INTERNALDATE)")
    assert re.search(rb'INTERNALDATE "[ \d]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d \+0000"', data[0])
    _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)])")
    assert b"Subject" not in data[0][1] and b"From: Alice" in data[0][1]


def test_uid_fetch_and_search(sb: Sandbox, imap: imaplib.IMAP4):
    imap.login("bob@mailrun.test", "builder")
    imap.select("INBOX")
    assert imap.search(None, "ALL") == ("OK", [b"1 2"])
    assert imap.search(None, "SUBJECT", "lunch") == ("OK", [b"1"])
    assert imap.search(None, "HEADER", "X-Run", "42") == ("OK", [b"2"])
    assert imap.search(None, "TEXT", "QUARTERLY") == ("OK", [b"2"])
    assert imap.search(None, "BODY", "Subject") == ("OK", [b""])
    assert imap.search(None, "FROM", "carol") == ("OK", [b"2"])
    assert imap.search(None, "OR", "SUBJECT", "lunch", "SUBJECT", "report") == ("OK", [b"1 2"])
    assert imap.search(None, "NOT", "SUBJECT", "lunch") == ("OK", [b"2"])
    assert imap.search(None, "CHARSET", "UTF-8", "UNSEEN") == ("OK", [b"1 2"])
    imap.store("1", "+FLAGS", "(\\Seen)")
    assert imap.search(None, "UNSEEN") == ("OK", [b"2"])
    assert imap.search(None, "SEEN") == ("OK", [b"1"])
    assert imap.uid("SEARCH", "SUBJECT", "report") == ("OK", [b"2"])
    typ, data = imap.uid("FETCH", "2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and data[0][0].startswith(b"2 (UID 2 ") and data[0][1] == b"Subject: Report\r\n\r\n"
    assert imap.uid("FETCH", "99", "(FLAGS)") == ("OK", [None])  # no such UID: nothing, not an error
    typ, data = imap.search(None, "SINCE", "1-Jan-2000")
    assert data == [b"1 2"]
    with pytest.raises(imaplib.IMAP4.error, match="search key"):
        imap.search(None, "FUZZY", "x")


def test_store_expunge_and_close(sb: Sandbox, imap: imaplib.IMAP4):
    imap.login("bob", "builder")
    imap.select("INBOX")
    typ, data = imap.store("1", "+FLAGS", "(\\Deleted \\Flagged)")
    assert typ == "OK" and data == [b"1 (FLAGS (\\Flagged \\Deleted \\Recent))"]
    typ, data = imap.store("1", "-FLAGS", "(\\Flagged)")
    assert data == [b"1 (FLAGS (\\Deleted \\Recent))"]
    typ, data = imap.store("2", "FLAGS.SILENT", "(\\Answered)")
    assert typ == "OK" and data == [None]
    assert flags_of(imap, "2") == b"\\Answered \\Recent"
    typ, data = imap.expunge()
    assert typ == "OK" and data == [b"1"]
    typ, data = imap.fetch("1", "(UID)")
    assert data == [b"1 (UID 2)"]
    imap.store("1", "+FLAGS", "(\\Deleted)")
    assert imap.close()[0] == "OK"  # CLOSE expunges silently
    assert len(sb.mailbox("bob")) == 0


def test_examine_is_read_only(sb: Sandbox, imap: imaplib.IMAP4):
    imap.login("bob", "builder")
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK"
    assert imap.untagged_responses.get("READ-ONLY") == [b""]
    typ, data = imap.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "NO" and b"read-only" in data[0]
    assert imap.expunge()[0] == "NO"
    imap.fetch("1", "(BODY[])")
    assert flags_of(imap, "1") == b"\\Recent"  # no \Seen in read-only mode


def test_starttls_with_the_ca_and_imap4_ssl(sb: Sandbox):
    ctx = ssl.create_default_context(cafile=sb.ca_path)
    m = imaplib.IMAP4("localhost", sb.ports["imap"], timeout=5)
    assert "STARTTLS" in m.capabilities
    m.starttls(ssl_context=ctx)
    assert "STARTTLS" not in m.capabilities
    m.login("bob", "builder")
    assert m.select("INBOX") == ("OK", [b"2"])
    m.logout()
    m = imaplib.IMAP4_SSL(sb.host, sb.ports["imaps"], ssl_context=ctx, timeout=5)
    assert "STARTTLS" not in m.capabilities
    m.login("alice", "wonderland")
    assert m.select("INBOX") == ("OK", [b"0"])
    m.logout()


def test_authenticate_plain(sb: Sandbox, imap: imaplib.IMAP4):
    typ, _ = imap.authenticate("PLAIN", lambda _: b"\0bob\0builder")
    assert typ == "OK"
    assert imap.select("INBOX")[0] == "OK"
    c = Raw(sb.host, sb.ports["imap"])
    c.line()
    ir = base64.b64encode(b"\0bob\0builder")
    assert c.cmd(b"a1 AUTHENTICATE PLAIN " + ir)[-1].startswith(b"a1 OK [CAPABILITY")


def test_errors_are_tagged_bad_or_no(sb: Sandbox):
    c = Raw(sb.host, sb.ports["imap"])
    greeting = c.line()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ") and b"STARTTLS" in greeting
    assert c.cmd(b"a1 SELECT INBOX") == [b"a1 BAD SELECT is not valid before login."]
    assert c.cmd(b"a2 LOGIN bob wrong-password") == [b"a2 NO [AUTHENTICATIONFAILED] Authentication failed."]
    assert c.cmd(b"a3 FROBNICATE")[0].startswith(b"a3 BAD Unknown or unsupported command")
    assert c.cmd(b'a4 LOGIN "bob" "builder"')[-1].startswith(b"a4 OK [CAPABILITY")
    assert c.cmd(b"a5 LOGIN bob builder") == [b"a5 BAD LOGIN is not valid after login."]
    assert c.cmd(b"a5b FETCH 1 (FLAGS)") == [b"a5b BAD FETCH needs a selected mailbox (SELECT INBOX first)."]
    assert c.cmd(b"a6 SELECT Archive")[0].startswith(b"a6 NO [NONEXISTENT]")
    assert c.cmd(b"a7 SELECT INBOX")[-1] == b"a7 OK [READ-WRITE] Select completed."
    assert c.cmd(b"a8 FETCH 3 (FLAGS)")[0].startswith(b"a8 BAD Invalid message set")
    assert c.cmd(b"a9 FETCH 1 (BINARY[1])")[0].startswith(b"a9 BAD Unknown or unsupported FETCH item")
    assert c.cmd(b"a10 FETCH 1 (FLAGS")[0] == b"a10 BAD Missing ')'"
    assert c.cmd(b"a11 STORE 1 +FLAGS (\\Recent)")[0].startswith(b"a11 BAD")
    assert c.cmd(b"a12 STORE 1 +FLAGS (custom)")[0].startswith(b"a12 NO")
    c.sock.sendall(b"(bad tag\r\n")
    assert c.line() == b"* BAD Invalid tag."
    assert c.cmd(b"a13 NOOP") == [b"a13 OK NOOP completed."]
    assert c.cmd(b"a14 LOGOUT") == [b"* BYE Logging out", b"a14 OK Logout completed."]


def test_client_literals_synchronising_and_not(sb: Sandbox):
    c = Raw(sb.host, sb.ports["imap"])
    c.line()
    c.sock.sendall(b"a1 LOGIN {3}\r\n")
    assert c.line().startswith(b"+ ")
    c.sock.sendall(b"bob {7+}\r\nbuilder\r\n")
    assert c.line().startswith(b"a1 OK [CAPABILITY")
    c.cmd(b"a2 SELECT INBOX")
    lines = c.cmd(b"a3 FETCH 1 BODY.PEEK[TEXT]")
    assert lines[0] == b"* 1 FETCH (BODY[TEXT] {16}"
    # the literal holds exactly 16 bytes: "Pizza at noon?\r\n"
    assert lines[1:] == [b"Pizza at noon?", b")", b"a3 OK Fetch completed."]


def test_noop_reports_new_mail_and_status(sb: Sandbox, imap: imaplib.IMAP4):
    imap.login("bob", "builder")
    imap.select("INBOX")
    send(sb, "bob@mailrun.test", b"Subject: third\r\n\r\nnew\r\n")
    typ, _ = imap.noop()
    assert typ == "OK" and imap.untagged_responses.get("EXISTS")[-1] == b"3"
    assert imap.search(None, "SUBJECT", "third") == ("OK", [b"3"])
    typ, data = imap.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")
    assert data == [b"INBOX (MESSAGES 3 UNSEEN 3 UIDNEXT 4)"]
    typ, data = imap.list()
    assert data == [b'(\\HasNoChildren) "/" INBOX']


def test_starttls_discards_plaintext_pipelined_after_it(sb: Sandbox):
    c = Raw(sb.host, sb.ports["imap"])
    c.line()
    c.sock.sendall(b"a1 STARTTLS\r\na2 LOGIN bob builder\r\n")
    assert c.line() == b"a1 OK Begin TLS negotiation now."
    tls = ssl.create_default_context(cafile=sb.ca_path).wrap_socket(c.sock, server_hostname="localhost")
    t = Raw("", 0, sock=tls)
    assert t.cmd(b"a3 SELECT INBOX") == [b"a3 BAD SELECT is not valid before login."]
