"""Transports that skip steps say so (issue 16 part 8): `--transport openssl` with `tls: starttls`
lets `openssl s_client -starttls` play the steps up to STARTTLS, which mailrun then never checks.
Every report counts those steps as performed by the program (runner.results.performed_counts),
and a run none of whose checks was played is `unchecked`, exit 1 (runner.engine.checks).

Every run is the real `mailrun` command with the real `openssl s_client` against the built-in
sandbox (and the Postfix test bed), next to the same scenario over the socket transport."""

from __future__ import annotations

import re
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.test_suite import junit_suites, mailrun, report

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")

OPENSSL = "openssl s_client -starttls smtp"
PERFORMED = f"(3 performed by {OPENSSL}, not checked)"
REPO = Path(__file__).resolve().parent.parent
SEND = "scenarios/sandbox_send.yaml"  # STARTTLS, then AUTH and a message: checks after TLS

# A STARTTLS-injection check: every check is up to and including the STARTTLS step, so a
# transport whose program performs them has tested nothing.
INJECTION = """\
    name: STARTTLS injection
    protocol: smtp
    connect: {host: 127.0.0.1, port: 2525, tls: starttls}
    steps:
      - S: 220
      - C: EHLO client.test
        S: 250
      - raw: "STARTTLS\\r\\nNOOP\\r\\n"
        S: 220
        starttls: true
        name: a command injected after STARTTLS is not answered
    finally:
      - C: QUIT
        S: 221
    """


def write(tmp_path: Path, text: str, name: str = "inject.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(tmp_path: Path, *args, tag: str = "r") -> tuple:
    """`mailrun --sandbox ARGS` with every report: (process, JSON, JUnit suites, HTML, transcripts)."""
    out = tmp_path / tag
    reports = ["--report", f"json={out}.json", "--report", f"junit={out}.xml", "--report", f"html={out}.html"]
    proc = mailrun("--sandbox", *args, *reports, "--transcript", out)
    assert Path(f"{out}.json").exists(), proc.stdout + proc.stderr
    doc = report(Path(f"{out}.json"))
    suites = junit_suites(Path(f"{out}.xml"))
    logs = "".join(p.read_text() for p in sorted(out.iterdir()))
    return proc, doc, suites, Path(f"{out}.html").read_text(), logs


def verdicts(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if re.match(r"(PASS|FAIL|ERROR|SKIP|UNCHECKED) ", ln)]


def props(suite: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in suite.find("properties")}


def test_a_starttls_scenario_under_openssl_counts_what_openssl_performed(tmp_path):
    proc, doc, (suite,), page, logs = run(tmp_path, SEND, "--transport", "openssl")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = verdicts(proc.stdout)
    assert re.fullmatch(rf"PASS Sandbox send \(.*\) — 10/13 steps {re.escape(PERFORMED)}, [\d.]+ s", line), (
        line
    )
    # JSON: per scenario and in the summary, the performed steps among the skipped ones
    sc = doc["scenarios"][0]
    assert (sc["status"], sc["steps_passed"], sc["steps_total"], sc["steps_performed"]) == (
        "passed",
        10,
        13,
        3,
    )
    assert doc["summary"]["steps_performed"] == 3 and doc["summary"]["steps_skipped"] == 3
    assert doc["summary"]["unchecked"] == 0
    # JUnit: the three are skipped cases that say the program performed them, not plain skips
    messages = [
        c.find("skipped").get("message") for c in suite.iter("testcase") if c.find("skipped") is not None
    ]
    assert messages == [f"performed by {OPENSSL}, not checked"] * 3
    assert props(suite)["steps_performed"] == "3" and suite.get("failures") == "0"
    # HTML: the verdict line, the scenario's heading and each step's badge
    assert f"10/13 steps {PERFORMED}" in page
    assert page.count('<span class="badge status-skipped">not checked</span>') == 3
    assert 'data-group="passed"' in page
    # transcript: each such step, and the summary line
    assert [ln.split(" (")[0] for ln in re.findall(r"--- (step \d NOT CHECKED in \d+ ms[^\n]*)", logs)] == [
        f"step {i} NOT CHECKED in 0 ms" for i in (1, 2, 3)
    ], logs
    assert f"=== PASS Sandbox send (SMTP STARTTLS, AUTH LOGIN, DATA) — 10/13 steps {PERFORMED}" in logs


def test_over_the_socket_transport_nothing_is_said_to_be_performed(tmp_path):
    proc, doc, (suite,), page, logs = run(tmp_path, SEND)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = verdicts(proc.stdout)
    assert re.fullmatch(r"PASS Sandbox send \(.*\) — 13/13 steps, [\d.]+ s", line), line
    assert doc["scenarios"][0]["steps_performed"] == 0 and doc["summary"]["steps_performed"] == 0
    assert "steps_performed" not in props(suite)
    for text in (proc.stdout, page, logs):
        assert "performed by" not in text and "not checked" not in text.lower()


def test_a_scenario_whose_checks_are_all_up_to_starttls_is_unchecked_not_pass(tmp_path):
    path = write(tmp_path, INJECTION)
    proc, doc, (suite,), page, logs = run(tmp_path, path, "--transport", "openssl")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    why = f"no check was played: every step with an S: was performed by {OPENSSL} (the socket transport plays them)"
    (line,) = verdicts(proc.stdout)
    assert re.fullmatch(
        rf"UNCHECKED STARTTLS injection — 1/4 steps {re.escape(PERFORMED)}, [\d.]+ s — {re.escape(why)}", line
    )
    sc = doc["scenarios"][0]
    assert (sc["status"], sc["exit_class"], sc["reason"], sc["steps_performed"]) == ("unchecked", 1, why, 3)
    assert doc["exit_class"] == 1 and doc["summary"]["unchecked"] == 1 and doc["summary"]["passed"] == 0
    assert [st["status"] for st in sc["steps"]] == ["skipped"] * 3 + ["passed"]  # (finally: clean-up)
    # JUnit: a failure a CI reader shows red, with its own type
    (failure,) = suite.iter("failure")
    assert failure.get("type") == "unchecked" and failure.get("message") == why
    assert (suite.get("failures"), suite.get("skipped"), props(suite)["status"]) == ("1", "3", "unchecked")
    assert 'data-group="failed"' in page and '<span class="badge status-unchecked">UNCHECKED</span>' in page
    assert f"=== UNCHECKED STARTTLS injection — 1/4 steps {PERFORMED}" in logs
    # the same file over the socket transport checks the injection, and passes
    proc = mailrun("--sandbox", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.fullmatch(r"PASS STARTTLS injection — 4/4 steps, [\d.]+ s", verdicts(proc.stdout)[0])


def test_an_unchecked_run_stops_fail_fast_and_counts_in_a_suite(tmp_path):
    inject = write(tmp_path, INJECTION, "a_inject.yaml")
    send = tmp_path / "b_send.yaml"  # (the include is found from the repository's copy)
    send.write_text((REPO / SEND).read_text().replace("lib/", f"{REPO}/scenarios/lib/"))
    proc = mailrun("--sandbox", inject, send, "--transport", "openssl")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 scenarios: 1 passed, 0 failed, 0 errors, 1 unchecked" in proc.stdout
    rows = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if re.search(r"\d+/\d+ \(3 performed\)", ln)}
    assert "UNCHECKED" in rows["STARTTLS"] and "PASS" in rows["Sandbox"], proc.stdout
    proc = mailrun("--sandbox", inject, send, "--transport", "openssl", "--fail-fast", "-q", "-j", "1")
    assert proc.returncode == 1 and "1 not run" in proc.stdout, proc.stdout + proc.stderr
    assert "1-3 -" not in proc.stdout  # -q: the verdict line alone counts the performed steps


def test_a_tls_check_is_a_check_openssl_plays(tmp_path):
    """tls_expect is checked on openssl's handshake: the run tested something, so it passes."""
    text = INJECTION.replace("    steps:\n", '    tls_expect: {version: ">= TLSv1.2"}\n    steps:\n')
    proc = mailrun("--sandbox", write(tmp_path, text), "--transport", "openssl")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = verdicts(proc.stdout)
    assert line.startswith(f"PASS STARTTLS injection — 2/5 steps {PERFORMED}"), line


def test_postfix_starttls_checks_under_openssl_are_unchecked(testbed, tmp_path):
    text = INJECTION.replace("127.0.0.1, port: 2525", f"{testbed.host}, port: {testbed.ports['smtp']}")
    path = write(tmp_path, text)
    proc = mailrun(path, "--transport", "openssl", "--insecure")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert verdicts(proc.stdout)[0].startswith(f"UNCHECKED STARTTLS injection — 1/4 steps {PERFORMED}")


def test_merge_carries_the_performed_counts_and_the_unchecked_status(tmp_path):
    inject = write(tmp_path, INJECTION)
    live = ["--report", f"json={tmp_path / 'a.json'}", "--report", f"junit={tmp_path / 'a.xml'}"]
    assert mailrun("--sandbox", inject, "--transport", "openssl", *live).returncode == 1
    assert (
        mailrun(
            "--sandbox", SEND, "--transport", "openssl", "--report", f"json={tmp_path / 'b.json'}"
        ).returncode
        == 0
    )
    merged = ["--report", f"json={tmp_path / 'm.json'}", "--report", f"junit={tmp_path / 'm.xml'}"]
    proc = mailrun("report", "merge", tmp_path / "a.json", tmp_path / "b.json", *merged)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counted = re.search(r"merged 2 scenario run\(s\) from 2 report\(s\): ([^>]*) ->", proc.stderr)
    assert counted and sorted(counted[1].split(", ")) == ["1 passed", "1 unchecked"], proc.stderr
    doc = report(tmp_path / "m.json")
    assert doc["exit_class"] == 1
    assert (doc["summary"]["steps_performed"], doc["summary"]["unchecked"], doc["summary"]["passed"]) == (
        6,
        1,
        1,
    )
    by_name = {sc["name"]: sc for sc in doc["scenarios"]}
    assert by_name["STARTTLS injection"] == report(tmp_path / "a.json")["scenarios"][0]
    assert by_name["STARTTLS injection"]["status"] == "unchecked"
    one = ["--report", f"junit={tmp_path / 'one.xml'}"]
    assert mailrun("report", "merge", tmp_path / "a.json", *one).returncode == 0
    stable = lambda p: re.sub(r' timestamp="[^"]*"', "", p.read_text())  # noqa: E731
    assert stable(tmp_path / "one.xml") == stable(tmp_path / "a.xml")
    (suite, _) = junit_suites(tmp_path / "m.xml")
    assert next(suite.iter("failure")).get("type") == "unchecked"


TWO_PROGRAMS = """\
    name: two programs
    sessions:
      - name: send
        protocol: smtp
        connect: {host: 127.0.0.1, port: 2525, tls: starttls}
        steps:
          - S: 220
          - C: EHLO client.test
            S: 250
          - C: STARTTLS
            S: 220
            starttls: true
          - C: NOOP
            S: 250
      - name: read
        protocol: imap
        connect: {host: 127.0.0.1, port: 1143, tls: starttls}
        steps:
          - S: OK
          - C: STARTTLS
            S: OK
            starttls: true
          - C: NOOP
            S: OK
    """


def test_each_program_is_counted_on_the_summary_line(tmp_path):
    proc, doc, (suite,), page, _ = run(tmp_path, write(tmp_path, TWO_PROGRAMS), "--transport", "openssl")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counted = f"(3 performed by {OPENSSL}, 2 by openssl s_client -starttls imap, not checked)"
    (line,) = verdicts(proc.stdout)
    assert line.startswith(f"PASS two programs — 2/7 steps {counted}, "), line
    assert doc["scenarios"][0]["steps_performed"] == 5 and props(suite)["steps_performed"] == "5"
    assert f"2/7 steps {counted}" in page
