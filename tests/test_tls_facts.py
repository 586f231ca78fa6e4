"""The TLS facts every report gives (runner.transports.certinfo, TLSInfo): what the certificate
says, read by one parser for the socket and the openssl transports, with verification on and
off, and the name rules checked against the real verifier.

Real certificates (cryptography, trustme, the test bed's CA), real handshakes (Python's ssl
and `openssl s_client` against Dovecot and small loopback TLS servers)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runner.model.config import ConnectConfig
from runner.transports.certinfo import cert_facts, leaf_from_msg_dump, valid_for
from runner.transports.openssl import OpensslTransport
from runner.transports.socket import SocketTransport
from tests.servers.testbed import OTHER_NAME, TLS13_HOST
from tests.support.servers import PKI, Server, record
from tests.test_exit_status import mailrun  # the real command, NO_COLOR, 30 s

REPO = Path(__file__).resolve().parent.parent
T = 30
UTC = datetime.UTC


# --------------------------------------------------------------------------- certificates


class MiniCA:
    """A CA that signs exactly the certificate asked for: any SANs, any CN, no SAN at all."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mini CA")])
        now = datetime.datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / "mini-ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, label: str, sans: list[str], cn: str | None, days: int = 30) -> tuple[Path, bytes]:
        """-> (PEM file with key and certificate, the certificate's DER). sans: 'DNS:x', 'IP:y'."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mini")]
        if cn:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = datetime.datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days, hours=1))
        )
        names = [
            x509.DNSName(s[4:]) if s.startswith("DNS:") else x509.IPAddress(ipaddress.ip_address(s[3:]))
            for s in sans
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        path = self.dir / f"{label}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            + cert.public_bytes(serialization.Encoding.PEM)
        )
        return path, cert.public_bytes(serialization.Encoding.DER)


def verifier_accepts(ca_file: Path, pem: Path, name: str) -> bool:
    """Does Python's ssl (the socket transport's verifier: OpenSSL, hostname checks as it sets
    them) accept this certificate for this name, in a real handshake?"""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pem))
    client = ssl.create_default_context(cafile=str(ca_file))
    with (
        Server(record(b""), tls=ctx) as srv,
        socket.create_connection((srv.host, srv.port), timeout=T) as raw,
    ):
        try:
            with client.wrap_socket(raw, server_hostname=name):
                return True
        except ssl.SSLCertVerificationError:
            return False


# (label, subjectAltNames, CN, [(name, valid?), ...]): what RFC 6125 and OpenSSL say
NAME_CASES = [
    (
        "plain",
        ["DNS:mail.example.test"],
        None,
        [("mail.example.test", True), ("MAIL.Example.TEST", True), ("other.example.test", False)],
    ),
    (
        "wildcard",
        ["DNS:*.example.test"],
        None,
        [("mail.example.test", True), ("a.b.example.test", False), ("example.test", False)],
    ),
    ("partial", ["DNS:m*.example.test"], None, [("mail.example.test", False)]),
    (
        "idn",
        ["DNS:xn--bcher-kva.example.test"],
        None,
        [("bücher.example.test", True), ("bucher.example.test", False)],
    ),
    ("ip", ["IP:127.0.0.1", "DNS:localhost"], None, [("127.0.0.1", True), ("127.0.0.2", False)]),
    ("ip-as-dns", ["DNS:127.0.0.1"], None, [("127.0.0.1", False)]),
    ("cn-only", [], "cn.example.test", [("cn.example.test", True), ("other.example.test", False)]),
    ("cn-ignored", ["DNS:san.example.test"], "cn.example.test", [("cn.example.test", False)]),
    ("cn-with-ip-san", ["IP:127.0.0.1"], "cn.example.test", [("cn.example.test", True)]),
]


@pytest.mark.parametrize(("label", "sans", "cn", "names"), NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_name_rules_are_the_verifiers(tmp_path, label, sans, cn, names):
    ca = MiniCA(tmp_path)
    pem, der = ca.issue(label, sans, cn)
    facts = cert_facts(der)
    assert facts is not None and list(facts.sans) == sans
    for name, valid in names:
        assert verifier_accepts(ca.ca_file, pem, name) is valid, (label, name)  # the ground truth
        assert valid_for(facts, name) is valid, (label, name)


def test_facts_of_a_certificate(tmp_path):
    ca = MiniCA(tmp_path)
    _, der = ca.issue("facts", ["DNS:mail.example.test", "IP:127.0.0.1"], "mail.example.test", days=9)
    facts = cert_facts(der)
    assert facts.subject == "O=mini, CN=mail.example.test"
    assert facts.issuer == "CN=mini CA"
    assert facts.sans == ("DNS:mail.example.test", "IP:127.0.0.1")
    assert facts.common_names == ("mail.example.test",)
    assert facts.days_left == 9  # 9 days and an hour: rounded down
    later = datetime.datetime.strptime(facts.not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(later - datetime.datetime.now(UTC) - datetime.timedelta(days=9, hours=1)).total_seconds() < 120
    # the same certificate, 10 days on: expired
    assert cert_facts(der, now=later.timestamp() + 3600).days_left == -1
    assert cert_facts(b"") is None and cert_facts(b"not a certificate") is None


# --------------------------------------------------------------------------- transports


def config(port: int, ca, **kw) -> ConnectConfig:
    return ConnectConfig(host=kw.pop("host", "127.0.0.1"), port=port, tls="implicit", ca=ca, **kw)


def facts_of(transport_cls, cfg) -> object:
    t = transport_cls(cfg)
    try:
        info = t.connect()
        return info.tls or t.start_tls()  # (openssl -starttls: the handshake is done by connect)
    finally:
        t.close()


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "insecure"])
def test_both_transports_report_the_same_facts(testbed, verify):
    cfg = config(
        testbed.ports["imaps"], Path(testbed.ca_path), server_name="mail.example.test", tls_verify=verify
    )
    by_socket = facts_of(SocketTransport, cfg)
    by_openssl = facts_of(OpensslTransport, cfg.replace(transport="openssl"))
    assert by_socket.cert is not None and by_socket.cert == by_openssl.cert  # names and dates
    assert "DNS:mail.example.test" in by_socket.cert.sans and "IP:127.0.0.1" in by_socket.cert.sans
    assert by_socket.cert.days_left > 21
    assert by_socket.peer_issuer == by_openssl.peer_issuer and "mailrun test bed CA" in by_socket.peer_issuer
    assert (by_socket.version, by_socket.cipher) == (by_openssl.version, by_openssl.cipher)
    assert by_socket.verified is by_openssl.verified is verify
    assert by_socket.sni == by_openssl.sni == "mail.example.test"


def test_no_sni_for_an_ip_address_and_the_facts_of_starttls(testbed):
    """An IP address is sent as no SNI by either transport; STARTTLS (openssl -starttls imap)
    gives the facts as implicit TLS does."""
    cfg = ConnectConfig(
        host="127.0.0.1",
        port=testbed.ports["imap"],
        tls="starttls",
        ca=Path(testbed.ca_path),
        protocol="imap",
    )
    ossl = facts_of(OpensslTransport, cfg.replace(transport="openssl"))
    sock = facts_of(SocketTransport, config(testbed.ports["imaps"], Path(testbed.ca_path)))
    assert ossl.sni is None and sock.sni is None
    assert ossl.cert == sock.cert and ossl.verified and sock.verified


@pytest.mark.parametrize("kind", ["soon", "expired", "wrong"])
def test_insecure_still_reads_dates_and_names(testbed, kind):
    """With verification off the chain is not checked, but the certificate is read all the
    same: days left of an expired one, the names of one for another host."""
    name = testbed.tls_check_name(kind)
    cfg = config(testbed.ports["imaps"], Path(testbed.ca_path), server_name=name, tls_verify=False)
    for cls, c in ((SocketTransport, cfg), (OpensslTransport, cfg.replace(transport="openssl"))):
        info = facts_of(cls, c)
        assert info.verified is False and info.sni == name
        cert = info.cert
        if kind == "soon":
            assert cert.days_left == 5 and cert.sans == (f"DNS:{name}",)
        elif kind == "expired":
            assert cert.days_left == -4 and cert.sans == (f"DNS:{name}",)  # 3 days and a bit ago
        else:
            assert cert.sans == (f"DNS:{OTHER_NAME}",) and not valid_for(cert, name)


def test_tls12_certificate_message_is_read_by_openssl_too(tmp_path):
    """TLS 1.2's Certificate message has no context byte and no extensions: openssl's -msg dump
    of it gives the same certificate."""
    pki = PKI(tmp_path)
    ctx = pki.server_context(max_version=ssl.TLSVersion.TLSv1_2)
    with Server(record(b"220 hi\r\n"), tls=ctx) as srv:
        cfg = config(srv.port, pki.ca_file, server_name="localhost")
        ossl = facts_of(OpensslTransport, cfg.replace(transport="openssl"))
        sock = facts_of(SocketTransport, cfg)
    assert ossl.version == sock.version == "TLSv1.2"
    assert ossl.cert == sock.cert and "DNS:localhost" in ossl.cert.sans


def test_msg_dump_without_a_certificate_gives_none():
    assert leaf_from_msg_dump("") is None
    assert leaf_from_msg_dump(">>> TLS 1.3, Handshake [length 0004], Certificate\n    0b 00 00 00\n") is None
    assert leaf_from_msg_dump("<<< TLS 1.3, Handshake [length 0004], Certificate\n    zz\n") is None


def test_tls13_only_listener_refuses_tls12(testbed):
    if testbed.tls13_port is None:
        pytest.skip("no IPv6 loopback: the bed has no TLSv1.3-only listener")
    ctx = testbed.ssl_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((TLS13_HOST, testbed.tls13_port), timeout=T) as raw,
        pytest.raises((ssl.SSLError, OSError)),
    ):
        ctx.wrap_socket(raw, server_hostname="localhost")
    info = facts_of(SocketTransport, config(testbed.tls13_port, Path(testbed.ca_path), host=TLS13_HOST))
    assert info.version == "TLSv1.3" and info.cert is not None and "IP:::1" in info.cert.sans


# --------------------------------------------------------------------------- reports


IMAPS = """\
name: imaps facts
protocol: imap
connect: {host: 127.0.0.1, port: @PORT@, tls: implicit, server_name: mail.example.test, transport: @TRANSPORT@}
steps:
  - S: OK
finally:
  - C: LOGOUT
    S: OK
"""


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_facts_in_every_report_without_tls_expect(testbed, tmp_path, transport):
    path = tmp_path / "facts.yaml"
    path.write_text(IMAPS.replace("@PORT@", str(testbed.ports["imaps"])).replace("@TRANSPORT@", transport))
    out = mailrun(
        path,
        "--ca",
        testbed.ca_path,
        "-v",
        "--report",
        f"json={tmp_path}/r.json",
        "--report",
        f"junit={tmp_path}/r.xml",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    names = next(ln for ln in lines if ln.strip().startswith("names: "))
    assert "DNS:mail.example.test" in names and "IP:127.0.0.1" in names
    assert any(ln.strip().startswith("valid: ") and "days left)" in ln for ln in lines)
    assert "verified: yes; SNI sent: mail.example.test" in [ln.strip() for ln in lines]
    doc = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(doc, json.loads((REPO / "runner/data/report.schema.json").read_text()))
    tls = doc["scenarios"][0]["sessions"][0]["tls"]
    assert tls["sni"] == "mail.example.test" and tls["verified"] is True
    assert "DNS:mail.example.test" in tls["sans"] and tls["days_left"] > 21
    assert tls["not_after"].endswith("Z") and "mailrun test bed CA" in tls["peer_issuer"]
    assert all(st["section"] != "tls" for st in doc["scenarios"][0]["steps"])  # no tls_expect: no TLS step
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").getroot().iter("property")}
    assert props["tls.version"] == tls["version"] and props["tls.sni"] == "mail.example.test"
    assert props["tls.days_left"] == str(tls["days_left"]) and props["tls.verified"] == "true"
    assert "DNS:mail.example.test" in props["tls.sans"]
