"""Client lines sent before the greeting (the blind `nc < file` style): the greeting is always its
own reply, on every protocol, and the commands sent before it are answered by the replies after
it, in order. The framers' bytes first, then whole scenarios against the test bed's Dovecot and
the built-in sandbox, then `mailrun import` of a transcript whose client lines come first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from runner.engine.run import Engine, RunOptions
from runner.errors import ExitClass
from runner.load.api import load_scenario
from runner.protocols import create
from runner.protocols.caps import capabilities
from tests.support.framing import drain

REPO = Path(__file__).resolve().parent.parent

POP3_STREAM = (
    b"+OK Dovecot (Debian) ready.\r\n"
    b"+OK\r\n"
    b"+OK Logged in.\r\n"
    b"+OK 2 messages:\r\n1 458\r\n2 548\r\n.\r\n"
    b"+OK Logging out.\r\n"
)
IMAP_GREETING = (
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] ready.\r\n"
)
IMAP_STREAM = (
    IMAP_GREETING + b"a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n"
    b"* FLAGS (\\Answered \\Seen)\r\n* 2 EXISTS\r\n* OK [UIDVALIDITY 17] UIDs valid\r\n"
    b"a2 OK [READ-WRITE] Select completed.\r\n"
    b"* BYE Logging out\r\na3 OK Logout completed.\r\n"
)


def _every_split(stream: bytes):
    """The stream whole, a byte at a time, and cut at every point into two."""
    yield [stream]
    yield [bytes([b]) for b in stream]
    for i in range(1, len(stream)):
        yield [stream[:i], stream[i:]]


def _replies(proto, chunks):
    out = []
    for chunk in chunks:
        out += drain(proto, chunk)
    return out


# --------------------------------------------------------------------------- the framers


def test_pop3_commands_before_the_greeting_are_answered_after_it():
    expected = None
    for chunks in _every_split(POP3_STREAM):
        p = create("pop3")
        for line in ("USER bob", "PASS builder", "LIST", "QUIT"):
            p.command(line)
        replies = _replies(p, chunks)
        shape = [(r.code, r.multiline, r.lines) for r in replies]
        assert shape == [
            ("+OK", False, ("+OK Dovecot (Debian) ready.",)),
            ("+OK", False, ("+OK",)),
            ("+OK", False, ("+OK Logged in.",)),
            ("+OK", True, ("+OK 2 messages:", "1 458", "2 548")),
            ("+OK", False, ("+OK Logging out.",)),
        ]
        assert expected is None or replies == expected
        expected = replies
        assert p.pending() == b"" and p.outstanding == 0


def test_pop3_raw_lines_before_the_greeting_too():
    p = create("pop3")
    p.sent_raw(b"USER bob\r\nPASS builder\r\nLIST\r\nQUIT\r\n")
    replies = drain(p, POP3_STREAM)
    assert [r.multiline for r in replies] == [False, False, False, True, False]


def test_imap_commands_before_the_greeting_are_answered_after_it():
    expected = None
    for chunks in _every_split(IMAP_STREAM):
        p = create("imap")
        for line in ("LOGIN bob builder", "SELECT INBOX", "LOGOUT"):
            p.command(line)
        replies = _replies(p, chunks)
        assert [(r.tag, r.code) for r in replies] == [(None, "OK"), ("a1", "OK"), ("a2", "OK"), ("a3", "OK")]
        greeting = replies[0]
        assert greeting.raw == IMAP_GREETING  # the greeting alone, as when nothing was sent first
        assert "IDLE" in capabilities("imap", None, greeting)
        assert replies[2].lines[-1] == "a2 OK [READ-WRITE] Select completed."
        assert replies[3].lines == ("* BYE Logging out", "a3 OK Logout completed.")
        assert expected is None or replies == expected
        expected = replies
        assert p.outstanding == ()


def test_imap_greeting_shape_is_the_same_whether_or_not_a_command_came_first():
    for greeting in (b"* OK ready\r\n", b"* PREAUTH hi bob\r\n", b"* BYE too busy\r\n"):
        quiet, early = create("imap"), create("imap")
        early.command("CAPABILITY")
        (a,) = drain(quiet, greeting)
        (b,) = drain(early, greeting)
        assert a == b and a.code in ("OK", "PREAUTH", "BYE") and a.tag is None
        assert early.outstanding == ("a1",)


def test_imap_only_the_first_line_of_a_connection_can_be_the_greeting():
    """A framer told the greeting came elsewhere, or a first line that is no greeting: a later
    `* OK [...]` belongs to the reply it is in."""
    p = create("imap")
    p.command("SELECT INBOX")
    (r,) = drain(p, b"* 2 EXISTS\r\n* OK [UIDVALIDITY 17] UIDs valid\r\na1 OK [READ-WRITE] done\r\n")
    assert r.tag == "a1" and len(r.lines) == 3


def test_imap_raw_tagged_lines_before_the_greeting():
    p = create("imap")
    p.sent_raw(b"x1 LOGIN bob builder\r\nx2 LOGOUT\r\n")
    replies = drain(p, b"* OK hi\r\nx1 OK in\r\n* BYE bye\r\nx2 OK out\r\n")
    assert [(r.tag, len(r.lines)) for r in replies] == [(None, 1), ("x1", 1), ("x2", 2)]


def test_lmtp_commands_before_the_greeting_count_the_right_recipients():
    p = create("lmtp")
    for line in ("LHLO me", "MAIL FROM:<a@x>", "RCPT TO:<b@x>", "RCPT TO:<nobody@x>", "DATA"):
        p.command(line)
    replies = drain(
        p, b"220 lmtp ready\r\n250-me\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n"
    )
    assert [r.code for r in replies] == ["220", "250", "250", "250", "550", "354"]
    p.sent_raw(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    (message,) = drain(p, b"250 2.0.0 <b@x> delivered\r\n")  # one accepted recipient: one reply
    assert len(message.parts) == 1 and message.code == "250"


def test_smtp_commands_before_the_greeting_still_frame_as_before():
    p = create("smtp")
    p.command("EHLO me")
    p.command("QUIT")
    replies = drain(p, b"220 ready\r\n250-me\r\n250 SIZE 10\r\n221 bye\r\n")
    assert [r.code for r in replies] == ["220", "250", "221"]


def test_a_greeting_read_by_a_program_leaves_the_first_reply_to_the_first_command():
    """openssl s_client -starttls reads the greeting itself: what comes through the framer
    first answers the first command."""
    p = create("pop3")
    p.greeting_read_elsewhere()
    p.command("CAPA")
    (capa,) = drain(p, b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
    assert capa.multiline and capa.lines == ("+OK", "USER", "SASL PLAIN")
    q = create("imap")
    q.greeting_read_elsewhere()
    q.command("LOGOUT")
    (bye,) = drain(q, b"* BYE bye\r\na1 OK out\r\n")
    assert bye.tag == "a1" and len(bye.lines) == 2


# --------------------------------------------------------------------------- whole scenarios


def _play(tmp_path: Path, text: str):
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(textwrap.dedent(text))
    events: list = []
    result = Engine(RunOptions(run_id="pregreeting"), events.append).run(load_scenario(path, use_cache=False))
    return result


def _assert_passed(result, count: int):
    bad = [(s.index, s.status, s.reason) for s in result.steps if s.status != "passed"]
    assert result.exit_class == ExitClass.OK and not bad, (result.reason, bad)
    assert len(result.steps) == count


POP3_BLIND = """\
    name: pop3 blind
    protocol: pop3
    connect: {{host: {host}, port: {port}, timeout: 5}}
    steps:
      - C: USER {user}
      - C: PASS {password}
      - C: LIST
      - C: QUIT
      - S: +OK
      - S: +OK
      - S: "+OK Logged in"
      - S: {{code: +OK, re: '^\\+OK \\d+ messages'}}
      - S: +OK
      - S: EOF
    """

IMAP_BLIND = """\
    name: imap blind
    protocol: imap
    connect: {{host: {host}, port: {port}, timeout: 5}}
    steps:
      - C: LOGIN {user} {password}
      - C: SELECT INBOX
      - C: LOGOUT
      - S: {{code: OK, text: CAPABILITY}}
      - S: {{code: OK, lines: ['^a1 OK']}}
      - S: {{code: OK, lines: ['EXISTS', '^a2 OK']}}
      - S: {{code: OK, lines: ['^\\* BYE', '^a3 OK']}}
      - S: EOF
    """


@pytest.mark.testbed
def test_blind_pop3_and_imap_against_dovecot(testbed, tmp_path):
    for text, port in ((POP3_BLIND, testbed.ports["pop3"]), (IMAP_BLIND, testbed.ports["imap"])):
        result = _play(tmp_path, text.format(host=testbed.host, port=port, user="bob", password="builder"))
        _assert_passed(result, 10 if "pop3" in text else 8)
        greeting = result.steps[4 if "pop3" in text else 3].reply
        assert greeting.raw.count(b"\n") == 1  # the greeting alone in its reply


@pytest.fixture
def sandbox():
    from runner.sandbox.server import Sandbox

    with Sandbox() as s:
        yield s


def test_blind_pop3_and_imap_against_the_sandbox(sandbox, tmp_path):
    for text, port in ((POP3_BLIND, sandbox.ports["pop3"]), (IMAP_BLIND, sandbox.ports["imap"])):
        result = _play(tmp_path, text.format(host=sandbox.host, port=port, user="bob", password="builder"))
        _assert_passed(result, 10 if "pop3" in text else 8)
        greeting = result.steps[4 if "pop3" in text else 3].reply
        assert greeting.raw.count(b"\n") == 1


def test_a_c_step_before_the_first_s_in_imap_does_not_time_out(sandbox, tmp_path):
    """A `C:` with its `S:` as the first step: the greeting is read first as its own reply,
    so the step's reply is the greeting; the next `S:` is LOGIN's (no step waits for a reply
    that was already taken)."""
    result = _play(
        tmp_path,
        f"""\
        name: imap first step sends
        protocol: imap
        connect: {{host: {sandbox.host}, port: {sandbox.ports["imap"]}, timeout: 3}}
        steps:
          - C: LOGIN bob builder
            S: {{code: OK, text: CAPABILITY}}
          - S: {{code: OK, lines: ['^a1 OK']}}
          - C: LOGOUT
            S: {{code: OK, lines: ['^\\* BYE', '^a2 OK']}}
        """,
    )
    _assert_passed(result, 3)
    assert result.steps[0].reply.tag is None and result.steps[1].reply.tag == "a1"


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize("given", [["--protocol", "pop3"], []], ids=["given", "guessed"])
def test_an_imported_transcript_with_the_client_first_frames_right(tmp_path, given):
    """With --protocol or without (the greeting, when it comes, names the protocol)."""
    src = tmp_path / "blind.txt"
    src.write_text(
        "C: USER bob\nC: PASS secret-pw\nC: LIST\nC: QUIT\n"
        "S: +OK ready\nS: +OK\nS: +OK Logged in.\nS: +OK 1 messages:\nS: 1 120\nS: .\nS: +OK bye\n"
    )
    out = tmp_path / "blind.yaml"
    r = subprocess.run(
        [sys.executable, "-m", "runner", "import", str(src), "-o", str(out), *given],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "secret-pw" not in out.read_text() and "protocol: pop3" in out.read_text()
    steps = load_scenario(out, use_cache=False).sessions[0].steps
    shown = [(s.text, s.expect.describe() if s.expect else None) for s in steps]
    assert [t for t, _ in shown] == [
        None,
        "USER {{ env.MAIL_USER }}",
        "PASS {{ env.MAIL_PASSWORD }}",
        "LIST",
        "QUIT",
    ]
    assert all(e is not None and e.startswith("+OK") for _, e in shown)
