"""The sandbox: life cycle and API, SMTP against real clients (smtplib, raw sockets, swaks,
telnet), and `mailrun sandbox` / `python -m runner.sandbox` in the foreground."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.sandbox.server import Sandbox, main

ROOT = Path(__file__).resolve().parent.parent


class Raw:
    """A line-oriented socket client; every read has a deadline."""

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

    def reply(self) -> list[bytes]:
        """One complete SMTP reply (all lines of a multi-line one)."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sb():
    with Sandbox() as s:
        yield s


def smtp_raw(sb: Sandbox) -> Raw:
    c = Raw(sb.host, sb.ports["smtp"])
    assert c.reply()[0].startswith(b"220 mail.mailrun.test ESMTP")
    c.send(b"EHLO client.example.test\r\n")
    assert c.reply()[-1].startswith(b"250 ")
    return c


def bodies(sb: Sandbox, user: str) -> list[bytes]:
    """The mailbox's messages in delivery order. Maildir keys do not sort as text (the
    microseconds in them are not zero-padded): order them as the store does."""
    from runner.sandbox.store import _order

    mb = sb.mailbox(user)
    return [mb.get_bytes(k) for k in sorted(mb.keys(), key=lambda k: _order(k, ""))]


# --- life cycle and API --------------------------------------------------------------------
def test_start_is_fast_and_every_port_accepts_connections():
    began = time.monotonic()
    sandbox = Sandbox().start()
    elapsed = time.monotonic() - began
    try:
        assert elapsed < 1.0, f"sandbox start-up took {elapsed:.3f} s"
        assert sandbox.startup_seconds is not None and sandbox.startup_seconds < 1.0
        assert set(sandbox.ports) == {"smtp", "smtps", "pop3", "pop3s", "imap", "imaps", "lmtp", "smtp_proxy"}
        assert len(set(sandbox.ports.values())) == 8 and all(p > 0 for p in sandbox.ports.values())
        for port in sandbox.ports.values():
            socket.create_connection((sandbox.host, port), timeout=2).close()
        with socket.socket(socket.AF_UNIX) as unix:
            unix.settimeout(2)
            unix.connect(sandbox.lmtp_socket)
            assert unix.recv(100).startswith(b"220 mail.mailrun.test LMTP")
    finally:
        sandbox.stop()
    print(f"\nsandbox start-up: {elapsed * 1000:.0f} ms")


def test_stop_closes_listeners_and_open_connections():
    sandbox = Sandbox().start()
    client = Raw(sandbox.host, sandbox.ports["pop3"])
    assert client.line().startswith(b"+OK")
    smtp_client = Raw(sandbox.host, sandbox.ports["smtp"])
    assert smtp_client.line().startswith(b"220 ")
    ports = dict(sandbox.ports)
    sandbox.stop()
    for c in (client, smtp_client):
        c.sock.settimeout(3)
        with pytest.raises((EOFError, ConnectionResetError)):
            c.line()
    for port in ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((sandbox.host, port), timeout=2)
    sandbox.stop()  # idempotent


def test_ca_certificate_file_and_describe(sb: Sandbox):
    pem = Path(sb.ca_path).read_text()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    text = sb.describe()
    for port in sb.ports.values():
        assert f"127.0.0.1:{port}" in text
    assert sb.ca_path in text
    assert "alice / wonderland" in text and "bob / builder" in text
    for user in ("alice", "bob"):  # client certificates for SASL EXTERNAL, issued by the same CA
        cert, key = sb.client_certs[user]
        assert f"client certificate of {user} (SASL EXTERNAL over TLS): {cert}, key {key}" in text
        assert Path(cert).read_text().startswith("-----BEGIN CERTIFICATE-----") and Path(key).is_file()


def _asked(sb: Sandbox, label: str, address: str) -> list[str]:
    """What the listener itself answers to EHLO/LHLO, CAPA or CAPABILITY before login."""
    tls = label in ("SMTPS", "POP3S", "IMAPS")
    if address.startswith("unix:"):
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(5)
        raw.connect(address[5:])
    else:
        raw = socket.create_connection((sb.host, int(address.rsplit(":", 1)[1])), timeout=5)
    if tls:
        raw = ssl.create_default_context(cafile=sb.ca_path).wrap_socket(raw, server_hostname="localhost")
    if label == "PROXY":  # the SMTP listener that expects a PROXY header first
        raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 25\r\n")
        label = "SMTP"
    f = raw.makefile("rb")
    f.readline()
    command = {"SMTP": b"EHLO x", "LMTP": b"LHLO x", "POP3": b"CAPA", "IMAP": b"a CAPABILITY"}[
        label.rstrip("S")
    ]
    raw.sendall(command + b"\r\n")
    lines = []
    while True:
        line = f.readline().rstrip(b"\r\n").decode()
        if label.startswith(("SMTP", "LMTP")):
            lines.append(line[4:])
            if line[3] == " ":
                raw.close()
                return lines[1:]  # after the host name
        elif label.startswith("POP3"):
            if line == ".":
                raw.close()
                return lines[1:]  # after +OK
            lines.append(line)
        else:
            raw.close()
            assert line.startswith("* CAPABILITY ")
            return line.split()[2:]


def test_the_start_banner_lists_what_each_listener_answers(sb: Sandbox):
    """`mailrun sandbox` prints, per listener, the very list EHLO/LHLO, CAPA and CAPABILITY give."""
    text = sb.describe().splitlines()
    seen = set()
    for i, line in enumerate(text):
        m = re.match(r"  (SMTPS?|PROXY|LMTP|POP3S?|IMAPS?) +(\S+) ", line)
        if not m:
            continue
        verb, _, offered = text[i + 1].strip().partition(": ")
        listed = offered.split(" " if verb == "CAPABILITY" else ", ")
        assert listed == _asked(sb, m[1], m[2]), line
        seen.add((m[1], m[2].startswith("unix:")))
    assert len(seen) == 9  # SMTP, SMTPS, PROXY, LMTP on TCP and on the unix socket, POP3(S), IMAP(S)
    banner = "\n".join(text)
    assert (
        "AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER EXTERNAL ANONYMOUS" in banner
    )
    assert (
        "SASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER EXTERNAL ANONYMOUS" in banner
    )
    assert "CHUNKING" in banner and f"unix:{sb.lmtp_socket}" in banner and "full@mailrun.test" in banner


def test_port_for_maps_protocol_and_tls_mode(sb: Sandbox):
    assert sb.port_for("smtp", "none") == sb.ports["smtp"]
    assert sb.port_for("smtp", "starttls") == sb.ports["smtp"]
    assert sb.port_for("SMTP", "implicit") == sb.ports["smtps"]
    assert sb.port_for("pop3", "implicit") == sb.ports["pop3s"]
    assert sb.port_for("imap", "starttls") == sb.ports["imap"]
    assert sb.port_for("lmtp", "none") == sb.port_for("LMTP", "starttls") == sb.ports["lmtp"]
    with pytest.raises(ValueError, match="no implicit-TLS port"):
        sb.port_for("lmtp", "implicit")
    with pytest.raises(ValueError, match="smtp, lmtp, pop3 and imap"):
        sb.port_for("ftp", "none")
    with pytest.raises(ValueError, match="TLS mode"):
        sb.port_for("smtp", "maybe")


def test_fixed_ports_and_a_given_maildir_root_survive_stop(tmp_path: Path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free = probe.getsockname()[1]
    probe.close()
    with Sandbox(ports={"smtp": free}, maildir_root=tmp_path / "mail") as sandbox:
        assert sandbox.ports["smtp"] == free
        with smtplib.SMTP(sandbox.host, free, timeout=5) as s:
            s.sendmail("x@example.org", ["carol@example.org"], b"Subject: kept\r\n\r\nhi\r\n")
    kept = list((tmp_path / "mail" / "carol@example.org" / "new").iterdir())
    assert len(kept) == 1 and b"Subject: kept" in kept[0].read_bytes()


def test_bad_construction_arguments_are_named():
    with pytest.raises(ValueError, match="unknown sandbox port name.*smtpx"):
        Sandbox(ports={"smtpx": 1})
    with pytest.raises(ValueError, match="pop3=70000"):
        Sandbox(ports={"pop3": 70000})


def test_port_in_use_is_a_clear_error():
    with (
        Sandbox() as first,
        pytest.raises(Exception, match=rf"cannot listen for smtp on 127.0.0.1:{first.ports['smtp']}"),
    ):
        Sandbox(ports={"smtp": first.ports["smtp"]}).start()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("::1 not available")
    with Sandbox(host="::1") as sandbox:
        assert f"[::1]:{sandbox.ports['smtp']}" in sandbox.describe()
        ctx = ssl.create_default_context(cafile=sandbox.ca_path)
        with smtplib.SMTP_SSL("::1", sandbox.ports["smtps"], context=ctx, timeout=5) as s:
            assert s.noop()[0] == 250


# --- SMTP ------------------------------------------------------------------------------------
def test_ehlo_lists_the_extensions_like_a_real_server(sb: Sandbox):
    c = Raw(sb.host, sb.ports["smtp"])
    assert c.reply() == [b"220 mail.mailrun.test ESMTP mailrun sandbox"]
    c.send(b"EHLO client.example.test\r\n")
    assert c.reply() == [
        b"250-mail.mailrun.test",
        b"250-PIPELINING",
        b"250-SIZE 10240000",
        b"250-STARTTLS",
        b"250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER EXTERNAL ANONYMOUS",
        b"250-ENHANCEDSTATUSCODES",
        b"250-8BITMIME",
        b"250 CHUNKING",
    ]
    c.send(b"QUIT\r\n")
    assert c.reply() == [b"221 2.0.0 Bye"]
    c.close()


def test_auth_login_exchange_byte_for_byte_before_tls(sb: Sandbox):
    c = smtp_raw(sb)
    c.send(b"AUTH LOGIN\r\n")
    assert c.reply() == [b"334 VXNlcm5hbWU6"]
    c.send(base64.b64encode(b"alice") + b"\r\n")
    assert c.reply() == [b"334 UGFzc3dvcmQ6"]
    c.send(base64.b64encode(b"wonderland") + b"\r\n")
    assert c.reply() == [b"235 2.7.0 Authentication successful"]
    c.send(b"AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\n")
    assert c.reply() == [b"503 5.5.1 Error: already authenticated"]
    c.send(b"MAIL FROM:<alice@mailrun.test>\r\n")
    assert c.reply() == [b"250 2.1.0 Ok"]
    c.send(b"RCPT TO:<bob@mailrun.test>\r\n")
    assert c.reply() == [b"250 2.1.5 Ok"]
    c.send(b"DATA\r\n")
    assert c.reply() == [b"354 End data with <CR><LF>.<CR><LF>"]
    c.send(b"Subject: transcript test\r\n\r\nHello Bob,\r\n..this line starts with a dot\r\n.\r\n")
    (queued,) = c.reply()
    assert re.fullmatch(rb"250 2\.0\.0 Ok: queued as [0-9A-F]{11}", queued)
    c.close()
    (msg,) = bodies(sb, "bob")
    assert b"\n.this line starts with a dot\n" in msg  # unstuffed, stored with LF line ends
    assert b"with ESMTPA id " + queued.split()[-1] in msg
    assert msg.startswith(b"Return-Path: <alice@mailrun.test>\nDelivered-To: bob@mailrun.test\n")


def test_auth_login_with_initial_response_and_wrong_password(sb: Sandbox):
    c = smtp_raw(sb)
    c.send(b"AUTH LOGIN " + base64.b64encode(b"alice") + b"\r\n")
    assert c.reply() == [b"334 UGFzc3dvcmQ6"]
    c.send(base64.b64encode(b"wrong") + b"\r\n")
    (reply,) = c.reply()
    assert reply.startswith(b"535 5.7.8 Error: authentication failed")
    assert b"wrong" not in reply and b"d3Jvbmc" not in reply
    c.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice@mailrun.test\0wonderland") + b"\r\n")
    assert c.reply() == [b"235 2.7.0 Authentication successful"]
    c.close()


def test_smtplib_plain_port_auth_login_and_plain(sb: Sandbox):
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.ehlo()
        assert s.has_extn("pipelining") and s.has_extn("auth") and s.has_extn("enhancedstatuscodes")
        s.user, s.password = "alice", "wonderland"
        code, _ = s.auth("LOGIN", s.auth_login)
        assert code == 235
        s.sendmail("alice@mailrun.test", ["bob@mailrun.test"], b"Subject: via login\r\n\r\nbody\r\n")
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.ehlo()
        s.user, s.password = "bob@mailrun.test", "builder"
        assert s.auth("PLAIN", s.auth_plain)[0] == 235
        s.sendmail("bob@mailrun.test", ["Alice@MailRun.Test"], b"Subject: via plain\r\n\r\nbody\r\n")
    assert b"Subject: via login" in bodies(sb, "bob")[0]
    assert b"Subject: via plain" in bodies(sb, "alice")[0]
    with (
        smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        s.login("alice", "not-her-password")


def test_smtplib_starttls_verifies_against_the_ca(sb: Sandbox):
    ctx = ssl.create_default_context(cafile=sb.ca_path)
    with smtplib.SMTP("localhost", sb.ports["smtp"], timeout=5) as s:
        s.starttls(context=ctx)
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        s.login("alice", "wonderland")
        s.sendmail("alice@mailrun.test", ["bob@mailrun.test"], b"Subject: tls\r\n\r\nsecret stuff\r\n")
    (msg,) = bodies(sb, "bob")
    assert b"with ESMTPSA" in msg
    # A client that does not trust the sandbox CA refuses the certificate.
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s, pytest.raises(ssl.SSLCertVerificationError):
        s.starttls(context=ssl.create_default_context())


def test_smtp_ssl_implicit_tls_port(sb: Sandbox):
    ctx = ssl.create_default_context(cafile=sb.ca_path)
    with smtplib.SMTP_SSL(sb.host, sb.ports["smtps"], context=ctx, timeout=5) as s:
        s.ehlo()
        assert not s.has_extn("starttls") and s.has_extn("auth")
        subject = dict(x[0] for x in s.sock.getpeercert()["subject"])
        assert subject["commonName"] == "localhost"
        assert ("IP Address", "127.0.0.1") in s.sock.getpeercert()["subjectAltName"]
        s.login("alice", "wonderland")
        s.sendmail("alice@mailrun.test", ["carol@elsewhere.example"], b"Subject: ssl\r\n\r\nx\r\n")
    assert b"Subject: ssl" in bodies(sb, "carol@elsewhere.example")[0]


def test_pipelined_mail_rcpt_rcpt_data_in_one_write(sb: Sandbox):
    c = smtp_raw(sb)
    c.send(
        b"MAIL FROM:<alice@mailrun.test>\r\nRCPT TO:<bob@mailrun.test>\r\n"
        b"RCPT TO:<dave@example.org>\r\nDATA\r\n"
    )
    assert [c.reply() for _ in range(4)] == [
        [b"250 2.1.0 Ok"],
        [b"250 2.1.5 Ok"],
        [b"250 2.1.5 Ok"],
        [b"354 End data with <CR><LF>.<CR><LF>"],
    ]
    c.send(b"Subject: pipelined\r\n\r\none write\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert c.reply()[0].startswith(b"250 2.0.0 Ok: queued as ")
    assert [c.reply() for _ in range(3)] == [[b"250 2.0.0 Ok"], [b"250 2.0.0 Ok"], [b"221 2.0.0 Bye"]]
    c.close()
    assert b"one write" in bodies(sb, "bob")[0]
    assert b"one write" in bodies(sb, "dave@example.org")[0]


def test_bad_commands_get_proper_errors(sb: Sandbox):
    c = smtp_raw(sb)
    checks = [
        (b"FOO\r\n", b"500 5.5.2 Error: command not recognized"),
        (b"DATA\r\n", b"503 5.5.1 Error: need RCPT command"),
        (b"RCPT TO:<bob@mailrun.test>\r\n", b"503 5.5.1 Error: need MAIL command"),
        (b"MAIL FROM:<alice@mailrun.test> SIZE=20000000\r\n", b"552 5.3.4 Message size exceeds fixed limit"),
        (b"MAIL FROM:<alice@mailrun.test>\r\n", b"250 2.1.0 Ok"),
        (b"MAIL FROM:<alice@mailrun.test>\r\n", b"503 5.5.1 Error: nested MAIL command"),
        (b"RCPT TO:<../../etc@x>\r\n", None),
        (b"AUTH PLAIN\r\n", b"503 5.5.1 Error: MAIL transaction in progress"),
        (b"RSET\r\n", b"250 2.0.0 Ok"),
        (b"AUTH DIGEST-MD5\r\n", b"504 5.5.4 Unrecognized authentication type"),
        (b"NOOP\r\n", b"250 2.0.0 Ok"),
    ]
    for command, expected in checks:
        c.send(command)
        (reply,) = c.reply()
        if expected is None:
            assert reply[:1] == b"5" and re.match(rb"\d{3} 5\.\d\.\d+ ", reply), reply
        else:
            assert reply == expected, command
    c.close()
    assert not any(p.name.startswith(".") or "etc" in p.name for p in sb.maildir_root.iterdir())


def test_null_reverse_path_is_accepted(sb: Sandbox):
    c = smtp_raw(sb)
    c.send(b"MAIL FROM:<> SIZE=100\r\nRCPT TO:<bob@mailrun.test>\r\nDATA\r\n")
    assert [c.reply() for _ in range(3)] == [
        [b"250 2.1.0 Ok"],
        [b"250 2.1.5 Ok"],
        [b"354 End data with <CR><LF>.<CR><LF>"],
    ]
    c.send(b"Subject: bounce\r\n\r\nundeliverable\r\n.\r\n")
    assert c.reply()[0].startswith(b"250 2.0.0 Ok: queued as")
    c.close()
    assert bodies(sb, "bob")[0].startswith(b"Return-Path: <>\n")


def test_commands_before_ehlo_and_after_helo(sb: Sandbox):
    c = Raw(sb.host, sb.ports["smtp"])
    c.reply()
    c.send(b"MAIL FROM:<a@b.c>\r\n")
    assert c.reply() == [b"503 5.5.1 Error: send HELO/EHLO first"]
    c.send(b"HELO client\r\n")
    assert c.reply() == [b"250 mail.mailrun.test"]
    c.close()


def test_server_survives_a_client_vanishing_mid_data(sb: Sandbox):
    c = smtp_raw(sb)
    c.send(b"MAIL FROM:<alice@mailrun.test>\r\nRCPT TO:<bob@mailrun.test>\r\nDATA\r\n")
    assert [c.reply()[0][:3] for _ in range(3)] == [b"250", b"250", b"354"]
    c.send(b"Subject: half\r\n\r\nthe first half of a mess")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    time.sleep(0.2)
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=5) as s:
        s.sendmail("alice@mailrun.test", ["bob@mailrun.test"], b"Subject: whole\r\n\r\nok\r\n")
    msgs = bodies(sb, "bob")
    assert len(msgs) == 1 and b"Subject: whole" in msgs[0]


def test_starttls_discards_plaintext_pipelined_after_it(sb: Sandbox):
    c = smtp_raw(sb)
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert c.reply() == [b"220 2.0.0 Ready to start TLS"]
    ctx = ssl.create_default_context(cafile=sb.ca_path)
    tls = ctx.wrap_socket(c.sock, server_hostname="localhost")
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(1000) == b"250 2.0.0 Ok\r\n"
    tls.close()


def test_accept_any_login():
    with Sandbox(accept_any_login=True) as sandbox:
        with smtplib.SMTP(sandbox.host, sandbox.ports["smtp"], timeout=5) as s:
            s.login("someone@gmx.net", "whatever they have")
            s.sendmail("someone@gmx.net", ["someone@gmx.net"], b"Subject: self\r\n\r\nx\r\n")
        # accept_any_login implies welcome: the login created the mailbox with its welcome message
        got = bodies(sandbox, "Someone@GMX.net")
        assert len(got) == 2
        assert b"Subject: Welcome to the mailrun sandbox" in got[0]
        assert b"Subject: self" in got[1]
        assert "any login" in sandbox.describe()


# --- other real clients -----------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
@pytest.mark.parametrize("tls", [False, True])
def test_swaks_sends_with_auth_login(sb: Sandbox, tls: bool):
    cmd = [
        "swaks", "--server", sb.host, "--port", str(sb.ports["smtp"]),
        "--from", "alice@mailrun.test", "--to", "bob@mailrun.test",
        "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "wonderland",
        "--header", "Subject: from swaks", "--body", "swaks body", "--timeout", "10",
    ]  # fmt: skip
    if tls:
        cmd += ["--tls", "--tls-verify", "--tls-ca-path", sb.ca_path, "--tls-sni", "localhost"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "235 2.7.0 Authentication successful" in run.stdout
    if tls:
        assert "220 2.0.0 Ready to start TLS" in run.stdout
    (msg,) = bodies(sb, "bob")
    assert b"Subject: from swaks" in msg and b"swaks body" in msg


@pytest.mark.telnet
@pytest.mark.skipif(shutil.which("telnet") is None, reason="telnet not installed")
def test_real_telnet_walk_through_with_auth_login(sb: Sandbox):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn("telnet", [sb.host, str(sb.ports["smtp"])], timeout=10, encoding="ascii")
    try:
        child.expect(r"220 mail\.mailrun\.test ESMTP")

        def say(line: str, expect: str) -> None:
            child.send(line + "\r")
            child.expect(expect)

        say("EHLO telnet.example", r"250 CHUNKING")
        say("AUTH LOGIN", r"334 VXNlcm5hbWU6")
        say(base64.b64encode(b"alice").decode(), r"334 UGFzc3dvcmQ6")
        say(base64.b64encode(b"wonderland").decode(), r"235 2\.7\.0 Authentication successful")
        say("MAIL FROM:<alice@mailrun.test>", r"250 2\.1\.0 Ok")
        say("RCPT TO:<bob@mailrun.test>", r"250 2\.1\.5 Ok")
        say("DATA", r"354 End data")
        for line in ("Subject: typed in telnet", "", "Hello Bob,", "..a dotted line"):
            child.send(line + "\r")
        say(".", r"250 2\.0\.0 Ok: queued as [0-9A-F]+")
        say("QUIT", r"221 2\.0\.0 Bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    (msg,) = bodies(sb, "bob")
    assert b"Subject: typed in telnet" in msg and b"\n.a dotted line\n" in msg


# --- the foreground service ---------------------------------------------------------------------
def _spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


def _read_until(proc: subprocess.Popen, marker: str, deadline: float) -> str:
    import selectors

    out = b""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    while marker.encode() not in out:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sel.select(remaining):
            raise AssertionError(f"no {marker!r} in time; got {out!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"exited early ({proc.wait(5)}): {out!r} {proc.stderr.read()!r}")
        out += chunk
    return out.decode()


@pytest.mark.parametrize(
    "entry, welcome",
    [(["-m", "runner.sandbox"], []), (["-m", "runner", "sandbox"], ["--no-welcome"])],
)
def test_foreground_prints_where_it_listens_and_stops_on_sigint(
    tmp_path: Path, entry: list[str], welcome: list[str]
):
    proc = _spawn([*entry, "--maildir", str(tmp_path), "--accept-any-login", *welcome])
    try:
        out = _read_until(proc, "Press Ctrl-C", time.monotonic() + 15)
        port = int(re.search(r"SMTP +127\.0\.0\.1:(\d+)", out)[1])
        ca = re.search(r"CA certificate.*: (\S+)", out)[1]
        assert Path(ca).is_file()
        assert "any login" in out
        assert ("each new mailbox starts with one message" in out) == (not welcome)
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
            s.starttls(context=ssl.create_default_context(cafile=ca))
            s.login("eve@example.org", "anything")
            s.sendmail("eve@example.org", ["eve@example.org"], b"Subject: fg\r\n\r\nx\r\n")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    # --accept-any-login implies --welcome: the login made eve's mailbox, with its welcome message
    delivered = [p.read_bytes() for p in (tmp_path / "eve@example.org" / "new").iterdir()]
    assert len(delivered) == (1 if welcome else 2)
    assert sum(b"Subject: Welcome to the mailrun sandbox" in d for d in delivered) == (0 if welcome else 1)


def test_foreground_stops_on_sigterm():
    proc = _spawn(["-m", "runner.sandbox"])
    try:
        _read_until(proc, "Press Ctrl-C", time.monotonic() + 15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--smtp-port", "abc"], "'abc' is not a port number"),
        (["--pop3-port", "70000"], "70000 is not a port number"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_exit_2(capsys, argv: list[str], message: str):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_port_in_use_exits_3_with_a_message(capsys):
    with Sandbox() as first:
        assert main(["--smtp-port", str(first.ports["smtp"])]) == 3
    err = capsys.readouterr().err
    assert f"cannot listen for smtp on 127.0.0.1:{first.ports['smtp']}" in err
    assert "Traceback" not in err


def test_sandbox_listens_on_loopback_only():
    """Published passwords and AUTH before TLS are only safe where nobody else can connect."""
    import subprocess
    import sys

    from runner.sandbox.server import Sandbox

    for host in ("0.0.0.0", "::", "192.0.2.1", "example.test"):
        with pytest.raises(ValueError, match="loopback only"):
            Sandbox(host=host)
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "sandbox", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "loopback only" in proc.stderr and "Traceback" not in proc.stderr
