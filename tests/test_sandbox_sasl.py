"""The sandbox's server-side SASL (runner.sandbox.sasl), shared by SMTP and POP3: SCRAM's math
against the RFC 5802 / RFC 7677 vectors, every mechanism over the wire on both protocols with
mailrun's own client mechanisms (which verify SCRAM's server signature), independent clients
where one exists (smtplib CRAM-MD5/PLAIN/LOGIN, swaks CRAM-MD5), wrong passwords, the OAuth
error exchanges, malformed responses, and what accept-any mode means for challenge-response."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import smtplib
import socket
import subprocess

import pytest

from runner.protocols.sasl import client
from runner.sandbox.sasl import (
    MECHANISMS,
    OAUTHBEARER_ERROR_CHALLENGE,
    XOAUTH2_ERROR_CHALLENGE,
    SaslError,
    parse_oauthbearer,
    salted_password,
    scram_verify,
)
from runner.sandbox.server import Sandbox

T = 5.0


@pytest.fixture(scope="module")
def sb():
    with Sandbox() as s:
        yield s


@pytest.fixture(scope="module")
def any_sb():
    with Sandbox(accept_any_login=True) as s:
        yield s


# --------------------------------------------------------------------------- the math
def test_scram_sha_256_server_side_matches_rfc_7677():
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    salted = salted_password("sha256", "pencil", salt, 4096)
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    signature = scram_verify("sha256", salted, auth_message, proof)
    assert signature is not None
    assert base64.b64encode(signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    wrong = bytes([proof[0] ^ 1]) + proof[1:]
    assert scram_verify("sha256", salted, auth_message, wrong) is None
    assert scram_verify("sha256", salted, auth_message, proof[:-1]) is None


def test_scram_sha_1_server_side_matches_rfc_5802():
    salted = salted_password("sha1", "pencil", base64.b64decode("QSXCR+Q6sek8bf92"), 4096)
    auth_message = (
        b"n=user,r=fyko+d2lbbFgONRv9qkxdawL,"
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
    )
    proof = base64.b64decode("v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    signature = scram_verify("sha1", salted, auth_message, proof)
    assert signature is not None and base64.b64encode(signature) == b"rmF9pqV8S7suAoZWja4dJRkFsKQ="


def test_oauthbearer_response_parsing():
    ok = b"n,a=alice@mailrun.test,\x01host=mail.x\x01port=587\x01auth=Bearer tok\x01\x01"
    assert parse_oauthbearer(ok) == ("alice@mailrun.test", "tok")
    assert parse_oauthbearer(b"n,a=a=2Cb,\x01auth=Bearer t\x01\x01") == ("a,b", "t")
    for bad in (
        b"n,,\x01auth=Bearer t\x01\x01",  # no user
        b"p=x,a=u,\x01auth=Bearer t\x01\x01",  # channel binding
        b"n,a=u,\x01auth=Basic t\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01",
        b"n,a=u,",
    ):
        with pytest.raises(SaslError) as e:
            parse_oauthbearer(bad)
        assert "t\x01" not in str(e.value)


# --------------------------------------------------------------------------- over the wire
class Wire:
    """A raw SMTP or POP3 client playing one SASL exchange with a mailrun client mechanism."""

    def __init__(self, sb: Sandbox, protocol: str):
        self.protocol = protocol
        self.sock = socket.create_connection((sb.host, sb.ports[protocol]), timeout=T)
        self.file = self.sock.makefile("rb")
        self.line()  # the greeting
        if protocol == "smtp":
            self.send("EHLO client.example.test")
            while self.line()[3:4] == b"-":
                pass

    def line(self) -> bytes:
        data = self.file.readline()
        if not data:
            raise EOFError
        return data.rstrip(b"\r\n")

    def send(self, text: str | bytes) -> None:
        self.sock.sendall((text.encode() if isinstance(text, str) else text) + b"\r\n")

    def challenge(self, line: bytes) -> bytes | None:
        prefix = b"334 " if self.protocol == "smtp" else b"+ "
        return base64.b64decode(line[len(prefix) :]) if line.startswith(prefix) else None

    def auth(self, mechanism: str, user: str, secret: str, *, initial: bool = True):
        """(final reply line, every challenge decoded, the mechanism)."""
        key = "token" if "OAUTH" in mechanism else "password"
        mech = client(mechanism, user=user, **{key: secret})
        command = f"AUTH {mechanism}"
        if initial and mech.client_first:
            command += " " + (base64.b64encode(mech.initial() or b"").decode() or "=")
        self.send(command)
        challenges = []
        while (challenge := self.challenge(reply := self.line())) is not None:
            challenges.append(challenge)
            self.send(base64.b64encode(mech.respond(challenge)))
        return reply, challenges, mech

    def close(self) -> None:
        self.sock.close()


SUCCESS = {"smtp": b"235 2.7.0 Authentication successful", "pop3": b"+OK Logged in."}
FAILED = {
    "smtp": b"535 5.7.8 Error: authentication failed: authentication failure",
    "pop3": b"-ERR [AUTH] Authentication failed.",
}
OAUTH_FAILED = {
    "smtp": b"535 5.7.8 Error: authentication failed: invalid user or OAuth 2.0 token",
    "pop3": b"-ERR [AUTH] Authentication failed.",
}


PASSWORD_MECHANISMS = [m for m in MECHANISMS if m not in ("EXTERNAL", "ANONYMOUS")]  # those: see below


@pytest.mark.parametrize("initial", [True, False], ids=["initial-response", "after-challenge"])
@pytest.mark.parametrize("mechanism", PASSWORD_MECHANISMS)
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_every_mechanism_logs_in_and_scram_proves_the_server(sb, protocol, mechanism, initial):
    w = Wire(sb, protocol)
    reply, challenges, mech = w.auth(mechanism, "bob@mailrun.test", "builder", initial=initial)
    assert reply == SUCCESS[protocol], challenges
    assert mech.finished() is None  # SCRAM: the server's v= signature was verified
    if mechanism.startswith("SCRAM"):
        assert challenges[-2].startswith(b"r=") and b",s=" in challenges[-2] and b",i=4096" in challenges[-2]
        assert challenges[-1].startswith(b"v=")
    if mechanism == "LOGIN":
        assert challenges[-1] == b"Password:"
    if mechanism == "CRAM-MD5":
        assert challenges[0].startswith(b"<") and challenges[0].endswith(b"@mail.mailrun.test>")
    w.close()


@pytest.mark.parametrize("mechanism", PASSWORD_MECHANISMS)
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_a_wrong_password_is_refused_without_echoing_it(sb, protocol, mechanism):
    w = Wire(sb, protocol)
    reply, challenges, _ = w.auth(mechanism, "alice", "Wrong-Pass-42")
    if mechanism in ("XOAUTH2", "OAUTHBEARER"):
        # the JSON error as a challenge, the client's answer (empty / ^A), then the failure
        error = XOAUTH2_ERROR_CHALLENGE if mechanism == "XOAUTH2" else OAUTHBEARER_ERROR_CHALLENGE
        assert challenges[-1] == base64.b64decode(error)
        assert reply == OAUTH_FAILED[protocol]
    else:
        assert reply == FAILED[protocol]
    assert b"Wrong-Pass" not in reply + b"".join(challenges)
    # the session goes on: the right password works afterwards
    assert w.auth(mechanism, "alice", "wonderland")[0] == SUCCESS[protocol]
    w.close()


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_challenge_response_in_accept_any_mode_knows_only_the_published_users(any_sb, mechanism):
    for protocol in ("smtp", "pop3"):
        w = Wire(any_sb, protocol)
        # "any password" cannot be proved: a login the sandbox has no password for is refused,
        # a published user with a wrong password too, and the published password works.
        assert w.auth(mechanism, "carol@example.org", "anything")[0] == FAILED[protocol]
        assert w.auth(mechanism, "alice@mailrun.test", "not-wonderland")[0] == FAILED[protocol]
        assert w.auth(mechanism, "alice@mailrun.test", "wonderland")[0] == SUCCESS[protocol]
        w.close()
    w = Wire(any_sb, "smtp")  # the others still take any password in this mode
    assert w.auth("PLAIN", "carol@example.org", "anything")[0] == SUCCESS["smtp"]
    w.close()


def test_an_unknown_user_gets_a_scram_exchange_like_a_known_one(sb):
    w = Wire(sb, "smtp")
    reply, challenges, _ = w.auth("SCRAM-SHA-256", "nobody@mailrun.test", "x")
    assert reply == FAILED["smtp"]
    assert challenges and challenges[0].startswith(b"r=") and b",s=" in challenges[0]
    w.close()


def test_malformed_and_aborted_exchanges(sb):
    w = Wire(sb, "smtp")
    w.send("AUTH CRAM-MD5 " + base64.b64encode(b"tim abc").decode())
    assert w.line() == b"501 5.5.2 Invalid CRAM-MD5 response: CRAM-MD5 takes no initial response"
    w.send("AUTH SCRAM-SHA-1 " + base64.b64encode(b"p=tls-unique,,n=u,r=abc").decode())
    assert w.line().startswith(b"501 5.5.2 Invalid SCRAM-SHA-1 response: ")
    w.send("AUTH SCRAM-SHA-256 " + base64.b64encode(b"n,,n=alice,r=abc").decode())
    first = base64.b64decode(w.line()[4:])
    w.send(base64.b64encode(b"c=biws,r=someone-elses-nonce,p=AAAA"))
    assert (
        w.line()
        == b"501 5.5.2 Invalid SCRAM-SHA-256 response: SCRAM-SHA-256 client-final message has the wrong nonce or no proof"
    )
    assert first.startswith(b"r=abc")
    w.send("AUTH CRAM-MD5")
    assert w.line().startswith(b"334 ")
    w.send(base64.b64encode(("alice " + "é" * 32).encode()))  # 32 characters, not hex digits
    assert w.line() == FAILED["smtp"]
    w.send("AUTH LOGIN")
    assert w.line() == b"334 VXNlcm5hbWU6"
    w.send("*")
    assert w.line() == b"501 5.7.0 Authentication aborted"
    w.send("AUTH PLAIN")
    assert w.line() == b"334 "
    w.send("not base64!")
    assert w.line() == b"501 5.5.2 Can't decode base64"
    w.send("MAIL FROM:<a@x.test>")
    assert w.line() == b"250 2.1.0 Ok"
    w.send("AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland").decode())
    assert w.line() == b"503 5.5.1 Error: MAIL transaction in progress"  # RFC 4954 section 4
    w.send("RSET")
    assert w.line() == b"250 2.0.0 Ok"
    w.send("AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland").decode())
    assert w.line() == SUCCESS["smtp"]
    w.close()
    p = Wire(sb, "pop3")
    p.send("AUTH")
    listed = [p.line() for _ in range(len(MECHANISMS) + 2)]
    assert listed == [b"+OK", *(m.encode() for m in MECHANISMS), b"."]
    p.send("AUTH DIGEST-MD5")
    assert p.line() == b"-ERR Unsupported authentication mechanism."
    p.send("AUTH CRAM-MD5")
    assert p.line().startswith(b"+ ")
    p.send("*")
    assert p.line() == b"-ERR Authentication aborted by client."
    p.send("AUTH SCRAM-SHA-1")
    assert p.line() == b"+ "
    p.send("%%%")
    assert p.line() == b"-ERR Invalid AUTH SCRAM-SHA-1 response: invalid base64 data."
    p.close()


# --------------------------------------------------------------------------- EXTERNAL
def tls_client(sb: Sandbox, key: str, cert: tuple[str, str] | None, *, starttls: bool = False):
    """A file-like TLS connection to the smtps/pop3s port (or STARTTLS/STLS on the plain one)."""
    import ssl

    ctx = ssl.create_default_context(cafile=sb.ca_path)
    if cert:
        ctx.load_cert_chain(*cert)
    raw = socket.create_connection((sb.host, sb.ports[key]), timeout=T)
    if starttls:
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"STARTTLS\r\n" if key == "smtp" else b"STLS\r\n")
        assert f.readline()[:1] in (b"2", b"+")
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    f = sock.makefile("rb")
    if not starttls:
        f.readline()  # the greeting
    if key.startswith("smtp"):
        sock.sendall(b"EHLO client.example.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
    return sock, f


@pytest.mark.parametrize(
    "key, starttls", [("smtps", False), ("smtp", True), ("pop3s", False), ("pop3", True)]
)
def test_external_logs_in_as_the_client_certificate(sb, key, starttls):
    ok = SUCCESS["smtp" if key.startswith("smtp") else "pop3"]
    bad = FAILED["smtp" if key.startswith("smtp") else "pop3"]
    cert = sb.client_cert("bob")
    for initial, expected in (
        (b"=", ok),
        (base64.b64encode(b"bob@mailrun.test"), ok),
        (base64.b64encode(b"alice"), bad),
    ):
        sock, f = tls_client(sb, key, cert, starttls=starttls)
        sock.sendall(b"AUTH EXTERNAL " + initial + b"\r\n")
        assert f.readline().rstrip(b"\r\n") == expected, initial  # another authzid than the cert's: refused
        sock.close()
    sock, f = tls_client(sb, key, None, starttls=starttls)  # TLS without a certificate
    sock.sendall(b"AUTH EXTERNAL =\r\n")
    assert f.readline().rstrip(b"\r\n") == bad
    sock.close()
    w = Wire(sb, "smtp" if key.startswith("smtp") else "pop3")  # no TLS at all
    w.send("AUTH EXTERNAL =")
    assert w.line() == bad
    w.close()


def test_a_certificate_of_another_ca_fails_the_handshake(sb, tmp_path):
    import ssl

    import trustme

    other = trustme.CA().issue_cert("alice@mailrun.test")
    other.cert_chain_pems[0].write_to_path(tmp_path / "c.pem")
    other.private_key_pem.write_to_path(tmp_path / "c.key")
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
        sock, f = tls_client(sb, "smtps", (str(tmp_path / "c.pem"), str(tmp_path / "c.key")))
        sock.sendall(b"AUTH EXTERNAL =\r\n")
        if not f.readline():
            raise EOFError


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_anonymous_only_where_any_login_is_accepted(sb, any_sb, protocol):
    w = Wire(any_sb, protocol)
    reply, _, _ = w.auth("ANONYMOUS", "trace@example.org", "")
    assert reply == SUCCESS[protocol]
    w.close()
    w = Wire(any_sb, protocol)  # after '334 ' / '+ ' too
    assert w.auth("ANONYMOUS", "", "", initial=False)[0] == SUCCESS[protocol]
    w.close()
    w = Wire(any_sb, protocol)
    w.send("AUTH ANONYMOUS " + base64.b64encode(b"x" * 256).decode())
    assert b"longer than 255 characters" in w.line()
    w.close()
    w = Wire(sb, protocol)  # published users only: refused
    assert w.auth("ANONYMOUS", "trace@example.org", "")[0] == FAILED[protocol]
    w.close()
    assert (any_sb.maildir_root / "anonymous").is_dir() and not (sb.maildir_root / "anonymous").exists()


# --------------------------------------------------------------------------- independent clients
def test_smtplib_cram_md5_plain_and_login(sb):
    for mechanism in ("CRAM-MD5", "PLAIN", "LOGIN"):
        with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=T) as s:
            s.ehlo()
            assert mechanism in s.esmtp_features["auth"].split()
            s.user, s.password = "alice", "wonderland"
            method = getattr(s, "auth_" + mechanism.lower().replace("-", "_"))
            assert s.auth(mechanism, method)[0] == 235
        with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=T) as s:
            s.ehlo()
            s.user, s.password = "alice", "wrong"
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                s.auth(mechanism, getattr(s, "auth_" + mechanism.lower().replace("-", "_")))
            assert e.value.smtp_code == 535
    with smtplib.SMTP(sb.host, sb.ports["smtp"], timeout=T) as s:
        s.login("bob", "builder")  # smtplib picks CRAM-MD5 first when offered
        s.sendmail("bob@mailrun.test", ["alice@mailrun.test"], b"Subject: cram\r\n\r\nx\r\n")


def test_cram_md5_digest_is_rfc_2195_hmac_md5(sb):
    w = Wire(sb, "pop3")
    w.send("AUTH CRAM-MD5")
    challenge = base64.b64decode(w.line()[2:])
    digest = hmac.new(b"builder", challenge, hashlib.md5).hexdigest()
    w.send(base64.b64encode(f"bob {digest}".encode()))
    assert w.line() == SUCCESS["pop3"]
    w.close()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
@pytest.mark.parametrize("password, ok", [("wonderland", True), ("nope-not-it", False)])
def test_swaks_cram_md5(sb, password, ok):
    r = subprocess.run(
        ["swaks", "--server", sb.host, "--port", str(sb.ports["smtp"]), "--auth", "CRAM-MD5",
         "--auth-user", "alice", "--auth-password", password, "--to", "bob@mailrun.test",
         "--from", "alice@mailrun.test", "--timeout", "5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    assert " -> AUTH CRAM-MD5" in r.stdout and "<-  334 " in r.stdout  # swaks computed the digest
    assert ("235 2.7.0 Authentication successful" in r.stdout) == ok
    if not ok:
        assert "535 5.7.8" in r.stdout


def test_no_response_breaks_a_server_mechanism(sb):
    """Sans-IO: arbitrary bytes at every stage give an Outcome (a challenge, a refusal or
    'malformed'), never an exception, and never a login."""
    import random

    from runner.sandbox.sasl import server_mechanism

    rng = random.Random(16)
    samples = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"=",
        b",",
        b"n,,",
        b"n,,n=,r=",
        b"\x01\x01",
        b"a b",
        "é".encode() * 40,
    ]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))) for _ in range(60)]
    for name in MECHANISMS:
        for first in samples:
            for second in samples[:12]:
                mech = server_mechanism(name, sb._state)
                outcome = mech.start(first if mech.initial_allowed else None)
                for response in (first, second, b"", second):
                    if outcome.done:
                        break
                    outcome = mech.step(response)
                assert outcome.mailbox is None, (name, first, second)
