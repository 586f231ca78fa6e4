"""The sandbox's CHUNKING (RFC 3030 BDAT) on SMTP and LMTP, and its LMTP listener (RFC 2033) on
TCP and a unix socket: one reply per accepted recipient after the message, byte-exact delivery,
the sequence errors, Python's smtplib.LMTP over the unix socket, and mailrun's own lmtp/bdat
steps against it."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runner.sandbox.server import Sandbox
from runner.sandbox.smtp import SIZE_LIMIT

REPO = Path(__file__).resolve().parent.parent
T = 5.0


@pytest.fixture
def sb():
    with Sandbox() as s:
        yield s


class Raw:
    def __init__(self, sb: Sandbox, key: str = "smtp", *, unix: bool = False):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(T)
            self.sock.connect(sb.lmtp_socket)
        else:
            self.sock = socket.create_connection((sb.host, sb.ports[key]), timeout=T)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> bytes:
        data = self.file.readline()
        if not data:
            raise EOFError
        return data.rstrip(b"\r\n")

    def reply(self) -> list[bytes]:
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data if b"\r\n" in data else data + b"\r\n")
        return self.reply()[-1]

    def close(self) -> None:
        self.sock.close()


def messages(sb: Sandbox, user: str) -> list[bytes]:
    mb = sb.mailbox(user)
    return [mb.get_bytes(k) for k in mb.iterkeys()]


def body_of(stored: bytes) -> bytes:
    """A stored message (LF line ends) without the sandbox's trace headers."""
    return stored.split(b"\n", 5)[5]


# --------------------------------------------------------------------------- BDAT on SMTP
def test_bdat_chunks_are_delivered_byte_for_byte_without_dot_handling(sb):
    c = Raw(sb)
    assert c.cmd(b"EHLO me") == b"250 CHUNKING"
    assert c.cmd(b"MAIL FROM:<alice@mailrun.test>") == b"250 2.1.0 Ok"
    assert c.cmd(b"RCPT TO:<bob@mailrun.test>") == b"250 2.1.5 Ok"
    first = b"Subject: chunked\r\n\r\n.a dot line, not stuffed\r\n"
    assert c.cmd(b"BDAT %d\r\n" % len(first) + first) == b"250 2.0.0 Ok: %d octets received" % len(first)
    second = b"..two dots stay two\r\n.\r\nend\r\n"
    reply = c.cmd(b"BDAT %d LAST\r\n" % len(second) + second)
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    (stored,) = messages(sb, "bob")
    assert b"\n.a dot line, not stuffed\n..two dots stay two\n.\nend\n" in stored
    assert b"with ESMTP id " + reply.split()[-1] in stored
    # the transaction is over: a new one can use DATA
    assert c.cmd(b"MAIL FROM:<alice@mailrun.test>") == b"250 2.1.0 Ok"
    c.close()


def test_pipelined_chunks_in_one_write_and_bdat_0_last(sb):
    c = Raw(sb)
    c.cmd(b"EHLO me")
    c.sock.sendall(
        b"MAIL FROM:<alice@mailrun.test>\r\nRCPT TO:<carol@example.org>\r\n"
        b"BDAT 3\r\nabcBDAT 4\r\ndef\nBDAT 0 LAST\r\nNOOP\r\n"
    )
    replies = [c.reply()[-1] for _ in range(6)]
    assert replies[:4] == [b"250 2.1.0 Ok", b"250 2.1.5 Ok", b"250 2.0.0 Ok: 3 octets received",
                           b"250 2.0.0 Ok: 4 octets received"]  # fmt: skip
    assert replies[4].startswith(b"250 2.0.0 Ok: queued as ") and replies[5] == b"250 2.0.0 Ok"
    (stored,) = messages(sb, "carol@example.org")
    assert stored.endswith(b"\nabcdef\n")
    c.close()


def test_bdat_sequence_and_syntax_errors(sb):
    c = Raw(sb)
    c.cmd(b"EHLO me")
    # without RCPT the chunk is still read (its bytes are not taken as commands)
    assert c.cmd(b"BDAT 6\r\nNOOP\r\n") == b"503 5.5.1 Error: need RCPT command"
    assert c.cmd(b"BDAT") == b"501 5.5.4 Syntax: BDAT chunk-size [LAST]"
    assert c.cmd(b"BDAT 5 MORE") == b"501 5.5.4 Syntax: BDAT chunk-size [LAST]"
    c.cmd(b"MAIL FROM:<alice@mailrun.test>")
    c.cmd(b"RCPT TO:<bob@mailrun.test>")
    assert c.cmd(b"BDAT 2\r\nhi") == b"250 2.0.0 Ok: 2 octets received"
    assert c.cmd(b"DATA") == b"503 5.5.1 Error: BDAT and DATA cannot be mixed in one transaction"
    assert c.cmd(b"RSET") == b"250 2.0.0 Ok"  # RSET ends the transaction and its chunks
    c.cmd(b"MAIL FROM:<alice@mailrun.test>")
    c.cmd(b"RCPT TO:<bob@mailrun.test>")
    assert c.cmd(b"DATA") == b"354 End data with <CR><LF>.<CR><LF>"
    assert c.cmd(b"Subject: after rset\r\n\r\nx\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as")
    c.close()
    (stored,) = messages(sb, "bob")
    assert b"Subject: after rset" in stored and b"hi" not in body_of(stored)


def test_bdat_over_the_size_limit_is_read_and_refused_at_last(sb):
    c = Raw(sb)
    c.cmd(b"EHLO me")
    c.cmd(b"MAIL FROM:<alice@mailrun.test>")
    c.cmd(b"RCPT TO:<bob@mailrun.test>")
    big = SIZE_LIMIT // 2 + 1
    chunk = b"x" * big
    assert c.cmd(b"BDAT %d\r\n" % big + chunk) == b"250 2.0.0 Ok: %d octets received" % big
    assert c.cmd(b"BDAT %d\r\n" % big + chunk) == b"250 2.0.0 Ok: %d octets received" % big
    assert c.cmd(b"BDAT 1 LAST\r\ny") == b"552 5.3.4 Message size exceeds fixed limit"
    assert c.cmd(b"NOOP") == b"250 2.0.0 Ok"  # every byte was consumed
    assert c.cmd(b"RCPT TO:<bob@mailrun.test>") == b"503 5.5.1 Error: need MAIL command"
    c.close()
    assert messages(sb, "bob") == []


# --------------------------------------------------------------------------- LMTP
def test_lmtp_answers_once_per_accepted_recipient_after_data(sb):
    c = Raw(sb, "lmtp")
    assert c.greeting == b"220 mail.mailrun.test LMTP mailrun sandbox"
    assert c.cmd(b"EHLO me") == b"500 5.5.1 Error: this is LMTP: use LHLO"
    assert c.cmd(b"HELO me") == b"500 5.5.1 Error: this is LMTP: use LHLO"
    c.sock.sendall(b"LHLO me\r\n")
    assert c.reply() == [
        b"250-mail.mailrun.test",
        b"250-PIPELINING",
        b"250-SIZE 10240000",
        b"250-STARTTLS",
        b"250-ENHANCEDSTATUSCODES",
        b"250-8BITMIME",
        b"250 CHUNKING",
    ]
    assert (
        c.cmd(b"AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
        == b"502 5.5.1 Error: LMTP offers no AUTH (local delivery)"
    )
    c.cmd(b"MAIL FROM:<postmaster@mailrun.test>")
    for rcpt in (b"alice@mailrun.test", b"full@mailrun.test", b"dave@example.org"):
        assert c.cmd(b"RCPT TO:<%s>" % rcpt) == b"250 2.1.5 Ok"
    assert c.cmd(b"RCPT TO:<../x>").startswith(b"501 5.1.3")  # not accepted: no reply later
    assert c.cmd(b"DATA") == b"354 End data with <CR><LF>.<CR><LF>"
    c.sock.sendall(b"Subject: lmtp\r\n\r\nper recipient\r\n.\r\n")
    replies = [c.line() for _ in range(3)]
    assert replies[0].startswith(b"250 2.0.0 <alice@mailrun.test> Ok: delivered as ")
    assert replies[1] == b"452 4.2.2 <full@mailrun.test> Mailbox is full"
    assert replies[2].startswith(b"250 2.0.0 <dave@example.org> Ok: delivered as ")
    assert c.cmd(b"QUIT") == b"221 2.0.0 Bye"
    c.close()
    (alice,) = messages(sb, "alice")
    assert b"with LMTP id " in alice and alice.endswith(b"\nper recipient\n")
    assert len(messages(sb, "dave@example.org")) == 1 and messages(sb, "full") == []


def test_lmtp_bdat_last_gets_the_per_recipient_replies_over_the_unix_socket(sb):
    c = Raw(sb, unix=True)
    assert c.greeting.startswith(b"220 mail.mailrun.test LMTP")
    assert c.cmd(b"LHLO me") == b"250 CHUNKING"
    c.cmd(b"MAIL FROM:<a@x.test>")
    c.cmd(b"RCPT TO:<bob@mailrun.test>")
    c.cmd(b"RCPT TO:<full@mailrun.test>")
    assert c.cmd(b"BDAT 4\r\nab\r\n") == b"250 2.0.0 Ok: 4 octets received"
    c.sock.sendall(b"BDAT 4 LAST\r\ncd\r\n")
    assert c.line().startswith(b"250 2.0.0 <bob@mailrun.test> Ok: delivered as ")
    assert c.line() == b"452 4.2.2 <full@mailrun.test> Mailbox is full"
    c.close()
    (stored,) = messages(sb, "bob")
    assert stored.endswith(b"\nab\ncd\n") and b"(localhost [unknown])" in stored


def test_smtplib_lmtp_over_the_unix_socket(sb):
    with smtplib.LMTP(sb.lmtp_socket, timeout=T) as lmtp:
        code, features = lmtp.ehlo("client.example.test")  # smtplib.LMTP sends LHLO
        assert code == 250 and lmtp.has_extn("chunking") and not lmtp.has_extn("auth")
        refused = lmtp.sendmail("a@x.test", ["erin@example.org"], b"Subject: via smtplib\r\n\r\nhi\r\n")
        assert refused == {}
    (stored,) = messages(sb, "erin@example.org")
    assert b"Subject: via smtplib" in stored


def mailrun(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )


LMTP_SCENARIO = """\
name: lmtp to the sandbox
protocol: lmtp
connect: {connect}
steps:
  - S: 220
  - C: LHLO client.example.test
    S: {{code: 250, lines: [CHUNKING]}}
  - C: MAIL FROM:<postmaster@mailrun.test>
    S: 250
  - C: RCPT TO:<alice@mailrun.test>
    S: 250
  - C: RCPT TO:<full@mailrun.test>
    S: 250
  - {send}
    S: ["250 2.0.0", "452 4.2.2"]
  - C: QUIT
    S: 221
"""


@pytest.mark.parametrize("over", ["tcp", "unix"])
@pytest.mark.parametrize("send", ["data", "bdat"])
def test_mailrun_lmtp_steps_against_the_sandbox(sb, tmp_path, over, send):
    connect = (
        f"{{host: {sb.host}, port: {sb.ports['lmtp']}}}" if over == "tcp" else f'{{unix: "{sb.lmtp_socket}"}}'
    )
    step = (
        'bdat: {body: "Subject: lmtp bdat\\n\\nchunked\\n", chunk: 10}'
        if send == "bdat"
        else 'C: DATA\n    S: 354\n  - body: "Subject: lmtp data\\n\\nplain\\n"'
    )
    path = tmp_path / "lmtp.yaml"
    path.write_text(LMTP_SCENARIO.format(connect=connect, send=step))
    r = mailrun(path, "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "452 4.2.2 <full@mailrun.test> Mailbox is full" in r.stdout
    (stored,) = messages(sb, "alice")
    assert f"Subject: lmtp {send}".encode() in stored
    # the per-recipient list must match each reply: two 250s fail on the second recipient
    path.write_text(LMTP_SCENARIO.format(connect=connect, send=step).replace('"452 4.2.2"', "250"))
    r = mailrun(path)
    assert r.returncode == 1 and "recipient 2 of 2" in r.stdout, r.stdout


def test_sandbox_option_points_a_unix_lmtp_session_at_the_sandbox_socket(tmp_path):
    path = tmp_path / "unix.yaml"
    path.write_text(
        LMTP_SCENARIO.format(
            connect='{unix: "/nonexistent/dovecot/lmtp"}',
            send='C: DATA\n    S: 354\n  - body: "Subject: via --sandbox\\n\\nx\\n"',
        )
    )
    r = mailrun("--sandbox", "-v", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unix:/tmp/" in r.stdout and "/lmtp.sock" in r.stdout  # the sandbox's socket, not the file's


# --------------------------------------------------------------------------- the PROXY listener
def proxied(sb: Sandbox, header: bytes) -> Raw:
    sock = socket.create_connection((sb.host, sb.ports["smtp_proxy"]), timeout=T)
    sock.sendall(header)
    c = Raw.__new__(Raw)
    c.sock, c.file = sock, sock.makefile("rb")
    c.greeting = c.line()
    return c


def send_one(c: Raw, to: bytes) -> None:
    c.cmd(b"EHLO client.example.test")
    assert c.cmd(b"MAIL FROM:<a@x.test>") == b"250 2.1.0 Ok"
    assert c.cmd(b"RCPT TO:<%s>" % to) == b"250 2.1.5 Ok"
    assert c.cmd(b"DATA").startswith(b"354")
    assert c.cmd(b"Subject: proxied\r\n\r\nx\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as")
    c.close()


def test_the_proxy_listener_takes_the_source_of_a_v1_and_a_v2_header(sb):
    c = proxied(sb, b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 25\r\n")
    assert c.greeting == b"220 mail.mailrun.test ESMTP mailrun sandbox"
    send_one(c, b"carol@example.org")
    # version 2, written by hand: signature, v2 PROXY, TCP over IPv6, 36 address bytes
    src, dst = socket.inet_pton(socket.AF_INET6, "2001:db8::7"), socket.inet_pton(socket.AF_INET6, "::1")
    v2 = (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + b"\x21\x21"
        + (36).to_bytes(2, "big")
        + src
        + dst
        + (4343).to_bytes(2, "big")
    )
    v2 += (25).to_bytes(2, "big")
    send_one(proxied(sb, v2), b"dave@example.org")
    (first,) = messages(sb, "carol@example.org")
    assert b"Received: from client.example.test ([203.0.113.7]:4242 via PROXY v1 from 127.0.0.1)" in first
    (second,) = messages(sb, "dave@example.org")
    assert b"([2001:db8::7]:4343 via PROXY v2 from 127.0.0.1)" in second


def test_the_proxy_listener_closes_a_connection_without_the_header(sb):
    sock = socket.create_connection((sb.host, sb.ports["smtp_proxy"]), timeout=T)
    sock.sendall(b"EHLO client.example.test\r\n")
    assert sock.recv(100) == b""  # closed, nothing said
    sock.close()
    assert sb.port_for("smtp", "starttls", proxy=True) == sb.ports["smtp_proxy"]
    with pytest.raises(ValueError, match="PROXY header only on SMTP"):
        sb.port_for("pop3", "none", proxy=True)


def test_lmtp_starttls_then_lhlo_over_tls(sb):
    import ssl

    c = Raw(sb, "lmtp")
    c.cmd(b"LHLO me")
    assert c.cmd(b"STARTTLS") == b"220 2.0.0 Ready to start TLS"
    tls = ssl.create_default_context(cafile=sb.ca_path).wrap_socket(c.sock, server_hostname="localhost")
    c.sock, c.file = tls, tls.makefile("rb")
    tls.sendall(b"LHLO me\r\n")
    lines = c.reply()
    assert b"250-STARTTLS" not in lines and lines[-1] == b"250 CHUNKING"
    c.cmd(b"MAIL FROM:<a@x.test>")
    c.cmd(b"RCPT TO:<erin@example.org>")
    assert c.cmd(b"BDAT 3 LAST\r\nx\r\n").startswith(b"250 2.0.0 <erin@example.org> Ok: delivered as ")
    c.close()
    (stored,) = messages(sb, "erin@example.org")
    assert b"with LMTPS id " in stored  # RFC 3848: LMTP over TLS
