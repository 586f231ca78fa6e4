"""The sandbox's IMAP IDLE (RFC 2177): mail delivered by SMTP, and changes made by another IMAP
session, reach an idling client at once; DONE ends it."""

from __future__ import annotations

import imaplib
import smtplib
import time

import pytest

import runner.sandbox.imap_authed as imap_authed
from runner.sandbox.server import Sandbox
from tests.test_sandbox_imap_mailboxes import Raw

MESSAGE = b"From: carol@example.org\r\nSubject: idle news\r\n\r\nnew mail\r\n"


@pytest.fixture
def sb():
    with Sandbox() as s:
        yield s


def deliver(sb: Sandbox, subject: bytes = b"idle news") -> None:
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.sendmail("carol@example.org", ["bob@mailrun.test"], MESSAGE.replace(b"idle news", subject))


def test_smtp_delivery_wakes_an_idling_client_at_once(sb: Sandbox, monkeypatch):
    # With the fallback poll an hour away, only the store's notice can bring the news in time.
    monkeypatch.setattr(imap_authed, "IDLE_POLL", 3600.0)
    deliver(sb, b"first")
    c = Raw(sb)
    assert b"* 1 EXISTS" in c.cmd(b"s1 SELECT INBOX")
    c.sock.sendall(b"i1 IDLE\r\n")
    assert c.line() == b"+ idling"
    began = time.monotonic()
    deliver(sb, b"second")
    assert c.line() == b"* 2 EXISTS"
    assert time.monotonic() - began < 5
    assert c.line() == b"* 2 RECENT"  # new to every session: this one, the first to see it, has it
    deliver(sb, b"third")
    assert [c.line(), c.line()] == [b"* 3 EXISTS", b"* 3 RECENT"]
    c.sock.sendall(b"DONE\r\n")
    assert c.line() == b"i1 OK Idle completed."
    assert not sb._state.store.watchers  # the session stopped listening
    assert c.cmd(b"f1 FETCH 3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1] == b"Subject: third"


def test_another_sessions_flags_and_expunge_reach_the_idler(sb: Sandbox, monkeypatch):
    monkeypatch.setattr(imap_authed, "IDLE_POLL", 3600.0)
    deliver(sb, b"one")
    deliver(sb, b"two")
    idler = Raw(sb)
    idler.cmd(b"s1 SELECT INBOX")
    idler.sock.sendall(b"i1 IDLE\r\n")
    assert idler.line() == b"+ idling"
    other = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
    other.login("bob", "builder")
    other.select("INBOX")
    other.store("2", "+FLAGS", "(\\Flagged)")
    assert idler.line() == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))"  # recent here (the first to select)
    other.store("1", "+FLAGS", "(\\Deleted)")
    assert idler.line() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent))"
    other.expunge()
    assert idler.line() == b"* 1 EXPUNGE"
    other.logout()
    idler.sock.sendall(b"done\r\n")  # DONE in any case
    assert idler.line() == b"i1 OK Idle completed."
    assert idler.cmd(b"f1 UID SEARCH ALL")[0] == b"* SEARCH 2"


def test_mail_put_in_the_maildir_from_outside_is_found_by_the_poll(sb: Sandbox):
    c = Raw(sb)
    c.cmd(b"s1 SELECT INBOX")
    c.sock.sendall(b"i1 IDLE\r\n")
    assert c.line() == b"+ idling"
    sb.mailbox("bob").add(MESSAGE)  # another thread, straight into the Maildir: no notice
    assert [c.line(), c.line()] == [b"* 1 EXISTS", b"* 1 RECENT"]  # within IDLE_POLL
    c.sock.sendall(b"DONE\r\n")
    assert c.line() == b"i1 OK Idle completed."


def test_idle_without_a_selected_mailbox_and_a_wrong_continuation(sb: Sandbox):
    c = Raw(sb)
    c.sock.sendall(b"i1 IDLE\r\n")
    assert c.line() == b"+ idling"
    deliver(sb)  # nothing selected: nothing to say
    c.sock.sendall(b"DONE\r\n")
    assert c.line() == b"i1 OK Idle completed."
    c.cmd(b"s1 SELECT INBOX")
    c.sock.sendall(b"i2 IDLE\r\n")
    assert c.line() == b"+ idling"
    c.sock.sendall(b"NOOP\r\n")
    assert c.line() == b"i2 BAD Expected DONE to end IDLE."
    assert c.cmd(b"i3 IDLE extra") == [b"i3 BAD IDLE takes no arguments."]
    assert c.cmd(b"n1 NOOP") == [b"n1 OK NOOP completed."]
    before_login = Raw(sb, login=False)
    assert before_login.cmd(b"i4 IDLE") == [b"i4 BAD IDLE is not valid before login."]


def test_idle_with_imaplib_readline(sb: Sandbox):
    """imaplib has no IDLE before Python 3.14: its raw send/readline, as a client would."""
    m = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
    m.login("bob", "builder")
    m.select("INBOX")
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    assert m.readline().startswith(b"+ ")
    deliver(sb)
    assert [m.readline(), m.readline()] == [b"* 1 EXISTS\r\n", b"* 1 RECENT\r\n"]
    m.send(b"DONE\r\n")
    assert m.readline() == tag + b" OK Idle completed.\r\n"
    assert m.search(None, "SUBJECT", '"idle news"') == ("OK", [b"1"])
    m.logout()
