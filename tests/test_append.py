"""The `append:` step: IMAP APPEND with the literal counted by the runner, against real Dovecot."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runner.engine.append import imap_string, message_bytes

REPO = Path(__file__).resolve().parent.parent


def test_mailbox_names_and_line_ends():
    assert imap_string("INBOX") == "INBOX"
    assert imap_string("Sent Items") == '"Sent Items"'
    assert imap_string('a"b\\c') == '"a\\"b\\\\c"'
    assert message_bytes(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\r\nd\r\n"


def mailrun(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )


SCENARIO = """\
name: append
protocol: imap
connect: {{host: 127.0.0.1, port: {port}}}
vars: {{password: "{password}", tag: "{tag}"}}
secrets: [password]
steps:
  - S: OK
  - C: LOGIN {user} "{{{{ password }}}}"
    S: OK
{append}
  - C: LOGOUT
    S: OK
"""


@pytest.mark.testbed
def test_append_stores_the_message_exactly_with_its_flags(testbed, tmp_path):
    tag = uuid.uuid4().hex
    append = """\
  - append:
      mailbox: INBOX
      flags: ['\\Seen', '\\Flagged']
      body: |
        Subject: appended {{ tag }}

        .a line with a dot and {{ "{{" }} braces
    S: OK"""
    path = tmp_path / "a.yaml"
    path.write_text(
        SCENARIO.format(
            port=testbed.ports["imap"],
            user=testbed.address("alice"),
            password=testbed.users["alice"],
            tag=tag,
            append=append,
        )
    )
    r = mailrun(path, "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "APPEND INBOX (\\Seen \\Flagged) {" in r.stdout
    message = testbed.wait_for_message("alice", lambda data: f"appended {tag}".encode() in data)
    # (Dovecot keeps maildir files with LF line ends) no dot-stuffing, and no final dot
    assert message.replace(b"\r\n", b"\n").endswith(b"\n\n.a line with a dot and {{ braces\n")


@pytest.mark.testbed
def test_append_from_a_file_and_a_refused_literal(testbed, tmp_path):
    tag = uuid.uuid4().hex
    (tmp_path / "m.eml").write_bytes(f"Subject: from file {tag}\n\nhello\n".encode())
    path = tmp_path / "a.yaml"
    base = dict(
        port=testbed.ports["imap"], user=testbed.address("alice"), password=testbed.users["alice"], tag=tag
    )
    path.write_text(SCENARIO.format(**base, append="  - append: {body_file: m.eml}"))
    r = mailrun(path)
    assert r.returncode == 0, r.stdout + r.stderr
    testbed.wait_for_message("alice", lambda data: f"from file {tag}".encode() in data)
    path.write_text(SCENARIO.format(**base, append="  - append: {mailbox: No/Such/Box, body: x}"))
    r = mailrun(path, "-v")
    assert r.returncode == 1
    # Dovecot offers LITERAL+: the message went out unasked ({1+}), the refusal is the tagged
    # reply the step reads (the synchronizing form's refusal: tests/test_literals.py)
    assert "APPEND No/Such/Box {1+}" in r.stdout
    assert "expected OK, got a2 NO" in r.stdout


def test_append_is_imap_only(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nprotocol: smtp\nconnect: {host: h}\nsteps:\n  - append: {body: x}\n")
    r = mailrun("validate", path)
    assert r.returncode == 2 and "append is IMAP's (this session is smtp)" in r.stdout + r.stderr
