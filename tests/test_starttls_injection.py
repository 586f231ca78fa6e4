"""Issue 17, part 4: STARTTLS injection (CVE-2011-0411 class), against a real hostile server
(tests/support/hostile_server.py) that answers STARTTLS with `220 ready\\r\\n250 INJECTED\\r\\n`
in one segment.

After the refusal the connection is closed and no step runs on it, `finally` included (the
injected `250 INJECTED` must never count as the reply to QUIT). The openssl transport, which
cannot see those bytes (openssl reads and discards them), says what happened instead of
'connect timed out'.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.hostile_server import starttls_injector
from tests.support.reported_run import run_reported
from tests.support.servers import PKI, Server

SCENARIO = """\
    name: injected
    protocol: smtp
    connect: {{host: localhost, port: {port}, tls: starttls, ca: {ca}, transport: {transport},
              timeout: 5, connect_timeout: 2}}
    steps:
      - S: 220
      - C: EHLO client.example
        S: 250
      - C: STARTTLS
        S: 220
        starttls: true
      - C: EHLO client.example
        S: 250
    finally:
      - C: QUIT
        S: 221
    """


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def mailrun(tmp_path: Path, **subs) -> tuple[dict, dict]:
    out = run_reported(tmp_path, SCENARIO, **subs)
    return out, json.loads(out["json"])


def test_socket_transport_closes_after_the_refusal_and_runs_nothing_more(tmp_path, pki):
    with Server(starttls_injector(pki.server_context())) as srv:
        r, doc = mailrun(tmp_path, port=srv.port, ca=pki.ca_file, transport="socket")
        received = srv.wait_connection().wait_closed(10)  # the client closed it
    out = r["stdout"]
    assert r["rc"] == 3, out + r["stderr"]
    # nothing was sent after STARTTLS: not the second EHLO, not the finally QUIT
    assert received == b"EHLO client.example\r\nSTARTTLS\r\n"
    steps = {(s["section"], s["index"]): s for s in doc["scenarios"][0]["steps"]}
    starttls = steps[("steps", 3)]
    assert starttls["status"] == "error"
    assert "data received before TLS handshake; refusing to continue" in starttls["reason"]
    assert "the connection was closed" in starttls["reason"]
    assert steps[("steps", 4)]["status"] == "skipped"
    quit_step = steps[("finally", 1)]
    assert quit_step["status"] == "skipped" and quit_step["reply"] is None
    assert quit_step["reason"] == "not run: the connection was closed after the refused STARTTLS"
    assert "connection closed by client" in out
    # the injected line is never taken as a reply (it is shown only as the bytes that came)
    assert "S: 250 INJECTED  " not in out and '"250 INJECTED"' not in json.dumps(doc)


def test_openssl_transport_says_what_happened_not_connect_timed_out(tmp_path, pki):
    # the hostile server injects and then waits: openssl (which read and discarded the injected
    # line with the STARTTLS reply) waits for a TLS handshake that never comes
    with Server(starttls_injector(None)) as srv:
        r, doc = mailrun(tmp_path, port=srv.port, ca=pki.ca_file, transport="openssl")
        received = srv.wait_connection().wait_closed(10)
    out = r["stdout"]
    assert r["rc"] == 3, out + r["stderr"]
    assert "timed out" not in out
    assert "openssl s_client -starttls smtp connected to localhost:" in out
    assert "no TLS session was established within 2s" in out
    assert "STARTTLS injection" in out and "transport: socket refuses it" in out
    # no step ran on the connection: after openssl's STARTTLS only its TLS ClientHello went out
    head = b"EHLO mail.example.com\r\nSTARTTLS\r\n"
    assert received.startswith(head) and received[len(head) : len(head) + 1] == b"\x16"
    assert b"QUIT" not in received and b"client.example" not in received
    session = doc["scenarios"][0]["sessions"][0]
    assert session["status"] == "error" and "no TLS session was established" in session["reason"]
    assert all(s["status"] == "skipped" or s["reply"] is None for s in doc["scenarios"][0]["steps"])


def test_openssl_transport_names_plaintext_where_the_handshake_was_due(tmp_path, pki):
    # the injected line comes in its own segment, after openssl read the STARTTLS reply: openssl
    # reads it as a TLS record ('wrong version number'), and the error says what that means
    with Server(starttls_injector(None, delay=0.3)) as srv:
        r, doc = mailrun(tmp_path, port=srv.port, ca=pki.ca_file, transport="openssl")
        received = srv.wait_connection().wait_closed(10)
    out = r["stdout"]
    assert r["rc"] == 3, out + r["stderr"]
    assert "failed: wrong version number (after its STARTTLS reply the server sent something" in out
    assert "plaintext injected before the handshake" in out
    assert b"QUIT" not in received and b"client.example" not in received
