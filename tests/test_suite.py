"""Suites (runner/suite.py and its CLI wiring): discovery, selection, parallel runs in a stable
order, provider matrix, reports, transcripts on interruption, --retries, exit status, progress.

Every test runs the real `mailrun` command (`python -m runner`) as a subprocess against real
servers: the Postfix/Dovecot test bed, or the loopback helper servers of tests/support."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pexpect
import pytest

from tests.support.servers import Server, close_mid_reply, record, scripted, silent

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schemas" / "report.schema.json").read_text())
XSD = REPO / "tests" / "data" / "junit.xsd"
T = 60  # seconds: deadline of every mailrun subprocess here

try:
    import xmlschema
except ImportError:  # pragma: no cover - a test extra
    xmlschema = None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env.pop("CI", None)
    env["PYTHONPATH"] = str(REPO)
    return env


def mailrun(*args, timeout: float = T) -> subprocess.CompletedProcess:
    """`mailrun ARGS` with stdout/stderr piped (not a TTY)."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def smtp_scenario(
    path: Path, name: str, port: int | str, *, tags=(), extra_steps: str = "", vars_: str = ""
) -> Path:
    """A small SMTP conversation against 127.0.0.1:port (a scripted helper server)."""
    steps = extra_steps or "  - C: NOOP\n    S: 250\n"
    text = (
        f"name: {name}\nprotocol: smtp\ntags: [{', '.join(tags)}]\n"
        f"connect: {{host: 127.0.0.1, port: {port}, timeout: 5, connect_timeout: 3}}\n"
        + (f"vars: {vars_}\n" if vars_ else "")
        + "steps:\n  - S: 220\n"
        + steps
        + "finally:\n  - C: QUIT\n    S: 221\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def smtp_server(**replies: bytes) -> Server:
    table = {b"QUIT": b"221 bye\r\n", b"*": b"250 ok\r\n"}
    table.update({k.encode(): v for k, v in replies.items()})
    return Server(scripted(b"220 helper ready\r\n", table))


def report(path: Path) -> dict:
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, SCHEMA)
    return doc


def ran(doc: dict) -> list[str]:
    return [Path(s["file"]).name for s in doc["scenarios"]]


def junit_suites(path: Path) -> list[ET.Element]:
    data = path.read_bytes()
    if xmlschema is not None:
        xmlschema.XMLSchema(str(XSD)).validate(str(path))
    root = ET.fromstring(data)
    assert root.tag == "testsuites"
    return root.findall("testsuite")


# ----------------------------------------------------------------------------- discovery


def test_discovery_sorted_yaml_and_yml_fragments_skipped(tmp_path):
    d = tmp_path / "suite"
    with smtp_server() as srv:
        smtp_scenario(d / "b.yml", "bee", srv.port)
        smtp_scenario(d / "a.yaml", "ay", srv.port)
        smtp_scenario(d / "sub" / "c.yaml", "cee", srv.port)
        write(d / "lib" / "frag.yaml", "steps:\n  - C: NOOP\n    S: 250\n")  # a fragment: never run alone
        write(d / "notes.txt", "not a scenario\n")
        write(d / "README.md", "# not a scenario\n")
        out = tmp_path / "r.json"
        res = mailrun(d, "--report", f"json={out}")
        assert res.returncode == 0, res.stdout + res.stderr
        assert ran(report(out)) == ["a.yaml", "b.yml", "c.yaml"]
        assert len(srv.conns) == 3

        # a glob, and files given explicitly keep the order given
        res = mailrun(str(d / "*.y*ml"), "--report", f"json={out}")
        assert res.returncode == 0, res.stderr
        assert ran(report(out)) == ["a.yaml", "b.yml"]
        res = mailrun(d / "sub" / "c.yaml", d / "a.yaml", "--report", f"json={out}")
        assert ran(report(out)) == ["c.yaml", "a.yaml"]
        before = len(srv.conns)

        # a path that does not exist: exit 2, named, nothing sent
        res = mailrun(d / "a.yaml", tmp_path / "missing.yaml")
        assert res.returncode == 2
        assert "missing.yaml" in res.stderr and "not found" in res.stderr
        assert "Traceback" not in res.stderr
        res = mailrun(tmp_path / "empty-dir-that-is-not-there")
        assert res.returncode == 2
        (tmp_path / "empty").mkdir()
        res = mailrun(tmp_path / "empty")
        assert res.returncode == 2 and "no scenario files" in res.stderr
        time.sleep(0.2)
        assert len(srv.conns) == before


def test_one_invalid_file_among_valid_ones_runs_nothing(tmp_path):
    with Server(record(b"220 rec\r\n")) as srv:
        for i in range(3):
            smtp_scenario(tmp_path / f"s{i}.yaml", f"valid {i}", srv.port)
        write(
            tmp_path / "s9.yaml", "name: broken\nprotocol: smtp\nconnect: {host: 127.0.0.1}\nsteps: [{C: }]\n"
        )
        res = mailrun(tmp_path, "-j", "4")
        assert res.returncode == 2
        assert "s9.yaml" in res.stderr and "nothing was sent" in res.stderr
        assert res.stdout == ""
        time.sleep(0.3)
        assert srv.conns == []


# ----------------------------------------------------------------------------- -j N vs -j 1 on the bed


def write_bed_suite(d: Path, bed, refused_port: int) -> None:
    """12 scenarios against the real Postfix/Dovecot: SMTP, POP3 and IMAP, plain, STARTTLS and
    implicit TLS, passing, failing (expectation) and erroring (connection refused)."""
    p, ca, h = bed.ports, bed.ca_path, bed.host
    write(d / "lib" / "greet.yaml", "steps:\n  - S: 220\n    name: greeting\n")
    write(
        d / "01_smtp_ehlo.yaml",
        f"""
        name: smtp ehlo
        protocol: smtp
        tags: [smtp, fast]
        connect: {{host: {h}, port: {p["smtp"]}}}
        steps:
          - include: lib/greet.yaml
          - C: EHLO client.example.test
            S: {{code: 250, lines: ['^250[- ]STARTTLS$']}}
          - C: QUIT
            S: 221
          - S: EOF
        """,
    )
    write(
        d / "02_submission_starttls.yaml",
        f"""
        name: submission starttls
        protocol: smtp
        tags: [smtp, tls]
        connect: {{host: {h}, port: {p["submission"]}, tls: starttls, ca: {ca}}}
        steps:
          - S: 220
          - C: EHLO client.example.test
            S: 250
          - C: STARTTLS
            S: 220
            starttls: true
          - C: EHLO client.example.test
            S: {{code: 250, lines: ['^250[- ]AUTH\\b']}}
        finally:
          - C: QUIT
            S: 221
        """,
    )
    write(
        d / "03_smtps_auth_plain.yaml",
        f"""
        name: smtps auth plain
        protocol: smtp
        tags: [smtp, tls, auth]
        connect: {{host: {h}, port: {p["smtps"]}, tls: implicit, ca: {ca}}}
        vars: {{user: alice, password: wonderland}}
        secrets: [password]
        steps:
          - S: 220
          - C: EHLO client.example.test
            S: 250
          - C: "AUTH PLAIN {{{{ auth_plain(user, password) }}}}"
            S: 235
        finally:
          - C: QUIT
            S: 221
        """,
    )
    write(
        d / "04_smtp_send.yaml",
        f"""
        name: smtp send to bob
        protocol: smtp
        tags: [smtp, send, slow]
        connect: {{host: {h}, port: {p["smtp"]}}}
        steps:
          - S: 220
          - C: EHLO client.example.test
            S: 250
          - sleep: 0.3
          - C: MAIL FROM:<alice@example.test>
            S: 250
          - C: RCPT TO:<bob@example.test>
            S: 250
          - C: DATA
            S: 354
          - body: |
              Subject: mailrun suite test

              .a dot line
            S: 250
            capture: {{queue_id: 'queued as ([A-Za-z0-9]+)'}}
        finally:
          - C: QUIT
            S: 221
        """,
    )
    write(
        d / "05_smtp_wrong_code.yaml",
        f"""
        name: smtp wrong code
        protocol: smtp
        tags: [smtp, fail]
        connect: {{host: {h}, port: {p["smtp"]}}}
        steps:
          - S: 220
          - C: NOOP
            S: 554
        finally:
          - C: QUIT
            S: 221
        """,
    )
    write(
        d / "06_pop3_login.yaml",
        f"""
        name: pop3 login
        protocol: pop3
        tags: [pop3]
        connect: {{host: {h}, port: {p["pop3"]}}}
        vars: {{password: wonderland}}
        secrets: [password]
        steps:
          - S: +OK
          - C: USER alice
            S: +OK
          - C: "PASS {{{{ password }}}}"
            S: +OK
          - C: NOOP
            S: +OK
        finally:
          - C: QUIT
            S: +OK
        """,
    )
    write(
        d / "07_pop3_bad_password.yaml",
        f"""
        name: pop3 bad password
        protocol: pop3
        tags: [pop3, fail]
        connect: {{host: {h}, port: {p["pop3"]}}}
        steps:
          - S: +OK
          - C: USER alice
            S: +OK
          - C: PASS not-the-password
            S: +OK
        finally:
          - C: QUIT
            S: +OK
        """,
    )
    write(
        d / "08_pop3s_capa.yaml",
        f"""
        name: pop3s capa
        protocol: pop3
        tags: [pop3, tls]
        connect: {{host: {h}, port: {p["pop3s"]}, tls: implicit, ca: {ca}}}
        steps:
          - S: +OK
          - C: CAPA
            S: {{code: +OK, lines: ['^UIDL$']}}
          - C: QUIT
            S: +OK
        """,
    )
    write(
        d / "09_imap_login.yaml",
        f"""
        name: imap login
        protocol: imap
        tags: [imap, slow]
        connect: {{host: {h}, port: {p["imap"]}}}
        vars: {{password: wonderland}}
        secrets: [password]
        steps:
          - S: OK
          - C: "LOGIN alice {{{{ password }}}}"
            S: OK
          - sleep: 0.3
          - C: NOOP
            S: OK
        finally:
          - C: LOGOUT
            S: OK
        """,
    )
    write(
        d / "10_imap_starttls.yaml",
        f"""
        name: imap starttls
        protocol: imap
        tags: [imap, tls]
        connect: {{host: {h}, port: {p["imap"]}, tls: starttls, ca: {ca}}}
        steps:
          - S: OK
          - C: STARTTLS
            S: OK
            starttls: true
          - C: LOGIN bob builder
            S: OK
        finally:
          - C: LOGOUT
            S: OK
        """,
    )
    write(
        d / "11_imaps_wrong_login.yaml",
        f"""
        name: imaps wrong login
        protocol: imap
        tags: [imap, tls, fail]
        connect: {{host: {h}, port: {p["imaps"]}, tls: implicit, ca: {ca}}}
        steps:
          - S: OK
          - C: LOGIN alice nope
            S: OK
        finally:
          - C: LOGOUT
            S: OK
        """,
    )
    write(
        d / "12_smtp_refused.yaml",
        f"""
        name: smtp refused
        protocol: smtp
        tags: [smtp, down]
        connect: {{host: 127.0.0.1, port: {refused_port}, connect_timeout: 3}}
        steps:
          - S: 220
        """,
    )


_TIMING_KEYS = {"started", "duration", "elapsed", "slowest_steps"}  # which steps are slowest: timing


def _strip_timings(obj):
    if isinstance(obj, dict):
        return {k: _strip_timings(v) for k, v in obj.items() if k not in _TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timings(v) for v in obj]
    return obj


def _normal(text: str) -> str:
    text = re.sub(r"^slowest steps:\n(?:  .*\n)*", "", text, flags=re.M)  # which ones: timing
    text = re.sub(r"queued as [A-Za-z0-9]+", "queued as Q", text)
    text = re.sub(r"queue_id=[A-Za-z0-9]+", "queue_id=Q", text)
    text = re.sub(r"\(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)", "(D secs)", text)  # Dovecot's timings
    text = re.sub(r"<?\d+(\.\d+)? (ms|s)\b", "T", text)
    return re.sub(r"[ -]+", " ", text)  # column widths follow the longest time


def _normal_report(doc: dict) -> dict:
    for sc in doc["scenarios"]:
        sc.pop("events", None)  # the wire's times and read sizes differ from run to run
        for st in sc["steps"]:
            if "queue_id" in st["captures"]:
                st["captures"]["queue_id"] = "Q"
    return json.loads(_normal(json.dumps(_strip_timings(doc))))


@pytest.mark.timeout(100)
def test_parallel_suite_reports_like_serial(testbed, tmp_path, free_port):
    d = tmp_path / "bed"
    write_bed_suite(d, testbed, free_port())
    outs = {}
    for jobs in ("1", "8"):
        rj, rx = tmp_path / f"r{jobs}.json", tmp_path / f"r{jobs}.xml"
        start = time.monotonic()
        res = mailrun(
            d,
            "-j",
            jobs,
            "--report",
            f"json={rj}",
            "--report",
            f"junit={rx}",
            "--transcript",
            tmp_path / f"t{jobs}",
        )
        outs[jobs] = (res, report(rj), junit_suites(rx), time.monotonic() - start)
        assert res.returncode == 3, res.stdout + res.stderr  # the refused port is the worst
        assert "Traceback" not in res.stderr

    res1, doc1, suites1, _ = outs["1"]
    res8, doc8, suites8, _ = outs["8"]
    statuses = {Path(s["file"]).name: s["status"] for s in doc1["scenarios"]}
    assert statuses == {
        "01_smtp_ehlo.yaml": "passed",
        "02_submission_starttls.yaml": "passed",
        "03_smtps_auth_plain.yaml": "passed",
        "04_smtp_send.yaml": "passed",
        "05_smtp_wrong_code.yaml": "failed",
        "06_pop3_login.yaml": "passed",
        "07_pop3_bad_password.yaml": "failed",
        "08_pop3s_capa.yaml": "passed",
        "09_imap_login.yaml": "passed",
        "10_imap_starttls.yaml": "passed",
        "11_imaps_wrong_login.yaml": "failed",
        "12_smtp_refused.yaml": "error",
    }, [(s["name"], s["reason"]) for s in doc1["scenarios"]]
    assert ran(doc1) == sorted(statuses)  # lib/greet.yaml is a fragment, not a scenario
    assert doc1["exit_class"] == 3 and doc1["summary"]["passed"] == 8

    # the same results, in the same order, whatever finished first
    assert _normal_report(doc8) == _normal_report(doc1)
    assert _normal(res8.stdout) == _normal(res1.stdout)
    assert res1.stdout.index("smtp ehlo (") < res1.stdout.index("smtp refused (")
    assert re.search(r"^scenario +provider +steps +time +verdict +first failure$", res8.stdout, re.M)
    assert re.search(r"^12 scenarios: 8 passed, 3 failed, 1 errors", res8.stdout, re.M)

    # -j 8 really overlapped conversations; -j 1 never did
    def overlaps(doc) -> bool:
        from datetime import datetime

        spans = [(datetime.fromisoformat(s["started"]).timestamp(), s["duration"]) for s in doc["scenarios"]]
        spans.sort()
        return any(b[0] < a[0] + a[1] - 0.005 for a, b in zip(spans, spans[1:], strict=False))

    assert overlaps(doc8)
    assert not overlaps(doc1)

    # JUnit: one testsuite per scenario run, in the same order, same verdict counts
    assert len(suites1) == len(suites8) == 12
    for a, b in zip(suites1, suites8, strict=True):
        assert a.get("name") == b.get("name")
        for attr in ("tests", "failures", "errors", "skipped"):
            assert a.get(attr) == b.get(attr)
    failing = [s.get("name") for s in suites8 if s.get("failures") != "0" or s.get("errors") != "0"]
    assert len(failing) == 4

    # no secret in any channel: password, its base64 forms, the AUTH PLAIN blob
    import base64

    blob = base64.b64encode(b"\0alice\0wonderland").decode()
    channels = [res1.stdout, res1.stderr, res8.stdout, res8.stderr, json.dumps(doc1), json.dumps(doc8)]
    channels += [(tmp_path / "r1.xml").read_text(), (tmp_path / "r8.xml").read_text()]
    for jobs in ("1", "8"):  # --transcript: one file per run, whoever finished first
        logs = sorted(f.name for f in (tmp_path / f"t{jobs}").iterdir())
        assert logs == [f"{Path(n).stem}-1.log" for n in sorted(statuses)]
        channels += [f.read_text() for f in (tmp_path / f"t{jobs}").iterdir()]
    assert "AUTH PLAIN ****" in (tmp_path / "t8" / "03_smtps_auth_plain-1.log").read_text()
    for text in channels:
        for secret in ("wonderland", blob, base64.b64encode(b"wonderland").decode()):
            assert secret not in text


# ----------------------------------------------------------------------------- selection


def _tagged_suite(d: Path, port: int) -> None:
    smtp_scenario(d / "a_smtp.yaml", "Alpha SMTP", port, tags=("smtp", "fast"))
    smtp_scenario(d / "b_pop.yaml", "Bravo mailbox", port, tags=("pop3",))
    smtp_scenario(d / "c_imap.yaml", "Charlie", port, tags=("imap", "slow"))
    smtp_scenario(d / "d_both.yaml", "Delta", port, tags=("smtp", "slow"))
    smtp_scenario(d / "e_none.yaml", "Echo keyword-in-file", port)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tag", "smtp"], ["a_smtp.yaml", "d_both.yaml"]),
        (["--tag", "smtp", "--tag", "pop3"], ["a_smtp.yaml", "b_pop.yaml", "d_both.yaml"]),
        (["--tag", "not:slow"], ["a_smtp.yaml", "b_pop.yaml", "e_none.yaml"]),
        (["--tag", "smtp", "--tag", "not:slow"], ["a_smtp.yaml"]),
        (["--tag", "not:slow", "--tag", "not:smtp"], ["b_pop.yaml", "e_none.yaml"]),
        (["-k", "bravo"], ["b_pop.yaml"]),  # the name, case-insensitive
        (["-k", "_imap"], ["c_imap.yaml"]),  # the file name
        (["-k", "ta", "--tag", "slow"], ["d_both.yaml"]),
    ],
)
def test_tag_and_keyword_selection(tmp_path, args, expected):
    d = tmp_path / "sel-suite"
    with smtp_server() as srv:
        _tagged_suite(d, srv.port)
        out = tmp_path / "r.json"
        res = mailrun(d, *args, "--report", f"json={out}")
        assert res.returncode == 0, res.stderr
        assert ran(report(out)) == expected
        assert len(srv.conns) == len(expected)


def test_keyword_ignores_the_directories_above_the_file_and_no_match_is_exit_2(tmp_path):
    d = tmp_path / "sel-suite"
    with Server(record(b"220 rec\r\n")) as srv:
        _tagged_suite(d, srv.port)
        # every file lives below 'sel-suite' (and tmp_path): that must not select them all
        for args in (["-k", "sel-suite"], ["--tag", "nosuchtag"], ["--tag", "not:smtp", "-k", "alpha"]):
            res = mailrun(d, *args)
            assert res.returncode == 2, (args, res.stdout)
            assert "no scenario matched" in res.stderr
        time.sleep(0.2)
        assert srv.conns == []


# ----------------------------------------------------------------------------- --fail-fast


def test_fail_fast_serial_stops_exactly_after_the_first_failure(tmp_path):
    with smtp_server(RSET=b"554 no\r\n") as srv:
        for i in range(5):
            steps = "  - C: RSET\n    S: 250\n" if i == 1 else ""
            smtp_scenario(tmp_path / f"s{i}.yaml", f"s{i}", srv.port, extra_steps=steps)
        out = tmp_path / "r.json"
        res = mailrun(tmp_path, "-j", "1", "--fail-fast", "--report", f"json={out}")
        assert res.returncode == 1
        doc = report(out)
        # the runs it never started are listed as such
        assert ran(doc) == ["s0.yaml", "s1.yaml", "s2.yaml", "s3.yaml", "s4.yaml"]
        assert [s["status"] for s in doc["scenarios"]] == ["passed", "failed"] + ["not run"] * 3
        time.sleep(0.2)
        assert len(srv.conns) == 2
        # without --fail-fast all five run
        res = mailrun(tmp_path, "-j", "1", "--report", f"json={out}")
        assert res.returncode == 1 and len(report(out)["scenarios"]) == 5


def test_fail_fast_parallel_starts_nothing_after_the_first_failure(tmp_path):
    from datetime import datetime

    with smtp_server(RSET=b"554 no\r\n") as srv:
        smtp_scenario(
            tmp_path / "s00.yaml", "fails at once", srv.port, extra_steps="  - C: RSET\n    S: 250\n"
        )
        for i in range(1, 10):
            smtp_scenario(tmp_path / f"s{i:02}.yaml", f"slow {i}", srv.port, extra_steps="  - sleep: 0.4\n")
        out = tmp_path / "r.json"
        res = mailrun(tmp_path, "-j", "2", "--fail-fast", "--report", f"json={out}")
        assert res.returncode == 1
        doc = report(out)
        assert len(doc["scenarios"]) == 10  # the runs never started are listed as `not run`
        doc["scenarios"] = [s for s in doc["scenarios"] if s["status"] != "not run"]
        assert 2 <= len(doc["scenarios"]) < 10
        first = doc["scenarios"][0]
        assert first["status"] == "failed"
        failed_at = datetime.fromisoformat(first["started"]).timestamp() + first["duration"]
        for s in doc["scenarios"][1:]:
            assert datetime.fromisoformat(s["started"]).timestamp() <= failed_at + 0.05, s["name"]
        assert len(srv.conns) == len(doc["scenarios"])


# ----------------------------------------------------------------------------- --matrix


def test_matrix_runs_every_scenario_per_provider_with_var_precedence(tmp_path):
    with smtp_server() as one, smtp_server() as two:
        prov = tmp_path / "providers"
        write(prov / "alpha.yaml", f"port: {one.port}\nlabel: from-alpha\n")
        write(prov / "beta.yml", f"port: {two.port}\nlabel: from-beta\nextra: beta-only\n")
        write(tmp_path / "gamma.yaml", f"port: {two.port}\n")  # a single file; keeps the scenario's label
        scen = tmp_path / "scen"
        for name in ("hello", "world"):
            smtp_scenario(
                scen / f"{name}.yaml",
                name,
                '"{{ port }}"',  # the provider's port (the scenario's own default is refused)
                vars_="{port: 1, label: from-scenario, extra: none}",
                extra_steps='  - C: "NOOP {{ label }} {{ extra }}"\n    S: 250\n',
            )
        rj, rx = tmp_path / "r.json", tmp_path / "r.xml"
        res = mailrun(
            scen,
            "--matrix",
            prov,
            "--matrix",
            tmp_path / "gamma.yaml",
            "-j",
            "3",
            "--report",
            f"json={rj}",
            "--report",
            f"junit={rx}",
        )
        assert res.returncode == 0, res.stdout + res.stderr
        doc = report(rj)
        names = [s["display_name"] for s in doc["scenarios"]]
        assert names == [
            "hello[alpha]",
            "hello[beta]",
            "hello[gamma]",
            "world[alpha]",
            "world[beta]",
            "world[gamma]",
        ]
        assert [s["provider"] for s in doc["scenarios"]][:3] == ["alpha", "beta", "gamma"]
        sent = {s["display_name"]: s["steps"][1]["sent"] for s in doc["scenarios"]}
        assert sent["hello[alpha]"] == "NOOP from-alpha none"
        assert sent["hello[beta]"] == "NOOP from-beta beta-only"
        assert sent["hello[gamma]"] == "NOOP from-scenario none"
        for n in names:
            assert f"PASS {n} " in res.stdout  # console summary lines
            assert f"{n} (" in res.stdout  # console headers
        assert re.search(r"^hello +alpha +", res.stdout, re.M)  # summary table: scenario, provider
        suites = junit_suites(rx)
        assert len(suites) == 6
        assert all(any(n in s.get("name") for n in names) for s in suites)
        assert any("hello[beta]" in s.get("name") for s in suites)
        time.sleep(0.2)
        assert len(one.conns) == 2 and len(two.conns) == 4

        # --var wins over the matrix
        res = mailrun(
            scen / "hello.yaml", "--matrix", prov, "--var", "label=from-cli", "--report", f"json={rj}"
        )
        assert res.returncode == 0, res.stderr
        assert [s["steps"][1]["sent"] for s in report(rj)["scenarios"]] == [
            "NOOP from-cli none",
            "NOOP from-cli beta-only",
        ]

    # a matrix that names nothing usable: exit 2 before anything runs
    (tmp_path / "no-providers").mkdir()
    for bad in (tmp_path / "no-providers", tmp_path / "missing.yaml"):
        res = mailrun(scen / "hello.yaml", "--matrix", bad)
        assert res.returncode == 2, res.stdout
        assert str(bad.name) in res.stderr and "Traceback" not in res.stderr
    other = tmp_path / "other"
    write(other / "alpha.yaml", "port: 1\n")
    res = mailrun(scen / "hello.yaml", "--matrix", prov, "--matrix", other)
    assert res.returncode == 2 and "[alpha]" in res.stderr


# ----------------------------------------------------------------------------- transcripts, Ctrl-C


def _spawn(*args) -> subprocess.Popen:
    # SIGINT back to the default so Python turns it into KeyboardInterrupt even when this test
    # runs in a background job (where the shell ignores SIGINT for its children)
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _hang_scenario(path: Path, name: str, port: int) -> Path:
    return write(
        path,
        f"""
        name: {name}
        protocol: smtp
        connect: {{host: 127.0.0.1, port: {port}, timeout: 30}}
        vars: {{password: sesame-{name}}}
        secrets: [password]
        steps:
          - C: "AUTH PLAIN {{{{ auth_plain('u', password) }}}}"
            S: 235
        """,
    )


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_transcript_written_when_interrupted(tmp_path, jobs):
    with Server(silent(hold=30)) as srv:
        _hang_scenario(tmp_path / "s" / "a_hang.yaml", "hang-a", srv.port)
        _hang_scenario(tmp_path / "s" / "b_hang.yaml", "hang-b", srv.port)
        tr, rj = tmp_path / "tr", tmp_path / "r.json"
        proc = _spawn(tmp_path / "s", "-j", jobs, "--transcript", tr, "--report", f"json={rj}")
        try:
            srv.wait_connection(0, timeout=15).wait_received(b"\r\n", 15)
            if jobs == "2":
                srv.wait_connection(1, timeout=15).wait_received(b"\r\n", 15)
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert proc.returncode == 130, out + err
        assert "interrupted" in err and "Traceback" not in err
        files = sorted(tr.glob("*.log"))
        assert [f.name for f in files] == (
            ["a_hang-1.log"] if jobs == "1" else ["a_hang-1.log", "b_hang-1.log"]
        )
        text = files[0].read_text()
        assert "# scenario: hang-a" in text
        assert re.search(r" C: AUTH PLAIN \*\*\*\*\\r\\n$", text, re.M), text
        for f in files:
            assert "sesame" not in f.read_text()
        if jobs == "1":  # the interrupted run is reported as such, never as passed
            assert "PASS" not in text and "interrupted" in text
            doc = report(rj)
            assert doc["exit_class"] == 130
            assert [(s["status"], s["exit_class"]) for s in doc["scenarios"]] == [
                ("interrupted", 130),
                ("not run", 130),
            ]
        assert "sesame" not in out + err


# ----------------------------------------------------------------------------- --retries


def test_retries_on_a_refused_connection_are_counted_and_reported(tmp_path, free_port):
    port = free_port()
    smtp_scenario(tmp_path / "down.yaml", "down", port)
    rj, rx = tmp_path / "r.json", tmp_path / "r.xml"
    start = time.monotonic()
    res = mailrun(
        tmp_path / "down.yaml", "--retries", "2", "--report", f"json={rj}", "--report", f"junit={rx}"
    )
    assert res.returncode == 3
    assert time.monotonic() - start >= 2.0  # two waits between three attempts
    s = report(rj)["scenarios"][0]
    assert (s["status"], s["retries"]) == ("error", 2) and "refused" in s["reason"]
    assert "after 2 connection retries" in res.stdout
    assert res.stdout.count("retry ") == 2 and "retry 2 of 2" in res.stdout
    assert junit_suites(rx)[0].find("properties/property[@name='retries']").get("value") == "2"
    # each retry is told once: on the live console between the failed attempt and the next one's
    # header, in JUnit's system-out inside the scenario
    lines = res.stdout.splitlines()
    told = [i for i, line in enumerate(lines) if "retrying scenario down" in line]
    assert len(told) == 2 and all(lines[i + 1].startswith("down (") for i in told), lines
    out = "".join(e.text or "" for e in junit_suites(rx)[0].iter("system-out"))
    assert "retry 1 of 2" in out and "retry 2 of 2" in out


def _server_on(port: int, handler) -> Server:
    """tests.support.servers.Server, but listening on a given port."""
    srv = Server(handler)
    srv.listener.close()
    srv.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.listener.bind(("127.0.0.1", port))
    srv.listener.listen(16)
    srv.listener.settimeout(0.1)
    srv.port = port
    return srv


def test_retry_that_finds_the_server_up_passes(tmp_path, free_port):
    port = free_port()
    smtp_scenario(tmp_path / "late.yaml", "late", port)
    rj = tmp_path / "r.json"
    proc = _spawn(tmp_path / "late.yaml", "--retries", "3", "--report", f"json={rj}")
    lines: list[str] = []
    refused = threading.Event()

    def read_stdout():  # the live console says when the first attempt was refused
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ERROR late"):
                refused.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        assert refused.wait(20), "".join(lines)
        # only now start listening: the retry comes a second after the refusal
        with _server_on(port, scripted(b"220 late\r\n", {b"QUIT": b"221 bye\r\n"})) as srv:
            assert proc.wait(20) == 0, "".join(lines) + proc.stderr.read()
            reader.join(5)
            assert len(srv.conns) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    out = "".join(lines)
    s = report(rj)["scenarios"][0]
    assert s["status"] == "passed" and s["retries"] == 1
    assert "PASS late" in out and "(after 1 connection retry)" in out
    assert "retry 1 of 3" in out


def test_no_retry_after_a_failed_expectation_or_once_a_command_went_out(tmp_path):
    with (
        smtp_server(NOOP=b"550 no\r\n") as failing,
        Server(close_mid_reply(b"220 hi\r\n", b"250-par")) as closing,
    ):
        smtp_scenario(tmp_path / "a_expect.yaml", "expectation", failing.port)
        smtp_scenario(
            tmp_path / "b_closed.yaml",
            "closed after EHLO",
            closing.port,
            extra_steps="  - C: EHLO x\n    S: 250\n",
        )
        rj = tmp_path / "r.json"
        res = mailrun(tmp_path, "--retries", "3", "-j", "1", "--report", f"json={rj}")
        assert res.returncode == 3  # 3 (connection closed) > 1 (expectation)
        doc = report(rj)
        assert [(s["status"], s["exit_class"], s["retries"]) for s in doc["scenarios"]] == [
            ("failed", 1, 0),
            ("error", 3, 0),
        ]
        assert "warning: retry" not in res.stdout and "connection retr" not in res.stdout
        time.sleep(0.2)
        assert len(failing.conns) == 1 and len(closing.conns) == 1


class _Recorder:
    """An ordered reporter (and, through `live`, a live sink) that keeps every event it gets."""

    def __init__(self):
        self.events: list = []

    def handle(self, ev) -> None:
        self.events.append(ev)


def _kinds(events) -> list[str]:
    return [type(ev).__name__ for ev in events]


@pytest.mark.parametrize("jobs", [1, 2])
def test_retries_are_announced_by_one_retrying_event_each(tmp_path, free_port, jobs):
    """--retries emits Retrying (what='scenario'), never a retry Note: live sinks get it as it
    happens, after the failed attempt; ordered reporters get every one right after the final
    attempt's ScenarioStarted."""
    from runner.engine.run import RunOptions
    from runner.events import Note, Retrying
    from runner.load.api import load_scenario
    from runner.suite import Listener, execute, plan

    down = load_scenario(smtp_scenario(tmp_path / "a_down.yaml", "down", free_port()))
    with smtp_server() as srv:
        up = load_scenario(smtp_scenario(tmp_path / "b_up.yaml", "up", srv.port))
        runs = plan([down, up])
        ordered, live = _Recorder(), {}
        listener = Listener(ordered=[ordered], live=[lambda run: live.setdefault(run.index, []).append])
        exit_class = execute(
            runs, RunOptions(run_id="t"), listener, jobs=jobs, retries=2, retry_interval=0.05
        )
    assert exit_class == 3 and [r.result.retries for r in runs] == [2, 0]
    assert not any(isinstance(ev, Note) and "retry" in ev.text for ev in ordered.events + live[0])
    retrying = [ev for ev in live[0] if isinstance(ev, Retrying)]
    assert [(ev.what, ev.name, ev.attempt, ev.attempts, ev.interval) for ev in retrying] == [
        ("scenario", "down", 1, 3, 0.05),
        ("scenario", "down", 2, 3, 0.05),
    ]
    assert all("refused" in ev.reason for ev in retrying)
    assert _kinds(live[0]).count("ScenarioStarted") == 3
    assert _kinds(live[0])[-1] == "ScenarioFinished"
    for ev in retrying:  # each right after the attempt it announces
        i = live[0].index(ev)
        assert _kinds(live[0])[i - 1] == "ScenarioFinished" and _kinds(live[0])[i + 1] == "ScenarioStarted"
    # ordered: the runs in plan order; the down run once, its Retrying events right after its
    # ScenarioStarted (inside the scenario they belong to, where the console and JUnit show them)
    first_up = next(i for i, ev in enumerate(ordered.events) if getattr(ev, "name", "") == "up")
    down_events = ordered.events[:first_up]
    assert down_events[1:3] == retrying
    assert _kinds(down_events).count("ScenarioStarted") == 1 and _kinds(down_events)[0] == "ScenarioStarted"
    assert _kinds(down_events)[-1] == "ScenarioFinished" and down_events[-1].result.retries == 2
    assert _kinds(ordered.events[first_up:]).count("Retrying") == 0


# ----------------------------------------------------------------------------- exit status


@pytest.mark.parametrize(
    ("kinds", "status"),
    [(["pass", "pass"], 0), (["pass", "fail"], 1), (["fail", "down", "pass"], 3), (["down", "fail"], 3)],
)
def test_suite_exit_status_is_the_most_severe(tmp_path, free_port, kinds, status):
    down = free_port()
    with smtp_server(RSET=b"554 no\r\n") as srv:
        for i, kind in enumerate(kinds):
            steps = "  - C: RSET\n    S: 250\n" if kind == "fail" else ""
            smtp_scenario(
                tmp_path / f"s{i}.yaml", f"{kind}{i}", down if kind == "down" else srv.port, extra_steps=steps
            )
        res = mailrun(tmp_path, "-j", "3")
        assert res.returncode == status, res.stdout + res.stderr


# ----------------------------------------------------------------------------- progress


def test_progress_line_on_a_tty_plain_lines_when_piped(tmp_path):
    with smtp_server() as srv:
        for i in range(4):
            smtp_scenario(tmp_path / f"s{i}.yaml", f"prog{i}", srv.port, extra_steps="  - sleep: 0.2\n")
        child = pexpect.spawn(
            sys.executable,
            ["-m", "runner", str(tmp_path), "-j", "2"],
            env=_env(),
            cwd=str(REPO),
            timeout=30,
            encoding="utf-8",
            dimensions=(40, 200),
        )
        try:
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        tty = child.before
        assert child.exitstatus == 0, tty
        assert re.search(r"\r\[1/4\] 1 passed, 0 failed, \d+\.\d s", tty), tty
        assert re.search(r"\r\[4/4\] 4 passed, 0 failed, \d+\.\d s", tty)
        assert "\x1b[" not in tty  # NO_COLOR

        res = mailrun(tmp_path, "-j", "2")
        assert res.returncode == 0
        assert "\r" not in res.stdout and "[1/4]" not in res.stdout
        lines = res.stdout.splitlines()
        assert re.match(r"scenario +provider +steps +time +verdict +first failure$", lines[-7])
        assert [ln.split()[0] for ln in lines[-5:-1]] == ["prog0", "prog1", "prog2", "prog3"]
        assert lines[-1].startswith("4 scenarios: 4 passed, 0 failed, 0 errors")
