"""Where a connection goes and what it says first: unix sockets, IPv6 literals, and the HAProxy
PROXY protocol header (v1 text, v2 binary), against real sockets and a real Postfix behind a
`smtpd_upstream_proxy_protocol = haproxy` listener."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from runner.transports.proxy import SIGNATURE, header, parse_address

REPO = Path(__file__).resolve().parent.parent
T = 30


def mailrun(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=T,
    )


def scenario(tmp_path: Path, connect: str, steps: str = "  - S: 220\n  - C: QUIT\n    S: 221\n") -> Path:
    path = tmp_path / f"s-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(f"name: breadth\nprotocol: smtp\nconnect: {connect}\nsteps:\n{steps}")
    return path


class TinySMTP:
    """A real listening socket (TCP or unix) that records the first bytes a client sends before
    it greets (`expect_proxy`: read one PROXY header first), then speaks just enough SMTP."""

    def __init__(self, family=socket.AF_INET, address=("127.0.0.1", 0), expect_proxy: int = 0):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(1)
        self.address = self.sock.getsockname()
        self.expect_proxy = expect_proxy
        self.received_header = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(T)
            if self.expect_proxy == 1:
                while not self.received_header.endswith(b"\r\n"):
                    self.received_header += conn.recv(1)
            elif self.expect_proxy == 2:
                head = self._exactly(conn, 16)
                self.received_header = head + self._exactly(conn, int.from_bytes(head[14:16], "big"))
            conn.sendall(b"220 tiny ESMTP\r\n")
            f = conn.makefile("rb")
            for line in f:
                conn.sendall(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")
                if line.upper().startswith(b"QUIT"):
                    return

    @staticmethod
    def _exactly(conn, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- PROXY headers
def test_proxy_v1_header_is_the_haproxy_text_line():
    assert (
        header(1, "203.0.113.7:4242", "198.51.100.1:25") == b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 25\r\n"
    )
    assert (
        header(1, "[2001:db8::7]:4242", "[2001:db8::1]:25")
        == b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 25\r\n"
    )


def test_proxy_v2_header_is_the_binary_form():
    v4 = header(2, "203.0.113.7:4242", "198.51.100.1:25")
    assert v4[:12] == SIGNATURE and v4[12] == 0x21 and v4[13] == 0x11
    assert v4[14:16] == (12).to_bytes(2, "big")
    assert v4[16:] == bytes([203, 0, 113, 7, 198, 51, 100, 1]) + (4242).to_bytes(2, "big") + (25).to_bytes(
        2, "big"
    )
    v6 = header(2, "[2001:db8::7]:1", "[::1]:2")
    assert v6[13] == 0x21 and int.from_bytes(v6[14:16], "big") == 36 and len(v6) == 16 + 36


def test_proxy_addresses_are_checked():
    with pytest.raises(ValueError, match="not IP:PORT"):
        parse_address("example.com:25")
    with pytest.raises(ValueError, match="same family"):
        header(1, "203.0.113.7:1", "[::1]:25")


@pytest.mark.parametrize("version", [1, 2])
def test_the_header_goes_first_with_the_connected_address_as_destination(tmp_path, version):
    srv = TinySMTP(expect_proxy=version)
    try:
        port = srv.address[1]
        path = scenario(
            tmp_path,
            f'{{host: 127.0.0.1, port: {port}, proxy: {{version: {version}, source: "203.0.113.7:4242"}}}}',
        )
        r = mailrun(path, "-v")
    finally:
        srv.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert srv.received_header == header(version, "203.0.113.7:4242", f"127.0.0.1:{port}")
    assert f"PROXY v{version} header sent: client 203.0.113.7:4242" in r.stdout


@pytest.mark.parametrize(
    "connect, message",
    [
        (
            '{host: 127.0.0.1, port: 25, transport: telnet, proxy: {source: "1.2.3.4:5"}}',
            "telnet transport cannot use connect.proxy",
        ),
        ('{host: 127.0.0.1, port: 25, proxy: {source: "nowhere"}}', "proxy.source: 'nowhere' is not IP:PORT"),
        (
            '{host: 127.0.0.1, port: 25, proxy: {source: "1.2.3.4:5", destination: "[::1]:25"}}',
            "both be IPv4 or both IPv6",
        ),
        ("{host: 127.0.0.1, port: 25, proxy: {version: 1}}", "source"),
        (
            "{unix: /run/x.sock, transport: openssl, tls: implicit}",
            "openssl transport cannot use connect.unix",
        ),
        ("{port: 25}", "missing required key 'host' (or 'unix'"),
    ],
)
def test_connect_mistakes_are_load_errors(tmp_path, connect, message):
    r = mailrun("validate", scenario(tmp_path, connect))
    assert r.returncode == 2 and message in r.stdout + r.stderr, r.stdout + r.stderr


# --------------------------------------------------------------------------- unix sockets, IPv6
def test_a_unix_socket_connection_reports_the_socket(tmp_path):
    sock_path = tmp_path / "smtp.sock"
    srv = TinySMTP(socket.AF_UNIX, str(sock_path))
    try:
        path = scenario(tmp_path, f'{{unix: "{sock_path}"}}')
        r = mailrun(path, "-v", "--report", f"json={tmp_path / 'r.json'}")
    finally:
        srv.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"unix:{sock_path}" in r.stdout
    assert f"unix:{sock_path}" in (tmp_path / "r.json").read_text()


def test_a_missing_unix_socket_is_a_network_error(tmp_path):
    r = mailrun(scenario(tmp_path, f'{{unix: "{tmp_path / "absent.sock"}"}}'))
    assert r.returncode == 3 and "no such socket" in r.stdout + r.stderr


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_literal_in_brackets(tmp_path):
    srv = TinySMTP(socket.AF_INET6, ("::1", 0))
    try:
        port = srv.address[1]
        r = mailrun(
            scenario(tmp_path, f'{{host: "[::1]", port: {port}}}'),
            "-v",
            "-6",
            "--report",
            f"json={tmp_path / 'r.json'}",
        )
    finally:
        srv.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[::1]:{port}" in r.stdout
    assert f"[::1]:{port}" in json.loads((tmp_path / "r.json").read_text()).__repr__()


# --------------------------------------------------------------------------- real Postfix behind a proxy
SEND = """\
  - S: 220
  - C: EHLO client.example.test
    S: 250
  - C: MAIL FROM:<alice@example.test>
    S: 250
  - C: RCPT TO:<bob@example.test>
    S: 250
  - C: DATA
    S: 354
  - body: |
      Subject: {subject}

      proxied
    S: 250
  - C: QUIT
    S: 221
"""


@pytest.mark.testbed
@pytest.mark.parametrize("version", [1, 2])
def test_postfix_sees_the_proxied_client_address(testbed, tmp_path, version):
    subject = f"proxied v{version} {uuid.uuid4().hex}"
    source = f"203.0.113.{version + 6}"
    path = scenario(
        tmp_path,
        f'{{host: {testbed.host}, port: {testbed.ports["smtp_proxy"]}, proxy: {{version: {version}, source: "{source}:4242"}}}}',
        SEND.format(subject=subject),
    )
    r = mailrun(path)
    assert r.returncode == 0, r.stdout + r.stderr
    message = testbed.wait_for_message("bob", lambda data: subject.encode() in data)
    received = message.split(b"\n\n", 1)[0]
    assert f"[{source}]".encode() in received, received.decode(errors="replace")
