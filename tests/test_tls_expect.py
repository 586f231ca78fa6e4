"""`tls_expect:`: parsed at load (exit 2 with file:line:col), checked after each handshake as a
step named TLS (exit 1 when a check fails, with a sentence), shown in every report.

Against the real test bed: Dovecot presents the test CA's certificates that expire in 5 days,
that expired, that were issued for another name (chosen by SNI), and has a TLSv1.3-only
listener; a small loopback server that stops at TLS 1.2 fails the version check. Both TLS
transports (socket, openssl), implicit TLS and STARTTLS, through the real command."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from runner.errors import ScenarioError
from runner.lang.tls_expect import holds, parse_check
from runner.load.api import load_scenario
from tests.servers.testbed import OTHER_NAME, TLS13_HOST
from tests.support.servers import PKI, Server, scripted
from tests.test_exit_status import mailrun  # the real command, NO_COLOR, 30 s

REPO = Path(__file__).resolve().parent.parent
T = 30
REPORT_SCHEMA = json.loads((REPO / "runner/data/report.schema.json").read_text())


def imaps(
    tmp_path: Path,
    port: int,
    expect: str,
    *,
    host: str = "127.0.0.1",
    server_name: str | None = None,
    transport: str = "socket",
    name: str = "s.yaml",
) -> Path:
    """An IMAPS session: greeting, CAPABILITY, LOGOUT in finally, with this tls_expect."""
    sn = f", server_name: {server_name}" if server_name else ""
    path = tmp_path / name
    path.write_text(
        f"name: tls check\nprotocol: imap\n"
        f"connect: {{host: '{host}', port: {port}, tls: implicit, transport: {transport}{sn}}}\n"
        f"tls_expect:\n{expect}"
        "steps:\n  - S: OK\n  - C: CAPABILITY\n    S: OK\nfinally:\n  - C: LOGOUT\n    S: OK\n"
    )
    return path


def run(path: Path, tmp_path: Path, *args) -> tuple[subprocess.CompletedProcess, dict, ET.Element]:
    """mailrun with -v and JSON and JUnit reports -> (process, JSON document, JUnit root)."""
    j, x = tmp_path / "r.json", tmp_path / "r.xml"
    out = mailrun(path, "-v", "--report", f"json={j}", "--report", f"junit={x}", *args)
    doc = json.loads(j.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    return out, doc, ET.parse(x).getroot()


def tls_steps(doc: dict) -> list[dict]:
    return [st for st in doc["scenarios"][0]["steps"] if st["section"] == "tls"]


def junit_tls_case(root: ET.Element) -> ET.Element:
    return next(c for c in root.iter("testcase") if c.get("name").startswith("TLS check: "))


# --------------------------------------------------------------------------- load


BAD = [
    ('  version: ">= TLSv1.9"\n', r":5:12: tls_expect\.version: unknown TLS version 'TLSv1\.9'"),
    ('  version: "=> TLSv1.2"\n', r":5:12: tls_expect\.version: unknown TLS version '=> TLSv1\.2'"),
    ('  days_left: "about 21"\n', r":5:14: tls_expect\.days_left: expected a whole number of days"),
    ('  days_left: ">= 2.5"\n', r":5:14: tls_expect\.days_left: expected a whole number of days"),
    ('  cipher: "(("\n', r":5:11: tls_expect\.cipher: invalid regular expression '\(\('"),
    ('  issuer: "[a-"\n', r":5:11: tls_expect\.issuer: invalid regular expression"),
    ('  name: "{{ connect.hots }}"\n', r":5:9: tls_expect\.name: undefined variable 'connect\.hots'"),
    ('  name: "{{ nobody }}"\n', r":5:9: tls_expect\.name: undefined variable 'nobody'"),
    ("  verified: yes please\n", r":5:13: tls_expect\.verified: .*boolean"),
    ("  colour: blue\n", r":5:3: tls_expect\.colour: unknown key 'colour'"),
]


@pytest.mark.parametrize(("expect", "message"), BAD, ids=[b[0].strip() for b in BAD])
def test_bad_tls_expect_is_a_load_error(tmp_path, expect, message):
    path = imaps(tmp_path, 993, expect)
    out = mailrun("validate", path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert re.search(re.escape(str(path)) + message, out.stdout + out.stderr), out.stdout + out.stderr


def write(tmp_path: Path, connect: str, expect: str = "  version: '>= TLSv1.2'\n", steps: str = "") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"name: c\nprotocol: smtp\nconnect: {connect}\ntls_expect:\n{expect}"
        + (steps or "steps:\n  - S: 220\n")
    )
    return path


@pytest.mark.parametrize(
    ("connect", "message"),
    [
        ("{host: 127.0.0.1, port: 25}", "tls_expect: needs TLS: connect.tls is none"),
        ("{host: 127.0.0.1, port: 25, tls: none}", "tls_expect: needs TLS: connect.tls is none"),
        (
            "{host: 127.0.0.1, port: 25, transport: telnet}",
            "tls_expect: needs the facts of a TLS handshake; the telnet transport has no TLS",
        ),
    ],
)
def test_tls_expect_needs_tls_and_a_transport_with_facts(tmp_path, connect, message):
    path = write(tmp_path, connect)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert f"{path}:4:1: {message}" in str(err.value)


def test_templated_tls_none_is_refused_before_connecting(tmp_path):
    """tls from a variable: judged once rendered, before any byte is sent (exit 2)."""
    with Server(scripted(b"220 hi\r\n", {})) as srv:
        path = write(tmp_path, f"{{host: 127.0.0.1, port: {srv.port}, tls: '{{{{ mode }}}}'}}")
        path.write_text(path.read_text() + "vars:\n  mode: none\n")
        out = mailrun(path)
        assert srv.conns == []  # never connected
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{path}:4:1: tls_expect: needs TLS: connect.tls is none" in out.stdout + out.stderr


def test_the_model_holds_the_parsed_checks(tmp_path):
    path = write(
        tmp_path,
        "{host: mail.example.test, tls: implicit}",
        "  version: '>= TLSv1.2'\n  days_left: 21\n  cipher: GCM\n  name: '{{ connect.host }}'\n"
        "  verified: true\n",
    )
    for use_cache in (False, True, True):  # the model cache gives the same checks back
        te = load_scenario(path, use_cache=use_cache).sessions[0].tls_expect
        assert (te.location.line, te.location.column) == (4, 1)
        assert [(c.key, c.op, c.wanted) for c in te.checks] == [
            ("version", ">=", "TLSv1.2"),
            ("days_left", "==", 21),
            ("cipher", "search", "GCM"),
            ("name", "valid_for", "{{ connect.host }}"),
            ("verified", "==", True),
        ]


@pytest.mark.parametrize(
    ("key", "value", "parsed"),
    [
        ("version", ">= TLSv1.2", (">=", "TLSv1.2")),
        ("version", "TLSv1.3", ("==", "TLSv1.3")),
        ("version", "<tlsv1.0", ("<", "TLSv1")),
        ("days_left", ">= 21", (">=", 21)),
        ("days_left", "> -1", (">", -1)),
        ("days_left", 30, ("==", 30)),
        ("days_left", "<=7", ("<=", 7)),
        ("cipher", "GCM$", ("search", "GCM$")),
        ("verified", False, ("==", False)),
    ],
)
def test_comparisons_parse(key, value, parsed):
    assert parse_check(key, value) == parsed


def test_versions_compare_in_protocol_order():
    order = ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    for i, got in enumerate(order):
        for j, wanted in enumerate(order):
            assert holds(">=", got, wanted) is (i >= j), (got, wanted)
            assert holds("<", got, wanted) is (i < j), (got, wanted)
            assert holds("==", got, wanted) is (i == j), (got, wanted)
    assert holds(">=", "TLSv1.10", "TLSv1.2") is False  # unknown: never passes (not string order)
    assert holds(">", 5, 4) and not holds("<=", 5, 4)


# --------------------------------------------------------------------------- the checks


SOON = '  days_left: ">= DAYS"\n  name: "{{ connect.server_name }}"\n'


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_certificate_that_expires_in_5_days(testbed, tmp_path, transport):
    name = testbed.tls_check_name("soon")
    port = testbed.ports["imaps"]
    ok = imaps(tmp_path, port, SOON.replace("DAYS", "1"), server_name=name, transport=transport)
    out, doc, _ = run(ok, tmp_path, "--ca", testbed.ca_path)
    assert out.returncode == 0, out.stdout + out.stderr
    (step,) = tls_steps(doc)
    assert (step["name"], step["action"], step["status"], step["index"]) == ("TLS", "tls", "passed", 1)
    assert step["expected"] == f"days_left >= 1, name {name}"
    assert step["tls"]["days_left"] == 5 and step["tls"]["sni"] == name
    bad = imaps(tmp_path, port, SOON.replace("DAYS", "21"), server_name=name, transport=transport)
    out, doc, junit = run(bad, tmp_path, "--ca", testbed.ca_path, "--transcript", tmp_path / "t")
    assert out.returncode == 1, out.stdout + out.stderr  # an expectation, not a network failure
    (step,) = tls_steps(doc)
    when = step["tls"]["not_after"]
    sentence = (
        f"certificate for {name} expires in 5 days ({when[:10]} {when[11:16]} UTC); scenario wants >= 21"
    )
    assert step["status"] == "failed" and step["exit_class"] == 1 and step["reason"] == sentence
    assert f"        reason:   {sentence}" in out.stdout.splitlines()
    assert f"first failure: TLS check ({bad}:4): {sentence}" in out.stdout
    # implicit TLS is checked after the greeting; the steps after it are not played; finally is
    # (still connected, the greeting read: LOGOUT gets its own reply)
    steps = doc["scenarios"][0]["steps"]
    assert [(s["section"], s["status"]) for s in steps] == [
        ("steps", "passed"),
        ("tls", "failed"),
        ("steps", "skipped"),
        ("finally", "passed"),
    ]
    assert steps[2]["reason"] == "not run: the TLS check failed"
    assert steps[3]["reply"]["lines"][-1].startswith("a")  # LOGOUT's tagged OK, not the greeting
    assert doc["scenarios"][0]["sessions"][0]["reason"] == sentence
    case = junit_tls_case(junit)
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "expectation" and failure.get("message") == sentence
    assert case.get("line") == "4"
    skipped = [c for c in junit.iter("testcase") if c.find("skipped") is not None]
    assert [c.find("skipped").get("message") for c in skipped] == ["not run: the TLS check failed"]
    (transcript,) = (tmp_path / "t").iterdir()
    assert "TLS check FAILED in " in transcript.read_text()
    assert f"; expected days_left >= 21, name {name}: {sentence}" in transcript.read_text()


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_expired_certificate(testbed, tmp_path, transport):
    name = testbed.tls_check_name("expired")
    path = imaps(
        tmp_path, testbed.ports["imaps"], '  days_left: ">= 1"\n', server_name=name, transport=transport
    )
    out, doc, _ = run(path, tmp_path, "--ca", testbed.ca_path)
    assert out.returncode == 3, out.stdout + out.stderr  # default verification: a connection error
    assert "expired" in doc["scenarios"][0]["sessions"][0]["reason"] and tls_steps(doc) == []
    out, doc, _ = run(path, tmp_path, "--ca", testbed.ca_path, "--insecure")
    assert out.returncode == 1, out.stdout + out.stderr
    (step,) = tls_steps(doc)
    when = step["tls"]["not_after"]
    assert step["reason"] == (
        f"certificate for {name} expired 3 days ago ({when[:10]} {when[11:16]} UTC); scenario wants >= 1"
    )
    assert step["tls"]["verified"] is False


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_certificate_for_another_name(testbed, tmp_path, transport):
    name = testbed.tls_check_name("wrong")
    expect = '  name: "{{ connect.server_name }}"\n  verified: true\n'
    path = imaps(tmp_path, testbed.ports["imaps"], expect, server_name=name, transport=transport)
    out, doc, _ = run(path, tmp_path, "--ca", testbed.ca_path)
    assert out.returncode == 3, out.stdout + out.stderr  # as today: the handshake fails
    assert tls_steps(doc) == []
    out, doc, junit = run(path, tmp_path, "--ca", testbed.ca_path, "--insecure")
    assert out.returncode == 1, out.stdout + out.stderr
    (step,) = tls_steps(doc)
    assert step["reason"] == (
        f"certificate for {name} names DNS:{OTHER_NAME}, not {name}; "
        f"scenario wants name {name}. certificate for {name} was not verified "
        "(tls_verify is off / --insecure); scenario wants verified true"
    )
    assert junit_tls_case(junit).find("failure").get("message") == step["reason"]
    right = imaps(
        tmp_path, testbed.ports["imaps"], f"  name: {OTHER_NAME}\n", server_name=name, transport=transport
    )
    out, doc, _ = run(right, tmp_path, "--ca", testbed.ca_path, "--insecure")
    assert out.returncode == 0, out.stdout + out.stderr
    assert tls_steps(doc)[0]["status"] == "passed"


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_version_checks_on_the_tls13_only_listener(testbed, tmp_path, transport):
    if testbed.tls13_port is None:
        pytest.skip("no IPv6 loopback: the bed has no TLSv1.3-only listener")
    port = testbed.tls13_port
    path = imaps(
        tmp_path, port, '  version: ">= TLSv1.3"\n  cipher: "^TLS_"\n', host=TLS13_HOST, transport=transport
    )
    out, doc, _ = run(path, tmp_path, "--ca", testbed.ca_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert tls_steps(doc)[0]["tls"]["version"] == "TLSv1.3"
    path = imaps(tmp_path, port, "  version: TLSv1.2\n", host=TLS13_HOST, transport=transport)
    out, doc, _ = run(path, tmp_path, "--ca", testbed.ca_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert tls_steps(doc)[0]["reason"] == (
        f"TLS version TLSv1.3 was negotiated with {TLS13_HOST}; scenario wants version == TLSv1.2"
    )


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_a_server_that_stops_at_tls12_fails_the_version_check(tmp_path, transport):
    pki = PKI(tmp_path)
    ctx = pki.server_context(max_version=ssl.TLSVersion.TLSv1_2)
    replies = {b"CAPABILITY": b"* CAPABILITY IMAP4rev1\r\na1 OK done\r\n", b"*": b"a2 OK bye\r\n"}
    expect = '  version: ">= TLSv1.3"\n  subject: "NOT-THERE"\n  issuer: "."\n'
    with Server(scripted(b"* OK hi\r\n", replies), tls=ctx) as srv:
        path = imaps(tmp_path, srv.port, expect, server_name="localhost", transport=transport)
        out, doc, _ = run(path, tmp_path, "--ca", pki.ca_file)
    assert out.returncode == 1, out.stdout + out.stderr
    (step,) = tls_steps(doc)
    subject = step["tls"]["peer_subject"]
    assert step["reason"] == (
        "TLS version TLSv1.2 was negotiated with localhost; scenario wants version >= TLSv1.3. "
        f"certificate subject {subject!r} does not match 'NOT-THERE'; scenario wants subject ~ NOT-THERE"
    )


@pytest.mark.parametrize("transport", ["socket", "openssl"])
def test_tls_step_follows_the_starttls_step(testbed, tmp_path, transport):
    """STARTTLS: the TLS step comes right after the step that started TLS (for openssl, after
    the steps its -starttls performed), then the steps over TLS."""
    path = tmp_path / "st.yaml"
    path.write_text(
        "name: starttls check\nprotocol: imap\n"
        f"connect: {{host: 127.0.0.1, port: {testbed.ports['imap']}, tls: starttls, transport: {transport}}}\n"
        "tls_expect:\n  version: '>= TLSv1.2'\n  name: '{{ connect.host }}'\n  issuer: 'mailrun test bed CA'\n"
        "steps:\n  - S: OK\n  - C: STARTTLS\n    S: OK\n    starttls: true\n  - C: CAPABILITY\n    S: OK\n"
        "finally:\n  - C: LOGOUT\n    S: OK\n"
    )
    out, doc, junit = run(path, tmp_path, "--ca", testbed.ca_path)
    assert out.returncode == 0, out.stdout + out.stderr
    steps = doc["scenarios"][0]["steps"]
    assert [(s["section"], s["index"]) for s in steps] == [
        ("steps", 1),
        ("steps", 2),
        ("tls", 1),
        ("steps", 3),
        ("finally", 1),
    ]
    assert steps[2]["expected"] == "version >= TLSv1.2, name 127.0.0.1, issuer ~ mailrun test bed CA"
    lines = out.stdout.splitlines()
    tls_line = next(i for i, ln in enumerate(lines) if ln.startswith("  TLS  "))
    assert lines[tls_line].endswith("✓") and "CAPABILITY" in "".join(lines[tls_line + 1 :])
    names = [c.get("name") for c in junit.iter("testcase")]
    assert names[2] == "TLS check: version >= TLSv1.2, name 127.0.0.1, issuer ~ mailrun test bed CA"


def test_example_scenario_passes_against_the_test_bed(testbed):
    out = mailrun(
        REPO / "scenarios" / "tls_check.yaml",
        "--host",
        testbed.host,
        "--port",
        testbed.ports["smtps"],
        "--ca",
        testbed.ca_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^  TLS  version >= TLSv1\.2, .*days_left >= 21.*✓$", out.stdout, re.M), out.stdout


@pytest.mark.testbed
def test_tls_expect_fails_when_no_handshake_happened(testbed, tmp_path):
    """STARTTLS only `when:` offered, against a listener that does not offer it: the session ends
    unencrypted, and tls_expect says it checked nothing (exit 1), rather than a silent PASS."""
    path = tmp_path / "when.yaml"
    path.write_text(
        f"""\
name: starttls when offered
protocol: smtp
connect: {{host: 127.0.0.1, port: {testbed.ports["smtp_lean"]}, tls: starttls, ca: "{testbed.ca_path}"}}
tls_expect: {{version: ">= TLSv1.2"}}
steps:
  - S: 220
  - C: EHLO client.example.test
    S: 250
  - C: STARTTLS
    S: 220
    starttls: true
    when: STARTTLS
  - C: NOOP
    S: 250
finally:
  - C: QUIT
    S: 221
"""
    )
    out, doc, _ = run(path, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    (step,) = tls_steps(doc)
    assert step["status"] == "failed" and "no TLS handshake happened" in step["reason"]
