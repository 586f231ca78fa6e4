"""Socket transport against real loopback servers (plain, implicit TLS, STARTTLS)."""

from __future__ import annotations

import ssl
import time

import pytest

from runner.errors import ConnectError, ConnectionClosed, DeadlineError, TLSError, UsageError
from runner.model.config import ConnectConfig
from runner.transports import create
from runner.transports.socket import SocketTransport
from runner.transports.tls import tls_context
from tests.support.servers import (
    PKI,
    Server,
    close_mid_reply,
    ipv6_available,
    read_until,
    record,
    scripted,
    silent,
)

PAYLOADS = [
    b"EHLO client.example\r\n",
    b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
    b"Subject: hi\r\n\r\n..leading dot stuffed\r\nbody\r\n.\r\n",
    b"raw bare\rCR and bare\nLF\r\n",
    "UTF-8: Grüße, ✓\r\n".encode(),
    b"x" * 10_000 + b"\r\n",
    bytes(range(256)) + b"\r\n",
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def soon(seconds: float = 10.0) -> float:
    """A send deadline: seconds from now."""
    return time.monotonic() + seconds


def cfg(port, host="127.0.0.1", **kw) -> ConnectConfig:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("connect_timeout", 5.0)
    return ConnectConfig(host=host, port=port, **kw)


def test_create_picks_transport_and_rejects_unknown():
    assert isinstance(create(cfg(1)), SocketTransport)

    class Odd:
        transport = "pigeon"

    with pytest.raises(UsageError, match="unknown transport 'pigeon'"):
        create(Odd())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_plain_roundtrip_and_wire_identity(host):
    if host == "::1" and not ipv6_available():
        pytest.skip("no IPv6 loopback")
    srv_host = "127.0.0.1" if host == "localhost" else host
    with Server(record(), host=srv_host) as srv, create(cfg(srv.port, host=host)) as t:
        info = t.connect()
        assert info.transport == "socket" and info.tls is None and not t.encrypted
        assert info.peer == (f"[::1]:{srv.port}" if host == "::1" else f"127.0.0.1:{srv.port}")
        assert read_until(t, b"\r\n") == b"220 recorder ready\r\n"
        for p in PAYLOADS:
            t.send(p, soon())
        expected = b"".join(PAYLOADS)
        conn = srv.wait_connection()
        assert conn.wait_received(len(expected)) == expected


def test_family_forces_address_family():
    with Server(record()) as srv, create(cfg(srv.port, host="localhost", family=4)) as t:
        assert t.connect().peer == f"127.0.0.1:{srv.port}"
        # Forced to IPv6, the IPv4-only server is out of reach: refused on ::1, or (as on this
        # machine, where /etc/hosts has no ::1 localhost) not resolvable.
        with pytest.raises(
            ConnectError, match=r"connection to \[::1\]:\d+ refused|cannot resolve 'localhost'"
        ):
            create(cfg(srv.port, host="localhost", family=6)).connect()


def test_closed_mid_reply_gives_partial_then_eof():
    with Server(close_mid_reply(partial=b"250-first\r\n250-sec")) as srv, create(cfg(srv.port)) as t:
        t.connect()
        assert read_until(t, b"\r\n") == b"220 ready\r\n"
        t.send(b"EHLO x\r\n", soon())
        got = read_until(t, b"never")
        assert got == b"250-first\r\n250-sec"
        assert t.recv(time.monotonic() + 2) == b""


def test_send_after_peer_closed_raises_connection_closed():
    with Server(close_mid_reply(partial=b"")) as srv, create(cfg(srv.port)) as t:
        t.connect()
        read_until(t, b"\r\n")
        t.send(b"EHLO x\r\n", soon())
        assert read_until(t, b"never") == b""
        with pytest.raises(ConnectionClosed, match="connection closed by 127.0.0.1"):
            for _ in range(50):  # the first write may still be accepted by the kernel
                t.send(b"NOOP\r\n" * 1000, soon())
                time.sleep(0.02)


# -- TLS ---------------------------------------------------------------------------------------------
def test_implicit_tls_verified(pki):
    with (
        Server(record(b"+OK tls\r\n"), tls=pki.server_context()) as srv,
        create(cfg(srv.port, tls="implicit", ca=pki.ca_file, server_name="localhost")) as t,
    ):
        info = t.connect()
        assert info.tls is not None and t.encrypted
        assert info.tls.version in ("TLSv1.2", "TLSv1.3") and info.tls.verified
        assert info.tls.peer_subject and "CN=localhost" in info.tls.peer_subject
        assert info.tls.peer_issuer and "trustme" in info.tls.peer_issuer
        assert read_until(t, b"\r\n") == b"+OK tls\r\n"
        for p in PAYLOADS:
            t.send(p, soon())
        expected = b"".join(PAYLOADS)
        assert srv.wait_connection().wait_received(len(expected)) == expected


def test_implicit_tls_ip_address_checks_ip_san(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        create(cfg(srv.port, tls="implicit", ca=pki.ca_file)) as t,
    ):
        assert t.connect().tls.verified


def test_unknown_ca(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        pytest.raises(TLSError, match="certificate verify failed: unable to get local issuer certificate"),
    ):
        create(cfg(srv.port, tls="implicit", ca=pki.other_ca_file)).connect()


def test_system_store_does_not_trust_test_ca(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        pytest.raises(TLSError, match="certificate verify failed"),
    ):
        create(cfg(srv.port, tls="implicit", server_name="localhost")).connect()


def test_hostname_mismatch(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        pytest.raises(TLSError, match="certificate verify failed: Hostname mismatch"),
    ):
        create(cfg(srv.port, tls="implicit", ca=pki.ca_file, server_name="mail.example.com")).connect()


def test_verification_off_still_reports_subject(pki):
    with (
        Server(record(), tls=pki.server_context()) as srv,
        create(cfg(srv.port, tls="implicit", tls_verify=False, server_name="wrong.example")) as t,
    ):
        tls = t.connect().tls
        assert tls.verified is False
        assert "CN=localhost" in (tls.peer_subject or "")
        assert "NOT VERIFIED" in tls.describe()


def test_tls13_minimum_against_tls12_only_server(pki):
    ctx = pki.server_context(max_version=ssl.TLSVersion.TLSv1_2)
    with Server(record(), tls=ctx) as srv, create(cfg(srv.port, tls="implicit", ca=pki.ca_file)) as t:
        assert t.connect().tls.version == "TLSv1.2"
        with pytest.raises(TLSError, match=r"failed: .*(version|protocol)"):
            create(cfg(srv.port, tls="implicit", ca=pki.ca_file, tls_min_version="1.3")).connect()


def test_client_certificate(pki):
    ctx = pki.server_context(require_client_cert=True)
    with Server(record(), tls=ctx) as srv:
        with create(
            cfg(
                srv.port,
                tls="implicit",
                ca=pki.ca_file,
                client_cert=pki.client_cert_file,
                client_key=pki.client_key_file,
            )
        ) as t:
            t.connect()
            read_until(t, b"\r\n")
            t.send(b"NOOP\r\n", soon())
            conn = srv.wait_connection()
            conn.wait_received(b"NOOP\r\n")
            assert dict(x[0] for x in conn.peer_cert["subject"])["commonName"] == "client"
        # Without the certificate the server refuses: with TLS 1.3 that shows at the first read.
        with (
            create(cfg(srv.port, tls="implicit", ca=pki.ca_file)) as t,
            pytest.raises((TLSError, ConnectionClosed)),
        ):
            t.connect()
            t.send(b"NOOP\r\n", soon())
            if t.recv(time.monotonic() + 5) == b"":
                raise ConnectionClosed("closed")


def test_missing_ca_file_is_clear(tmp_path):
    with pytest.raises(TLSError, match="cannot load CA file .*nope.pem"):
        tls_context(cfg(1, tls="implicit", ca=tmp_path / "nope.pem"))


def test_starttls_upgrade(pki):
    handler = scripted(b"220 hi\r\n", {b"EHLO": b"250 STARTTLS\r\n"}, starttls=pki.server_context())
    with Server(handler) as srv, create(cfg(srv.port, tls="starttls", ca=pki.ca_file)) as t:
        assert t.connect().tls is None
        assert read_until(t, b"\r\n") == b"220 hi\r\n"
        t.send(b"STARTTLS\r\n", soon())
        assert read_until(t, b"\r\n").startswith(b"220 2.0.0")
        info = t.start_tls()
        assert t.encrypted and info.verified
        t.send(b"EHLO again\r\n", soon())
        assert read_until(t, b"\r\n") == b"250 STARTTLS\r\n"
        assert srv.wait_connection().wait_received(b"EHLO again\r\n").endswith(b"EHLO again\r\n")


def test_starttls_refuses_injected_plaintext(pki):
    handler = scripted(
        b"220 hi\r\n",
        {},
        starttls=pki.server_context(),
        inject=b"250 injected before handshake\r\n",
        inject_delay=0.2,
    )
    with Server(handler) as srv, create(cfg(srv.port, tls="starttls", ca=pki.ca_file)) as t:
        t.connect()
        read_until(t, b"\r\n")
        t.send(b"STARTTLS\r\n", soon())
        reply = read_until(t, b"Ready to start TLS\r\n")
        assert reply == b"220 2.0.0 Ready to start TLS\r\n"  # the injected line came later
        time.sleep(0.4)
        with pytest.raises(TLSError, match="^data received before TLS handshake; refusing to continue$"):
            t.start_tls()
        assert not t.encrypted


def test_starttls_refuses_plaintext_that_arrives_during_the_handshake(pki):
    """The injected line arrives after start_tls() looked for waiting bytes (the server sends it
    only once our ClientHello is on its way): the handshake sees plaintext where TLS records
    belong, and the error says so rather than only 'wrong version number'."""
    handler = scripted(
        b"220 hi\r\n",
        {},
        starttls=pki.server_context(),
        inject=b"250 injected during the handshake\r\n",
        inject_delay=0.3,
    )
    with Server(handler) as srv, create(cfg(srv.port, tls="starttls", ca=pki.ca_file)) as t:
        t.connect()
        read_until(t, b"\r\n")
        t.send(b"STARTTLS\r\n", soon())
        assert read_until(t, b"Ready to start TLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
        with pytest.raises(
            TLSError, match="^data received before TLS handshake; refusing to continue .*not TLS"
        ):
            t.start_tls()
        assert not t.encrypted


def test_tls_handshake_deadline():
    # A plaintext server that never answers the ClientHello.
    with Server(silent()) as srv:
        t0 = time.monotonic()
        with pytest.raises(TLSError, match="timed out after 0.4s"):
            create(cfg(srv.port, tls="implicit", connect_timeout=0.4)).connect()
        assert time.monotonic() - t0 < 2


def test_tls_recv_deadline_and_pending_records(pki):
    # Many small writes become many TLS records; recv must return them all without waiting.
    def handler(conn):
        for i in range(50):
            conn.send(b"%d\r\n" % i)
        conn.read_some(10)

    with (
        Server(handler, tls=pki.server_context()) as srv,
        create(cfg(srv.port, tls="implicit", ca=pki.ca_file)) as t,
    ):
        t.connect()
        got = read_until(t, b"49\r\n")
        assert got == b"".join(b"%d\r\n" % i for i in range(50))
        with pytest.raises(DeadlineError):
            t.recv(time.monotonic() + 0.2)
