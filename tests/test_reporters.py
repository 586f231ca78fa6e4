"""Reporters: console, JSON, JUnit XML and transcripts, fed realistic event sequences built by
hand the way the engine emits them (passing, failing, error, skipped, included steps, TLS,
several sessions, retries, a matrix provider)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from runner.errors import ExitClass
from runner.events import (
    Closed,
    Connected,
    Note,
    Received,
    Retrying,
    ScenarioFinished,
    ScenarioStarted,
    Sent,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TLSStarted,
)
from runner.lang.secrets import Redactor
from runner.protocols.base import Reply
from runner.reporters.base import ReportError, Tee
from runner.reporters.console import ConsoleReporter
from runner.reporters.formats import reporter_from_spec
from runner.reporters.json_report import JsonReporter
from runner.reporters.junit import JUnitReporter
from runner.reporters.text import visible
from runner.reporters.transcript import TranscriptReporter
from runner.results import ScenarioResult, SessionResult, StepResult
from runner.transports.base import ConnectInfo, TLSInfo

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "report.schema.json"
XSD = Path(__file__).resolve().parent / "data" / "junit.xsd"

PASSWORD = "wonderland"
PASSWORD_B64 = "d29uZGVybGFuZA=="
PLAIN_BLOB = "AGFsaWNlAHdvbmRlcmxhbmQ="  # base64("\0alice\0wonderland")
T0 = 1_795_000_000.0  # a fixed wall-clock start


# ====================================================================== event builders
def smtp(*lines: str, note: str | None = None) -> Reply:
    raw = "".join(line + "\r\n" for line in lines).encode()
    m = re.match(r"\d\.\d{1,3}\.\d{1,3}", lines[-1][4:])
    return Reply(
        raw=raw,
        lines=tuple(lines),
        code=lines[-1][:3],
        texts=tuple(line[4:] for line in lines),
        enhanced=m.group() if m else None,
        note=note,
    )


class Build:
    """Builds the event stream of one scenario run and its ScenarioResult side by side."""

    def __init__(self, file: str, name: str, provider: str | None = None, t0: float = T0):
        self.t = t0
        self.events: list = [ScenarioStarted(file, name, provider, t0)]
        self.result = ScenarioResult(file=file, name=name, provider=provider, started_at=t0)
        self.sess: SessionResult | None = None
        self.index = 0

    def tick(self, ms: float = 1.0) -> float:
        self.t += ms / 1000
        return self.t

    def session(self, name="send", protocol="smtp", *, port=2525, tls_mode="none", attempt=1, attempts=1):
        self.sess = SessionResult(
            name=name,
            protocol=protocol,
            attempt=attempt,
            attempts=attempts,
            peer=f"127.0.0.1:{port}",
            transport="socket",
        )
        self.result.sessions.append(self.sess)
        self.index = 0
        self.events.append(
            SessionStarted(
                self.result.name,
                name,
                protocol,
                attempt,
                attempts,
                "127.0.0.1",
                port,
                "socket",
                tls_mode,
                self.tick(),
            )
        )

    def connected(self, tls: TLSInfo | None = None):
        self.events.append(Connected(ConnectInfo(self.sess.peer, "socket", tls), self.tick()))
        if tls is not None:
            self.sess.tls = tls
            self.events.append(TLSStarted(tls, self.t))

    def tls(self, info: TLSInfo):
        self.sess.tls = info
        self.events.append(TLSStarted(info, self.tick()))

    def send(self, *chunks: bytes):
        for c in chunks:
            self.events.append(Sent(c, self.tick(0.2)))

    def recv(self, *chunks: bytes):
        for c in chunks:
            self.events.append(Received(c, self.tick(0.3)))

    def note(self, kind: str, text: str):
        self.events.append(Note(kind, text, self.tick()))

    def retrying(
        self, what: str, name: str, attempt: int, attempts: int, reason: str | None, interval: float
    ):
        self.events.append(Retrying(what, name, attempt, attempts, reason, interval, self.tick()))

    def step(self, status="passed", section="steps", **kw) -> StepResult:
        self.index += 1
        kw.setdefault("location", f"{self.result.file}:{10 + self.index}")
        kw.setdefault("via", None)
        kw.setdefault("action", "send")
        kw.setdefault("elapsed", 0.0023)
        if status == "failed":
            kw.setdefault("exit_class", ExitClass.FAILED)
        if status == "error":
            kw.setdefault("exit_class", ExitClass.NETWORK)
        st = StepResult(index=kw.pop("index", self.index), section=section, status=status, **kw)
        self.sess.steps.append(st)
        self.events.append(StepFinished(st, self.tick()))
        return st

    def end_session(self, status="passed", exit_class=ExitClass.OK, reason=None, closed="client"):
        s = self.sess
        s.status, s.exit_class, s.reason = status, exit_class, reason
        s.duration = 0.05
        if closed:
            self.events.append(Closed(closed, self.tick()))
        self.events.append(SessionFinished(s, self.tick()))

    def finish(self, status="passed", exit_class=ExitClass.OK, reason=None):
        r = self.result
        r.status, r.exit_class, r.reason = status, exit_class, reason
        r.duration = round(self.tick() - r.started_at, 6)
        self.events.append(ScenarioFinished(r, self.t))
        return self.events, r


TLS13 = TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=mail.example.test", "CN=Test CA")


def passing_run(provider: str | None = None, leak: bool = False):
    """EHLO, STARTTLS, AUTH LOGIN, MAIL, QUIT: all pass. With leak=True the events carry the
    password and its base64 forms in clear (as if the engine had failed to mask them)."""
    pw_b64 = PASSWORD_B64 if leak else "****"
    b = Build("scenarios/send.yaml", "Send mail", provider)
    b.session(tls_mode="starttls")
    b.note("chatter", "Trying 127.0.0.1...")
    b.connected()
    b.recv(b"220 mail.example.test ESMTP Postfix\r\n")
    b.step(action="read", expected="220", reply=smtp("220 mail.example.test ESMTP Postfix"))
    b.send(b"EHLO client.example.test\r\n")
    # a reply arriving in two reads, split in the middle of a line
    b.recv(b"250-mail.example.test\r\n250-PIPEL", b"INING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")
    b.step(
        sent="EHLO client.example.test",
        expected="250",
        reply=smtp("250-mail.example.test", "250-PIPELINING", "250-STARTTLS", "250 AUTH PLAIN LOGIN"),
    )
    b.send(b"STARTTLS\r\n")
    b.recv(b"220 2.0.0 Ready to start TLS\r\n")
    b.step(sent="STARTTLS", expected="220", reply=smtp("220 2.0.0 Ready to start TLS"))
    b.tls(TLS13)
    b.send(b"AUTH LOGIN\r\n")
    b.recv(b"334 VXNlcm5hbWU6\r\n")
    b.step(sent="AUTH LOGIN", expected="334", reply=smtp("334 VXNlcm5hbWU6", note="Username:"))
    b.send(b"YWxpY2U=\r\n")
    b.recv(b"334 UGFzc3dvcmQ6\r\n")
    b.step(sent="YWxpY2U=", expected="334", reply=smtp("334 UGFzc3dvcmQ6", note="Password:"))
    b.send(pw_b64.encode() + b"\r\n")
    b.recv(b"235 2.7.0 Authentication successful\r\n")
    b.step(
        sent=pw_b64,
        expected="235",
        reply=smtp("235 2.7.0 Authentication successful"),
        name="login",
        captures={"token": PASSWORD if leak else "****"},
    )
    b.send(b"QUIT\r\n")
    b.recv(b"221 2.0.0 Bye\r\n")
    b.step(sent="QUIT", expected="221", reply=smtp("221 2.0.0 Bye"))
    b.end_session()
    return b.finish()


def failing_run(reply_lines: int = 2, leak: bool = False):
    """RCPT TO (an included step) is refused with a multi-line 550; DATA is skipped; the
    finally step QUIT passes."""
    b = Build("scenarios/reject.yaml", "Rejected recipient")
    b.session()
    b.connected()
    b.recv(b"220 mail.example.test ESMTP Postfix\r\n")
    b.step(action="read", expected="220", reply=smtp("220 mail.example.test ESMTP Postfix"))
    b.send(b"MAIL FROM:<alice@example.test>\r\n")
    b.recv(b"250 2.1.0 Ok\r\n")
    b.step(sent="MAIL FROM:<alice@example.test>", expected="250", reply=smtp("250 2.1.0 Ok"))
    lines = [f"550-5.1.1 line {i}" for i in range(1, reply_lines)] + [
        "550 5.1.1 <bob@example.test>: Recipient unknown"
    ]
    if leak:
        lines[0] = f"550-5.1.1 your password {PASSWORD} is wrong"
    b.send(b"RCPT TO:<bob@example.test>\r\n")
    b.recv("".join(x + "\r\n" for x in lines).encode())
    b.step(
        "failed",
        sent="RCPT TO:<bob@example.test>",
        expected="250",
        reply=smtp(*lines),
        reason="reply code 550 does not match 250" + (f" (auth {PLAIN_BLOB})" if leak else ""),
        location="lib/rcpt.yaml:3",
        via="scenarios/reject.yaml:12",
    )
    b.step("skipped", sent="DATA", expected="354", reason="not run: step 3 failed")
    b.index = 0
    b.send(b"QUIT\r\n")
    b.recv(b"221 2.0.0 Bye\r\n")
    b.step(section="finally", sent="QUIT", expected="221", reply=smtp("221 2.0.0 Bye"))
    b.end_session("failed", ExitClass.FAILED, "reply code 550 does not match 250")
    return b.finish("failed", ExitClass.FAILED)


def error_run():
    """Two sessions: the first passes, the second is cut by the server mid-step (network
    error), then its attempt 2 cannot even connect."""
    b = Build("scenarios/two.yaml", "Two sessions", provider="gmx")
    b.session("submit", port=2587, tls_mode="implicit")
    b.connected(TLSInfo("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", "CN=localhost", None, verified=False))
    b.recv(b"220 ready\r\n")
    b.step(action="read", expected="220", reply=smtp("220 ready"))
    b.end_session()
    b.session("fetch", "pop3", port=2110, attempt=1, attempts=2)
    b.connected()
    b.recv(b"+OK Dovecot ready.\r\n")
    b.step(
        action="read", expected="+OK", reply=Reply(b"+OK Dovecot ready.\r\n", ("+OK Dovecot ready.",), "+OK")
    )
    b.send(b"STAT\r\n")
    b.step("error", sent="STAT", expected="+OK", reason="connection closed by the server")
    b.end_session("error", ExitClass.NETWORK, "connection closed by the server", closed="server")
    b.retrying("session", "fetch", 1, 2, "connection closed by the server", 0.05)
    b.session("fetch", "pop3", port=2110, attempt=2, attempts=2)
    b.end_session("error", ExitClass.NETWORK, "connect to 127.0.0.1:2110: connection refused", closed=None)
    return b.finish("error", ExitClass.NETWORK)


def not_run():
    """A scenario that could not run at all."""
    b = Build("scenarios/broken.yaml", "Broken")
    return b.finish("error", ExitClass.INVALID, "connect.host: env.SMTP_HOST is not set")


ALL_RUNS = (passing_run, failing_run, error_run, not_run)


def feed(reporter, *runs):
    for events, _ in runs:
        for ev in events:
            reporter.handle(ev)


class TTY(io.StringIO):
    def isatty(self):
        return True


def console(run, **kw) -> str:
    out = io.StringIO()
    rep = ConsoleReporter(out, **kw)
    feed(rep, run)
    rep.close()
    return out.getvalue()


# ====================================================================== console
def test_console_passing_run_lines_and_summary():
    text = console(passing_run())
    assert "\x1b[" not in text  # a StringIO is no TTY: no colour
    lines = text.splitlines()
    assert lines[0] == "Send mail (scenarios/send.yaml)"
    assert "  session send (smtp): 127.0.0.1:2525 via socket, TLS starttls" in lines
    assert (
        "  TLS: TLSv1.3 TLS_AES_256_GCM_SHA384, certificate CN=mail.example.test issued by CN=Test CA"
        in lines
    )
    assert any(re.fullmatch(r"\s+1 S: 220 mail\.example\.test ESMTP Postfix  ✓  \S+ ms", ln) for ln in lines)
    ehlo = next(ln for ln in lines if "EHLO" in ln)
    assert re.fullmatch(
        r"\s+2 C: EHLO client\.example\.test  S: 250-mail\.example\.test \(\+3 lines\)  ✓  \d+ ms", ehlo
    ), ehlo
    assert any("C: AUTH LOGIN  S: 334 VXNlcm5hbWU6 (Username:)  ✓" in ln for ln in lines)
    assert any(ln.strip().startswith("6 [login] C: ****") for ln in lines)
    assert lines[-1].startswith("PASS Send mail — 7/7 steps, ")
    assert "chatter" not in text and "Trying" not in text  # chatter only with verbose


def test_console_failure_shows_expected_received_reason_and_location():
    text = console(failing_run())
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if "RCPT TO" in ln)
    assert re.match(
        r"\s+3 C: RCPT TO:<bob@example\.test>  S: 550-5\.1\.1 line 1 \(\+1 line\)  ✗  \d+ ms", lines[i]
    )
    assert lines[i + 1].strip() == "expected: 250"
    assert lines[i + 2].strip() == "received: 550-5.1.1 line 1"
    assert lines[i + 3].strip() == "550 5.1.1 <bob@example.test>: Recipient unknown"
    assert lines[i + 4].strip() == "reason:   reply code 550 does not match 250"
    assert lines[i + 5].strip() == "at:       lib/rcpt.yaml:3 (included from scenarios/reject.yaml:12)"
    assert re.match(r"\s+4 C: DATA  -  skipped: not run: step 3 failed$", lines[i + 6])
    assert re.match(r"\s+F1 C: QUIT  S: 221 2\.0\.0 Bye  ✓", lines[i + 7])
    assert lines[-1].startswith("FAIL Rejected recipient — 3/5 steps, ")
    assert lines[-1].endswith(
        "first failure: step 3 (lib/rcpt.yaml:3 (included from scenarios/reject.yaml:12)): "
        "reply code 550 does not match 250"
    )


def test_console_long_reply_is_capped_with_count():
    text = console(failing_run(reply_lines=30))
    assert "line 20" in text and "line 21" not in text
    assert "... 10 more lines" in text


def test_console_errors_sessions_retry_and_unverified_tls():
    text = console(error_run())
    assert text.splitlines()[0] == "Two sessions[gmx] (scenarios/two.yaml)"
    assert "WARNING: TLS certificate NOT VERIFIED" in text
    assert text.count("TLS: TLSv1.2") == 1  # Connected and TLSStarted carry the same info: shown once
    assert "  session fetch (pop3): 127.0.0.1:2110 via socket, no TLS [attempt 2/2]" in text
    assert re.search(r"\s+2 C: STAT  S: \(no reply\)  ✗", text)
    assert "reason:   connection closed by the server" in text
    assert "retrying session fetch (1/2 failed)" in text
    assert "  ✗ session fetch: connect to 127.0.0.1:2110: connection refused" in text
    last = text.splitlines()[-1]
    assert last.startswith("ERROR Two sessions[gmx] — 1/1 steps")
    # the session's reason is on its own line above: the verdict refers to it, not says it again
    assert last.endswith("first failure: session fetch: error (above)")
    assert text.count("connect to 127.0.0.1:2110: connection refused") == 1


def test_console_scenario_that_could_not_run():
    last = console(not_run()).splitlines()[-1]
    assert last.startswith("ERROR Broken — 0/0 steps, ")
    assert last.endswith("could not run: connect.host: env.SMTP_HOST is not set")


def test_console_colour_forced_on():
    text = console(failing_run(), color=True)
    assert "\x1b[32m✓\x1b[0m" in text
    assert "\x1b[31m✗\x1b[0m" in text
    assert "\x1b[33m-\x1b[0m" in text
    assert "\x1b[31mFAIL\x1b[0m Rejected recipient" in text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert plain == console(failing_run(), color=False)


def test_console_colour_auto_follows_tty_and_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = TTY()
    rep = ConsoleReporter(out)
    feed(rep, passing_run())
    assert rep.color and "\x1b[32m✓" in out.getvalue()

    monkeypatch.setenv("NO_COLOR", "1")
    out = TTY()
    feed(ConsoleReporter(out), passing_run())
    assert "\x1b[" not in out.getvalue() and "✓" in out.getvalue()

    monkeypatch.setenv("NO_COLOR", "")  # empty means unset (no-color.org)
    assert ConsoleReporter(TTY()).color


def test_console_ascii_fallback_when_stream_cannot_encode():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    b = Build("x.yaml", "Accents")
    b.session()
    b.connected()
    b.step(sent="EHLO caf\u00e9", expected="250", reply=smtp("250 h\u00e9llo"))
    b.step("failed", sent="NOOP", expected="250", reply=smtp("500 nope"), reason="code")
    events, res = b.finish("failed", ExitClass.FAILED)
    rep = ConsoleReporter(stream)
    feed(rep, (events, res))
    rep.close()
    text = raw.getvalue().decode("ascii")
    assert "C: EHLO caf\\xe9  S: 250 h\\xe9llo  ok" in text
    assert "FAIL" in text and "\u2713" not in text
    assert "FAIL Accents - 1/2 steps" in text


def test_console_escapes_terminal_control_sequences_from_the_server():
    b = Build("x.yaml", "Hostile")
    b.session()
    b.connected()
    b.recv(b"220 \x1b[2J\x1b]0;owned\x07 hi\r\n")
    b.step(action="read", expected="220", reply=smtp("220 \x1b[2J\x1b]0;owned\x07 hi"))
    run = b.finish()
    for verbose in (False, True):
        text = console(run, verbose=verbose)
        assert "\x1b" not in text and "\x07" not in text
        assert "220 \\x1b[2J\\x1b]0;owned\\x07 hi" in text


def test_console_verbose_shows_conversation_and_chatter():
    text = console(passing_run(), verbose=True)
    lines = text.splitlines()
    assert "        | Trying 127.0.0.1..." in lines  # telnet's own words, as in the terminal
    assert "  connected to 127.0.0.1:2525 via socket" in lines
    assert "        C: EHLO client.example.test" in lines
    # the line split over two reads is shown once, whole
    assert "        S: 250-PIPELINING" in lines and not any(ln.endswith("S: 250-PIPEL") for ln in lines)
    assert lines.index("        C: EHLO client.example.test") < lines.index(
        "        S: 250-mail.example.test"
    )
    assert "  connection closed by client" in lines
    assert "\\r\\n" not in text
    crlf = console(passing_run(), verbose=True, show_crlf=True).splitlines()
    assert "        C: EHLO client.example.test\\r\\n" in crlf
    assert "        S: 250-PIPELINING\\r\\n" in crlf


def test_console_warning_notes_always_shown():
    b = Build("x.yaml", "Warn")
    b.session()
    b.note("warning", "TLS certificate verification is OFF")
    b.note("info", "detail")
    run = b.finish()
    text = console(run)
    assert "  warning: TLS certificate verification is OFF" in text
    assert "detail" not in text
    assert "        # info: detail" not in console(run, verbose=True)
    assert "        # detail" in console(run, verbose=True)


def _results():
    return [passing_run()[1], passing_run("gmx")[1], failing_run()[1], error_run()[1], not_run()[1]]


def test_progress_line_only_on_a_tty():
    out = io.StringIO()
    rep = ConsoleReporter(out)
    rep.progress(1, 3, 1, 0, 0.5)
    assert out.getvalue() == ""

    out = TTY()
    rep = ConsoleReporter(out, color=False)
    rep.progress(1, 3, 1, 0, 0.5)
    assert out.getvalue() == "\r[1/3] 1 passed, 0 failed, 0.5 s"
    feed(rep, not_run())  # lines printed meanwhile clear the status line and redraw it below
    after = out.getvalue()
    assert "\r" + " " * len("[1/3] 1 passed, 0 failed, 0.5 s") + "\r" in after
    assert after.endswith("\n[1/3] 1 passed, 0 failed, 0.5 s")
    rep.progress(3, 3, 2, 1, 1.25)
    assert out.getvalue().endswith("\r[3/3] 2 passed, 1 failed, 1.2 s\n")
    rep.close()
    assert out.getvalue().endswith("1.2 s\n")  # nothing left to end


def test_summary_table():
    out = io.StringIO()
    rep = ConsoleReporter(out)
    rep.summary_table(_results())
    lines = out.getvalue().splitlines()
    head = next(ln for ln in lines if ln.startswith("scenario"))
    assert head.split() == ["scenario", "provider", "steps", "time", "verdict", "first", "failure"]
    rows = lines[lines.index(head) + 2 : lines.index(head) + 7]
    assert re.match(r"Send mail\s+7/7\s+\d+\.\d\d s\s+PASS$", rows[0])
    assert re.match(r"Send mail\s+gmx\s+7/7\s+\d+\.\d\d s\s+PASS$", rows[1])
    assert re.match(r"Rejected recipient\s+3/5 .*FAIL\s+step 3 \(lib/rcpt\.yaml:3", rows[2])
    assert re.match(r"Two sessions\s+gmx\s+1/1 .*ERROR\s+session fetch: connect to", rows[3])
    assert re.match(r"Broken\s+0/0 .*ERROR\s+connect\.host: env\.SMTP_HOST is not set", rows[4])
    assert lines[-1].startswith("5 scenarios: 2 passed, 1 failed, 2 errors")

    out = io.StringIO()
    other = failing_run()[1]
    other.name = "Send mail"
    ConsoleReporter(out).summary_table([passing_run()[1], other])
    assert re.search(r"^Send mail \(scenarios/send\.yaml\) .* PASS", out.getvalue(), re.M)
    assert re.search(r"^Send mail \(scenarios/reject\.yaml\) .* FAIL", out.getvalue(), re.M)

    out = io.StringIO()
    ConsoleReporter(out).summary_table(_results()[:1])
    assert out.getvalue() == ""


def test_summary_table_uses_collected_results():
    out = io.StringIO()
    rep = ConsoleReporter(out)
    feed(rep, passing_run(), failing_run())
    rep.summary_table()
    assert "verdict" in out.getvalue() and "2 scenarios: 1 passed, 1 failed" in out.getvalue()


# ====================================================================== JSON
def json_report(tmp_path, *runs, redactor=None) -> dict:
    path = tmp_path / "out" / "report.json"
    rep = JsonReporter(path, redactor=redactor)
    feed(rep, *runs)
    rep.close()
    return json.loads(path.read_text(encoding="utf-8"))


def validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_schema_copies_are_identical():
    assert (ROOT / "runner" / "data" / "report.schema.json").read_bytes() == SCHEMA.read_bytes()


def test_json_report_validates_and_carries_every_field(tmp_path):
    doc = json_report(tmp_path, *(f() for f in ALL_RUNS))
    validator().validate(doc)
    assert doc["tool"] == "mailrun" and doc["exit_class"] == 3
    slowest = doc["summary"].pop("slowest_steps")
    assert [st["elapsed"] for st in slowest] == sorted((st["elapsed"] for st in slowest), reverse=True)
    assert len(slowest) == 5 and {st["scenario"] for st in slowest} <= {
        r["display_name"] for r in doc["scenarios"]
    }
    assert doc["summary"] == {
        "scenarios": 4,
        "passed": 1,
        "failed": 1,
        "error": 2,
        "skipped": 0,
        "interrupted": 0,
        "not_run": 0,
        "unchecked": 0,
        "steps": 13,  # 7 + 5 + 1 (attempt 2 of 'fetch' replaces attempt 1) + 0
        "steps_passed": 11,
        "steps_failed": 1,
        "steps_error": 0,
        "steps_skipped": 1,
        "steps_not_needed": 0,
        "steps_interrupted": 0,
        "steps_performed": 0,
    }
    ok, bad, err, broken = doc["scenarios"]
    assert ok["status"] == "passed" and ok["exit_class"] == 0 and len(ok["steps"]) == 7
    assert ok["sessions"][0]["tls"] is None or ok["sessions"][0]["tls"]["version"] == "TLSv1.3"
    s2 = ok["steps"][1]
    assert s2["sent"] == "EHLO client.example.test" and s2["reply"]["code"] == "250"
    assert s2["reply"]["lines"][1] == "250-PIPELINING" and s2["session"] == "send"
    assert ok["steps"][3]["reply"]["note"] == "Username:"  # data: the decoded challenge, bare
    rcpt = bad["steps"][2]
    assert rcpt["status"] == "failed" and rcpt["exit_class"] == 1
    assert rcpt["location"] == "lib/rcpt.yaml:3" and rcpt["via"] == "scenarios/reject.yaml:12"
    assert rcpt["reply"]["enhanced"] == "5.1.1" and rcpt["expected"] == "250"
    assert bad["steps"][4]["section"] == "finally" and bad["steps"][4]["index"] == 1
    assert err["provider"] == "gmx" and err["display_name"] == "Two sessions[gmx]"
    assert [(s["name"], s["attempt"]) for s in err["sessions"]] == [("submit", 1), ("fetch", 1), ("fetch", 2)]
    assert err["sessions"][0]["tls"]["verified"] is False
    assert err["sessions"][2]["reason"].endswith("connection refused")
    assert broken["status"] == "error" and broken["exit_class"] == 2 and broken["steps"] == []
    assert broken["reason"] == "connect.host: env.SMTP_HOST is not set"


def test_json_schema_is_not_a_rubber_stamp(tmp_path):
    doc = json_report(tmp_path, passing_run())
    v = validator()
    for breakage in (
        lambda d: d["scenarios"][0].pop("status"),
        lambda d: d["scenarios"][0].__setitem__("status", "ok"),
        lambda d: d["scenarios"][0]["steps"][0].__setitem__("elapsed", -1),
        lambda d: d.__setitem__("exit_class", 7),
        lambda d: d.__setitem__("started", "yesterday"),
    ):
        broken = json.loads(json.dumps(doc))
        breakage(broken)
        assert not v.is_valid(broken)


def test_json_empty_run_and_unwritable_path(tmp_path):
    doc = json_report(tmp_path)
    validator().validate(doc)
    assert doc["scenarios"] == [] and doc["exit_class"] == 0
    (tmp_path / "file").write_text("x")
    rep = JsonReporter(tmp_path / "file" / "report.json")
    with pytest.raises(ReportError, match=r"cannot write JSON report .*file/report\.json"):
        rep.close()


def test_json_caps_huge_replies(tmp_path):
    b = Build("big.yaml", "Big")
    b.session("fetch", "pop3", port=2110)
    lines = ("+OK 2500 lines", *(f"line {i}" for i in range(2500)))
    b.step(sent="RETR 1", expected="+OK", reply=Reply(b"...", lines, "+OK", multiline=True))
    doc = json_report(tmp_path, b.finish())
    validator().validate(doc)
    reply = doc["scenarios"][0]["steps"][0]["reply"]
    assert len(reply["lines"]) == 1000 and reply["lines_omitted"] == 1501


# ====================================================================== JUnit
def junit(tmp_path, *runs, redactor=None) -> tuple[bytes, ET.Element]:
    path = tmp_path / "junit.xml"
    rep = JUnitReporter(path, redactor=redactor)
    feed(rep, *runs)
    rep.close()
    data = path.read_bytes()
    return data, ET.fromstring(data)


try:
    import xmlschema
except ImportError:  # not yet in the test extras: the stdlib structure checks still run
    xmlschema = None


def xsd_validate(data: bytes) -> None:
    if xmlschema is not None:
        xmlschema.XMLSchema(str(XSD)).validate(io.BytesIO(data))


def check_junit_structure(root: ET.Element) -> None:
    """What every JUnit reader relies on, checked with the stdlib (runs without xmlschema)."""
    assert root.tag == "testsuites"
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for suite in root:
        assert suite.tag == "testsuite" and suite.get("name")
        cases = suite.findall("testcase")
        counts = {
            "tests": len(cases),
            "failures": sum(1 for c in cases if c.find("failure") is not None),
            "errors": sum(1 for c in cases if c.find("error") is not None),
            "skipped": sum(1 for c in cases if c.find("skipped") is not None),
        }
        for k, v in counts.items():
            assert int(suite.get(k)) == v, (suite.get("name"), k)
            totals[k] += v
        float(suite.get("time"))
        kids = [c.tag for c in suite]
        assert kids == sorted(kids, key=["properties", "testcase", "system-out"].index)
        for c in cases:
            assert c.get("name") and c.get("classname")
            assert float(c.get("time")) >= 0
            assert sum(c.find(k) is not None for k in ("failure", "error", "skipped")) <= 1
    for k, v in totals.items():
        assert int(root.get(k)) == v


def test_junit_validates_and_maps_every_outcome(tmp_path):
    data, root = junit(tmp_path, *(f() for f in ALL_RUNS))
    check_junit_structure(root)
    xsd_validate(data)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    ok, bad, err, broken = root.findall("testsuite")
    assert ok.get("name") == "scenarios/send.yaml: Send mail"
    props = {p.get("name"): p.get("value") for p in ok.find("properties")}
    assert props["file"] == "scenarios/send.yaml" and props["scenario"] == "Send mail"
    names = [c.get("name") for c in ok.findall("testcase")]
    assert names[:3] == ["step 1: S: 220", "step 2: C: EHLO client.example.test", "step 3: C: STARTTLS"]
    assert names[5] == "step 6: C: **** [login]"
    assert {c.get("classname") for c in ok.findall("testcase")} == {"Send mail"}
    assert (
        ok.find("testcase").get("file") == "scenarios/send.yaml" and ok.find("testcase").get("line") == "11"
    )
    out = ok.find("system-out").text
    assert "C: EHLO client.example.test\\r\\n" in out and "--- TLS started: TLSv1.3" in out

    rcpt = bad.findall("testcase")[2]
    f = rcpt.find("failure")
    assert (
        f.get("message") == ("expected 250, got 550-5.1.1 line 1: reply code 550 does not match 250")
        and f.get("type") == "expectation"
    )
    assert "received: 550-5.1.1 line 1\n          550 5.1.1 <bob@example.test>: Recipient unknown" in f.text
    assert "at:       lib/rcpt.yaml:3 (included from scenarios/reject.yaml:12)" in f.text
    assert rcpt.get("file") == "lib/rcpt.yaml" and rcpt.get("line") == "3"
    assert "S: 550 5.1.1 <bob@example.test>" in rcpt.find("system-out").text  # GitLab shows case output
    assert bad.findall("testcase")[3].find("skipped").get("message") == "not run: step 3 failed"
    assert bad.findall("testcase")[4].get("name") == "finally step 1: C: QUIT"

    assert err.get("name") == "scenarios/two.yaml: Two sessions[gmx]"
    enames = [c.get("name") for c in err.findall("testcase")]
    assert enames == [
        "session submit: step 1: S: 220",
        "session fetch: step 1: S: +OK (attempt 1/2)",
        "session fetch: step 2: C: STAT (attempt 1/2)",
        "session fetch (attempt 2/2)",
    ]
    e = err.findall("testcase")[2].find("error")
    assert e.get("message") == "connection closed by the server" and e.get("type") == "network"
    assert err.findall("testcase")[3].find("error").get("message").endswith("connection refused")

    (case,) = broken.findall("testcase")
    assert case.get("name") == "Broken: could not run"
    assert case.find("error").get("message") == "connect.host: env.SMTP_HOST is not set"
    assert case.find("error").get("type") == "invalid"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "17",
        "1",
        "3",
        "1",
    )


@pytest.mark.skipif(xmlschema is None, reason="xmlschema is not installed")
def test_junit_xsd_rejects_what_readers_would_reject(tmp_path):
    schema = xmlschema.XMLSchema(str(XSD))
    data, root = junit(tmp_path, failing_run())
    assert schema.is_valid(io.BytesIO(data))
    for breakage in (
        lambda r: r.find("testsuite").attrib.pop("tests"),
        lambda r: r.find("testsuite/testcase").attrib.pop("name"),
        lambda r: r.find("testsuite/testcase").append(ET.Element("bogus")),
        lambda r: ET.SubElement(r.find("testsuite/testcase"), "failure"),  # no message
    ):
        copy = ET.fromstring(data)
        breakage(copy)
        assert not schema.is_valid(io.BytesIO(ET.tostring(copy)))


def test_junit_survives_bytes_xml_cannot_hold(tmp_path):
    b = Build("x.yaml", "Binary")
    b.session()
    b.recv(b"220 \x00\x01\x1b ok\xff\r\n")
    b.step(
        "failed", sent="NOOP\x0c", expected="250", reply=smtp("220 \x00\x01\x1b ok\\xff"), reason="bad \x02"
    )
    data, root = junit(tmp_path, b.finish("failed", ExitClass.FAILED))
    xsd_validate(data)
    f = root.find("testsuite/testcase/failure")
    assert "\\x00\\x01\\x1b ok\\xff" in f.get("message") and "bad \\x02" in f.get("message")
    assert "S: 220 \\x00\\x01\\x1b ok\\xff\\r\\n" in root.find("testsuite/system-out").text


def test_junit_failure_message_does_not_repeat_an_engine_reason(tmp_path):
    b = Build("x.yaml", "Quit")
    b.session()
    b.step(
        "failed",
        sent="QUIT",
        expected="250",
        reply=smtp("221 2.0.0 Bye"),
        reason="expected 250, got 221 2.0.0 Bye",
    )
    data, root = junit(tmp_path, b.finish("failed", ExitClass.FAILED))
    assert root.find("testsuite/testcase/failure").get("message") == "expected 250, got 221 2.0.0 Bye"


def test_junit_matrix_runs_of_one_file_get_one_suite_each(tmp_path):
    data, root = junit(tmp_path, passing_run("gmx"), passing_run("gmail"))
    xsd_validate(data)
    names = [s.get("name") for s in root.findall("testsuite")]
    assert names == ["scenarios/send.yaml: Send mail[gmx]", "scenarios/send.yaml: Send mail[gmail]"]
    assert root.find("testsuite/testcase").get("classname") == "Send mail[gmx]"


def test_report_from_spec(tmp_path):
    assert isinstance(reporter_from_spec(f"junit={tmp_path}/a.xml"), JUnitReporter)
    assert isinstance(reporter_from_spec(f"JSON={tmp_path}/a.json"), JsonReporter)
    with pytest.raises(ReportError, match="unknown format 'tap'"):
        reporter_from_spec("tap=x")
    with pytest.raises(ReportError, match="expected FORMAT=PATH"):
        reporter_from_spec("junit")


def test_every_registered_format_is_a_reporter_writing_its_file(tmp_path):
    """FORMATS is the one table of --report formats: each entry makes a Reporter from (path,
    redactor) that writes its file, and the errors name what is known."""
    from runner.reporters.base import Reporter
    from runner.reporters.formats import FORMATS, create, parse_spec

    for fmt in FORMATS:
        rep = create(*parse_spec(f"{fmt.upper()}={tmp_path}/r.{fmt}"), redactor=Redactor([PASSWORD]))
        assert isinstance(rep, Reporter)
        feed(rep, passing_run(leak=True))
        rep.close()
        assert PASSWORD not in (tmp_path / f"r.{fmt}").read_text()
    with pytest.raises(ReportError, match=f"known: {', '.join(FORMATS)}"):
        parse_spec("tap=x")


def test_tee_feeds_and_closes_all(tmp_path):
    j, x = JsonReporter(tmp_path / "r.json"), JUnitReporter(tmp_path / "r.xml")
    tee = Tee([j, x])
    feed(tee, failing_run())
    tee.close()
    assert json.loads((tmp_path / "r.json").read_text())["scenarios"][0]["status"] == "failed"
    assert ET.parse(tmp_path / "r.xml").getroot().get("failures") == "1"


# ====================================================================== transcripts
STAMP = r"\d\d:\d\d:\d\d\.\d{3} +\+\d+\.\dms "


def test_transcript_content(tmp_path):
    rep = TranscriptReporter(tmp_path / "tr")
    w = rep.for_run("scenarios/send.yaml", "Send mail", None)
    feed(w, passing_run())
    w.close()
    assert w.path == tmp_path / "tr" / "send-1.log"
    text = w.path.read_text(encoding="utf-8")
    assert text.startswith("# mailrun transcript\n# scenario: Send mail\n# file:     scenarios/send.yaml\n")
    body = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert all(re.match(STAMP, ln) for ln in body), body
    bare = [re.sub("^" + STAMP, "", ln) for ln in body]
    expect_in_order = [
        "--- session send (smtp), attempt 1/1: 127.0.0.1:2525 via socket, tls starttls ---",
        "--- chatter: Trying 127.0.0.1... ---",
        "--- connected to 127.0.0.1:2525 via socket ---",
        "S: 220 mail.example.test ESMTP Postfix\\r\\n",
        "--- step 1 PASSED in 2 ms (scenarios/send.yaml:11) ---",
        "C: EHLO client.example.test\\r\\n",
        "S: 250-mail.example.test\\r\\n",
        "S: 250-PIPEL",  # bytes shown as they arrived: this read ended mid-line
        "S: INING\\r\\n",
        "S: 250-STARTTLS\\r\\n",
        "--- TLS started: TLSv1.3 TLS_AES_256_GCM_SHA384, certificate CN=mail.example.test issued by CN=Test CA ---",
        "C: AUTH LOGIN\\r\\n",
        "S: 334 VXNlcm5hbWU6\\r\\n",
        "C: ****\\r\\n",
        "S: 221 2.0.0 Bye\\r\\n",
        "--- connection closed by client ---",
        "--- session send PASSED in 0.050 s ---",
    ]
    pos = [bare.index(x) for x in expect_in_order]
    assert pos == sorted(pos)
    assert re.fullmatch(r"=== PASS Send mail — 7/7 steps, \d\.\d\d s ===", bare[-1])
    # relative times grow
    rel = [float(re.search(r"\+(\d+\.\d)ms", ln).group(1)) for ln in body]
    assert rel == sorted(rel) and rel[0] > 0


def test_transcript_failure_error_and_unverified_tls(tmp_path):
    rep = TranscriptReporter(tmp_path)
    w = rep.for_run("scenarios/reject.yaml", "Rejected recipient")
    feed(w, failing_run())
    w2 = rep.for_run("scenarios/two.yaml", "Two sessions", "gmx")
    feed(w2, error_run())
    rep.close()
    t1 = w.path.read_text()
    assert (
        "--- step 3 FAILED in 2 ms (lib/rcpt.yaml:3 (included from scenarios/reject.yaml:12)); expected 250: "
        "reply code 550 does not match 250 ---" in t1
    )
    assert "--- step 4 SKIPPED in 2 ms (scenarios/reject.yaml:14): not run: step 3 failed ---" in t1
    assert "--- finally step 1 PASSED" in t1
    t2 = w2.path.read_text()
    assert w2.path.name == "two-gmx-1.log"
    assert "--- TLS (implicit): TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384, certificate CN=localhost" in t2
    assert t2.count("TLSv1.2") == 1
    assert "--- WARNING: certificate NOT verified (tls_verify is off) ---" in t2
    assert "--- connection closed by server ---" in t2
    assert "--- session fetch ERROR in 0.050 s: connect to 127.0.0.1:2110: connection refused ---" in t2
    assert "=== ERROR Two sessions[gmx]" in t2


def test_transcript_is_on_disk_while_the_run_is_still_going(tmp_path):
    rep = TranscriptReporter(tmp_path)
    w = rep.for_run("scenarios/send.yaml", "Send mail")
    events, _ = passing_run()
    cut = next(i for i, e in enumerate(events) if isinstance(e, Sent) and e.data.startswith(b"EHLO"))
    for ev in events[: cut + 1]:
        w.handle(ev)
    # not closed: an interrupted run still leaves what happened so far
    text = (tmp_path / "send-1.log").read_text()
    assert text.rstrip().endswith("C: EHLO client.example.test\\r\\n")
    rep.close()  # closes writers left open
    assert w._fh is None


def test_transcript_names_never_collide(tmp_path):
    (tmp_path / "send-gmx-1.log").write_text("from an earlier run\n")
    rep = TranscriptReporter(tmp_path)
    writers = [rep.for_run("a/send.yaml" if i % 2 else "b/send.yml", "Send mail", "gmx") for i in range(16)]
    runs = [passing_run("gmx") for _ in writers]
    barrier = threading.Barrier(len(writers))

    def go(w, run):
        barrier.wait()
        feed(w, run)

    threads = [threading.Thread(target=go, args=(w, r)) for w, r in zip(writers, runs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    names = sorted(w.path.name for w in writers)
    assert names == sorted(f"send-gmx-{n}.log" for n in range(2, 18))
    assert (tmp_path / "send-gmx-1.log").read_text() == "from an earlier run\n"
    for w in writers:
        text = w.path.read_text()
        assert text.count("# mailrun transcript") == 1 and text.rstrip().endswith("===")
    assert rep.for_run("x.yaml", "X", "odd/provider name")._fmt is not None
    w = rep.for_run("x.yaml", "X", "odd/provider name")
    feed(w, not_run())
    assert w.path.name == "x-odd_provider_name-1.log"


def test_transcript_writer_reopens_for_a_suite_retry(tmp_path):
    rep = TranscriptReporter(tmp_path)
    w = rep.for_run("scenarios/broken.yaml", "Broken")
    feed(w, not_run())
    assert w._fh is None  # closed at ScenarioFinished
    w.handle(Retrying("scenario", "Broken", 1, 2, "connection refused", 1.0, T0 + 5))
    feed(w, not_run())
    w.close()
    text = w.path.read_text()
    assert text.count("# mailrun transcript") == 2 and "retry 1 of 1" in text
    assert rep.paths == [w.path]


def test_transcript_unwritable_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    w = TranscriptReporter(tmp_path / "f" / "sub").for_run("x.yaml", "X")
    with pytest.raises(ReportError, match="cannot create transcript directory"):
        feed(w, not_run())


def test_visible():
    assert visible(b"a\r\n") == "a\\r\\n"
    assert visible(b"\tx\xff\x1b") == "\\tx\\xff\\x1b"
    assert visible("bare\rcr") == "bare\\rcr"  # one escaping for every output (issue 17)


# ====================================================================== secrets
def test_no_secret_in_any_output_when_events_leak_it(tmp_path):
    red = Redactor([PASSWORD, PLAIN_BLOB])
    runs = [passing_run(leak=True), failing_run(leak=True)]
    # the leak is really in the events
    assert any(isinstance(e, Sent) and PASSWORD_B64.encode() in e.data for e in runs[0][0])
    # a secret's base64 split over two reads, and a chatter note carrying it
    b = Build("x.yaml", "Split")
    b.session()
    b.note("chatter", f"typed {PASSWORD}")
    b.send(b"AUTH PLAIN " + PLAIN_BLOB.encode() + b"\r\n")
    b.send(PASSWORD_B64[:6].encode(), PASSWORD_B64[6:].encode() + b"\r\n")
    b.step("error", sent=f"AUTH PLAIN {PLAIN_BLOB}", expected="235", reason=f"closed after {PASSWORD}")
    runs.append(b.finish("error", ExitClass.NETWORK, f"boom {PASSWORD_B64}"))

    outputs = {}
    for verbose, crlf, color in ((False, False, False), (True, False, True), (True, True, False)):
        out = io.StringIO()
        rep = ConsoleReporter(out, verbose=verbose, show_crlf=crlf, color=color, redactor=red)
        feed(rep, *runs)
        rep.summary_table([r for _, r in runs])
        rep.close()
        outputs[f"console-{verbose}-{crlf}"] = out.getvalue()
    outputs["json"] = json.dumps(json_report(tmp_path, *runs, redactor=red), ensure_ascii=False)
    outputs["junit"] = junit(tmp_path, *runs, redactor=red)[0].decode()
    trs = TranscriptReporter(tmp_path / "tr", redactor=red)
    for events, r in runs:
        feed(trs.for_run(r.file, r.name, r.provider), (events, r))
    trs.close()
    for p in trs.paths:
        outputs[p.name] = p.read_text()

    assert len(outputs) == 8
    for name, text in outputs.items():
        for secret in (PASSWORD, PASSWORD_B64, PASSWORD_B64.rstrip("="), PLAIN_BLOB):
            assert secret not in text, (name, secret)
        assert "****" in text, name
    # the console's verbose view joins the split read before masking
    assert "        C: ****\n" in re.sub(r"\x1b\[[0-9;]*m", "", outputs["console-True-False"])
    assert "        C: ****\\r\\n\n" in outputs["console-True-True"]


def test_redactor_is_optional_and_changes_nothing_without_secrets(tmp_path):
    plain = console(failing_run())
    assert console(failing_run(), redactor=Redactor()) == plain


# ====================================================================== what real runs showed
# Each test below pins one thing people saw running real scenarios (h14).


def eof_run():
    """QUIT then `S: EOF`: the server closes (passed); a second session where the server
    answers instead of closing (failed), and one where it neither answers nor closes (error)."""
    b = Build("scenarios/quit.yaml", "Quit")
    b.session()
    b.connected()
    b.send(b"QUIT\r\n")
    b.recv(b"221 2.0.0 Bye\r\n")
    b.step(section="finally", sent="QUIT", expected="221", reply=smtp("221 2.0.0 Bye"))
    b.step(section="finally", action="read", expected="EOF", name="server closes")
    b.end_session(closed="server")
    b.session("again")
    b.connected()
    b.step(
        "failed",
        action="read",
        expected="EOF",
        reply=smtp("250 still here"),
        reason="expected the server to close the connection, got 250 still here",
    )
    b.step(
        "error",
        action="read",
        expected="EOF",
        reason="deadline: the server did not close the connection within 5 s",
    )
    b.end_session("failed", ExitClass.FAILED, "expected the server to close the connection")
    return b.finish("failed", ExitClass.FAILED)


def test_console_eof_step_says_the_server_closed_or_what_came_instead():
    lines = console(eof_run()).splitlines()
    assert any(
        re.fullmatch(r"\s+F2 \[server closes\] S: EOF \(server closed\)  ✓  \S+ ms", ln) for ln in lines
    )
    assert any(
        re.fullmatch(r"\s+1 S: 250 still here \(server did not close\)  ✗  \S+ ms", ln) for ln in lines
    )
    assert any(re.fullmatch(r"\s+2 S: \(nothing; server did not close\)  ✗  \S+ ms", ln) for ln in lines)
    # a step that is no EOF and got nothing still says so plainly
    assert re.search(r"\s+2 C: STAT  S: \(no reply\)  ✗", console(error_run()))


def test_line_counts_are_singular_for_one():
    one = console(failing_run(reply_lines=2))
    assert "(+1 line)" in one and "(+1 lines)" not in one
    assert "(+2 lines)" in console(failing_run(reply_lines=3))
    # "... N more lines" under a capped reply: 21 lines, 20 shown
    assert "... 1 more line\n" in console(failing_run(reply_lines=21))
    assert "... 2 more lines\n" in console(failing_run(reply_lines=22))


def _failed_step_transcript(tmp_path, reason: str) -> str:
    b = Build("scenarios/auth.yaml", "Auth")
    b.session()
    b.connected()
    b.send(b"NOOP\r\n")
    b.recv(b"334 UGFzc3dvcmQ6\r\n")
    b.step(
        "failed", sent="NOOP", expected="235", reply=smtp("334 UGFzc3dvcmQ6", note="Password:"), reason=reason
    )
    b.end_session("failed", ExitClass.FAILED, reason)
    rep = TranscriptReporter(tmp_path)
    w = rep.for_run("scenarios/auth.yaml", "Auth")
    feed(w, b.finish("failed", ExitClass.FAILED))
    rep.close()
    return w.path.read_text()


def test_transcript_failure_does_not_repeat_what_the_reason_says(tmp_path):
    text = _failed_step_transcript(tmp_path / "a", "expected 235, got 334 UGFzc3dvcmQ6")
    line = next(ln for ln in text.splitlines() if "step 1 FAILED" in ln)
    assert "expected 235: expected 235" not in line
    assert line.endswith(": expected 235, got 334 UGFzc3dvcmQ6 ---")
    assert line.count("expected 235") == 1
    # a reason that does not say what was expected still gets it
    text = _failed_step_transcript(tmp_path / "b", "reply matched the `not` pattern 334")
    assert "; expected 235: reply matched the `not` pattern 334 ---" in text


OPENSSL_STARTTLS = "openssl s_client -starttls smtp"


def _starttls_run(*, tls_after_connect: bool, reasons=("performed by", "STARTTLS performed by")):
    """The connection and the handshake as the engine announces them, once each: Connected, then
    TLSStarted where the handshake happened, after the STARTTLS step (socket) or at connect
    (openssl -starttls, which then performs the steps up to STARTTLS itself: skipped steps
    whose `performed_by` names it). `reasons`: the skips' reason texts, before the program."""
    info = TLS13
    b = Build("scenarios/send.yaml", "Send mail")
    b.session(tls_mode="starttls")
    b.connected()
    if tls_after_connect:  # openssl: the handshake at connect, then the steps it performed
        b.tls(info)
        for i, what in enumerate(("S: 220", "EHLO x", "STARTTLS"), 1):
            b.step(
                "skipped",
                action="read" if i == 1 else "send",
                sent=None if i == 1 else what,
                expected="220",
                reason=f"{reasons[what == 'STARTTLS']} {OPENSSL_STARTTLS}",
                performed_by=OPENSSL_STARTTLS,
            )
    else:
        b.recv(b"220 ready\r\n")
        b.step(action="read", expected="220", reply=smtp("220 ready"))
        b.send(b"STARTTLS\r\n")
        b.recv(b"220 go ahead\r\n")
        b.step(sent="STARTTLS", expected="220", reply=smtp("220 go ahead"))
        b.tls(info)
    b.send(b"NOOP\r\n")
    b.recv(b"250 ok\r\n")
    b.step(sent="NOOP", expected="250", reply=smtp("250 ok"))
    b.end_session()
    return b.finish()


def test_connection_and_tls_are_said_once(tmp_path):
    for openssl in (False, True):
        run = _starttls_run(tls_after_connect=openssl)
        for verbose in (False, True):
            text = console(run, verbose=verbose)
            assert text.count("connected to 127.0.0.1:2525") == (1 if verbose else 0), text
            assert text.count("TLSv1.3 TLS_AES_256_GCM_SHA384") == 1, text
            assert "TLS established" not in text
        rep = TranscriptReporter(tmp_path / str(openssl))
        w = rep.for_run("scenarios/send.yaml", "Send mail")
        feed(w, run)
        rep.close()
        tr = w.path.read_text()
        assert tr.count("connected to 127.0.0.1:2525") == 1, tr
        assert "--- connected to 127.0.0.1:2525 via socket ---" in tr
        assert tr.count("TLSv1.3 TLS_AES_256_GCM_SHA384") == 1, tr
    # openssl: the TLS line where the handshake happened, right after the connection
    lines = console(_starttls_run(tls_after_connect=True), verbose=True).splitlines()
    i = lines.index("  connected to 127.0.0.1:2525 via socket")
    assert lines[i + 1].startswith("  TLS: TLSv1.3")


def test_each_session_shows_its_tls(tmp_path):
    b = Build("scenarios/two.yaml", "Two")
    b.session("send", tls_mode="starttls")  # openssl: the handshake at connect
    b.connected()
    b.tls(TLS13)
    b.end_session()
    b.session("fetch", tls_mode="starttls")  # socket: the same handshake after STARTTLS
    b.connected()
    b.recv(b"220 ready\r\n")
    b.tls(TLS13)
    b.end_session()
    run = b.finish()
    for verbose in (False, True):
        assert console(run, verbose=verbose).count("  TLS: TLSv1.3") == 2
    rep = TranscriptReporter(tmp_path)
    w = rep.for_run("scenarios/two.yaml", "Two")
    feed(w, run)
    rep.close()
    assert w.path.read_text().count("TLSv1.3 TLS_AES_256_GCM_SHA384") == 2


def test_an_info_note_is_shown_as_it_came(tmp_path):
    """An info note with no Connected after it (here: TCP connected, then the TLS handshake
    failed) is shown as it came."""
    b = Build("scenarios/tls.yaml", "TLS")
    b.session(tls_mode="implicit")
    b.note("info", "connected to 127.0.0.1:2465")
    b.end_session("error", ExitClass.NETWORK, "TLS handshake with 127.0.0.1:2465 failed", closed=None)
    run = b.finish("error", ExitClass.NETWORK)
    assert "        # connected to 127.0.0.1:2465" in console(run, verbose=True).splitlines()
    rep = TranscriptReporter(tmp_path)
    w = rep.for_run("scenarios/tls.yaml", "TLS")
    feed(w, run)
    rep.close()
    assert "--- info: connected to 127.0.0.1:2465 ---" in w.path.read_text()


# ---------------------------------------------------------------- each thing announced once
# The engine announces a connection (Connected), a handshake (TLSStarted), a retry (Retrying)
# and a step a spawned program performed (StepResult.performed_by) once each, in fields; the
# reporters show what they are given and read no meaning into any text.


def _transcript(tmp_path, run) -> str:
    rep = TranscriptReporter(tmp_path)
    w = rep.for_run(run[1].file, run[1].name, run[1].provider)
    feed(w, run)
    rep.close()
    return w.path.read_text()


def test_tls_is_shown_from_tlsstarted_only(tmp_path):
    """Connected may carry what the transport knew of TLS at connect (implicit TLS); only the one
    TLSStarted is the handshake's announcement: shown once, with its own words, where it came."""
    at_connect = TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", None)  # no certificate known yet
    b = Build("scenarios/smtps.yaml", "SMTPS")
    b.session(tls_mode="implicit", port=2465)
    b.events.append(Connected(ConnectInfo("127.0.0.1:2465", "socket", at_connect), b.tick()))
    b.note("chatter", "depth=0 CN=mail.example.test")
    b.tls(TLS13)
    b.recv(b"220 ready\r\n")
    b.step(action="read", expected="220", reply=smtp("220 ready"))
    b.end_session()
    run = b.finish()
    for verbose in (False, True):
        lines = console(run, verbose=verbose).splitlines()
        tls = [ln for ln in lines if "TLSv1.3" in ln]
        assert tls == ["  TLS: " + TLS13.describe()], lines
        if verbose:  # where TLSStarted came: after what was printed before the handshake ended
            assert lines.index("        | depth=0 CN=mail.example.test") < lines.index(tls[0])
    text = _transcript(tmp_path, run)
    assert [ln.split("--- ", 1)[1] for ln in text.splitlines() if "TLSv1.3" in ln] == [
        f"TLS (implicit): {TLS13.describe()} ---"
    ]
    # openssl -starttls: the handshake announced at connect, in a STARTTLS session
    text = _transcript(tmp_path / "openssl", _starttls_run(tls_after_connect=True))
    assert text.count("TLSv1.3") == 1 and f"--- TLS started: {TLS13.describe()} ---" in text


def test_notes_are_shown_as_they_came(tmp_path):
    """A note's words are the note's: one that reads like an announcement is not taken for one
    (nor does it hide the event that really announces)."""
    b = Build("scenarios/send.yaml", "Send mail")
    b.session(tls_mode="starttls")
    b.note("info", "connected to 127.0.0.1:2525")
    b.connected()
    b.note("info", "TLS established: " + TLS13.describe())
    b.tls(TLS13)
    b.end_session()
    run = b.finish()
    lines = console(run, verbose=True).splitlines()
    assert "        # connected to 127.0.0.1:2525" in lines
    assert "  connected to 127.0.0.1:2525 via socket" in lines
    assert "        # TLS established: " + TLS13.describe() in lines
    assert "  TLS: " + TLS13.describe() in lines
    assert [ln for ln in console(run).splitlines() if "TLSv1.3" in ln] == ["  TLS: " + TLS13.describe()]
    text = _transcript(tmp_path, run)
    assert "--- info: connected to 127.0.0.1:2525 ---" in text
    assert "--- connected to 127.0.0.1:2525 via socket ---" in text
    assert f"--- TLS started: {TLS13.describe()} ---" in text


def test_steps_a_program_performed_are_grouped_by_performed_by():
    """The group comes from `performed_by` (same section, next index, same program), whatever
    the reason's words; a reason that merely reads 'performed by' groups nothing."""
    run = _starttls_run(tls_after_connect=True, reasons=("left to the spawned program:", "STARTTLS left to"))
    lines = console(run).splitlines()
    assert "  1-3 -  skipped: performed by openssl s_client -starttls smtp" in lines, lines
    assert sum("skipped" in ln for ln in lines) == 1

    b = Build("scenarios/send.yaml", "Send mail")
    b.session()
    b.connected()
    kinds = [  # (index, performed_by, reason)
        (1, OPENSSL_STARTTLS, "done by openssl"),
        (2, OPENSSL_STARTTLS, "done by openssl"),
        (3, "openssl s_client -starttls imap", "done by the other one"),  # another program
        (5, "openssl s_client -starttls imap", "done by the other one"),  # not the next index
        (6, None, "performed by openssl s_client -starttls smtp"),  # no program: its own line
        (7, None, "performed by openssl s_client -starttls smtp"),
    ]
    for index, by, reason in kinds:
        b.step("skipped", index=index, sent=f"NOOP {index}", reason=reason, performed_by=by)
    b.step(section="finally", index=1, sent="QUIT", reason=None)
    b.step("skipped", section="finally", index=2, sent="X", reason="r", performed_by=OPENSSL_STARTTLS)
    b.step("skipped", section="finally", index=3, sent="Y", reason="r", performed_by=OPENSSL_STARTTLS)
    lines = [ln for ln in console(b.finish()).splitlines() if "skipped" in ln]
    assert lines == [
        "  1-2 -  skipped: performed by openssl s_client -starttls smtp",
        "    3 C: NOOP 3  -  skipped: done by the other one",
        "    5 C: NOOP 5  -  skipped: done by the other one",
        "    6 C: NOOP 6  -  skipped: performed by openssl s_client -starttls smtp",
        "    7 C: NOOP 7  -  skipped: performed by openssl s_client -starttls smtp",
        "  F2-F3 -  skipped: performed by openssl s_client -starttls smtp",
    ], lines


def _retry_runs():
    """A session retried (its `retry:`) and a scenario retried (the suite's --retries)."""
    b = Build("scenarios/fetch.yaml", "Fetch")
    b.session("fetch", "pop3", port=2110, attempt=1, attempts=3)
    b.end_session("error", ExitClass.NETWORK, "connect to 127.0.0.1:2110: connection refused", closed=None)
    b.retrying("session", "fetch", 1, 3, "connect to 127.0.0.1:2110: connection refused", 0.5)
    b.session("fetch", "pop3", port=2110, attempt=2, attempts=3)
    b.connected()
    b.recv(b"+OK hi\r\n")
    b.step(action="read", expected="+OK", reply=Reply(b"+OK hi\r\n", ("+OK hi",), "+OK"))
    b.end_session()
    session = b.finish()
    c = Build("scenarios/late.yaml", "late")
    c.retrying("scenario", "late", 1, 3, "connect to 127.0.0.1:2525: connection refused", 1.0)
    c.result.retries = 1
    return session, c.finish()


def test_a_retry_is_shown_once_with_what_failed_and_when_the_next_attempt_comes(tmp_path):
    session, scenario = _retry_runs()
    said = [
        (
            session,
            "retrying session fetch (1/3 failed) in 0.5 s: connect to 127.0.0.1:2110: connection refused",
        ),
        (
            scenario,
            "retrying scenario late (retry 1 of 2: attempt 1 failed before anything was sent) in 1 s: "
            "connect to 127.0.0.1:2525: connection refused",
        ),
    ]
    for run, line in said:
        text = console(run)
        assert [ln for ln in text.splitlines() if "retrying" in ln] == ["  " + line], text
        tr = _transcript(tmp_path / run[1].name, run)
        (note,) = [ln for ln in tr.splitlines() if "retrying" in ln]
        assert note.endswith(f" --- {line} ---"), note
    assert console(scenario).count("retry ") == 1  # what tests/test_suite.py counts
    assert "(after 1 connection retry)" in console(scenario)
    _, root = junit(tmp_path, session)
    assert root.find("testsuite/system-out").text.count("retrying session fetch (1/3 failed)") == 1
    doc = json_report(tmp_path, session, scenario)
    validator().validate(doc)
    assert [s["retries"] for s in doc["scenarios"]] == [0, 1]


def test_decoded_challenge_shown_in_brackets_everywhere(tmp_path):
    text = console(passing_run())
    assert "S: 334 VXNlcm5hbWU6 (Username:)  ✓" in text
    assert "S: 334 UGFzc3dvcmQ6 (Password:)  ✓" in text
    assert "VXNlcm5hbWU6 Username:" not in text
    # failure details, JUnit message and body, transcript step line
    b = Build("scenarios/auth.yaml", "Auth")
    b.session()
    b.connected()
    b.step(
        "failed", sent="NOOP", expected="235", reply=smtp("334 UGFzc3dvcmQ6", note="Password:"), reason="no"
    )
    run = b.finish("failed", ExitClass.FAILED)
    assert "received: 334 UGFzc3dvcmQ6 (Password:)" in console(run)
    _, root = junit(tmp_path, run)
    failure = root.find("testsuite/testcase/failure")
    assert failure.get("message") == "expected 235, got 334 UGFzc3dvcmQ6 (Password:): no"
    assert "received: 334 UGFzc3dvcmQ6 (Password:)" in failure.text
    transcript = _failed_step_transcript(tmp_path / "t", "expected 235, got 334 UGFzc3dvcmQ6")
    assert "; 334 UGFzc3dvcmQ6 (Password:)" in transcript


def test_captures_are_shown(tmp_path):
    b = Build("scenarios/send.yaml", "Send")
    b.session()
    b.connected()
    b.send(b".\r\n")
    b.recv(b"250 2.0.0 Ok: queued as 4F2B3C\r\n")
    b.step(
        action="body",
        sent="body (3 lines, 40 bytes)",
        expected="250",
        reply=smtp("250 2.0.0 Ok: queued as 4F2B3C"),
        captures={"queue_id": "4F2B3C", "token": "****"},
    )
    b.step(sent="QUIT", expected="221", reply=smtp("221 Bye"))
    run = b.finish()
    for verbose in (False, True):
        lines = console(run, verbose=verbose).splitlines()
        i = next(n for n, ln in enumerate(lines) if "queued as 4F2B3C  ✓" in ln)
        assert lines[i + 1] == "        captured queue_id=4F2B3C, token=****"
        assert sum("captured" in ln for ln in lines) == 1  # the step without captures says nothing
    doc = json_report(tmp_path, run)
    assert doc["scenarios"][0]["steps"][0]["captures"] == {"queue_id": "4F2B3C", "token": "****"}
    assert doc["scenarios"][0]["steps"][1]["captures"] == {}
    rep = TranscriptReporter(tmp_path / "tr")
    w = rep.for_run("scenarios/send.yaml", "Send")
    feed(w, run)
    rep.close()
    assert "; captured queue_id=4F2B3C, token=**** ---" in w.path.read_text()


def test_steps_openssl_performed_are_one_line():
    text = console(_starttls_run(tls_after_connect=True))
    lines = text.splitlines()
    assert "  1-3 -  skipped: performed by openssl s_client -starttls smtp" in lines, text
    assert text.count("performed by openssl") == 2  # the steps' line, and the verdict line's count
    assert lines[-1].startswith(
        "PASS Send mail — 1/4 steps (3 performed by openssl s_client -starttls smtp, not checked)"
    )
    i = lines.index("  1-3 -  skipped: performed by openssl s_client -starttls smtp")
    assert re.match(r"\s+4 C: NOOP  S: 250 ok  ✓", lines[i + 1])
    # skips for another reason keep one line each (they show what was not sent)
    assert re.search(r"\s+4 C: DATA  -  skipped: not run: step 3 failed", console(failing_run()))


def test_verbose_telnet_chatter_reads_like_the_terminal():
    b = Build("scenarios/probe.yaml", "Probe")
    b.session()
    for line in ("Trying 127.0.0.1...", "Connected to 127.0.0.1.", "Escape character is 'off'."):
        b.note("chatter", line)
    b.connected()
    b.recv(b"220 hi\r\n")
    b.step(action="read", expected="220", reply=smtp("220 hi"))
    b.send(b"QUIT\r\n")
    b.recv(b"221 b", b"ye\r\n")
    b.note("chatter", "Connection closed by foreign host.")
    b.step(sent="QUIT", expected="221", reply=smtp("221 bye"))
    b.end_session(closed="server")
    lines = console(b.finish(), verbose=True).splitlines()
    wire = [ln for ln in lines if ln.startswith("        ")]
    assert wire == [
        "        | Trying 127.0.0.1...",
        "        | Connected to 127.0.0.1.",
        "        | Escape character is 'off'.",
        "        S: 220 hi",
        "        C: QUIT",
        "        S: 221 bye",
        "        | Connection closed by foreign host.",
    ]
    assert not any("chatter" in ln for ln in lines)


# ---------------------------------------------------------------- the same, from real runs
def _mailrun(tmp_path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "runner", "--sandbox", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        cwd=ROOT,
    )


def test_real_sandbox_send_console_transcript_junit(tmp_path):
    tr, xml = tmp_path / "t", tmp_path / "j.xml"
    r = _mailrun(
        tmp_path, "scenarios/sandbox_send.yaml", "-v", "--transcript", tr, "--report", f"junit={xml}"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.count("connected to 127.0.0.1:") == 1, out
    assert out.count("TLSv1.3") == 1, out
    assert re.search(r"\n\s+F2 \[server closes\] S: EOF \(server closed\)  ✓", out), out
    assert "S: 334 VXNlcm5hbWU6 (Username:)  ✓" in out
    assert re.search(r"\n {8}captured queue_id=[0-9A-Za-z]+\n", out), out
    assert "wonderland" not in out and "d29uZGVybGFuZA" not in out
    (log,) = tr.iterdir()
    text = log.read_text()
    assert text.count("connected to 127.0.0.1:") == 1
    assert "; 334 VXNlcm5hbWU6 (Username:) ---" in text
    assert re.search(r"; captured queue_id=[0-9A-Za-z]+ ---", text)
    assert "wonderland" not in text
    check_junit_structure(ET.parse(xml).getroot())


PLAIN_FAIL = """name: plain
protocol: smtp
connect: {host: 127.0.0.1, port: 2525, tls: none}
steps:
  - S: 220
  - C: EHLO client.test
    S: 250
  - C: AUTH LOGIN
    S: 334
  - C: NOOP
    S: 235
finally:
  - C: QUIT
    S: 221
"""


@pytest.mark.skipif(not shutil.which("telnet"), reason="telnet not installed")
def test_real_telnet_failure_chatter_and_transcript(tmp_path):
    scenario = tmp_path / "plain.yaml"
    scenario.write_text(PLAIN_FAIL)
    tr = tmp_path / "t"
    r = _mailrun(tmp_path, scenario, "-v", "--transport", "telnet", "--transcript", tr)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    trying = lines.index("        | Trying 127.0.0.1...")
    assert trying < next(i for i, ln in enumerate(lines) if ln.startswith("        S: 220 "))
    assert "S: 334 VXNlcm5hbWU6 (Username:)  ✓" in r.stdout
    (log,) = tr.iterdir()
    failed = next(ln for ln in log.read_text().splitlines() if "step 4 FAILED" in ln)
    assert failed.count("expected 235") == 1, failed


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_real_openssl_starttls_skips_on_one_line(tmp_path):
    r = _mailrun(tmp_path, "scenarios/sandbox_send.yaml", "--transport", "openssl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  1-3 -  skipped: performed by openssl s_client -starttls smtp" in r.stdout.splitlines(), r.stdout
    assert r.stdout.count("TLSv1.3") == 1, r.stdout


def test_console_stops_quietly_when_its_reader_goes_away(tmp_path):
    """`mailrun -v | head`: once the pipe's reader is gone the console stops writing, and the
    run and the other reporters go on (no BrokenPipeError escapes into the engine)."""
    import os

    from runner.reporters.console import ConsoleReporter

    r, w = os.pipe()
    os.close(r)
    stream = os.fdopen(w, "w")
    console = ConsoleReporter(stream, color=False)
    console._raw("first line\n")
    console._flush_stream()  # EPIPE here: the reader is gone
    console._emit("second line")  # no exception
    console.close()
    assert console._closed_by_reader
    try:
        stream.close()
    except OSError:
        pass
