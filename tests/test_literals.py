"""IMAP literals counted by the runner: `{{ value | literal }}` in a `C:` line, and the `append:`
step's message, synchronizing (`{N}`, wait for `+`) and LITERAL+ (`{N+}`, RFC 7888).

Against a test bed of this module's own (ChangedTestbed: a user whose password holds a quote and
spaces; later restarted with a Dovecot that does not advertise LITERAL+) and the built-in
sandbox; the render, the load checks and the protocol's bookkeeping without sockets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runner.engine.append import message_bytes
from runner.lang.render import Context, render
from runner.lang.secrets import MASK
from runner.lang.templates import TemplateError, parse
from runner.protocols.imap import IMAP
from tests.servers.testbed import ChangedTestbed, TestbedError

REPO = Path(__file__).resolve().parent.parent
PASSWORD = 'it\'s "a pass word"'  # a quote (two kinds) and spaces: no IMAP quoting needed


def mailrun(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1", "LIT_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
    )


# ------------------------------------------------------------------ render and load


def test_render_says_where_each_literal_sits_and_masks_a_secret():
    ctx = Context(env={}, secrets=["password"])
    ctx.set("user", "bob")
    ctx.set("password", PASSWORD)
    r = render("LOGIN {{ user | literal }} {{ password | literal }} x", ctx)
    assert r.value == f"LOGIN bob {PASSWORD} x"
    assert r.pieces == (("LOGIN ", "LOGIN "), ("bob", "bob"), (" ", " "), (PASSWORD, MASK), (" x", " x"))
    assert r.outside_literals == "LOGIN   x"
    assert r.secret and PASSWORD not in r.display and PASSWORD not in repr(r)
    assert render("LOGIN {{ user }}", ctx).pieces is None


def test_literal_is_the_last_filter():
    assert parse("{{ x | upper | literal }}").expressions[0].sends_literal
    with pytest.raises(TemplateError, match="'literal' is the last filter") as e:
        parse("A {{ x | literal | upper }}")
    assert e.value.column == 18  # the second `|`


def test_literal_outside_a_c_line_or_imap_is_a_load_error(tmp_path):
    (tmp_path / "a.yaml").write_text(
        """\
name: a
protocol: imap
connect: {host: 127.0.0.1, port: 1}
vars:
  v: "{{ run_id | literal }}"
  crlf: "a\\r\\nb"
steps:
  - C: "X {{ run_id }}"
    S: "{{ run_id | literal }}"
  - raw: "{{ run_id | literal }}"
  - C: "APPEND INBOX {{ crlf | literal }}"
  - C: "APPEND INBOX {{ crlf }}"
"""
    )
    (tmp_path / "b.yaml").write_text(
        "name: b\nprotocol: smtp\nconnect: {host: 127.0.0.1, port: 1}\n"
        'steps:\n  - C: "MAIL FROM:{{ run_id | literal }}"\n'
    )
    # a fragment is checked for the session that includes it
    (tmp_path / "frag.yaml").write_text('description: f\nsteps:\n  - C: "X {{ run_id | literal }}"\n')
    (tmp_path / "c.yaml").write_text(
        "name: c\nprotocol: smtp\nconnect: {host: 127.0.0.1, port: 1}\nsteps:\n  - include: frag.yaml\n"
    )
    r = mailrun("validate", tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml")
    assert r.returncode == 2
    out = r.stdout + r.stderr
    only_c = "'| literal' is only for a C: line"
    assert f"a.yaml:5:6: vars.v: {only_c}" in out
    assert f"a.yaml:9:8: steps[0].S: {only_c}" in out
    assert f"a.yaml:10:10: steps[1].raw: {only_c}" in out
    assert "steps[2]" not in out  # a literal's bytes may hold line breaks
    assert "a.yaml:12:8: steps[3].C: variable 'crlf' holds a line break" in out
    assert "b.yaml:5:8: steps[0].C: '| literal' is IMAP's (this session is smtp)" in out
    assert "frag.yaml:3:8: steps[0].C: '| literal' is IMAP's (this session is smtp)" in out


def test_the_protocol_keeps_framing_across_a_literal_plus():
    """Bytes after `{N+}` continue the command: lines in them that look tagged are not commands
    (sent_raw's guess would take `x1` below for a tag and wait for its reply)."""
    imap = IMAP()
    assert imap.command("APPEND INBOX {12+}") == b"a1 APPEND INBOX {12+}\r\n"
    imap.sent_literal(b"x1 NOOP\r\nyz\r\n\r\n")
    assert imap.outstanding == ("a1",)
    imap.receive_data(b"a1 OK done\r\n")
    reply = imap.next_reply()
    assert reply.tag == "a1" and reply.code == "OK" and imap.outstanding == ()
    # synchronizing: the `+`, then the bytes; the next command is tagged again
    imap.command("LOGIN {3}")
    imap.receive_data(b"+ go\r\n")
    assert imap.next_reply().code == "+"
    imap.sent_literal(b"bob {2}\r\n")
    imap.receive_data(b"+ go\r\n")
    assert imap.next_reply().code == "+"
    imap.sent_literal(b"pw\r\n")
    assert imap.command("NOOP") == b"a3 NOOP\r\n"
    assert imap.outstanding == ("a2", "a3")


def test_a_secret_literal_in_the_clear_to_a_remote_host_is_refused_before_connecting(tmp_path):
    path = tmp_path / "remote.yaml"
    path.write_text(
        """\
name: remote
protocol: imap
connect: {host: 192.0.2.10, port: 143, connect_timeout: 1}
vars: {password: "{{ env.LIT_PASSWORD }}"}
secrets: [password]
steps:
  - S: OK
  - C: "LOGIN bob {{ password | literal }}"
"""
    )
    r = mailrun(path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to send a secret unencrypted to 192.0.2.10" in r.stdout + r.stderr


# ------------------------------------------------------------------ the sandbox

SANDBOX = """\
name: sandbox literals
protocol: imap
connect: {{host: 127.0.0.1, port: 1143, tls: starttls}}
vars: {{password: "{{{{ env.LIT_PASSWORD }}}}", box: "lit-{tag}"}}
secrets: [password]
steps:
  - S: OK
{before}
  - C: "LOGIN {{{{ 'bob' | literal }}}} {{{{ password | literal }}}}"
    S: OK
  - C: "CREATE {{{{ box | literal }}}}"
    S: OK
  - append: {{mailbox: "{{{{ box }}}}", body_file: m.eml}}
  - C: "SELECT {{{{ box }}}}"
    S: OK
  - C: FETCH 1 BODY[]
    S: {{code: OK, lines: ['^tag {tag} and \\{{\\{{ braces$']}}
  - C: "DELETE {{{{ box | literal }}}}"
    S: [OK, NO]
  - C: LOGOUT
    S: OK
"""


@pytest.mark.parametrize("form", ["synchronizing", "literal+"])
def test_the_sandbox_takes_both_forms(tmp_path, form):
    tag = uuid.uuid4().hex[:12]
    (tmp_path / "m.eml").write_bytes(f"Subject: x\n\ntag {tag} and {{{{ braces\n".encode())
    # after STARTTLS no capability list is known: LOGIN waits for the `+`; without it the
    # greeting's list offers LITERAL+
    before = "  - C: STARTTLS\n    S: OK\n    starttls: true" if form == "synchronizing" else ""
    scenario = SANDBOX.format(tag=tag, before=before)
    if form == "literal+":
        scenario = scenario.replace(", tls: starttls", "")
    (tmp_path / "s.yaml").write_text(scenario)
    report = tmp_path / "r.json"
    r = mailrun("--sandbox", "s.yaml", "-v", "--report", f"json={report}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    size = len(PASSWORD.encode())
    if form == "synchronizing":
        assert f"a2 LOGIN {{3}}\\r\\nbob {{{MASK}}}\\r\\n{MASK}" in out
        assert out.count("S: + Ready for literal data.") == 2  # LOGIN's two, nothing after
    else:
        assert f"a1 LOGIN {{3+}}\\r\\nbob {{{MASK}+}}\\r\\n{MASK}" in out
        assert "+ Ready for literal data." not in out
    assert "APPEND lit-" in out and "+}" in out.split("APPEND lit-")[1].split("\n")[0]
    assert PASSWORD not in out and PASSWORD not in report.read_text()
    assert f"{{{size}" not in out  # nor its length
    steps = json.loads(report.read_text())["scenarios"][0]["steps"]
    assert all(s["status"] == "passed" for s in steps)


# ------------------------------------------------------------------ Dovecot


@pytest.fixture(scope="module")
def bed():
    """A bed of its own with a user 'carol' whose password holds quotes and spaces."""
    bed = ChangedTestbed()
    bed.users["carol"] = PASSWORD
    try:
        bed.start()
    except TestbedError as exc:
        pytest.fail(f"the test bed did not start: {exc}", pytrace=False)
    try:
        yield bed
    finally:
        bed.stop()


DOVECOT = """\
name: dovecot literals
protocol: imap
connect: {{host: 127.0.0.1, port: {port}, ca: "{ca}", tls: {tls}}}
vars: {{password: "{{{{ env.LIT_PASSWORD }}}}", user: "{user}"}}
secrets: [password]
steps:
  - S: OK
{steps}
  - C: LOGOUT
    S: OK
"""


def dovecot(bed, tmp_path, steps: str, tls: str = "none") -> tuple[subprocess.CompletedProcess, str]:
    path = tmp_path / f"d{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(
        DOVECOT.format(
            port=bed.ports["imap"], ca=bed.ca_path, user=bed.address("carol"), steps=steps, tls=tls
        )
    )
    transcripts = tmp_path / "t"
    r = mailrun(path, "-v", "--transcript", transcripts, cwd=tmp_path)
    shown = r.stdout + r.stderr + "".join(p.read_text() for p in transcripts.glob("*"))
    return r, shown


LOGIN = '  - C: "LOGIN {{ user }} {{ password | literal }}"\n    S: OK\n'
APPEND = "  - append: {body_file: m.eml}\n"


@pytest.mark.testbed
def test_dovecot_login_and_append_with_literal_plus(bed, tmp_path):
    tag = uuid.uuid4().hex
    (tmp_path / "m.eml").write_bytes(f"Subject: plus {tag}\n\n{{{{ not a template }}}}\n".encode())
    r, shown = dovecot(bed, tmp_path, LOGIN + APPEND)
    assert r.returncode == 0, shown
    assert f"LOGIN {bed.address('carol')} {{{MASK}+}}\\r\\n{MASK}" in shown
    assert "APPEND INBOX {" in shown and "+} + message" in shown
    assert PASSWORD not in shown
    message = bed.wait_for_message("carol", lambda data: f"plus {tag}".encode() in data)
    assert message.replace(b"\r\n", b"\n").endswith(b"\n\n{{ not a template }}\n")
    # after STARTTLS nothing is known of the server: the literal waits for Dovecot's `+`
    starttls = "  - C: STARTTLS\n    S: OK\n    starttls: true\n"
    r, shown = dovecot(bed, tmp_path, starttls + LOGIN, tls="starttls")
    assert r.returncode == 0, shown
    assert f"LOGIN {bed.address('carol')} {{{MASK}}}\\r\\n{MASK}" in shown
    assert "S: + OK" in shown
    assert PASSWORD not in shown


@pytest.mark.testbed
def test_the_example_scenario_passes_against_dovecot_with_a_hard_password(bed, tmp_path):
    r = mailrun(
        REPO / "scenarios" / "sandbox_imap_literal.yaml",
        "-v",
        *("--ca", bed.ca_path, "--var", f"port={bed.ports['imap']}", "--var", f"user={bed.address('carol')}"),
        *("--var", f"password={PASSWORD}"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "S: + OK" in r.stdout  # Dovecot's go-ahead for the synchronizing LOGIN literals
    assert PASSWORD not in r.stdout + r.stderr


@pytest.mark.testbed
def test_dovecot_without_literal_plus_waits_a_refusal_fails_the_step_and_literal_minus(bed, tmp_path):
    bed.restart(dovecot={"imap_capability": "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE"})
    try:
        tag = uuid.uuid4().hex
        (tmp_path / "m.eml").write_bytes(f"Subject: sync {tag}\n\n{{{{ braces\n".encode())
        r, shown = dovecot(bed, tmp_path, LOGIN + APPEND)
        assert r.returncode == 0, shown
        assert "LITERAL+" not in shown
        assert f"LOGIN {bed.address('carol')} {{{MASK}}}\\r\\n{MASK}" in shown
        assert "+}" not in shown
        message = bed.wait_for_message("carol", lambda data: f"sync {tag}".encode() in data)
        assert message.replace(b"\r\n", b"\n").endswith(b"\n\n{{ braces\n")
        # refused before the `+`: the bytes are never sent, the step fails naming the NO
        refused = '  - C: "APPEND No-Such-Box {{ password | literal }}"\n    S: OK\n'
        r, shown = dovecot(bed, tmp_path, LOGIN + refused)
        assert r.returncode == 1, shown
        assert f"literal {{{MASK}}}: the server refused the literal: a2 NO [TRYCREATE]" in shown
        r, shown = dovecot(bed, tmp_path, LOGIN + "  - append: {mailbox: No-Such-Box, body: x}\n")
        assert r.returncode == 1, shown
        assert "APPEND: the server refused the literal: a2 NO [TRYCREATE]" in shown
        assert PASSWORD not in shown
        # LITERAL- (RFC 7888): {N+} up to 4096 bytes, a larger literal waits for the `+`
        bed.restart(dovecot={"imap_capability": "IMAP4rev1 SASL-IR LITERAL-"})
        (tmp_path / "m.eml").write_bytes(f"Subject: minus {tag}\n\n".encode() + b"x" * 5000 + b"\n")
        r, shown = dovecot(bed, tmp_path, LOGIN + APPEND)
        assert r.returncode == 0, shown
        assert f"LOGIN {bed.address('carol')} {{{MASK}+}}" in shown
        big = len(message_bytes((tmp_path / "m.eml").read_bytes()))
        assert f"APPEND INBOX {{{big}}} + message" in shown and "S: + OK" in shown
        bed.wait_for_message("carol", lambda data: f"minus {tag}".encode() in data)
    finally:
        bed.restart(dovecot={})
