"""Capability lists seen and used, against the real Postfix and Dovecot of the test bed: `{{ caps.X }}`,
`requires:` (step, session, scenario), `when:`, the list dropped at STARTTLS and refreshed after
it and after an IMAP LOGIN, and how skipped / not needed show in the console, JSON and JUnit.

Postfix's `smtp` port offers STARTTLS, SIZE 10240000 and AUTH PLAIN LOGIN; `smtp_lean` is a second
listener whose EHLO leaves out AUTH and STARTTLS (smtpd_discard_ehlo_keywords); `submission`
offers AUTH only after STARTTLS (smtpd_tls_auth_only)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema

from tests.support.servers import Server, scripted
from tests.test_exit_status import mailrun, write

REPO = Path(__file__).resolve().parent.parent
REPORT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((REPO / "schemas" / "report.schema.json").read_text())
)

SMTP = """\
    name: capability aware
    protocol: smtp
    connect: {host: $host, port: $port, timeout: 5, tls: starttls}
    steps:
      - S: 220
      - C: EHLO client.example
        S: 250
      - C: STARTTLS
        S: 220
        starttls: true
        when: STARTTLS
      - C: EHLO client.example
        S: 250
      - C: "NOOP {{ caps.SIZE }} {{ caps.AUTH | default('no-auth') }}"
        S: 250
      - C: AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=
        S: 235
        requires: AUTH=PLAIN
      - C: NOOP
        S: 250
        requires: [SIZE>=10000000, any: [AUTH=CRAM-MD5, AUTH=SCRAM-SHA-256]]
    finally:
      - C: QUIT
        S: 221
    """


def run_json(tmp_path, text: str, *extra, **subs):
    path = write(tmp_path, text, **subs)
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    proc = mailrun(
        path,
        "--insecure",
        "--report",
        f"json={report}",
        "--report",
        f"junit={junit}",
        "--transcript",
        tmp_path / "t",
        *extra,
    )
    doc = json.loads(report.read_text())
    REPORT_SCHEMA.validate(doc)  # the new statuses and fields are documented
    return proc, doc, ET.parse(junit).getroot()


def steps_of(doc) -> list[tuple[str, str | None]]:
    return [(st["status"], st["condition"]) for st in doc["scenarios"][0]["steps"]]


def test_postfix_offers_what_the_steps_require(testbed, tmp_path):
    proc, doc, _ = run_json(tmp_path, SMTP, host=testbed.host, port=testbed.ports["smtp"])
    steps = doc["scenarios"][0]["steps"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s["status"] for s in steps[:6]] == ["passed"] * 6
    assert steps[4]["sent"] == "NOOP 10240000 PLAIN LOGIN"  # the list re-read after TLS
    caps = doc["scenarios"][0]["sessions"][0]["capabilities"]
    assert caps["SIZE"] == "10240000" and caps["AUTH"] == "PLAIN LOGIN" and "STARTTLS" not in caps
    assert doc["scenarios"][0]["sessions"][0]["tls"] is not None
    assert (
        steps[6]["status"] == "skipped"
        and steps[6]["condition"] == "any: [AUTH=CRAM-MD5, AUTH=SCRAM-SHA-256]"
    )
    assert (
        steps[6]["reason"] == "server offers none of AUTH=CRAM-MD5, AUTH=SCRAM-SHA-256 (offers PLAIN LOGIN)"
    )
    assert (
        "skipped: server offers none of AUTH=CRAM-MD5, AUTH=SCRAM-SHA-256 (offers PLAIN LOGIN)" in proc.stdout
    )
    assert proc.stdout.splitlines()[-1].startswith("PASS capability aware")


def test_a_missing_capability_skips_and_when_is_not_needed_in_every_report(testbed, tmp_path):
    proc, doc, junit = run_json(tmp_path, SMTP, host=testbed.host, port=testbed.ports["smtp_lean"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert steps_of(doc) == [
        ("passed", None),
        ("passed", None),
        ("not needed", "STARTTLS"),
        ("passed", None),
        ("passed", None),
        ("skipped", "AUTH=PLAIN"),
        ("skipped", "any: [AUTH=CRAM-MD5, AUTH=SCRAM-SHA-256]"),
        ("passed", None),
    ]
    steps = doc["scenarios"][0]["steps"]
    assert steps[4]["sent"] == "NOOP 10240000 no-auth"
    assert steps[5]["reason"] == "server does not offer AUTH=PLAIN (offers no AUTH)"
    assert doc["summary"]["steps_skipped"] == 2 and doc["summary"]["steps_not_needed"] == 1
    assert doc["scenarios"][0]["sessions"][0]["tls"] is None  # STARTTLS was not needed
    assert "AUTH" not in doc["scenarios"][0]["sessions"][0]["capabilities"]  # discarded by the listener
    out = proc.stdout
    assert "C: STARTTLS  ·  not needed: server does not offer STARTTLS" in out
    assert (
        "C: AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=  -  skipped: server does not offer AUTH=PLAIN (offers no AUTH)"
        in out
    )
    cases = junit.iter("testcase")
    by_name = {c.get("name"): c for c in cases}
    starttls = by_name["step 3: C: STARTTLS"]
    assert starttls.find("skipped") is None and starttls.find("failure") is None
    assert starttls.find("system-out").text == "not needed: server does not offer STARTTLS"
    auth = by_name["step 6: C: AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ="]
    assert auth.find("skipped").get("message") == "server does not offer AUTH=PLAIN (offers no AUTH)"
    assert junit.find("testsuite").get("skipped") == "2"
    (transcript,) = (tmp_path / "t").iterdir()
    text = transcript.read_text()
    assert re.search(r"step 3 NOT NEEDED in \d+ ms \(.*s\.yaml:8\): server does not offer STARTTLS", text)
    assert re.search(r"step 6 SKIPPED in \d+ ms \(.*s\.yaml:16\): server does not offer AUTH=PLAIN", text)
    strict = mailrun(
        write(tmp_path, SMTP, host=testbed.host, port=testbed.ports["smtp_lean"]), "--fail-on-skip"
    )
    assert strict.returncode == 1 and "--fail-on-skip: 1 scenario run(s) skipped something" in strict.stderr


SESSION_REQUIRES = """\
    name: needs auth
    requires: [AUTH=LOGIN]
    sessions:
      - name: send
        protocol: smtp
        connect: {host: $host, port: $port, timeout: 5}
        steps:
          - S: 220
          - C: EHLO client.example
            S: 250
          - C: NOOP
            S: 250
        finally:
          - C: QUIT
            S: 221
      - name: later
        protocol: smtp
        connect: {host: $host, port: $port, timeout: 5}
        steps:
          - S: 220
    """


def test_a_skipped_session_runs_its_finally_and_skips_the_scenario(testbed, tmp_path):
    proc, doc, junit = run_json(
        tmp_path, SESSION_REQUIRES, host=testbed.host, port=testbed.ports["smtp_lean"]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scenario = doc["scenarios"][0]
    assert scenario["status"] == "skipped" and doc["summary"]["skipped"] == 1
    (session,) = scenario["sessions"]  # 'later' is not run
    assert session["status"] == "skipped" and session["condition"] == "AUTH=LOGIN"
    assert session["reason"] == "server does not offer AUTH=LOGIN (offers no AUTH)"
    assert steps_of(doc) == [("passed", None), ("passed", None), ("skipped", "AUTH=LOGIN"), ("passed", None)]
    assert "session send skipped: server does not offer AUTH=LOGIN (offers no AUTH)" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("SKIP needs auth")
    assert "skipped: session 'send' skipped; 1 later session(s) not run" in proc.stdout.splitlines()[-1]
    assert junit.find("testsuite").get("skipped") == "1" and junit.find("testsuite").get("failures") == "0"
    # met on the full listener: both sessions run
    proc, doc, _ = run_json(tmp_path, SESSION_REQUIRES, host=testbed.host, port=testbed.ports["smtp"])
    assert proc.returncode == 0 and doc["scenarios"][0]["status"] == "passed"
    assert [s["status"] for s in doc["scenarios"][0]["sessions"]] == ["passed", "passed"]


SUBMISSION = """\
    name: auth after tls
    protocol: smtp
    connect: {host: $host, port: $port, timeout: 5, tls: starttls}
    requires: AUTH=PLAIN
    steps:
      - S: 220
      - C: EHLO client.example
        S: 250
      - C: STARTTLS
        S: 220
        starttls: true
      - $after_tls
      - C: EHLO client.example
        S: 250
      - C: "NOOP {{ caps.AUTH }}"
        S: 250
    finally:
      - C: QUIT
        S: 221
    """


def test_the_list_from_before_starttls_is_dropped_and_read_again(testbed, tmp_path):
    # submission offers AUTH only after STARTTLS: the session's requires waits for that list
    proc, doc, _ = run_json(
        tmp_path,
        SUBMISSION,
        host=testbed.host,
        port=testbed.ports["submission"],
        after_tls="C: NOOP\n    S: 250",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = doc["scenarios"][0]["steps"]
    assert steps[1]["reply"]["lines"] and not any("AUTH" in ln for ln in steps[1]["reply"]["lines"])
    assert steps[5]["sent"] == "NOOP PLAIN LOGIN" and doc["scenarios"][0]["status"] == "passed"
    # right after the upgrade the old list is gone: a template asking for it is a run error
    proc, doc, _ = run_json(
        tmp_path,
        SUBMISSION,
        host=testbed.host,
        port=testbed.ports["submission"],
        after_tls='C: "NOOP {{ caps.SIZE }}"\n    S: 250',
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    bad = doc["scenarios"][0]["steps"][3]
    assert bad["status"] == "error" and "no capability list seen yet in this session" in bad["reason"]


IMAP = """\
    name: imap caps
    protocol: imap
    connect: {host: $host, port: $port, timeout: 5}
    steps:
      - S: OK
      - C: LOGIN alice wonderland
        S: OK
        requires: [AUTH=PLAIN, IMAP4rev1]
      - C: NOOP
        S: OK
        requires: AUTH=PLAIN
      - C: NOOP
        S: OK
        when: [IDLE, not LOGINDISABLED]
    finally:
      - C: LOGOUT
        S: OK
    """


def test_dovecot_imap_greeting_list_and_the_one_after_login(testbed, tmp_path):
    proc, doc, _ = run_json(tmp_path, IMAP, host=testbed.host, port=testbed.ports["imap"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the greeting's list offers AUTH=PLAIN; LOGIN's OK [CAPABILITY ...] replaces it, without AUTH=
    assert steps_of(doc) == [
        ("passed", None),
        ("passed", None),
        ("skipped", "AUTH=PLAIN"),
        ("passed", None),
        ("passed", None),
    ]


POP3 = """\
    name: pop3 caps
    protocol: pop3
    connect: {host: $host, port: $port, timeout: 5, tls: starttls}
    steps:
      - S: +OK
      - C: CAPA
        S: +OK
      - C: STLS
        S: +OK
        starttls: true
        when: STLS
      - C: CAPA
        S: +OK
      - C: USER alice
        S: +OK
        requires: [USER, AUTH=PLAIN]
      - C: PASS wonderland
        S: +OK
    finally:
      - C: QUIT
        S: +OK
    """


def test_dovecot_pop3_capa(testbed, tmp_path):
    proc, doc, _ = run_json(tmp_path, POP3, host=testbed.host, port=testbed.ports["pop3"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s for s, _ in steps_of(doc)] == ["passed"] * 7
    assert doc["scenarios"][0]["sessions"][0]["tls"] is not None


def test_asking_before_a_list_that_never_came_is_a_run_error(tmp_path):
    # an IMAP greeting without a CAPABILITY code: known only when the session runs
    text = """\
        name: no list
        protocol: imap
        connect: {host: 127.0.0.1, port: $port, timeout: 5}
        steps:
          - S: OK
          - C: NOOP
            S: OK
            requires: IDLE
        """
    with Server(scripted(b"* OK ready\r\n", {b"*": b"a1 OK done\r\n"})) as srv:
        proc, doc, _ = run_json(tmp_path, text, port=srv.port)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    step = doc["scenarios"][0]["steps"][1]
    assert step["status"] == "error" and step["exit_class"] == 2
    assert "'requires' is evaluated before any capability list was seen in this session" in step["reason"]


def test_the_example_scenario_against_both_postfix_listeners(testbed):
    example = "scenarios/smtp_capabilities.yaml"
    full = mailrun(example, "--host", testbed.host, "--port", testbed.ports["smtp"], "--insecure")
    assert full.returncode == 0, full.stdout + full.stderr
    assert "SIZE=10240000" in full.stdout and "501 5.7.0" in full.stdout and "skipped" not in full.stdout
    lean = mailrun(example, "--host", testbed.host, "--port", testbed.ports["smtp_lean"], "--fail-on-skip")
    assert lean.returncode == 1, lean.stdout + lean.stderr
    assert "not needed: server does not offer STARTTLS" in lean.stdout
    assert lean.stdout.count("skipped: server does not offer AUTH=PLAIN (offers no AUTH)") == 2


def test_a_skipped_scenario_does_not_stop_fail_fast(testbed, tmp_path):
    skipped = write(tmp_path, SESSION_REQUIRES, "a.yaml", host=testbed.host, port=testbed.ports["smtp_lean"])
    plain = write(tmp_path, SMTP, "b.yaml", host=testbed.host, port=testbed.ports["smtp"])
    proc = mailrun(skipped, plain, "--fail-fast", "-j", "1", "--insecure")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SKIP needs auth" in proc.stdout and "PASS capability aware" in proc.stdout
    assert "2 scenarios: 1 passed, 0 failed, 0 errors, 1 skipped" in proc.stdout


def test_every_step_status_is_known_to_the_reports():
    import io

    from runner.reporters.console import _STATUS_COLOR, ConsoleReporter
    from runner.results import STATUSES

    schema = json.loads((REPO / "schemas" / "report.schema.json").read_text())
    assert tuple(schema["$defs"]["status"]["enum"]) == STATUSES
    for encoding in ("utf-8", "ascii"):  # the two sets of marks
        console = ConsoleReporter(io.TextIOWrapper(io.BytesIO(), encoding=encoding))
        assert console.unicode == (encoding == "utf-8")
        assert set(console.marks) == set(STATUSES) == set(_STATUS_COLOR)


def test_a_session_skipped_after_its_last_step_is_a_skipped_junit_case(testbed, tmp_path):
    text = """\
        name: nothing after ehlo
        protocol: smtp
        connect: {host: $host, port: $port, timeout: 5}
        requires: AUTH=PLAIN
        steps:
          - S: 220
          - C: EHLO client.example
            S: 250
        finally:
          - C: QUIT
            S: 221
        """
    proc, doc, junit = run_json(tmp_path, text, host=testbed.host, port=testbed.ports["smtp_lean"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doc["scenarios"][0]["status"] == "skipped"
    assert [s for s, _ in steps_of(doc)] == ["passed", "passed", "passed"]
    (case,) = [c for c in junit.iter("testcase") if c.get("name") == "session nothing after ehlo"]
    assert case.find("skipped").get("message") == "server does not offer AUTH=PLAIN (offers no AUTH)"
    assert junit.find("testsuite").get("skipped") == "1"
    assert (
        mailrun(
            write(tmp_path, text, host=testbed.host, port=testbed.ports["smtp_lean"]), "--fail-on-skip"
        ).returncode
        == 1
    )
