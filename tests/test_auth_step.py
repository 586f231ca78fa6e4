"""The `auth:` step: SASL mechanisms (RFC test vectors), the whole exchange against real Dovecot
(IMAP AUTHENTICATE, POP3 AUTH) with every mechanism it offers, and the sandbox's SMTP AUTH;
a wrong password fails (exit 1) and no secret or value derived from it is shown anywhere."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runner.protocols.sasl import SASLError, client

REPO = Path(__file__).resolve().parent.parent
T = 30


# --------------------------------------------------------------------------- mechanisms
def test_scram_sha_256_matches_rfc_7677_and_verifies_the_server():
    mech = client("SCRAM-SHA-256", user="user", password="pencil")
    mech._nonce = "rOprNGfwEbeRWgbNEkqO"
    mech._first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert mech.initial() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert mech.respond(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert mech.finished() is not None  # not verified yet
    assert mech.respond(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") == b""
    assert mech.finished() is None


def test_scram_refuses_a_wrong_server_signature_and_a_foreign_nonce():
    mech = client("SCRAM-SHA-1", user="user", password="pencil")
    nonce = mech._nonce
    mech.respond(f"r={nonce}xyz,s=QSXCR+Q6sek8bf92,i=4096".encode())
    with pytest.raises(SASLError, match="signature is wrong"):
        mech.respond(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    other = client("SCRAM-SHA-1", user="user", password="pencil")
    with pytest.raises(SASLError, match="nonce"):
        other.respond(b"r=somebody-else,s=QSXCR+Q6sek8bf92,i=4096")


def test_cram_md5_matches_rfc_2195():
    mech = client("CRAM-MD5", user="tim", password="tanstaaftanstaaf")
    assert mech.initial() is None
    assert (
        mech.respond(b"<1896.697170952@postoffice.reston.mci.net>") == b"tim b913a602c7eda7a495b4e6e7334d3890"
    )


def test_plain_xoauth2_oauthbearer_external_anonymous():
    assert client("plain", user="u", password="p", authzid="z").initial() == b"z\0u\0p"
    assert client("XOAUTH2", user="u@x", token="t").initial() == b"user=u@x\x01auth=Bearer t\x01\x01"
    bearer = client("OAUTHBEARER", user="u@x", token="t", host="mail.x", port=587)
    assert bearer.initial() == b"n,a=u@x,\x01host=mail.x\x01port=587\x01auth=Bearer t\x01\x01"
    assert bearer.respond(b'{"status":"invalid_token"}') == b"\x01"
    assert client("EXTERNAL").initial() == b""
    assert client("ANONYMOUS", user="trace").initial() == b"trace"


# --------------------------------------------------------------------------- against real servers
def mailrun(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=T,
    )


def derived_forms(user: str, password: str) -> list[str]:
    """The secret and what mailrun derives from it for every mechanism: none may be shown."""
    return [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
        base64.b64encode(f"user={user}\x01auth=Bearer {password}\x01\x01".encode()).decode(),
        base64.b64encode(f"n,a={user},\x01auth=Bearer {password}\x01\x01".encode()).decode(),
        *base64_inside(password),
    ]


def base64_inside(secret: str) -> list[str]:
    """What the base64 of any bytes holding `secret` contains, for each of the three offsets the
    secret can start at (mod 3): the characters made of the secret's bits alone. So no response
    carrying it (whatever else it holds: OAUTHBEARER's host and port, an authzid) is shown whole."""
    data, out = secret.encode(), []
    for lead in range(3):
        text = base64.b64encode(bytes(lead) + data).decode()
        first, last = -(-8 * lead // 6), (8 * (lead + len(data)) - 6) // 6
        out.append(text[first : last + 1])
    return out


def test_base64_inside_finds_the_secret_at_every_offset():
    for prefix in ("", "a", "ab", "n,a=u@x,\x01host=127.0.0.1\x01port=143\x01auth=Bearer "):
        encoded = base64.b64encode(f"{prefix}Tok-en_42\x01\x01".encode()).decode()
        assert any(part in encoded for part in base64_inside("Tok-en_42")), prefix
    assert all(len(part) >= 10 for part in base64_inside("Tok-en_42"))


IMAP = """\
name: imap auth {mechanism}
protocol: imap
connect: {{host: 127.0.0.1, port: {port}}}
vars: {{user: "{user}", password: "{password}"}}
secrets: [password]
steps:
  - S: OK
  - auth: {{mechanism: {mechanism}, user: "{{{{ user }}}}", {key}: "{{{{ password }}}}"{extra}}}
{expect}  - C: LOGOUT
    S: OK
"""

POP3 = """\
name: pop3 auth {mechanism}
protocol: pop3
connect: {{host: 127.0.0.1, port: {port}}}
vars: {{user: "{user}", password: "{password}"}}
secrets: [password]
steps:
  - S: +OK
  - auth: {{mechanism: {mechanism}, user: "{{{{ user }}}}", {key}: "{{{{ password }}}}"{extra}}}
{expect}  - C: QUIT
    S: +OK
"""

MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"]


def run_auth(tmp_path, template, port, mechanism, user, password, extra="", expect=""):
    """Play the template's auth: step (`password`, or `token` for the bearer mechanisms)."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # each run's own reports and transcripts
    path = work / f"{mechanism}.yaml"
    key = "token" if "OAUTH" in mechanism else "password"
    path.write_text(
        template.format(
            port=port, mechanism=mechanism, user=user, password=password, extra=extra, expect=expect, key=key
        )
    )
    reports = (f"json={work / 'r.json'}", f"junit={work / 'r.xml'}")
    r = mailrun(path, "-v", "--report", reports[0], "--report", reports[1], "--transcript", work / "tr")
    outputs = [r.stdout, r.stderr, (work / "r.json").read_text(), (work / "r.xml").read_text()]
    transcripts = list((work / "tr").iterdir())
    assert transcripts, "no transcript written"
    outputs += [p.read_text() for p in transcripts]
    return r, "\n".join(outputs)


@pytest.mark.testbed
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_every_mechanism_against_dovecot(testbed, tmp_path, mechanism, protocol):
    user, password = testbed.address("alice"), testbed.users["alice"]
    template, port = (IMAP, testbed.ports["imap"]) if protocol == "imap" else (POP3, testbed.ports["pop3"])
    r, everything = run_auth(tmp_path, template, port, mechanism, user, password)
    assert r.returncode == 0, r.stdout + r.stderr
    for form in derived_forms(user, password):
        assert form not in everything
    if mechanism.startswith("SCRAM"):
        assert "challenge: r=" in r.stdout  # the server-first message, decoded


@pytest.mark.testbed
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_wrong_password_fails_and_shows_nothing_derived(testbed, tmp_path, mechanism, protocol):
    user = testbed.address("bob")
    template, port = (IMAP, testbed.ports["imap"]) if protocol == "imap" else (POP3, testbed.ports["pop3"])
    r, everything = run_auth(tmp_path, template, port, mechanism, user, "Wrong-Pass-42")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("NO [AUTHENTICATIONFAILED]" if protocol == "imap" else "-ERR [AUTH]") in r.stdout
    for form in derived_forms(user, "Wrong-Pass-42"):
        assert form not in everything


BEARER = ["XOAUTH2", "OAUTHBEARER"]
# how the exchange starts: the initial response inline (IMAP: Dovecot's greeting lists SASL-IR),
# or the command alone and the response to the server's empty `+` challenge
FORMS = {"inline": "", "challenged": ", initial_response: false"}


def started(protocol: str, mechanism: str, form: str, tag: str = "a1") -> str:
    """The first client line as `-v` shows it, for that form of the exchange."""
    verb = f"{tag} AUTHENTICATE" if protocol == "imap" else "AUTH"
    if form == "inline":
        return f"C: {verb} {mechanism} {'=' if mechanism == 'EXTERNAL' else '****'}\n"
    return f"C: {verb} {mechanism}\n        S: + \n"


def refused(protocol: str) -> str:
    return "NO [AUTHENTICATIONFAILED]" if protocol == "imap" else "-ERR [AUTH]"


@pytest.mark.testbed
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("mechanism", BEARER)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_bearer_tokens_against_dovecot(testbed, tmp_path, mechanism, protocol, form):
    """Dovecot's oauth2 passdb asks the bed's introspection endpoint about the token: the user's
    own token logs in; an unknown token, and another user's real token, are refused (exit 1);
    none is shown in any form, in the output, the JSON and JUnit reports or the transcript."""
    alice, bob = testbed.address("alice"), testbed.address("bob")
    template, port = (IMAP, testbed.ports["imap"]) if protocol == "imap" else (POP3, testbed.ports["pop3"])
    mismatch = f"Introspection failed: Username '{bob}' did not match '{alice}'"
    mismatches = testbed.logs().count(mismatch)
    cases = (
        (alice, testbed.oauth_token("alice"), 0),
        (alice, "not-the-token-42", 1),
        (bob, testbed.oauth_token("alice"), 1),  # a valid token, for someone else
    )
    for user, token, expected in cases:
        asked = testbed.introspections
        r, everything = run_auth(tmp_path, template, port, mechanism, user, token, extra=FORMS[form])
        assert r.returncode == expected, r.stdout + r.stderr
        assert testbed.introspections == asked + 1  # Dovecot's oauth2 passdb decided, nothing else
        assert started(protocol, mechanism, form) in r.stdout
        for form_shown in derived_forms(user, token):
            assert form_shown not in everything
        if expected:
            # the refusal's error challenge is decoded and answered; the server's NO/-ERR ends it
            assert f"# {mechanism} challenge: {{" in r.stdout
            assert refused(protocol) in r.stdout
    assert logged(testbed, mismatch, count=mismatches + 1)


@pytest.mark.testbed
@pytest.mark.parametrize("mechanism", BEARER)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_token_too_long_for_the_pop3_command_line_goes_after_the_challenge(
    testbed, tmp_path, mechanism, protocol
):
    """A JWT-sized token (about 1600 characters): POP3's AUTH line may not exceed 255 octets
    (RFC 5034, 2449), so it is the answer to Dovecot's empty `+`; IMAP has no such limit and
    SASL-IR carries it inline. Both log in, and the token is shown in no form."""
    user, token = testbed.address("alice"), testbed.oauth_token("alice", long=True)
    assert len(token) > 1500
    template, port = (IMAP, testbed.ports["imap"]) if protocol == "imap" else (POP3, testbed.ports["pop3"])
    asked = testbed.introspections
    r, everything = run_auth(tmp_path, template, port, mechanism, user, token)
    assert r.returncode == 0, r.stdout + r.stderr
    assert testbed.introspections == asked + 1
    assert started(protocol, mechanism, "inline" if protocol == "imap" else "challenged") in r.stdout
    for form in derived_forms(user, token):
        assert form not in everything


def tls_run(tmp_path, protocol: str, connect: str, steps: str, name: str) -> subprocess.CompletedProcess:
    """Play a session over TLS (`connect` holds the TLS keys) with `steps` after the greeting."""
    greeting, bye = ("OK", "LOGOUT") if protocol == "imap" else ("+OK", "QUIT")
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""\
name: {protocol} {name}
protocol: {protocol}
connect: {{host: localhost, {connect}}}
steps:
  - S: {greeting}
{steps}  - C: {bye}
"""
    )
    return mailrun(path, "-v")


EXTERNAL_FORMS = ["inline", "challenged", "starttls"]


@pytest.mark.testbed
@pytest.mark.parametrize("form", EXTERNAL_FORMS)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_external_against_dovecot_with_and_without_a_client_certificate(testbed, tmp_path, protocol, form):
    """EXTERNAL: Dovecot takes the user from the verified client certificate's commonName, over
    implicit TLS (the empty initial response inline, `=`, or after the `+`) and after STARTTLS/
    STLS (the capability list is dropped there, so IMAP cannot know of SASL-IR: no initial
    response). A certificate with the same name from another CA, or none, is refused (exit 1)."""
    login = f"{protocol}-login: Info: Login: user=<{testbed.address('bob')}>, method=EXTERNAL"
    logins = testbed.logs().count(login)
    if form == "starttls":
        connect = f"port: {testbed.ports[protocol]}, tls: starttls, ca: {testbed.ca_path}"
        upgrade = "STARTTLS" if protocol == "imap" else "STLS"
        steps = f"  - C: {upgrade}\n    S: {'OK' if protocol == 'imap' else '+OK'}\n    starttls: true\n"
        steps += "  - auth: {mechanism: EXTERNAL}\n"
        first = f"C: {'a2 AUTHENTICATE' if protocol == 'imap' else 'AUTH'} EXTERNAL\n        S: + \n"
        if protocol == "pop3":  # POP3 AUTH always may carry one (RFC 5034)
            first = "C: AUTH EXTERNAL =\n"
    else:
        connect = f"port: {testbed.ports[protocol + 's']}, tls: implicit, ca: {testbed.ca_path}"
        steps = f"  - auth: {{mechanism: EXTERNAL{FORMS[form]}}}\n"
        first = started(protocol, "EXTERNAL", form)
    cases = (
        (testbed.client_cert("bob"), 0),
        (testbed.foreign_client_cert("bob"), 1),  # the right name, from a CA Dovecot does not trust
        (None, 1),
    )
    for i, (pair, expected) in enumerate(cases):
        tls = f", client_cert: {pair[0]}, client_key: {pair[1]}" if pair else ""
        r = tls_run(tmp_path, protocol, connect + tls, steps, f"external-{i}")
        assert r.returncode == expected, r.stdout + r.stderr
        assert first in r.stdout, r.stdout
        if expected:
            assert refused(protocol) in r.stdout
    assert logged(testbed, login, count=logins + 1)  # the one with the bed's certificate


@pytest.mark.testbed
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_anonymous_against_dovecot(testbed, tmp_path, protocol, form):
    """ANONYMOUS: Dovecot logs the trace string and logs in as its anonymous user, never as the
    user the trace names (there is no credential to get wrong)."""
    port = testbed.ports[protocol]
    path = tmp_path / "anonymous.yaml"
    greeting, bye = ("OK", "LOGOUT") if protocol == "imap" else ("+OK", "QUIT")
    trace = f"{form}-{protocol}-{testbed.address('alice')}"
    login = f"{protocol}-login: Info: Login: user=<anonymous>, method=ANONYMOUS"
    logins = testbed.logs().count(login)
    path.write_text(
        f"""\
name: {protocol} auth ANONYMOUS
protocol: {protocol}
connect: {{host: 127.0.0.1, port: {port}}}
steps:
  - S: {greeting}
  - auth: {{mechanism: ANONYMOUS, user: {trace}{FORMS[form]}}}
  - C: {bye}
"""
    )
    r = mailrun(path, "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert started(protocol, "ANONYMOUS", form) in r.stdout
    assert logged(testbed, f"anonymous({trace},")
    assert logged(testbed, login, count=logins + 1)


def logged(testbed, text: str, within: float = 5.0, count: int = 1) -> bool:
    """Whether Dovecot's log shows `text`, at least `count` times (its log process writes a
    moment after the reply)."""
    deadline = time.monotonic() + within
    while testbed.logs().count(text) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.testbed
def test_pop3_auth_alone_lists_the_mechanisms_as_a_multi_line_reply(testbed, sandbox, tmp_path):
    """POP3 `AUTH` with no mechanism: Dovecot and the sandbox list their mechanisms, ended by
    `.`; the next command's reply is its own."""
    for port in (testbed.ports["pop3"], sandbox.ports["pop3"]):
        path = tmp_path / "auth-list.yaml"
        path.write_text(
            f"name: pop3 auth list\nprotocol: pop3\nconnect: {{host: 127.0.0.1, port: {port}}}\nsteps:\n"
            "  - S: +OK\n  - C: AUTH\n    S: {lines: [PLAIN]}\n  - C: QUIT\n    S: +OK\n"
        )
        r = mailrun(path, "-v")
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.testbed
def test_imap_initial_response_inline_when_asked(testbed, tmp_path):
    user, password = testbed.address("alice"), testbed.users["alice"]
    r, _ = run_auth(
        tmp_path, IMAP, testbed.ports["imap"], "PLAIN", user, password, extra=", initial_response: true"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "C: a1 AUTHENTICATE PLAIN ****" in r.stdout


def test_smtp_auth_against_the_sandbox_with_a_custom_final_pattern(tmp_path):
    from runner.sandbox.server import Sandbox

    with Sandbox(accept_any_login=True) as sb:
        for mechanism, extra in (
            ("PLAIN", "password: s3cret-Value"),
            ("LOGIN", "password: s3cret-Value"),
            ("XOAUTH2", "token: ya29.s3cret-Token"),
        ):
            path = tmp_path / f"{mechanism}.yaml"
            path.write_text(
                f"""\
name: smtp auth {mechanism}
protocol: smtp
connect: {{host: 127.0.0.1, port: {sb.ports["smtp"]}}}
steps:
  - S: 220
  - C: EHLO me
    S: 250
  - auth: {{mechanism: {mechanism}, user: carol@mailrun.test, {extra}}}
    S: 235 2.7.0
  - C: QUIT
    S: 221
"""
            )
            r = mailrun(path, "-v")
            assert r.returncode == 0, r.stdout + r.stderr
            secret = extra.split(": ", 1)[1]
            assert secret not in r.stdout + r.stderr  # masked though not listed under secrets:
            assert base64.b64encode(secret.encode()).decode() not in r.stdout


def test_credentials_in_the_clear_to_a_remote_host_are_refused_before_connecting(tmp_path):
    path = tmp_path / "remote.yaml"
    path.write_text(
        """\
name: remote
protocol: smtp
connect: {host: 192.0.2.10, port: 25, connect_timeout: 1}
steps:
  - S: 220
  - auth: {mechanism: PLAIN, user: u, password: p}
"""
    )
    r = mailrun(path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to send a secret unencrypted to 192.0.2.10" in r.stdout + r.stderr


@pytest.mark.parametrize(
    "step, message",
    [
        ("{mechanism: MD7, user: u, password: p}", "unknown SASL mechanism 'MD7'"),
        ("{mechanism: SCRAM-SHA-256, user: u}", "auth with SCRAM-SHA-256 needs user and password"),
        ("{mechanism: XOAUTH2, user: u, password: p}", "XOAUTH2 takes a token, not a password"),
    ],
)
def test_auth_mistakes_are_load_errors(tmp_path, step, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nprotocol: smtp\nconnect: {{host: 127.0.0.1}}\nsteps:\n  - auth: {step}\n")
    r = mailrun("validate", path)
    assert r.returncode == 2 and message in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.testbed
def test_a_mechanism_the_server_does_not_offer_fails_naming_what_it_offers(testbed, tmp_path):
    path = tmp_path / "cram.yaml"
    path.write_text(
        f"""\
name: not offered
protocol: smtp
connect: {{host: 127.0.0.1, port: {testbed.ports["smtp"]}}}
steps:
  - S: 220
  - C: EHLO client.example.test
    S: 250
  - auth: {{mechanism: CRAM-MD5, user: alice@example.test, password: wonderland}}
  - C: QUIT
    S: 221
"""
    )
    r = mailrun(path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the server does not offer CRAM-MD5 (it offers LOGIN PLAIN)" in r.stdout


@pytest.mark.testbed
def test_imap_sends_the_initial_response_inline_when_sasl_ir_is_advertised(testbed, tmp_path):
    user, password = testbed.address("alice"), testbed.users["alice"]
    r, _ = run_auth(tmp_path, IMAP, testbed.ports["imap"], "PLAIN", user, password)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "C: a1 AUTHENTICATE PLAIN ****" in r.stdout  # Dovecot's greeting lists SASL-IR
    r, _ = run_auth(
        tmp_path, IMAP, testbed.ports["imap"], "PLAIN", user, password, extra=", initial_response: false"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "C: a1 AUTHENTICATE PLAIN\n" in r.stdout


# --------------------------------------------------------------------------- against the sandbox
SANDBOX_AUTH = """\
name: sandbox auth {mechanism}
protocol: %(protocol)s
connect: {{host: 127.0.0.1, port: {port}}}
vars: {{user: "{user}", password: "{password}"}}
secrets: [password]
steps:
  - S: %(greeting)s
%(hello)s  - auth: {{mechanism: {mechanism}, user: "{{{{ user }}}}", {key}: "{{{{ password }}}}"{extra}}}
{expect}  - C: QUIT
    S: %(bye)s
"""
SANDBOX_MECHANISMS = [*MECHANISMS, "XOAUTH2", "OAUTHBEARER"]


@pytest.fixture(scope="module")
def sandbox():
    from runner.sandbox.server import Sandbox

    with Sandbox() as sb:  # published users only: a wrong password fails for every mechanism
        yield sb


def sandbox_auth(tmp_path, sb, protocol: str, mechanism: str, password: str):
    template = SANDBOX_AUTH % {
        "protocol": protocol,
        "greeting": "220" if protocol == "smtp" else "+OK",
        "hello": "  - C: EHLO client.example.test\n    S: 250\n" if protocol == "smtp" else "",
        "bye": "221" if protocol == "smtp" else "+OK",
    }
    user = "alice@mailrun.test"
    r, everything = run_auth(tmp_path, template, sb.ports[protocol], mechanism, user, password)
    return r, everything, derived_forms(user, password)


@pytest.mark.parametrize("mechanism", SANDBOX_MECHANISMS)
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_every_mechanism_against_the_sandbox(sandbox, tmp_path, protocol, mechanism):
    r, everything, forms = sandbox_auth(tmp_path, sandbox, protocol, mechanism, "wonderland")
    assert r.returncode == 0, r.stdout + r.stderr
    for form in forms:
        assert form not in everything
    if mechanism.startswith("SCRAM"):
        assert "challenge: r=" in r.stdout  # the server-first message, decoded
        # the server's signature is derived from the password: masked in the note as on the wire
        assert "challenge: v=" not in everything and f"{mechanism} challenge: ****" in r.stdout


@pytest.mark.parametrize("mechanism", SANDBOX_MECHANISMS)
@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_a_wrong_password_against_the_sandbox_fails_and_shows_nothing_derived(
    sandbox, tmp_path, protocol, mechanism
):
    r, everything, forms = sandbox_auth(tmp_path, sandbox, protocol, mechanism, "Wrong-Pass-42")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("535 5.7.8" if protocol == "smtp" else "-ERR [AUTH]") in r.stdout
    for form in forms:
        assert form not in everything


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_external_against_the_sandbox_with_and_without_a_client_certificate(sandbox, tmp_path, protocol):
    cert, key = sandbox.client_cert("bob")
    hello = "  - C: EHLO client.example.test\n    S: 250\n" if protocol == "smtp" else ""
    for with_cert, expected in ((True, 0), (False, 1)):
        tls = f"client_cert: {cert}, client_key: {key}" if with_cert else "tls_verify: true"
        path = tmp_path / f"external-{with_cert}.yaml"
        path.write_text(
            f"""\
name: {protocol} auth EXTERNAL
protocol: {protocol}
connect: {{host: localhost, port: {sandbox.ports[protocol + "s"]}, tls: implicit, ca: {sandbox.ca_path}, {tls}}}
steps:
  - S: {"220" if protocol == "smtp" else "+OK"}
{hello}  - auth: {{mechanism: EXTERNAL}}
  - C: QUIT
"""
        )
        r = mailrun(path, "-v")
        assert r.returncode == expected, r.stdout + r.stderr
        assert "C: AUTH EXTERNAL =" in r.stdout  # the empty initial response: the certificate's identity


def test_anonymous_against_the_sandbox_only_where_any_login_is_accepted(sandbox, tmp_path):
    from runner.sandbox.server import Sandbox

    path = tmp_path / "anonymous.yaml"
    with Sandbox(accept_any_login=True) as any_sb:
        for sb, expected in ((any_sb, 0), (sandbox, 1)):
            path.write_text(
                f"""\
name: pop3 auth ANONYMOUS
protocol: pop3
connect: {{host: 127.0.0.1, port: {sb.ports["pop3"]}}}
steps:
  - S: +OK
  - auth: {{mechanism: ANONYMOUS, user: trace@example.org}}
  - C: QUIT
"""
            )
            r = mailrun(path, "-v")
            assert r.returncode == expected, r.stdout + r.stderr
            assert "C: AUTH ANONYMOUS ****" in r.stdout  # (mailrun masks every SASL response)


def one_auth(tmp_path, sb, protocol: str, auth: str) -> subprocess.CompletedProcess:
    """One `auth:` step (its mapping's inside) against the sandbox's SMTP or POP3."""
    greeting, hello = (
        ("220", "  - C: EHLO client.example.test\n    S: 250\n") if protocol == "smtp" else ("+OK", "")
    )
    path = tmp_path / "one.yaml"
    path.write_text(
        f"""\
name: {protocol} auth
protocol: {protocol}
connect: {{host: 127.0.0.1, port: {sb.ports[protocol]}}}
steps:
  - S: {greeting}
{hello}  - auth: {{{auth}}}
  - C: QUIT
"""
    )
    return mailrun(path, "-v")


@pytest.mark.parametrize("protocol, limit", [("smtp", 512), ("pop3", 255)])
def test_the_initial_response_goes_inline_only_within_the_command_line_limit(tmp_path, protocol, limit):
    """RFC 4954 and 5034: an AUTH line with its initial response may not exceed the protocol's
    command line (512 octets with CRLF for SMTP, 255 for POP3); a longer one is sent as the answer
    to the server's empty challenge. The sandbox's POP3, lenient to 1024 octets, says `-ERR Line
    too long.` to a real-sized token inline (`initial_response: true` still forces it there)."""
    from runner.sandbox.server import Sandbox

    challenge = "334 " if protocol == "smtp" else "+ "
    user = "carol@mailrun.test"
    # `AUTH PLAIN ` + base64 + CRLF: the longest that fits, and the next longer base64
    fits = (limit - len("AUTH PLAIN ") - 2) // 4 * 3 - len(f"\0{user}\0")
    with Sandbox(accept_any_login=True) as sb:
        for size, inline in ((fits, True), (fits + 1, False)):
            r = one_auth(tmp_path, sb, protocol, f"mechanism: PLAIN, user: {user}, password: {'p' * size}")
            assert r.returncode == 0, r.stdout + r.stderr
            assert ("C: AUTH PLAIN ****\n" in r.stdout) is inline, r.stdout
            assert (f"C: AUTH PLAIN\n        S: {challenge}\n" in r.stdout) is not inline, r.stdout
        token = "eyJ" + "tOkEn-" * 300  # an identity provider's JWT is 1.5-2.5 KB
        for forced, expected in (("", 0), (", initial_response: true", 1 if protocol == "pop3" else 0)):
            r = one_auth(tmp_path, sb, protocol, f"mechanism: XOAUTH2, user: {user}, token: {token}{forced}")
            assert r.returncode == expected, r.stdout + r.stderr
            assert ("C: AUTH XOAUTH2 ****\n" in r.stdout) is bool(forced)
            if expected:
                assert "S: -ERR Line too long." in r.stdout
            for form in derived_forms(user, token):
                assert form not in r.stdout + r.stderr


def test_a_server_that_challenges_on_and_on_gets_the_exchange_cancelled(tmp_path):
    """LOGIN answers two challenges; a third is cancelled with `*` and fails the step (exit 1),
    instead of the password going out again and again until the deadline."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    lines: list[bytes] = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"220 x ESMTP\r\n")
            f = conn.makefile("rb")
            conn.sendall(b"250-x\r\n250 AUTH LOGIN\r\n") if f.readline() else None
            while True:
                line = f.readline()
                if not line:
                    return
                lines.append(line)
                if line.strip() == b"*":
                    conn.sendall(b"501 5.7.0 cancelled\r\n")
                elif line.upper().startswith(b"QUIT"):
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"334 UGFzc3dvcmQ6\r\n")

    threading.Thread(target=serve, daemon=True).start()
    path = tmp_path / "loop.yaml"
    path.write_text(
        f"""\
name: challenge loop
protocol: smtp
connect: {{host: 127.0.0.1, port: {port}, timeout: 5}}
steps:
  - S: 220
  - C: EHLO me
    S: 250
  - auth: {{mechanism: LOGIN, user: alice, password: "Loop-secret-9"}}
finally:
  - C: QUIT
    S: 221
"""
    )
    try:
        r = mailrun(path, "-v")
    finally:
        srv.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the server sent challenge 3, but LOGIN has at most 2: the exchange was cancelled" in r.stdout
    secret = base64.b64encode(b"Loop-secret-9")
    # (it asked for the password each time: answered twice, LOGIN's most, then cancelled)
    assert sum(1 for line in lines if line.strip() == secret) == 2 and lines[-2].strip() == b"*"
    assert "Loop-secret-9" not in r.stdout
