"""Smoke tests of the test bed: real Postfix and Dovecot on loopback, driven with the standard
library's smtplib, poplib and imaplib, TLS verification on against the bed's own CA."""

from __future__ import annotations

import email
import imaplib
import json
import poplib
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.servers.testbed import Testbed, TestbedError, _pid_alive, free_ports

T = 10  # seconds: the deadline of every network operation here
# A refused login must answer faster than this. Dovecot's default is 2 s, growing to 15 s with its
# per-IP penalty; the bed's auth_failure_delay = 0 still answers on Dovecot's 0.5 s failure tick.
QUICK = 1.2


def _message(bed, sender: str, rcpt: str, tag: str) -> tuple[EmailMessage, str]:
    subject = f"testbed {tag} {uuid.uuid4().hex}"
    msg = EmailMessage()
    msg["From"] = bed.address(sender)
    msg["To"] = bed.address(rcpt)
    msg["Subject"] = subject
    msg.set_content(f"Hello {rcpt},\n.a line starting with a dot\nBye.\n")
    return msg, subject


def _has_subject(subject: str):
    return lambda raw: email.message_from_bytes(raw)["Subject"] == subject


def _pop3_find(pop: poplib.POP3, subject: str) -> bytes:
    count, _ = pop.stat()
    for i in range(1, count + 1):
        lines = pop.retr(i)[1]
        raw = b"\r\n".join(lines)
        if email.message_from_bytes(raw)["Subject"] == subject:
            return raw
    raise AssertionError(f"no message with Subject {subject!r} among {count} over POP3")


def _imap_find(imap: imaplib.IMAP4, subject: str) -> bytes:
    typ, _ = imap.select("INBOX")
    assert typ == "OK"
    typ, data = imap.search(None, "SUBJECT", f'"{subject}"')
    assert typ == "OK"
    nums = data[0].split()
    assert len(nums) == 1, f"expected one message with Subject {subject!r} over IMAP, found {nums}"
    typ, data = imap.fetch(nums[0], "(BODY.PEEK[])")
    assert typ == "OK"
    return data[0][1]


def _processes_mentioning(root) -> list[int]:
    """Live processes whose command line or environment names the bed's folder (Postfix's daemons
    carry MAIL_CONFIG=<root>/postfix/etc, Dovecot's its config path or instance name)."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _pid_alive(int(entry.name)):
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in blob or Path(root).name.encode() in blob:
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- the fixture's shape


def test_fixture_shape(testbed):
    assert testbed.host == "127.0.0.1"
    assert set(testbed.ports) == {
        "smtp",
        "submission",
        "smtps",
        "pop3",
        "pop3s",
        "imap",
        "imaps",
        "smtp_proxy",
        "lmtp",
        "smtp_lean",
    }
    assert len(set(testbed.ports.values())) == len(testbed.ports)
    assert testbed.users == {"alice": "wonderland", "bob": "builder"}
    assert testbed.domain == "example.test"
    assert testbed.address("alice") == "alice@example.test"
    for user in testbed.users:
        for sub in ("cur", "new", "tmp"):
            assert (testbed.maildir(user) / sub).is_dir()
    assert Path(testbed.ca_path).read_text().startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(KeyError, match="carol"):
        testbed.maildir("carol")
    assert "Dovecot" in testbed.logs() and "postfix" in testbed.logs()


@pytest.mark.parametrize("name", ["smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps"])
def test_every_port_greets(testbed, name):
    expected = {
        "smt": b"220 mail.example.test ESMTP",
        "sub": b"220 mail.example.test ESMTP",
        "pop": b"+OK Dovecot",
        "ima": b"* OK [",
    }[name[:3]]
    with socket.create_connection((testbed.host, testbed.ports[name]), timeout=T) as raw:
        if name in ("smtps", "pop3s", "imaps"):
            with testbed.ssl_context().wrap_socket(raw, server_hostname=testbed.host) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
                assert tls.recv(200).startswith(expected)
        else:
            assert raw.recv(200).startswith(expected)


def test_tls_verification_is_really_on(testbed):
    # The system's CAs do not know the bed's CA: verification must fail, not be skipped.
    imaps = (testbed.host, testbed.ports["imaps"])
    with socket.create_connection(imaps, timeout=T) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
    # The bed's CA and a name the certificate does not carry: hostname check fails.
    smtps = (testbed.host, testbed.ports["smtps"])
    with (
        socket.create_connection(smtps, timeout=T) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="match"),
    ):
        testbed.ssl_context().wrap_socket(raw, server_hostname="mail.elsewhere.test")


# --------------------------------------------------------------------------- SMTP ports


def test_plain_port_offers_starttls_auth_and_the_extensions(testbed):
    with smtplib.SMTP(testbed.host, testbed.ports["smtp"], timeout=T) as smtp:
        code, _ = smtp.ehlo("client.example.test")
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "starttls"):
            assert smtp.has_extn(ext), ext
        assert set(smtp.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN"}
        assert smtp.esmtp_features["size"] == "10240000"


def test_auth_and_send_on_plain_port_without_tls(testbed):
    msg, subject = _message(testbed, "alice", "bob", "plain-port")
    with smtplib.SMTP(testbed.host, testbed.ports["smtp"], timeout=T) as smtp:
        smtp.ehlo("client.example.test")
        smtp.user, smtp.password = "alice", testbed.users["alice"]
        code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        assert code == 235
        assert smtp.send_message(msg) == {}
    raw = testbed.wait_for_message("bob", _has_subject(subject))
    assert b"Delivered-To: bob@example.test" in raw
    assert b"with ESMTPA" in raw  # Postfix recorded the authenticated submission


def test_submission_refuses_mail_and_auth_before_starttls(testbed):
    with smtplib.SMTP(testbed.host, testbed.ports["submission"], timeout=T) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth"), "AUTH must not be offered before STARTTLS"
        code, text = smtp.docmd("MAIL", f"FROM:<{testbed.address('alice')}>")
        assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        code, _ = smtp.docmd("AUTH", "PLAIN")
        assert code == 530
        smtp.starttls(context=testbed.ssl_context())
        smtp.ehlo("client.example.test")
        assert set(smtp.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN"}


def test_submission_starttls_auth_login_then_pop3_stls_and_imap_starttls(testbed):
    msg, subject = _message(testbed, "alice", "bob", "submission-login")
    with smtplib.SMTP(testbed.host, testbed.ports["submission"], timeout=T) as smtp:
        smtp.starttls(context=testbed.ssl_context())
        smtp.user, smtp.password = "alice", testbed.users["alice"]
        smtp.ehlo("client.example.test")
        code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        assert code == 235
        assert smtp.send_message(msg) == {}
    delivered = testbed.wait_for_message("bob", _has_subject(subject))

    pop = poplib.POP3(testbed.host, testbed.ports["pop3"], timeout=T)
    try:
        assert "STLS" in pop.capa()
        pop.stls(context=testbed.ssl_context())
        pop.user("bob")
        pop.pass_(testbed.users["bob"])
        raw = _pop3_find(pop, subject)
    finally:
        pop.quit()
    assert b".a line starting with a dot" in raw  # poplib undid the dot-stuffing
    assert raw.replace(b"\r\n", b"\n").rstrip() == delivered.replace(b"\r\n", b"\n").rstrip()

    with imaplib.IMAP4(testbed.host, testbed.ports["imap"], timeout=T) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(ssl_context=testbed.ssl_context())
        imap.login("bob", testbed.users["bob"])
        assert email.message_from_bytes(_imap_find(imap, subject))["Subject"] == subject
        imap.logout()


def test_submission_auth_plain_then_pop3s_and_imaps(testbed):
    msg, subject = _message(testbed, "bob", "alice", "submission-plain")
    with smtplib.SMTP(testbed.host, testbed.ports["submission"], timeout=T) as smtp:
        smtp.starttls(context=testbed.ssl_context())
        smtp.user, smtp.password = "bob", testbed.users["bob"]
        smtp.ehlo("client.example.test")
        code, _ = smtp.auth("PLAIN", smtp.auth_plain)
        assert code == 235
        assert smtp.send_message(msg) == {}
    testbed.wait_for_message("alice", _has_subject(subject))

    pop = poplib.POP3_SSL(testbed.host, testbed.ports["pop3s"], timeout=T, context=testbed.ssl_context())
    try:
        pop.user("alice")
        pop.pass_(testbed.users["alice"])
        assert email.message_from_bytes(_pop3_find(pop, subject))["From"] == "bob@example.test"
    finally:
        pop.quit()
    with imaplib.IMAP4_SSL(
        testbed.host, testbed.ports["imaps"], timeout=T, ssl_context=testbed.ssl_context()
    ) as imap:
        imap.login("alice@example.test", testbed.users["alice"])  # the full address works too
        assert email.message_from_bytes(_imap_find(imap, subject))["Subject"] == subject
        imap.logout()


def test_implicit_tls_smtp(testbed):
    msg, subject = _message(testbed, "alice", "alice", "smtps")
    with smtplib.SMTP_SSL(
        testbed.host, testbed.ports["smtps"], timeout=T, context=testbed.ssl_context()
    ) as smtp:
        assert smtp.sock.version() in ("TLSv1.2", "TLSv1.3")
        smtp.login("alice", testbed.users["alice"])
        assert smtp.send_message(msg) == {}
    assert b"Delivered-To: alice@example.test" in testbed.wait_for_message("alice", _has_subject(subject))


def test_unknown_user_and_relay_are_refused(testbed):
    with smtplib.SMTP(testbed.host, testbed.ports["smtp"], timeout=T) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.docmd("MAIL", f"FROM:<{testbed.address('alice')}>")[0] == 250
        code, text = smtp.docmd("RCPT", "TO:<nobody@example.test>")
        assert code == 550 and text.startswith(b"5.1.1")
        code, text = smtp.docmd("RCPT", "TO:<someone@elsewhere.test>")
        assert code == 554 and b"Relay access denied" in text


# --------------------------------------------------------------------------- failed logins


def test_failed_logins_are_refused_quickly_and_do_not_penalise_later_ones(testbed):
    for attempt in range(3):  # Dovecot's per-IP penalty would grow 1.5, 5.5, 10 s if enabled
        t0 = time.monotonic()
        with smtplib.SMTP(testbed.host, testbed.ports["smtp"], timeout=T) as smtp:
            smtp.ehlo("client.example.test")
            smtp.user, smtp.password = "alice", "not-the-password"
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                smtp.auth("PLAIN", smtp.auth_plain)  # one attempt (login() would try two)
            assert (err.value.smtp_code, err.value.smtp_error[:5]) == (535, b"5.7.8")
        assert time.monotonic() - t0 < QUICK, f"SMTP attempt {attempt + 1} took {time.monotonic() - t0:.2f} s"

        t0 = time.monotonic()
        pop = poplib.POP3(testbed.host, testbed.ports["pop3"], timeout=T)
        try:
            pop.user("bob")
            with pytest.raises(poplib.error_proto, match="-ERR"):
                pop.pass_("not-the-password")
        finally:
            pop.close()
        assert time.monotonic() - t0 < QUICK, f"POP3 attempt {attempt + 1} took {time.monotonic() - t0:.2f} s"

        t0 = time.monotonic()
        with (
            imaplib.IMAP4(testbed.host, testbed.ports["imap"], timeout=T) as imap,
            pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
        ):
            imap.login("alice", "not-the-password")
        assert time.monotonic() - t0 < QUICK, f"IMAP attempt {attempt + 1} took {time.monotonic() - t0:.2f} s"

    t0 = time.monotonic()
    with imaplib.IMAP4(testbed.host, testbed.ports["imap"], timeout=T) as imap:
        assert imap.login("alice", testbed.users["alice"])[0] == "OK"
        imap.logout()
    assert time.monotonic() - t0 < QUICK


# --------------------------------------------------------------------------- mailbox helpers


def test_wait_for_message_times_out_and_clear_mailbox_empties(testbed):
    msg, subject = _message(testbed, "alice", "bob", "clear")
    with smtplib.SMTP(testbed.host, testbed.ports["smtp"], timeout=T) as smtp:
        smtp.login("alice", testbed.users["alice"])
        smtp.send_message(msg)
    testbed.wait_for_message("bob", _has_subject(subject))
    assert testbed.messages("bob")

    testbed.clear_mailbox("bob")
    assert testbed.messages("bob") == []
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="no matching message for bob"):
        testbed.wait_for_message("bob", timeout=0.3)
    assert time.monotonic() - t0 < 2
    # Dovecot copes with the files vanishing under it.
    pop = poplib.POP3_SSL(testbed.host, testbed.ports["pop3s"], timeout=T, context=testbed.ssl_context())
    try:
        pop.user("bob")
        pop.pass_(testbed.users["bob"])
        assert pop.stat()[0] == 0
    finally:
        pop.quit()


def test_free_ports_are_distinct_and_bindable(free_port):
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in [*ports, free_port()]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


# --------------------------------------------------------------------------- life cycle


def test_a_bed_stops_cleanly_and_leaves_nothing(testbed):
    # A second bed beside the session's: proves the ports/dirs are private, and that stop() ends
    # every process (checked by pid) and removes its folder.
    bed = Testbed().start()
    try:
        assert not set(bed.ports.values()) & set(testbed.ports.values())
        pids = bed.pids()
        assert len(pids) >= 8, pids  # two masters and their children
        # Every one of them is found by name (the check used after stopping below).
        assert set(_processes_mentioning(bed.root)) >= {p for p in pids if _pid_alive(p)}
        root = bed.root
    finally:
        bed.stop()
    assert [p for p in pids if _pid_alive(p)] == []
    assert _processes_mentioning(root) == []
    assert not root.exists()
    for port in bed.ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((bed.host, port), timeout=T).close()
    # The session's bed is untouched.
    with socket.create_connection((testbed.host, testbed.ports["smtp"]), timeout=T) as raw:
        assert raw.recv(100).startswith(b"220 ")


OWNER_SCRIPT = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from tests.servers.testbed import Testbed
bed = Testbed().start()
print(json.dumps({"root": str(bed.root), "pids": sorted(bed.pids()), "watchdog": bed._watchdog.pid}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_bed_whose_owner_is_killed_is_stopped_by_its_watchdog(testbed):
    # A pytest killed with SIGKILL runs no teardown: the bed's watchdog must stop it instead.
    repo = str(Path(__file__).resolve().parent.parent)
    owner = subprocess.run(
        [sys.executable, "-c", OWNER_SCRIPT, repo], capture_output=True, text=True, timeout=60
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    info = json.loads(owner.stdout)
    everything = set(info["pids"]) | {info["watchdog"]}
    assert len(info["pids"]) >= 8
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        any(_pid_alive(p) for p in everything) or Path(info["root"]).exists()
    ):
        time.sleep(0.1)
    assert [p for p in everything if _pid_alive(p)] == []
    assert _processes_mentioning(info["root"]) == []
    assert not Path(info["root"]).exists()


def test_a_bed_that_cannot_start_says_why_and_cleans_up(testbed):
    # Hold the IMAP port: Dovecot cannot bind it, so start-up must fail naming the command, with
    # the logs, and stop what it already started (Postfix).
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        bed = Testbed()
        with pytest.raises(TestbedError) as err:
            bed.start(ports={"imap": taken})
    text = str(err.value)
    assert text.startswith("dovecot failed")
    assert "Address already in use" in text
    assert "===== " in text and "postfix.log" in text  # the logs are attached
    assert "$ postfix stop -> exit 0" in bed.logs()  # Postfix had started: it was stopped
    assert _processes_mentioning(bed.root) == []
    assert not bed.root.exists()
    with pytest.raises(TestbedError, match="unknown port name"):
        Testbed().start(ports={"smtp2": 1})
