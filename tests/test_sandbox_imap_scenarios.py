"""The sandbox_imap_* scenarios (APPEND/COPY/MOVE/UID commands, IDLE): against the sandbox with
what they show, and against Dovecot (the test bed), so they are true to a real server too.
(tests/test_scenarios.py runs them against the sandbox with the rest of the library.)"""

from __future__ import annotations

import re

import pytest

from runner.load.api import load_scenario
from tests.test_scenarios import SCENARIOS, mailrun, pass_line, show

FILES = ["sandbox_imap_append.yaml", "sandbox_imap_idle.yaml"]


def test_append_scenario_against_the_sandbox_shows_the_literal_and_the_uidplus_codes():
    proc = mailrun("--sandbox", "-v", "scenarios/sandbox_imap_append.yaml")
    assert proc.returncode == 0, show(proc)
    out = proc.stdout
    # the sandbox offers LITERAL+: the literal goes out as {N+}, no go-ahead awaited
    assert re.search(r"C: a\d+ APPEND mailrun-\w+-a \(\\Seen\) \{\d+\+\}", out), out
    assert not re.search(r"^\s*S: \+ ", out, re.M), out
    assert re.search(r"OK \[APPENDUID \d+ 1\] Append completed", out), out
    assert re.search(r"S: \* OK \[COPYUID \d+ 1 2\] Moved\.", out), out
    assert re.search(
        r"BODYSTRUCTURE \(\"text\" \"plain\" \(\"charset\" \"utf-8\"\) NIL NIL \"7bit\" \d+ 2 ", out
    )
    assert "S: .a line starting with a dot" in out  # IMAP: no dot-stuffing either way


@pytest.mark.parametrize("name", FILES)
def test_sandbox_imap_scenarios_pass_against_dovecot(testbed, name):
    proc = mailrun(
        f"scenarios/{name}",
        "--var",
        f"port={testbed.ports['imap']}",
        "--var",
        "user=alice",
        "--var",
        f"password={testbed.users['alice']}",
    )
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / name).name), show(proc)
