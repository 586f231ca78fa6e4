"""End to end: the same scenarios over the socket, telnet and openssl transports.

Issue 4's acceptance tests. Everything runs for real: the `mailrun` command line (in process, and
as a subprocess where PATH matters) or the engine, the system `telnet` and `openssl s_client`
binaries, the Postfix/Dovecot test bed (tests/servers/testbed.py) and loopback helper servers
(tests/support/servers.py).

How verdicts are compared across transports ("same per-step verdicts")
  Each run writes a JSON report (`--report json=PATH`); a run's verdicts are its steps' statuses
  in order (section, index, status) plus the exit status. Two runs of one scenario on different
  transports must give equal lists and equal exit statuses, and the reply codes of passed steps
  must be equal too. The one allowed difference: with `tls: starttls` on openssl, openssl
  s_client -starttls does the plaintext part itself, so every step up to and including the
  `starttls: true` step is `skipped` with a reason naming `openssl s_client -starttls PROTO`
  (never `passed`), the rest must match the socket run, and the exit status stays 0.
"""

from __future__ import annotations

import email
import itertools
import json
import os
import re
import smtplib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runner.cli import main as cli
from runner.engine.run import Engine, RunOptions
from runner.load.api import load_scenario
from tests.support.servers import PKI, Conn, Server, close_mid_reply, record, scripted, silent

T = 10  # seconds: every network wait in this file
CHATTER = ("Trying ", "Connected to ", "Escape character is", "Connection closed by foreign host")
telnet = pytest.mark.telnet
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


class Run:
    """One `mailrun` invocation: exit status, console output, parsed JSON report."""

    def __init__(self, rc: int, out: str, err: str, report: dict | None):
        self.rc = rc
        self.out = out
        self.err = err
        self.report = report

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def steps(self) -> list[dict]:
        assert self.report is not None, f"no JSON report written (exit {self.rc}):\n{self.text}"
        return [st for sc in self.report["scenarios"] for st in sc["steps"]]

    @property
    def verdicts(self) -> list[tuple[str, int, str]]:
        return [(st["section"], st["index"], st["status"]) for st in self.steps]

    @property
    def codes(self) -> list[str | None]:
        return [(st["reply"] or {}).get("code") if st["status"] == "passed" else None for st in self.steps]

    def __repr__(self) -> str:  # shown by pytest when an assertion on a Run fails
        return f"Run(rc={self.rc}, verdicts={self.verdicts if self.report else None})\n{self.text}"


_counter = itertools.count(1)


@pytest.fixture
def mailrun(tmp_path, capsys):
    """`mailrun(scenario, *args)` -> Run: the command line in this process, with a JSON report."""

    def run(scenario: Path, *args: str) -> Run:
        report = tmp_path / f"report-{next(_counter)}.json"
        capsys.readouterr()
        rc = cli.main([str(scenario), *args, "--report", f"json={report}"])
        out, err = capsys.readouterr()
        data = json.loads(report.read_text()) if report.exists() else None
        return Run(rc, out, err, data)

    return run


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def assert_all_passed(run: Run, steps: int) -> None:
    assert run.rc == 0, run
    assert [v[2] for v in run.verdicts] == ["passed"] * steps, run


def assert_same_verdicts(reference: Run, other: Run) -> None:
    assert other.rc == reference.rc, (reference, other)
    assert other.verdicts == reference.verdicts, (reference, other)
    assert other.codes == reference.codes, (reference, other)


def assert_openssl_starttls_verdicts(socket_run: Run, openssl_run: Run, protocol: str, upto: int) -> None:
    """The openssl -starttls comparison: steps 1..upto skipped with the reason, the rest equal."""
    assert openssl_run.rc == socket_run.rc == 0, (socket_run, openssl_run)
    assert len(openssl_run.steps) == len(socket_run.steps), (socket_run, openssl_run)
    for st in openssl_run.steps[:upto]:
        assert st["section"] == "steps" and st["status"] == "skipped", openssl_run
        assert f"openssl s_client -starttls {protocol}" in st["reason"], st
    assert "STARTTLS" in openssl_run.steps[upto - 1]["reason"]
    assert socket_run.verdicts[:upto] == [("steps", i, "passed") for i in range(1, upto + 1)], socket_run
    assert openssl_run.verdicts[upto:] == socket_run.verdicts[upto:], (socket_run, openssl_run)
    assert openssl_run.codes[upto:] == socket_run.codes[upto:], (socket_run, openssl_run)
    assert openssl_run.report["scenarios"][0]["status"] == "passed"


# --------------------------------------------------------------------------- scenarios


def smtp_send_scenario(tls: str) -> str:
    """AUTH LOGIN and a message with a leading-dot line to alice; subject from --var subject=."""
    if tls == "starttls":
        hello = r"""  - C: EHLO client.example
    S: {code: 250, lines: ['^250[- ]STARTTLS$']}
  - C: STARTTLS
    S: 220
    starttls: true
  - C: EHLO client.example
    S: {code: 250, lines: ['^250[- ]AUTH\b.*\bLOGIN\b']}
"""
    else:
        hello = r"""  - C: EHLO client.example
    S: {code: 250, lines: ['^250[- ]AUTH\b.*\bLOGIN\b']}
"""
    return (
        f"""name: e2e smtp send ({tls})
protocol: smtp
connect: {{host: 127.0.0.1, port: 25, tls: {tls}}}
vars: {{user: alice@example.test, password: wonderland, subject: unset}}
secrets: [password]
steps:
  - S: 220
    name: greeting
"""
        + hello
        + """  - C: AUTH LOGIN
    S: 334 VXNlcm5hbWU6
  - C: "{{ user | b64 }}"
    S: 334 UGFzc3dvcmQ6
  - C: "{{ password | b64 }}"
    S: 235
  - C: "MAIL FROM:<{{ user }}>"
    S: 250
  - C: "RCPT TO:<{{ user }}>"
    S: 250
  - C: DATA
    S: 354
  - body: |
      From: <{{ user }}>
      To: <{{ user }}>
      Subject: {{ subject }}

      Hello.
      .a line that starts with a dot
      ..and one with two
      Bye.
    S: 250
    capture: {queue_id: 'queued as ([A-Za-z0-9]+)'}
finally:
  - C: QUIT
    S: 221
  - S: EOF
"""
    )


POP3_SCENARIO = r"""name: e2e pop3 retr ({tls})
protocol: pop3
connect: {{host: 127.0.0.1, port: 110, tls: {tls}}}
vars: {{user: bob, password: builder, subject: unset}}
secrets: [password]
steps:
  - S: +OK
    name: greeting
{stls}  - C: "USER {{{{ user }}}}"
    S: +OK
  - C: "PASS {{{{ password }}}}"
    S: +OK
  - C: RETR 1
    S:
      code: +OK
      lines: ['^Subject: {{{{ subject }}}}$', '^\.a line that starts with a dot$', '^\.\.and one with two$']
      not: {{re: '^\.\.a line'}}
finally:
  - C: QUIT
    S: +OK
  - S: EOF
"""
POP3_STLS = """  - C: STLS
    S: +OK
    starttls: true
"""

IMAP_SCENARIO = r"""name: e2e imap fetch ({tls})
protocol: imap
connect: {{host: 127.0.0.1, port: 143, tls: {tls}}}
vars: {{user: bob, password: builder, subject: unset}}
secrets: [password]
steps:
  - S: OK
    name: greeting
{stls}  - C: "LOGIN {{{{ user }}}} {{{{ password }}}}"
    S: OK
  - C: SELECT INBOX
    S: OK
  - C: FETCH 1 BODY.PEEK[]
    S:
      code: OK
      re: 'BODY\[\] \{{\d+\}}'
      lines: ['^Subject: {{{{ subject }}}}$', '^\.a line that starts with a dot$', '^\.\.and one with two$']
finally:
  - C: LOGOUT
    S: OK
  - S: EOF
"""
IMAP_STLS = """  - C: STARTTLS
    S: OK
    starttls: true
"""


def mailbox_scenario(template: str, stls: str, tls: str) -> str:
    return template.format(tls=tls, stls=stls if tls == "starttls" else "")


# --------------------------------------------------------------------------- SMTP AUTH send

# mode -> (port name, transports that can do it)
SMTP_MODES = {
    "none": ("smtp", ["socket", "telnet"]),
    "starttls": ("submission", ["socket", "openssl"]),
    "implicit": ("smtps", ["socket", "openssl"]),
}


def _subject_of(raw: bytes) -> str | None:
    return email.message_from_bytes(raw)["Subject"]


@pytest.mark.parametrize("tls", [pytest.param(m, marks=[telnet] if m == "none" else []) for m in SMTP_MODES])
def test_smtp_auth_send_same_verdicts_on_every_transport(testbed, mailrun, tmp_path, tls):
    port_name, transports = SMTP_MODES[tls]
    scenario = write(tmp_path, f"smtp_{tls}.yaml", smtp_send_scenario(tls))
    runs, subjects = {}, {}
    for transport in transports:
        subjects[transport] = f"e2e smtp {tls} {transport} {uuid.uuid4().hex}"
        runs[transport] = mailrun(
            scenario,
            "--transport",
            transport,
            "--port",
            str(testbed.ports[port_name]),
            "--ca",
            testbed.ca_path,
            "--var",
            f"subject={subjects[transport]}",
        )
    socket_run = runs["socket"]
    steps = 13 if tls == "starttls" else 11
    assert_all_passed(socket_run, steps)
    other = next(t for t in transports if t != "socket")
    if tls == "starttls":
        assert_openssl_starttls_verdicts(socket_run, runs[other], "smtp", upto=3)
    else:
        assert_same_verdicts(socket_run, runs[other])
    assert runs[other].report["scenarios"][0]["sessions"][0]["transport"] == other
    # The password never shows, not even base64 encoded.
    for run in runs.values():
        for secret in ("wonderland", "d29uZGVybGFuZA=="):
            assert secret not in run.text and secret not in json.dumps(run.report)
    # Every run delivered its message, the dot-stuffed lines restored by the server.
    for transport, subject in subjects.items():
        raw = testbed.wait_for_message("alice", lambda data, s=subject: _subject_of(data) == s, timeout=T)
        body = raw.replace(b"\r\n", b"\n")
        assert b"\n.a line that starts with a dot\n" in body, (transport, raw)
        assert b"\n..and one with two\n" in body, (transport, raw)


# --------------------------------------------------------------------------- POP3 RETR, IMAP FETCH


@pytest.fixture(scope="module")
def bob_message(testbed) -> str:
    """bob's mailbox holds exactly one message (with dot-stuffed lines on the wire); its subject."""
    testbed.clear_mailbox("bob")
    subject = f"e2e for bob {uuid.uuid4().hex}"
    msg = (
        f"From: <alice@example.test>\r\nTo: <bob@example.test>\r\nSubject: {subject}\r\n\r\n"
        "Hello bob.\r\n.a line that starts with a dot\r\n..and one with two\r\nBye.\r\n"
    )
    with smtplib.SMTP(testbed.host, testbed.ports["smtp"], timeout=T) as s:
        s.sendmail("alice@example.test", ["bob@example.test"], msg.encode())
    testbed.wait_for_message("bob", lambda data: _subject_of(data) == subject, timeout=T)
    assert len(testbed.messages("bob")) == 1
    return subject


MAILBOX_MODES = {
    # protocol: {tls: (port name, transports)}
    "pop3": {
        "none": ("pop3", ["socket", "telnet"]),
        "implicit": ("pop3s", ["socket", "openssl"]),
        "starttls": ("pop3", ["socket", "openssl"]),
    },
    "imap": {
        "none": ("imap", ["socket", "telnet"]),
        "implicit": ("imaps", ["socket", "openssl"]),
        "starttls": ("imap", ["socket", "openssl"]),
    },
}
MAILBOX_CASES = [
    pytest.param(proto, tls, marks=[telnet] if tls == "none" else [], id=f"{proto}-{tls}")
    for proto, modes in MAILBOX_MODES.items()
    for tls in modes
]


@pytest.mark.parametrize(("protocol", "tls"), MAILBOX_CASES)
def test_mailbox_read_same_verdicts_on_every_transport(
    testbed, bob_message, mailrun, tmp_path, protocol, tls
):
    """POP3 RETR of a message whose lines are dot-stuffed on the wire; IMAP FETCH of it as a literal."""
    template, stls = (POP3_SCENARIO, POP3_STLS) if protocol == "pop3" else (IMAP_SCENARIO, IMAP_STLS)
    scenario = write(tmp_path, f"{protocol}_{tls}.yaml", mailbox_scenario(template, stls, tls))
    port_name, transports = MAILBOX_MODES[protocol][tls]
    runs = {
        t: mailrun(
            scenario,
            "--transport",
            t,
            "--port",
            str(testbed.ports[port_name]),
            "--ca",
            testbed.ca_path,
            "--var",
            f"subject={bob_message}",
        )
        for t in transports
    }
    socket_run = runs["socket"]
    assert_all_passed(socket_run, 7 if tls == "starttls" else 6)
    other = transports[1]
    if tls == "starttls":
        assert_openssl_starttls_verdicts(socket_run, runs[other], protocol, upto=2)
    else:
        assert_same_verdicts(socket_run, runs[other])
    # The message as the protocol delivered it is the same on both transports (IMAP: the untagged
    # FETCH response with its literal; the tagged line's tag and timing text may differ).
    fetch = -3  # the RETR / FETCH step (then QUIT/LOGOUT and EOF)
    keep = slice(None) if protocol == "pop3" else slice(None, -1)
    got = runs[other].steps[fetch]["reply"]["lines"][keep]
    assert got == socket_run.steps[fetch]["reply"]["lines"][keep]
    assert f"Subject: {bob_message}" in got
    for run in runs.values():
        assert "builder" not in run.text and "builder" not in json.dumps(run.report)


# --------------------------------------------------------------------------- failure classes

EVERY_TRANSPORT = ["socket", pytest.param("telnet", marks=telnet), "openssl"]


def _tls_args(transport: str, pki: PKI) -> list[str]:
    """openssl cannot do plaintext: it runs against the TLS twin of the helper server."""
    return ["--tls", "implicit", "--ca", str(pki.ca_file)] if transport == "openssl" else []


def _server(handler, transport: str, pki: PKI) -> Server:
    return Server(handler, tls=pki.server_context() if transport == "openssl" else None)


GREET_EHLO = """name: greet and ehlo
protocol: smtp
connect: {host: 127.0.0.1, port: 25, tls: none}
steps:
  - S: 220
  - C: EHLO client.example
    S: 250
"""


@pytest.mark.parametrize("transport", EVERY_TRANSPORT)
def test_refused_port_is_exit_3(mailrun, tmp_path, free_port, pki, transport):
    scenario = write(tmp_path, "refused.yaml", GREET_EHLO)
    run = mailrun(scenario, "--transport", transport, "--port", str(free_port()), *_tls_args(transport, pki))
    assert run.rc == 3, run
    sc = run.report["scenarios"][0]
    assert sc["status"] == "error" and sc["exit_class"] == 3
    assert "refused" in sc["sessions"][0]["reason"], sc
    assert run.steps == []  # nothing was played


@pytest.mark.parametrize("transport", EVERY_TRANSPORT)
def test_server_closing_mid_reply_is_exit_3(mailrun, tmp_path, pki, transport):
    scenario = write(tmp_path, "midreply.yaml", GREET_EHLO)
    with _server(close_mid_reply(b"220 ready\r\n", b"250-first\r\n250-sec"), transport, pki) as srv:
        run = mailrun(
            scenario,
            "--transport",
            transport,
            "--port",
            str(srv.port),
            "--timeout",
            "5",
            *_tls_args(transport, pki),
        )
        assert srv.wait_connection(timeout=T).wait_received(b"EHLO client.example\r\n", T)
    assert run.rc == 3, run
    assert run.verdicts == [("steps", 1, "passed"), ("steps", 2, "error")], run
    assert run.steps[1]["exit_class"] == 3
    assert "closed" in run.steps[1]["reason"], run.steps[1]


@pytest.mark.parametrize("transport", EVERY_TRANSPORT)
def test_deadline_with_a_silent_server_is_exit_3(mailrun, tmp_path, pki, transport):
    scenario = write(tmp_path, "silent.yaml", GREET_EHLO)
    with _server(silent(hold=T), transport, pki) as srv:
        started = time.monotonic()
        run = mailrun(
            scenario,
            "--transport",
            transport,
            "--port",
            str(srv.port),
            "--timeout",
            "0.5",
            *_tls_args(transport, pki),
        )
        took = time.monotonic() - started
        srv.wait_connection(timeout=T)
    assert run.rc == 3, run
    assert run.verdicts == [("steps", 1, "error"), ("steps", 2, "skipped")], run
    assert "deadline" in run.steps[0]["reason"], run.steps[0]
    assert took < 5, f"a 0.5 s deadline took {took:.1f} s"


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_an_untrusted_server_certificate_is_exit_3_with_the_ca_hint(testbed, mailrun, tmp_path, transport):
    """Postfix's certificate is from the test bed's throwaway CA, which nothing trusts without
    --ca: both transports refuse it in the same words, hint included; with --ca it passes."""
    scenario = write(tmp_path, "untrusted.yaml", GREET_EHLO)
    args = ["--transport", transport, "--port", str(testbed.ports["smtps"]), "--tls", "implicit"]
    run = mailrun(scenario, *args)
    assert run.rc == 3, run
    reason = run.report["scenarios"][0]["sessions"][0]["reason"]
    assert "certificate verify failed: unable to get local issuer certificate" in reason, reason
    assert "the server's CA is not trusted: give its CA certificate with --ca FILE" in reason, reason
    assert "give its CA certificate with --ca FILE" in run.out, run
    assert run.steps == []  # nothing was played
    assert mailrun(scenario, *args, "--ca", testbed.ca_path).rc == 0


WRONG_CODE = """name: wrong expected code
protocol: smtp
connect: {host: 127.0.0.1, port: 25, tls: none}
steps:
  - S: 220
  - C: EHLO client.example
    S: 550
finally:
  - C: QUIT
    S: 221
"""


@pytest.mark.parametrize("transport", EVERY_TRANSPORT)
def test_wrong_expected_code_is_exit_1(testbed, mailrun, tmp_path, transport):
    scenario = write(tmp_path, "wrong.yaml", WRONG_CODE)
    port = testbed.ports["smtps" if transport == "openssl" else "smtp"]
    tls = ["--tls", "implicit", "--ca", testbed.ca_path] if transport == "openssl" else []
    run = mailrun(scenario, "--transport", transport, "--port", str(port), *tls)
    assert run.rc == 1, run
    assert run.verdicts == [("steps", 1, "passed"), ("steps", 2, "failed"), ("finally", 1, "passed")], run
    assert run.steps[1]["reply"]["code"] == "250"
    assert "550" in run.steps[1]["expected"]


@telnet
@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_asked_of_telnet_is_refused_before_connecting(mailrun, tmp_path, tls):
    text = GREET_EHLO + ("  - C: STARTTLS\n    S: 220\n    starttls: true\n" if tls == "starttls" else "")
    scenario = write(tmp_path, "tls_telnet.yaml", text.replace("tls: none", f"tls: {tls}"))
    with Server(record()) as srv:
        run = mailrun(scenario, "--transport", "telnet", "--port", str(srv.port))
        time.sleep(0.2)  # a connect, had one been made, would have been accepted by now
        assert srv.conns == [], "telnet connected although TLS was asked of it"
    assert run.rc == 2, run
    reason = run.report["scenarios"][0]["sessions"][0]["reason"]
    assert "telnet" in reason and "TLS" in reason, reason
    assert "transport: socket" in reason and "transport: openssl" in reason, reason
    assert run.steps == []


RAW_FF = """name: raw 0xff through telnet
protocol: smtp
connect: {host: 127.0.0.1, port: 25, tls: none}
steps:
  - S: 220
  - C: HELO client.example
    S: 250
  - raw: !!binary /w==
    S: 250
  - C: NOOP
    S: 250
"""


@telnet
def test_raw_0xff_on_telnet_is_refused_and_nothing_is_sent(mailrun, tmp_path):
    scenario = write(tmp_path, "raw_ff.yaml", RAW_FF)
    with Server(scripted(b"220 hi\r\n", {b"*": b"250 ok\r\n"})) as srv:
        run = mailrun(scenario, "--transport", "telnet", "--port", str(srv.port))
        received = srv.wait_connection(timeout=T).wait_closed(T)
    assert run.rc == 2, run
    assert run.verdicts == [
        ("steps", 1, "passed"),
        ("steps", 2, "passed"),
        ("steps", 3, "error"),
        ("steps", 4, "skipped"),
    ], run
    reason = run.steps[2]["reason"]
    assert "0xff" in reason and "telnet" in reason and "transport: socket" in reason, reason
    assert run.steps[2]["exit_class"] == 2
    # The line before went out; of the refused step (and anything after) not a byte.
    assert received == b"HELO client.example\r\n"


POP3_REFUSED_RAW = """name: a refused raw step leaves POP3 as it was
protocol: pop3
connect: {host: 127.0.0.1, port: 110, tls: none, timeout: 3}
steps:
  - S: +OK
  - raw: "RETR 1\\n"
    S: +OK
finally:
  - C: QUIT
    S: +OK
"""


@telnet
def test_a_step_telnet_refuses_is_never_told_to_the_protocol(tmp_path):
    """telnet cannot send the bare LF exactly: the step is refused before POP3 records it. Had
    POP3 recorded the RETR, it would take QUIT's single-line +OK for the start of RETR's
    multi-line answer and wait for a body that never comes."""
    scenario = load_scenario(write(tmp_path, "pop3_refused.yaml", POP3_REFUSED_RAW), use_cache=False)
    with Server(scripted(b"+OK hi\r\n", {b"QUIT": b"+OK bye\r\n"})) as srv:
        result = Engine(RunOptions(overrides={"port": srv.port, "transport": "telnet"}), lambda e: None).run(
            scenario
        )
        received = srv.wait_connection(timeout=T).wait_closed(T)
    assert [(s.section, s.index, s.status) for s in result.steps] == [
        ("steps", 1, "passed"),
        ("steps", 2, "error"),
        ("finally", 1, "passed"),
    ], [(s.index, s.status, s.reason) for s in result.steps]
    assert "bare LF" in result.steps[1].reason and result.steps[1].exit_class == 2
    assert result.exit_class == 2
    assert received == b"QUIT\r\n"


LAST_LINE = """name: last line without a reply
protocol: smtp
connect: {host: 127.0.0.1, port: 25, tls: none}
steps:
  - S: 220
  - C: QUIT
"""


@pytest.mark.parametrize(
    "transport",
    [
        "socket",
        pytest.param("telnet", marks=[telnet]),
    ],
)
def test_a_send_before_the_end_reaches_the_server(tmp_path, transport):
    """A scenario whose last step sends without waiting for a reply: send() returned, so the bytes
    must reach the server before the transport closes. Ten runs, because losing them is a race."""
    scenario = load_scenario(write(tmp_path, "last.yaml", LAST_LINE), use_cache=False)
    got = []
    for _ in range(10):
        with Server(record()) as srv:
            result = Engine(
                RunOptions(overrides={"port": srv.port, "transport": transport}), lambda e: None
            ).run(scenario)
            got.append(srv.wait_connection(timeout=T).wait_closed(T))
        assert result.exit_class == 0
    assert got == [b"QUIT\r\n"] * 10


# --------------------------------------------------------------------------- wire identity

WIRE_SCENARIO = r"""name: wire identity
protocol: smtp
connect: {host: 127.0.0.1, port: 25, tls: none}
steps:
  - S: 220
  - C: EHLO client.example
  - C: "MAIL FROM:<a@example.test>"
  - C: DATA
  - body: |
      Subject: wire

      .leading dot
      ..two dots
      end
  - raw: "NOOP caf\u00e9\tx\r\nRSET\r\n"
  - C: QUIT
    S: 221
  - S: EOF
"""
WIRE_EXPECTED = (
    b"EHLO client.example\r\nMAIL FROM:<a@example.test>\r\nDATA\r\n"
    b"Subject: wire\r\n\r\n..leading dot\r\n...two dots\r\nend\r\n.\r\n"
    b"NOOP caf\xc3\xa9\tx\r\nRSET\r\nQUIT\r\n"
)


def record_until_quit(conn: Conn) -> None:
    """Greet, record every byte until QUIT arrives, answer 221 and close: the client's close can
    then never cut off bytes still in flight."""
    conn.send(b"220 recorder ready\r\n")
    while not conn.received.endswith(b"QUIT\r\n"):
        if not conn.read_some(T):
            return
    conn.send(b"221 bye\r\n")


@pytest.mark.parametrize("transport", EVERY_TRANSPORT)
def test_engine_sends_identical_bytes_on_every_transport(tmp_path, pki, transport):
    scenario = load_scenario(write(tmp_path, "wire.yaml", WIRE_SCENARIO), use_cache=False)
    with _server(record_until_quit, transport, pki) as srv:
        overrides = {"port": srv.port, "transport": transport, "timeout": 5}
        if transport == "openssl":
            overrides.update(tls="implicit", ca=str(pki.ca_file))
        events = []
        result = Engine(RunOptions(overrides=overrides), events.append).run(scenario)
        received = srv.wait_connection(timeout=T).wait_closed(T)
    assert result.exit_class == 0, [(s.index, s.status, s.reason) for s in result.steps]
    assert [s.status for s in result.steps] == ["passed"] * 8
    assert result.sessions[0].transport == transport
    assert received == WIRE_EXPECTED


# --------------------------------------------------------------------------- -v through telnet


@telnet
def test_verbose_telnet_shows_the_terminal_session(testbed, bob_message, mailrun, tmp_path):
    scenario = write(tmp_path, "pop3_v.yaml", mailbox_scenario(POP3_SCENARIO, POP3_STLS, "none"))
    run = mailrun(
        scenario,
        "-v",
        "--transport",
        "telnet",
        "--port",
        str(testbed.ports["pop3"]),
        "--var",
        f"subject={bob_message}",
    )
    assert_all_passed(run, 6)
    lines = run.out.splitlines()
    host = testbed.host

    def index(text: str) -> int:
        found = [i for i, line in enumerate(lines) if text in line]
        assert found, f"{text!r} not in -v output:\n{run.out}"
        return found[0]

    # What telnet printed in the terminal, in order, before the server's greeting.
    trying, connected, escape = (
        index(f"Trying {host}..."),
        index(f"Connected to {host}."),
        index("Escape character is"),
    )
    greeting = index("S: +OK Dovecot")
    assert trying < connected < escape < greeting
    closed = index("Connection closed by foreign host.")
    assert closed > index("C: QUIT")
    # ... and none of it in the protocol's replies.
    for st in run.steps:
        for line in (st["reply"] or {}).get("lines", []):
            assert not line.startswith(CHATTER), (st["index"], line)
    assert run.steps[0]["reply"]["lines"][0].startswith("+OK Dovecot")
    # The conversation itself shows (RETR's literal body lines, dot-stuffed as on the wire).
    assert any(re.search(r"S: \.\.a line that starts with a dot$", line) for line in lines), run.out
    assert "builder" not in run.text


QUIT_ONLY = """name: quit
protocol: smtp
connect: {host: 127.0.0.1, port: 25, tls: none}
steps:
  - S: 220
  - C: QUIT
    S: 221
  - S: EOF
"""


@telnet
def test_verbose_telnet_shows_the_closing_chatter_after_the_last_reply(mailrun, tmp_path):
    """In the terminal telnet prints "Connection closed by foreign host." after the server's last
    reply; -v must show it in that order. Ten runs: whether both arrive in one read is a race."""
    scenario = write(tmp_path, "quit.yaml", QUIT_ONLY)
    for _ in range(10):
        with Server(scripted(b"220 hi\r\n", {b"QUIT": b"221 bye\r\n"})) as srv:
            run = mailrun(scenario, "-v", "--transport", "telnet", "--port", str(srv.port))
        assert_all_passed(run, 3)
        lines = run.out.splitlines()
        reply = next(i for i, line in enumerate(lines) if line.strip() == "S: 221 bye")
        closed = next(i for i, line in enumerate(lines) if "Connection closed by foreign host." in line)
        assert reply < closed, run.out


# --------------------------------------------------------------------------- missing binaries


@pytest.mark.parametrize(("transport", "package"), [("telnet", "telnet"), ("openssl", "openssl")])
def test_missing_binary_names_the_debian_package(tmp_path, pki, transport, package):
    scenario = write(tmp_path, "missing.yaml", GREET_EHLO)
    empty = tmp_path / "bin"
    empty.mkdir()
    with Server(record(), tls=pki.server_context() if transport == "openssl" else None) as srv:
        args = [
            sys.executable,
            "-m",
            "runner",
            str(scenario),
            "--transport",
            transport,
            "--port",
            str(srv.port),
        ]
        args += _tls_args(transport, pki)
        env = dict(os.environ, PATH=str(empty), NO_COLOR="1")
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
        time.sleep(0.1)
        assert srv.conns == []
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"{transport} not found" in out, out
    assert f"Debian package '{package}'" in out, out
    assert "Traceback" not in out
