"""The sandbox's XOAUTH2 (SMTP, IMAP, POP3) against smtplib, imaplib, poplib and raw sockets, and
the welcome message a new mailbox starts with (the `welcome` option)."""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import socket

import pytest

from runner.sandbox.sasl import MECHANISMS, SaslError, parse_xoauth2
from runner.sandbox.server import Sandbox

WELCOME = b"Subject: Welcome to the mailrun sandbox"
LONG_TOKEN = "ya29." + "x" * 3000  # real access tokens run to 1-3 KB


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


class Raw:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def cmd(self, command: bytes | str) -> bytes:
        if isinstance(command, str):
            command = command.encode()
        self.sock.sendall(command + b"\r\n")
        return self.line()

    def close(self) -> None:
        self.sock.close()


def json_challenge(b64: bytes | str) -> dict:
    return json.loads(base64.b64decode(b64))


@pytest.fixture(scope="module")
def sb():
    with Sandbox() as s:
        yield s


@pytest.fixture(scope="module")
def any_sb():
    with Sandbox(accept_any_login=True) as s:
        yield s


# --- the parser ------------------------------------------------------------------------------
def test_parse_xoauth2_takes_user_and_bearer_token_and_rejects_the_malformed():
    assert parse_xoauth2(b"user=a@b.c\x01auth=Bearer tok\x01\x01") == ("a@b.c", "tok")
    assert parse_xoauth2(b"user=a\x01host=x\x01auth=bearer t2\x01\x01") == ("a", "t2")
    for bad in (
        b"user=a\x01auth=Bearer t\x01",  # no ^A^A at the end
        b"auth=Bearer t\x01\x01",  # no user
        b"user=a\x01auth=Basic t\x01\x01",  # not Bearer
        b"user=a\x01auth=Bearer \x01\x01",  # empty token
        b"user=a\x01garbage\x01\x01",
        b"\xff\x01\x01",
    ):
        with pytest.raises(SaslError) as e:
            parse_xoauth2(bad)
        assert "t\x01" not in str(e.value) and "Basic" not in str(e.value)


# --- SMTP -------------------------------------------------------------------------------------
def smtp_oauth(user: str, token: str, challenges: list[bytes]):
    def auth(challenge=None):
        if challenge is None:  # the initial response
            return f"user={user}\x01auth=Bearer {token}\x01\x01"
        challenges.append(challenge)
        return f"user={user}\x01auth=Bearer {token}\x01\x01" if challenge == b"" else ""

    return auth


@pytest.mark.parametrize("initial", [True, False], ids=["initial-response", "334-continuation"])
def test_smtplib_xoauth2_logs_in_and_sends(sb: Sandbox, initial: bool):
    challenges: list[bytes] = []
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.ehlo()
        assert s.esmtp_features["auth"].split() == list(MECHANISMS)
        code, _ = s.auth("XOAUTH2", smtp_oauth("bob", "builder", challenges), initial_response_ok=initial)
        assert code == 235
        s.sendmail("bob@mailrun.test", ["bob@mailrun.test"], b"Subject: oauth sent\r\n\r\nx\r\n")
    assert challenges == ([] if initial else [b""])  # the continuation form gets '334 ' (empty)
    mb = sb.mailbox("bob")
    assert any(b"Subject: oauth sent" in mb.get_bytes(k) for k in mb.iterkeys())


def test_smtplib_xoauth2_wrong_token_gets_the_json_challenge_then_535(sb: Sandbox):
    challenges: list[bytes] = []
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("XOAUTH2", smtp_oauth("alice", "not-her-token", challenges))
        assert e.value.smtp_code == 535
        assert e.value.smtp_error.startswith(b"5.7.8 ")
        assert b"not-her-token" not in e.value.smtp_error
        # the session goes on: the right token works after the failure
        assert s.auth("XOAUTH2", smtp_oauth("alice", "wonderland", []))[0] == 235
    assert len(challenges) == 1
    assert json.loads(challenges[0]) == {
        "status": "401",
        "schemes": "Bearer",
        "scope": "https://mail.mailrun.test/",
    }


def test_smtp_xoauth2_on_the_wire_case_insensitive_long_token_and_malformed(any_sb: Sandbox):
    c = Raw(any_sb.host, any_sb.ports["smtp"])
    assert c.line().startswith(b"220 ")
    c.sock.sendall(b"EHLO client.example.test\r\n")
    while not c.line().startswith(b"250 "):
        pass
    assert c.cmd("AUTH XOAUTH2 not*base64") == b"501 5.5.2 Can't decode base64"
    bad = base64.b64encode(b"user=x\x01auth=Basic secret-ish\x01\x01").decode()
    reply = c.cmd(f"AUTH XOAUTH2 {bad}")
    assert reply.startswith(b"501 5.5.2 Invalid XOAUTH2 response") and b"secret-ish" not in reply
    blob = xoauth2("carol@example.org", LONG_TOKEN)
    assert len(f"auth xoauth2 {blob}") > 4000  # far beyond aiosmtpd's 512/1001 defaults
    assert c.cmd(f"auth xoauth2 {blob}") == b"235 2.7.0 Authentication successful"
    assert c.cmd("AUTH XOAUTH2 " + xoauth2("x", "y")) == b"503 5.5.1 Error: already authenticated"
    assert c.cmd("MAIL FROM:<carol@example.org> " + "X" * 600).startswith(b"500 ")  # others: still 512
    c.close()
    # The continuation form with a long token, on a fresh connection.
    c = Raw(any_sb.host, any_sb.ports["smtp"])
    c.line()
    c.sock.sendall(b"EHLO client.example.test\r\n")
    while not c.line().startswith(b"250 "):
        pass
    assert c.cmd("AUTH XOAUTH2") == b"334 "
    assert c.cmd(blob) == b"235 2.7.0 Authentication successful"
    c.close()


# --- IMAP -------------------------------------------------------------------------------------
def test_imaplib_authenticate_xoauth2(sb: Sandbox):
    with imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5) as m:
        assert "AUTH=XOAUTH2" in m.capabilities
        typ, _ = m.authenticate("XOAUTH2", lambda _: b"user=alice\x01auth=Bearer wonderland\x01\x01")
        assert typ == "OK" and m.state == "AUTH"
        assert m.select("INBOX")[0] == "OK"
        m.logout()


def test_imaplib_xoauth2_wrong_token_gets_the_json_challenge_then_no(sb: Sandbox):
    seen: list[bytes] = []

    def auth(challenge: bytes) -> bytes:
        seen.append(challenge)
        return b"user=alice\x01auth=Bearer wrong-token\x01\x01" if len(seen) == 1 else b""

    with imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5) as m:
        with pytest.raises(imaplib.IMAP4.error) as e:
            m.authenticate("XOAUTH2", auth)
        assert "[AUTHENTICATIONFAILED]" in str(e.value) and "wrong-token" not in str(e.value)
        assert seen[0] == b"" and json.loads(seen[1])["status"] == "401"
        assert m.state == "NONAUTH"
        m.logout()


def test_imap_sasl_ir_xoauth2_on_the_wire(any_sb: Sandbox):
    c = Raw(any_sb.host, any_sb.ports["imap"])
    assert b"AUTH=XOAUTH2" in c.line()
    assert c.cmd("a1 AUTHENTICATE XOAUTH2 !!!").startswith(b"a1 BAD Invalid AUTHENTICATE XOAUTH2 response")
    reply = c.cmd(
        "a2 AUTHENTICATE XOAUTH2 " + base64.b64encode(b"user=\x01auth=Bearer hush\x01\x01").decode()
    )
    assert reply.startswith(b"a2 BAD ") and b"hush" not in reply
    reply = c.cmd("a3 AUTHENTICATE XOAUTH2 " + xoauth2("dora@example.org", LONG_TOKEN))
    assert reply.startswith(b"a3 OK [CAPABILITY ") and reply.endswith(b"Logged in")
    assert c.cmd("a4 SELECT INBOX") == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
    c.close()


def test_imap_xoauth2_refusal_on_the_wire(sb: Sandbox):
    c = Raw(sb.host, sb.ports["imap"])
    c.line()
    challenge = c.cmd("t1 AUTHENTICATE XOAUTH2 " + xoauth2("bob", "wonderland"))  # alice's, not bob's
    assert challenge.startswith(b"+ ")
    assert json_challenge(challenge[2:]) == {
        "status": "401",
        "schemes": "Bearer",
        "scope": "https://mail.mailrun.test/",
    }
    assert c.cmd("") == b"t1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
    c.close()


# --- POP3 -------------------------------------------------------------------------------------
def test_pop3_auth_xoauth2_both_forms_and_refusal(sb: Sandbox):
    p = poplib.POP3(sb.host, sb.ports["pop3"], timeout=5)
    assert p.capa()["SASL"] == list(MECHANISMS)
    assert p._shortcmd("AUTH XOAUTH2 " + xoauth2("bob", "wrong")).startswith(b"+ ")
    with pytest.raises(poplib.error_proto) as e:
        p._shortcmd("")
    assert e.value.args[0] == b"-ERR [AUTH] Authentication failed."
    assert p._shortcmd("AUTH XOAUTH2") == b"+ "
    assert p._shortcmd(xoauth2("bob", "builder")) == b"+OK Logged in."
    assert p.stat()[0] >= 0
    p.quit()
    p = poplib.POP3(sb.host, sb.ports["pop3"], timeout=5)
    assert p._shortcmd("AUTH XOAUTH2") == b"+ "
    with pytest.raises(poplib.error_proto) as e:
        p._shortcmd(base64.b64encode(b"user=bob\x01auth=Bearer builder\x01").decode())
    assert b"Invalid AUTH XOAUTH2 response" in e.value.args[0] and b"builder" not in e.value.args[0]
    p.quit()


def test_pop3_xoauth2_continuation_takes_a_long_token(any_sb: Sandbox):
    p = poplib.POP3(any_sb.host, any_sb.ports["pop3"], timeout=5)
    assert p._shortcmd("AUTH XOAUTH2") == b"+ "
    assert p._shortcmd(xoauth2("erin@example.org", LONG_TOKEN)) == b"+OK Logged in."
    p.quit()


# --- welcome ----------------------------------------------------------------------------------
def test_welcome_is_off_by_default_and_implied_by_accept_any_login(sb: Sandbox, any_sb: Sandbox):
    assert (sb.welcome, any_sb.welcome) == (False, True)
    assert not any(WELCOME in m.as_bytes() for user in ("alice", "bob") for m in sb.mailbox(user))
    with Sandbox(accept_any_login=True, welcome=False) as quiet:
        p = poplib.POP3(quiet.host, quiet.ports["pop3"], timeout=5)
        p.user("frank@example.org")
        p.pass_("x")
        assert p.stat() == (0, 0)
        p.quit()
        assert "welcome" not in quiet.describe().lower()


def test_welcome_message_on_pop3_imap_and_delivery(tmp_path):
    with Sandbox(welcome=True, maildir_root=tmp_path) as ws:
        assert "each new mailbox starts with one message from postmaster@mailrun.test" in ws.describe()
        # configured users have theirs from the start: POP3 RETR shows it byte-stuffed on the wire
        c = Raw(ws.host, ws.ports["pop3"])
        c.line()
        c.cmd("USER alice")
        assert c.cmd("PASS wonderland") == b"+OK Logged in."
        assert c.cmd("STAT").startswith(b"+OK 1 ")
        assert c.cmd("RETR 1").endswith(b" octets")
        wire = []
        while (line := c.line()) != b".":
            wire.append(line)
        assert b"From: mailrun sandbox <postmaster@mailrun.test>" in wire and WELCOME in wire
        assert b"..this line starts with a dot: POP3 sends it as '..this', clients show '.this'" in wire
        assert b".." in wire  # the lone '.' line, stuffed
        c.cmd("QUIT")
        c.close()
        # poplib unstuffs it again
        p = poplib.POP3(ws.host, ws.ports["pop3"], timeout=5)
        p.user("alice")
        p.pass_("wonderland")
        lines = p.retr(1)[1]
        assert b".this line starts with a dot: POP3 sends it as '..this', clients show '.this'" in lines
        assert b"." in lines
        p.quit()
        # IMAP sees the same message, unstuffed
        with imaplib.IMAP4(ws.host, ws.ports["imap"], timeout=5) as m:
            m.login("bob", "builder")
            assert m.select("INBOX") == ("OK", [b"1"])
            data = m.fetch("1", "(BODY.PEEK[])")[1][0][1]
            assert WELCOME in data and b"\r\n.\r\n" in data and b"To: <bob@mailrun.test>" in data
            m.logout()
        # a mailbox created by a delivery: the welcome first, the delivered message the newest
        with smtplib.SMTP(ws.host, ws.ports["smtp"], timeout=5) as s:
            s.sendmail("alice@mailrun.test", ["gina@example.org"], b"Subject: hi gina\r\n\r\nx\r\n")
            s.sendmail("alice@mailrun.test", ["gina@example.org"], b"Subject: again\r\n\r\nx\r\n")
        mb = ws.mailbox("gina@example.org")
        from runner.sandbox.store import _order  # delivery order (Maildir keys do not sort as text)

        got = [mb.get_bytes(k) for k in sorted(mb.keys(), key=lambda k: _order(k, ""))]
        assert len(got) == 3 and WELCOME in got[0] and b"Delivered-To: gina@example.org" in got[0]
        assert sum(WELCOME in g for g in got) == 1
    # a second sandbox on the same Maildirs: nothing is new, nobody gets a second welcome
    with Sandbox(welcome=True, maildir_root=tmp_path) as again:
        assert len(again.mailbox("alice")) == 1
        with smtplib.SMTP(again.host, again.ports["smtp"], timeout=5) as s:
            s.sendmail("alice@mailrun.test", ["gina@example.org"], b"Subject: third\r\n\r\nx\r\n")
        assert sum(WELCOME in m.as_bytes() for m in again.mailbox("gina@example.org")) == 1
