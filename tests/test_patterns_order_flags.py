"""`lines` with `order: any | sequence`, and IMAP `flags:` matched in any order: on replies framed
by the IMAP protocol from Dovecot-shaped bytes, and end to end against the test bed's Dovecot."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runner.lang.pattern_parse import parse_pattern
from runner.lang.render import Context
from runner.protocols.imap import IMAP

REPO = Path(__file__).resolve().parent.parent


def reply(data: bytes, command: str = "UID EXPUNGE 1:3"):
    proto = IMAP()
    proto.receive_data(b"* OK ready\r\n")
    proto.next_reply()
    proto.command(command)
    proto.receive_data(data)
    return proto.next_reply()


EXPUNGE = reply(b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n* 2 EXPUNGE\r\na1 OK Expunge completed.\r\n")
FETCH = reply(
    b"* 1 FETCH (UID 7 FLAGS (\\Seen $Label1 \\Flagged))\r\na1 OK Fetch completed.\r\n", "FETCH 1 FLAGS"
)


def match(value, r):
    pattern, problems = parse_pattern(value, "imap")
    assert not problems, problems
    return pattern.match(r, Context())


def test_order_any_needs_a_line_of_its_own_for_each_regex():
    lines = [r"^\* 1 EXPUNGE", r"^\* 2 EXPUNGE", r"^\* 3 EXPUNGE"]
    assert match({"code": "OK", "lines": lines, "order": "any"}, EXPUNGE).ok
    assert not match({"code": "OK", "lines": lines, "order": "sequence"}, EXPUNGE).ok
    twice = [r"EXPUNGE", r"EXPUNGE", r"EXPUNGE", r"EXPUNGE"]
    assert match({"lines": twice}, EXPUNGE).ok  # without order one line may serve them all
    result = match({"lines": twice, "order": "any"}, EXPUNGE)
    assert not result.ok and "a line of its own" in result.reason
    # a regex that fits several lines does not take the only line another one needs
    assert match({"lines": [r"EXPUNGE", r"^\* 3 "], "order": "any"}, EXPUNGE).ok


def test_order_sequence_keeps_the_order():
    assert match({"lines": [r"^\* 3", r"^\* 2", r"OK Expunge"], "order": "sequence"}, EXPUNGE).ok
    bad = match({"lines": [r"^\* 2", r"^\* 3"], "order": "sequence"}, EXPUNGE)
    assert not bad.ok and "in order" in bad.reason


def test_flags_match_in_any_order_and_exactly():
    assert match({"flags": ["\\Flagged", "$Label1", "\\seen"]}, FETCH).ok
    missing = match({"flags": ["\\Seen", "\\Flagged"]}, FETCH)
    assert (
        not missing.ok
        and "expected FLAGS (\\Seen \\Flagged) in any order, got (\\Seen $Label1 \\Flagged)" in missing.reason
    )
    assert not match({"flags": []}, FETCH).ok


def test_order_and_flags_mistakes():
    _p, problems = parse_pattern({"order": "any"}, "imap")
    assert any("order goes with lines" in p.message for p in problems)
    _p, problems = parse_pattern({"lines": ["x"], "order": "sorted"}, "imap")
    assert any("order is one of any, sequence" in p.message for p in problems)
    _p, problems = parse_pattern({"flags": ["\\Seen"]}, "smtp")
    assert any("flags is for imap" in p.message for p in problems)


@pytest.mark.testbed
def test_against_dovecot(testbed, tmp_path):
    tag = uuid.uuid4().hex
    path = tmp_path / "flags.yaml"
    path.write_text(
        f"""\
name: flags and order
protocol: imap
connect: {{host: 127.0.0.1, port: {testbed.ports["imap"]}}}
vars: {{password: "{testbed.users["alice"]}"}}
secrets: [password]
steps:
  - S: OK
  - C: LOGIN {testbed.address("alice")} "{{{{ password }}}}"
    S: OK
  - append: {{flags: ['\\Flagged', '\\Seen'], body: "Subject: flags {tag}\\n\\nhi\\n"}}
  - C: SELECT INBOX
    S: OK
  - C: UID SEARCH SUBJECT "flags {tag}"
    S: OK
    capture: {{uid: '^\\* SEARCH (\\d+)'}}
  - C: "UID FETCH {{{{ uid }}}} FLAGS"
    S: {{code: OK, flags: ['\\Seen', '\\Flagged']}}
  - C: "UID STORE {{{{ uid }}}} +FLAGS ($Checked)"
    S: {{code: OK, flags: ['$Checked', '\\Flagged', '\\Seen'], lines: ['FETCH', 'OK'], order: sequence}}
  - C: LOGOUT
    S: OK
"""
    )
    r = subprocess.run(
        [sys.executable, "-m", "runner", str(path)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
