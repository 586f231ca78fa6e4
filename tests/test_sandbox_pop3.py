"""The sandbox's POP3 server against poplib and raw sockets (RFC 1939 / 2449 / 2595 / 5034)."""

from __future__ import annotations

import base64
import poplib
import smtplib
import socket
import ssl
import time

import pytest

from runner.sandbox import pop3
from runner.sandbox.server import Sandbox


class Raw:
    def __init__(self, host: str, port: int, timeout: float = 5.0, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def multi(self) -> list[bytes]:
        """The lines of a multi-line body up to (not including) the '.' line, still stuffed."""
        lines = []
        while (ln := self.line()) != b".":
            lines.append(ln)
        return lines

    def cmd(self, command: bytes) -> bytes:
        self.sock.sendall(command + b"\r\n")
        return self.line()


def send(sb: Sandbox, to: str, message: bytes) -> None:
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.sendmail("alice@mailrun.test", [to], message)


@pytest.fixture
def sb():
    with Sandbox() as s:
        send(s, "bob@mailrun.test", b"Subject: first\r\n\r\nFirst message.\r\n")
        send(s, "bob@mailrun.test", b"Subject: second\r\nX-Test: 2\r\n\r\nline 1\r\nline 2\r\nline 3\r\n")
        yield s


def login(sb: Sandbox) -> Raw:
    c = Raw(sb.host, sb.ports["pop3"])
    assert c.line().startswith(b"+OK")
    assert c.cmd(b"USER bob") == b"+OK"
    assert c.cmd(b"PASS builder") == b"+OK Logged in."
    return c


def test_poplib_user_pass_stat_list_retr_top_uidl(sb: Sandbox):
    p = poplib.POP3(sb.host, sb.ports["pop3"], timeout=5)
    assert p.getwelcome().startswith(b"+OK")
    p.user("bob")
    p.pass_("builder")
    count, total = p.stat()
    assert count == 2
    resp, listing, _ = p.list()
    sizes = [int(line.split()[1]) for line in listing]
    assert resp.startswith(b"+OK 2 messages") and sum(sizes) == total
    resp, lines, octets = p.retr(2)
    assert resp == f"+OK {sizes[1]} octets".encode()
    assert b"Subject: second" in lines and lines[-3:] == [b"line 1", b"line 2", b"line 3"]
    assert sum(len(ln) + 2 for ln in lines) == sizes[1]  # the size counts CRLF line ends
    _, top, _ = p.top(2, 1)
    assert top[-2:] == [b"", b"line 1"] and b"X-Test: 2" in top
    _, uidls, _ = p.uidl()
    uids = [u.split()[1] for u in uidls]
    assert len(set(uids)) == 2 and all(0 < len(u) <= 70 for u in uids)
    assert p.uidl(1).split()[2] == uids[0]
    assert p.quit().startswith(b"+OK")
    # UIDL is stable across sessions.
    p = poplib.POP3(sb.host, sb.ports["pop3"], timeout=5)
    p.user("bob@mailrun.test")
    p.pass_("builder")
    assert [u.split()[1] for u in p.uidl()[1]] == uids
    p.quit()


def test_dele_then_quit_removes_and_rset_restores(sb: Sandbox):
    c = login(sb)
    assert c.cmd(b"DELE 1") == b"+OK Marked to be deleted."
    assert c.cmd(b"DELE 1") == b"-ERR Message is deleted."
    assert c.cmd(b"RETR 1") == b"-ERR Message is deleted."
    assert c.cmd(b"STAT").startswith(b"+OK 1 ")
    assert c.cmd(b"RSET") == b"+OK"
    assert c.cmd(b"STAT").startswith(b"+OK 2 ")
    assert c.cmd(b"DELE 2") == b"+OK Marked to be deleted."
    assert c.cmd(b"LIST").startswith(b"+OK 1 messages")
    assert c.multi()[0].startswith(b"1 ")  # message numbers do not shift
    assert c.cmd(b"LIST 2") == b"-ERR Message is deleted."
    assert c.cmd(b"QUIT") == b"+OK Logging out."
    remaining = [sb.mailbox("bob").get_bytes(k) for k in sb.mailbox("bob").iterkeys()]
    assert len(remaining) == 1 and b"Subject: first" in remaining[0]


def test_a_vanished_client_deletes_nothing(sb: Sandbox):
    c = login(sb)
    assert c.cmd(b"DELE 1").startswith(b"+OK")
    c.sock.close()
    c = login(sb)  # the maildrop lock was released too
    assert c.cmd(b"STAT").startswith(b"+OK 2 ")


def test_dot_stuffed_body_round_trip(sb: Sandbox):
    body_lines = [b".", b"..two dots", b".one dot", b"no dot", b" .space dot", b""]
    message = b"Subject: dots\r\n\r\n" + b"".join(ln + b"\r\n" for ln in body_lines)
    send(sb, "carol@mailrun.test", message)
    send(sb, "carol@mailrun.test", b"Subject: none\r\n\r\nx")  # no final line end
    # carol got mail but is not a configured user: her login fails, without echoing the password.
    c = Raw(sb.host, sb.ports["pop3"])
    c.line()
    assert c.cmd(b"USER carol").startswith(b"+OK")
    assert c.cmd(b"PASS secret-pw") == b"-ERR [AUTH] Authentication failed."
    c.sock.close()
    # A second sandbox on the same Maildirs that accepts any login.
    with Sandbox(maildir_root=sb.maildir_root, accept_any_login=True) as any_sb:
        c = Raw(any_sb.host, any_sb.ports["pop3"])
        c.line()
        c.cmd(b"USER carol")
        assert c.cmd(b"PASS x") == b"+OK Logged in."
        assert c.cmd(b"RETR 1").startswith(b"+OK ")
        wire = c.multi()  # on the wire: stuffed
        assert wire[-6:] == [b"..", b"...two dots", b"..one dot", b"no dot", b" .space dot", b""]
        assert c.cmd(b"RETR 2").startswith(b"+OK ")
        assert c.multi()[-1] == b"x"
        c.cmd(b"QUIT")
        # Through poplib: unstuffed again, identical to what was sent.
        p = poplib.POP3(any_sb.host, any_sb.ports["pop3"], timeout=5)
        p.user("carol")
        p.pass_("x")
        _, lines, _ = p.retr(1)
        assert lines[-6:] == body_lines
        p.quit()


def test_errors_for_bad_commands_and_sequence(sb: Sandbox):
    c = Raw(sb.host, sb.ports["pop3"])
    assert c.line() == b"+OK mailrun sandbox POP3 ready."
    assert c.cmd(b"STAT").startswith(b"-ERR")
    assert c.cmd(b"PASS builder") == b"-ERR No username given."
    assert c.cmd(b"FROB") == b"-ERR Unknown command."
    assert c.cmd(b"USER bob") == b"+OK"
    reply = c.cmd(b"PASS wrong-password")
    assert reply == b"-ERR [AUTH] Authentication failed." and b"wrong" not in reply
    assert c.cmd(b"USER bob") == b"+OK"
    assert c.cmd(b"PASS builder") == b"+OK Logged in."
    assert c.cmd(b"USER bob") == b"-ERR USER is not valid after login."
    assert c.cmd(b"RETR 3") == b"-ERR There's no message 3."
    assert c.cmd(b"RETR 0") == b"-ERR There's no message 0."
    assert c.cmd(b"RETR x").startswith(b"-ERR Invalid message number")
    assert c.cmd(b"RETR") == b"-ERR Wrong number of arguments."
    assert c.cmd(b"TOP 1").startswith(b"-ERR")
    assert c.cmd(b"TOP 1 -1").startswith(b"-ERR Invalid number of lines")
    assert c.cmd(b"NOOP") == b"+OK"
    assert c.cmd(b"X" * 5000) == b"-ERR Line too long."
    assert c.cmd(b"QUIT") == b"+OK Logging out."


def test_capa_before_and_after_login(sb: Sandbox):
    c = Raw(sb.host, sb.ports["pop3"])
    c.line()
    assert c.cmd(b"CAPA") == b"+OK"
    caps = c.multi()
    assert {
        b"TOP",
        b"UIDL",
        b"PIPELINING",
        b"RESP-CODES",
        b"STLS",
        b"USER",
        b"SASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER EXTERNAL ANONYMOUS",
    } <= set(caps)
    c.cmd(b"USER bob")
    c.cmd(b"PASS builder")
    assert c.cmd(b"CAPA") == b"+OK"
    after = c.multi()
    assert b"STLS" not in after and b"USER" not in after and b"UIDL" in after


def test_pipelined_commands_in_one_write(sb: Sandbox):
    c = Raw(sb.host, sb.ports["pop3"])
    c.line()
    c.sock.sendall(b"USER bob\r\nPASS builder\r\nSTAT\r\nLIST\r\nNOOP\r\nQUIT\r\n")
    assert c.line() == b"+OK"
    assert c.line() == b"+OK Logged in."
    assert c.line().startswith(b"+OK 2 ")
    assert c.line().startswith(b"+OK 2 messages")
    assert len(c.multi()) == 2
    assert c.line() == b"+OK"
    assert c.line() == b"+OK Logging out."


def test_auth_plain(sb: Sandbox):
    c = Raw(sb.host, sb.ports["pop3"])
    c.line()
    assert c.cmd(b"AUTH PLAIN") == b"+ "
    assert c.cmd(base64.b64encode(b"\0bob\0wrong")) == b"-ERR [AUTH] Authentication failed."
    assert c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0builder")) == b"+OK Logged in."
    assert c.cmd(b"STAT").startswith(b"+OK 2 ")


def test_stls_with_the_ca_and_pop3_ssl(sb: Sandbox):
    ctx = ssl.create_default_context(cafile=sb.ca_path)
    p = poplib.POP3("localhost", sb.ports["pop3"], timeout=5)
    p.stls(context=ctx)
    assert p.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert b"STLS" not in p.capa()
    p.user("bob")
    p.pass_("builder")
    assert p.stat()[0] == 2
    p.quit()
    p = poplib.POP3_SSL(sb.host, sb.ports["pop3s"], context=ctx, timeout=5)
    assert "STLS" not in p.capa()
    p.user("bob")
    p.pass_("builder")
    assert p.stat()[0] == 2
    with pytest.raises(poplib.error_proto):
        p.stls(context=ctx)  # already TLS
    p.quit()


def test_stls_discards_plaintext_pipelined_after_it(sb: Sandbox):
    c = Raw(sb.host, sb.ports["pop3"])
    c.line()
    c.sock.sendall(b"STLS\r\nUSER injected\r\n")
    assert c.line() == b"+OK Begin TLS negotiation now."
    tls = ssl.create_default_context(cafile=sb.ca_path).wrap_socket(c.sock, server_hostname="localhost")
    t = Raw("", 0, sock=tls)
    assert t.cmd(b"PASS builder") == b"-ERR No username given."  # the injected USER was not read


def test_second_session_on_a_locked_maildrop_is_refused(sb: Sandbox, monkeypatch):
    monkeypatch.setattr(pop3, "LOCK_WAIT", 0.3)
    first = login(sb)
    c = Raw(sb.host, sb.ports["pop3"])
    c.line()
    c.cmd(b"USER bob")
    began = time.monotonic()
    assert c.cmd(b"PASS builder").startswith(b"-ERR [IN-USE]")
    assert time.monotonic() - began >= 0.3  # it waited for the lock first
    first.cmd(b"QUIT")
    c.cmd(b"USER bob")
    assert c.cmd(b"PASS builder") == b"+OK Logged in."


def test_a_login_waits_for_the_other_session_to_quit(sb: Sandbox):
    # Two scenarios of a parallel suite reading the same mailbox must not collide.
    first = login(sb)
    c = Raw(sb.host, sb.ports["pop3"])
    c.line()
    c.cmd(b"USER bob")
    c.sock.sendall(b"PASS builder\r\n")  # waits for the lock: no reply yet
    time.sleep(0.2)
    assert first.cmd(b"QUIT") == b"+OK Logging out."
    assert c.line() == b"+OK Logged in."
    assert c.cmd(b"STAT").startswith(b"+OK 2 ")


def test_retr_marks_seen_on_quit(sb: Sandbox):
    c = login(sb)
    c.cmd(b"RETR 2")
    c.multi()
    c.cmd(b"QUIT")
    mb = sb.mailbox("bob")
    flags = {mb.get_message(k)["Subject"]: mb.get_message(k).get_flags() for k in mb.iterkeys()}
    assert flags == {"first": "", "second": "S"}


def test_server_keeps_serving_after_abrupt_disconnects(sb: Sandbox):
    for _ in range(5):
        s = socket.create_connection((sb.host, sb.ports["pop3"]), timeout=5)
        s.sendall(b"USER bob\r\nPA")
        s.close()
    c = login(sb)
    assert c.cmd(b"STAT").startswith(b"+OK 2 ")
