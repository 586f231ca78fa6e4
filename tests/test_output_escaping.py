"""Issue 17, part 7: terminal and log injection. What a server sends (a multi-line reply that is
captured, bare CR, escape sequences) and what a value holds (a host with CRLF in it) is printed
with its control characters escaped (`\\r`, `\\n`, `\\t`, `\\xNN`: runner.reporters.text.safe_text)
in the console (-v too), the transcript and JUnit, so nobody can forge a line of ours.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from runner.reporters.text import safe_text
from tests.support.hostile_server import forger
from tests.support.reported_run import run_reported
from tests.support.servers import Server

STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} +\+[\d.]+ms (C: |S: |--- |=== )")
FORGED = "  9 C: FORGED"  # what a forged console line would start with


def assert_nothing_forged(out: dict) -> None:
    for name in ("stdout", "stderr", "transcript"):
        text = out[name]
        assert "\x1b" not in text and "\r" not in text, name
        assert not any(line.startswith((FORGED, "FORGED", "--- FORGED")) for line in text.splitlines()), text
    for line in out["transcript"].splitlines():
        assert line.startswith("#") or STAMP.match(line), line
    assert "\x1b" not in out["junit"]
    root = ET.fromstring(out["junit"].encode())
    for el in root.iter():
        for key, value in el.attrib.items():
            assert "\n" not in value and "\r" not in value, (el.tag, key, value)
        if el.tag in ("failure", "error") and el.text:
            for line in el.text.splitlines():
                assert re.match(r"(sent|expected|received|reason|at): |\s{10}|\S", line), line
                assert not line.startswith("FORGED"), line


def test_a_captured_multi_line_value_and_control_characters_in_replies(tmp_path):
    reply = b"250-first\r\n250 FORGED \x1b[2J\x1b[31mred\rbare CR\ttab\r\n"
    with Server(forger(reply)) as srv:
        out = run_reported(
            tmp_path,
            """\
            name: forge
            protocol: smtp
            connect: {{host: 127.0.0.1, port: {port}, timeout: 5}}
            steps:
              - S: 220
              - C: NOOP
                S: 250
                capture: {{all: '(?s)(first.*)'}}
              - C: NOOP
                S: 550
            """,
            port=srv.port,
        )
    assert out["rc"] == 1, out["stdout"] + out["stderr"]
    stdout = out["stdout"]
    # the capture holds a newline, the reply an escape sequence, a bare CR and a TAB: escaped
    assert "captured all=first\\n250 FORGED \\x1b[2J\\x1b[31mred\\rbare CR\\ttab" in stdout
    assert "S: 250 FORGED \\x1b[2J\\x1b[31mred\\rbare CR\\ttab" in stdout  # the -v wire line
    assert "received: 250-first" in stdout and "FORGED \\x1b[2J" in out["transcript"]
    assert "captured all=first\\n250 FORGED" in out["transcript"]
    assert "FORGED \\x1b[2J\\x1b[31mred\\rbare CR\\ttab" in out["junit"]
    assert_nothing_forged(out)


def test_a_host_with_crlf_cannot_forge_lines(tmp_path):
    out = run_reported(
        tmp_path,
        """\
        name: host
        protocol: smtp
        connect: {{host: "{{{{ h }}}}", port: 1, timeout: 2}}
        vars: {{h: localhost}}
        steps:
          - S: 220
        """,
        "--var",
        f"h=127.0.0.1\r\n{FORGED} \x1b[31m",
    )
    assert out["rc"] == 3, out["stdout"] + out["stderr"]
    shown = "127.0.0.1\\r\\n  9 C: FORGED \\x1b[31m"
    assert f"session host (smtp): {shown}:1 via socket" in out["stdout"]
    assert f"cannot resolve '{shown}'" in out["stdout"]
    assert f"attempt 1/1: {shown}:1" in out["transcript"]
    assert f"cannot resolve '{shown}'" in out["junit"]
    assert_nothing_forged(out)


def test_safe_text_is_one_line_of_visible_escapes():
    assert safe_text("a\r\nb\tc") == "a\\r\\nb\\tc"
    assert safe_text("\x1b[31m\x00\x7f\x85") == "\\x1b[31m\\x00\\x7f\\x85"
    assert safe_text("\u2028\u202e") == "\\u2028\\u202e"  # line separator, right-to-left override
    assert safe_text("Grüße ✓ 日本") == "Grüße ✓ 日本"
