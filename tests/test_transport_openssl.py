"""openssl transport: the real `openssl s_client` under a pty, against loopback TLS servers."""

from __future__ import annotations

import shutil
import ssl
import time

import pytest

from runner.errors import ConnectError, ConnectionClosed, DeadlineError, TLSError, UsageError
from runner.model.config import ConnectConfig
from runner.transports import create
from runner.transports.openssl import OpensslTransport
from tests.support.servers import (
    PKI,
    WIRE_PAYLOADS,
    Server,
    close_mid_reply,
    drip,
    ipv6_available,
    read_until,
    record,
    scripted,
    silent,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def soon(seconds: float = 10.0) -> float:
    """A send deadline: seconds from now."""
    return time.monotonic() + seconds


def cfg(port, pki=None, host="127.0.0.1", transport="openssl", tls="implicit", **kw) -> ConnectConfig:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("connect_timeout", 5.0)
    if pki is not None:
        kw.setdefault("ca", pki.ca_file)
    return ConnectConfig(host=host, port=port, transport=transport, tls=tls, **kw)


def sent_over(transport: str, payload: bytes, pki) -> bytes:
    with (
        Server(record(b"220 rec\r\n"), tls=pki.server_context()) as srv,
        create(cfg(srv.port, pki, transport=transport, server_name="localhost")) as t,
    ):
        t.connect()
        assert read_until(t, b"220 rec\r\n") == b"220 rec\r\n"
        t.send(payload, soon())
        t.send(b"END-OF-TEST\r\n", soon())
        got = srv.wait_connection().wait_received(b"END-OF-TEST\r\n")
        assert got.endswith(b"END-OF-TEST\r\n")
        return got[: -len(b"END-OF-TEST\r\n")]


@pytest.mark.parametrize("name", list(WIRE_PAYLOADS))
def test_wire_identity_with_socket(name, pki):
    payload = WIRE_PAYLOADS[name]
    assert sent_over("socket", payload, pki) == payload
    assert sent_over("openssl", payload, pki) == payload


def test_command_letters_reach_the_server(pki):
    # Without -quiet, s_client would renegotiate on 'R', quit on 'Q', update keys on 'k'.
    lines = b"RCPT TO:<b@example.test>\r\nR\r\nk\r\nK\r\nQUIT\r\nQ\r\n"
    assert sent_over("openssl", lines, pki) == lines


def test_server_bytes_come_back_unchanged(pki):
    reply = b"250-" + bytes(range(256)) + b"\r\n250-bare\rCR bare\nLF\r\n250 last\r\n"

    def handler(conn):
        conn.send(b"220 hi\r\n")
        conn.recv_line(10)
        conn.send(reply)
        conn.read_some(10)

    with Server(handler, tls=pki.server_context()) as srv, create(cfg(srv.port, pki)) as t:
        t.connect()
        assert read_until(t, b"220 hi\r\n") == b"220 hi\r\n"
        t.send(b"EHLO x\r\n", soon())
        assert read_until(t, b"250 last\r\n") == reply


def test_tls_info_and_chatter(pki):
    notes = []
    with Server(record(), tls=pki.server_context()) as srv:
        t = create(cfg(srv.port, pki, host="localhost"), on_note=lambda k, s: notes.append((k, s)))
        with t:
            info = t.connect()
            assert info.transport == "openssl"
            assert info.note.startswith("openssl s_client -quiet -brief -connect localhost:")
            assert "-verify_return_error" in info.note and "-verify_hostname localhost" in info.note
            assert info.tls.version in ("TLSv1.2", "TLSv1.3")
            assert info.tls.cipher and info.tls.cipher != "?"
            assert "CN=localhost" in info.tls.peer_subject
            assert info.tls.verified and t.encrypted and not t.performs_starttls
            assert read_until(t, b"\r\n") == b"220 recorder ready\r\n"
    chatter = [s for k, s in notes if k == "chatter"]
    assert "CONNECTION ESTABLISHED" in chatter
    assert any(s.startswith("Protocol version:") for s in chatter)


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_ipv6_bracketed(pki):
    with (
        Server(record(), host="::1", tls=pki.server_context()) as srv,
        create(cfg(srv.port, pki, host="::1")) as t,
    ):
        info = t.connect()
        assert f"-connect [::1]:{srv.port}" in info.note and "-verify_ip ::1" in info.note
        assert read_until(t, b"\r\n") == b"220 recorder ready\r\n"


def test_starttls_smtp_performed_by_openssl(pki):
    handler = scripted(
        b"220 mx ESMTP\r\n",
        {b"EHLO": b"250-mx\r\n250 STARTTLS\r\n", b"NOOP": b"250 2.0.0 noop ok\r\n"},
        starttls=pki.server_context(),
    )
    with Server(handler) as srv, create(cfg(srv.port, pki, tls="starttls", server_name="localhost")) as t:
        assert t.performs_starttls == "openssl s_client -starttls smtp"  # the program, as reports name it
        assert t.check_sendable(b"\xff bare LF\n bare CR\r") is None  # a raw pty: every byte goes
        info = t.connect()
        assert info.tls is None and "-starttls smtp" in info.note
        tls = t.start_tls()
        assert tls.verified and "CN=localhost" in tls.peer_subject
        t.send(b"NOOP\r\n", soon())
        assert read_until(t, b"\r\n") == b"250 2.0.0 noop ok\r\n"
        got = srv.wait_connection().wait_received(b"NOOP\r\n")
        assert got == b"EHLO mail.example.com\r\nSTARTTLS\r\nNOOP\r\n"


def test_unknown_ca(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        pytest.raises(
            TLSError, match=r"failed: certificate verify failed: unable to get local issuer certificate; "
        ),
    ):
        create(cfg(srv.port, ca=pki.other_ca_file, server_name="localhost")).connect()


@pytest.mark.parametrize("trusted", ["another CA", "the system store"])
def test_an_untrusted_ca_is_told_as_the_socket_transport_tells_it(pki, trusted):
    """One wording, with its hint (--ca FILE, the sandbox's CA line), whichever program verified."""
    kw = {"ca": pki.other_ca_file} if trusted == "another CA" else {}
    said = {}
    with Server(record(), tls=pki.server_context()) as srv:
        for transport in ("socket", "openssl"):
            with pytest.raises(TLSError) as e:
                create(cfg(srv.port, transport=transport, server_name="localhost", **kw)).connect()
            said[transport] = str(e.value)
    assert said["openssl"] == said["socket"]
    assert f"TLS handshake with 127.0.0.1:{srv.port} failed: certificate verify failed: " in said["openssl"]
    assert "give its CA certificate with --ca FILE (or connect: ca:)" in said["openssl"]
    assert "'CA certificate (trust it to verify TLS): ...'" in said["openssl"]  # the sandbox's line


def test_a_name_mismatch_gets_no_ca_hint(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        pytest.raises(TLSError, match="hostname mismatch") as e,
    ):
        create(cfg(srv.port, pki, server_name="mail.example.com")).connect()
    assert "--ca" not in str(e.value)


def test_hostname_mismatch(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        pytest.raises(TLSError, match="certificate verify failed: hostname mismatch"),
    ):
        create(cfg(srv.port, pki, server_name="mail.example.com")).connect()


def test_verification_off(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        create(cfg(srv.port, ca=pki.other_ca_file, tls_verify=False, server_name="x.example")) as t,
    ):
        info = t.connect()
        assert "-verify_return_error" not in info.note
        assert info.tls.verified is False and "NOT VERIFIED" in info.tls.describe()
        assert read_until(t, b"\r\n") == b"220 recorder ready\r\n"


def test_tls13_minimum_against_tls12_only_server(pki):
    ctx = pki.server_context(max_version=ssl.TLSVersion.TLSv1_2)
    with Server(record(), tls=ctx) as srv, create(cfg(srv.port, pki)) as t:
        assert t.connect().tls.version == "TLSv1.2"
        with pytest.raises(TLSError, match="protocol version"):
            create(cfg(srv.port, pki, tls_min_version="1.3")).connect()


def test_client_certificate(pki):
    with Server(record(), tls=pki.server_context(require_client_cert=True)) as srv:
        c = cfg(srv.port, pki, client_cert=pki.client_cert_file, client_key=pki.client_key_file)
        with create(c) as t:
            t.connect()
            read_until(t, b"\r\n")
            t.send(b"NOOP\r\n", soon())
            conn = srv.wait_connection()
            conn.wait_received(b"NOOP\r\n")
            assert dict(x[0] for x in conn.peer_cert["subject"])["commonName"] == "client"


def test_handshake_deadline():
    with Server(silent()) as srv:
        t0 = time.monotonic()
        with pytest.raises(ConnectError, match=r"timed out after 0\.5s"):
            create(cfg(srv.port, connect_timeout=0.5)).connect()
        assert time.monotonic() - t0 < 2


def test_read_deadlines_silent_and_drip(pki):
    with Server(silent(), tls=pki.server_context()) as srv, create(cfg(srv.port, pki)) as t:
        t.connect()
        t0 = time.monotonic()
        with pytest.raises(DeadlineError):
            t.recv(time.monotonic() + 0.3)
        assert time.monotonic() - t0 < 1.5
    with (
        Server(drip(b"250-dripping\r\n250 slowly\r\n", 0.1), tls=pki.server_context()) as srv,
        create(cfg(srv.port, pki)) as t,
    ):
        t.connect()
        deadline = time.monotonic() + 0.55
        buf = b""
        with pytest.raises(DeadlineError):
            while True:
                buf += t.recv(deadline)
        assert 2 <= len(buf) <= 8


def test_closed_mid_reply(pki):
    with (
        Server(close_mid_reply(partial=b"250-first\r\n250-sec"), tls=pki.server_context()) as srv,
        create(cfg(srv.port, pki)) as t,
    ):
        t.connect()
        assert read_until(t, b"\r\n") == b"220 ready\r\n"
        t.send(b"EHLO x\r\n", soon())
        assert read_until(t, b"never") == b"250-first\r\n250-sec"
        assert t.recv(time.monotonic() + 2) == b""
        with pytest.raises(ConnectionClosed):
            t.send(b"NOOP\r\n", soon())


def test_refusals(monkeypatch, tmp_path):
    with pytest.raises(UsageError, match="transport: socket or transport: telnet"):
        create(cfg(25, tls="none"))
    with pytest.raises(UsageError, match="-starttls knows smtp, pop3 and imap"):
        create(cfg(25, tls="starttls", protocol="line"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match=r"^openssl not found: install the Debian package 'openssl'$"):
        OpensslTransport(cfg(25)).connect()
