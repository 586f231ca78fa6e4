"""LMTP (RFC 2033): the framer (one reply per accepted recipient after the message, given as one
Recipients reply; any split of the bytes gives the same replies), the per-recipient `S:`, and
real Dovecot LMTP over TCP and over a unix socket."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runner.lang.pattern_parse import parse_pattern
from runner.lang.render import Context
from runner.protocols.lmtp import LMTP
from runner.protocols.smtp import encode_body

REPO = Path(__file__).resolve().parent.parent

SERVER = (
    b"220 lmtp ready\r\n"
    b"250-lmtp.example\r\n250 PIPELINING\r\n"
    b"250 2.1.0 ok\r\n"
    b"250 2.1.5 ok\r\n"
    b"550 5.1.1 no such user\r\n"
    b"250 2.1.5 ok\r\n"
    b"354 go\r\n"
    b"250 2.0.0 <alice> saved\r\n"
    b"452 4.2.2 <bob> over quota\r\n"
    b"221 bye\r\n"
)


def conversation(proto: LMTP) -> None:
    proto.command("LHLO me")
    proto.command("MAIL FROM:<a@x>")
    proto.command("RCPT TO:<alice@x>")
    proto.command("RCPT TO:<nobody@x>")
    proto.command("RCPT TO:<bob@x>")
    proto.command("DATA")


def replies_for(chunks: list[bytes]):
    proto = LMTP()
    got = []
    greeting_seen = False
    for chunk in chunks:
        proto.receive_data(chunk)
        while (r := proto.next_reply()) is not None:
            got.append(r)
            if not greeting_seen:
                greeting_seen = True
                conversation(proto)
            if r.code == "354":
                proto.sent_raw(encode_body(b"Subject: x\n\nhi\n"))
                proto.command("QUIT")
    return got


def test_one_reply_per_accepted_recipient_after_the_message():
    got = replies_for([SERVER])
    codes = [r.code for r in got]
    assert codes == ["220", "250", "250", "250", "550", "250", "354", "452", "221"]
    message = got[7]
    assert [p.code for p in message.parts] == ["250", "452"]  # two accepted, in RCPT order
    assert message.lines == ("250 2.0.0 <alice> saved", "452 4.2.2 <bob> over quota")


def test_a_bdat_command_line_and_its_raw_chunk_get_one_reply_per_recipient():
    """`C: BDAT n LAST` then `raw:` (the hand-written form): the chunk is message bytes, not
    commands, and the LAST chunk's reply is one per accepted recipient."""
    proto = LMTP()
    proto.receive_data(b"220 lmtp ready\r\n")
    assert proto.next_reply().code == "220"
    for line in ("LHLO me", "MAIL FROM:<a@x>", "RCPT TO:<alice@x>", "RCPT TO:<bob@x>"):
        proto.command(line)
    proto.command("BDAT 24 LAST")
    proto.sent_raw(b"Subject: x\r\nRCPT TO:y\r\n")  # 24 bytes, a line that looks like a command
    proto.command("QUIT")
    proto.receive_data(
        b"250 lmtp\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 2.0.0 <alice> saved\r\n452 4.2.2 <bob> full\r\n221 bye\r\n"
    )
    got = []
    while (r := proto.next_reply()) is not None:
        got.append(r)
    assert [r.code for r in got] == ["250", "250", "250", "250", "452", "221"]
    assert [p.code for p in got[4].parts] == ["250", "452"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_any_split_gives_the_same_replies(size):
    whole = replies_for([SERVER])
    split = replies_for([SERVER[i : i + size] for i in range(0, len(SERVER), size)])
    assert split == whole
    assert [getattr(r, "parts", None) for r in split] == [getattr(r, "parts", None) for r in whole]


def pattern(value):
    p, problems = parse_pattern(value, "lmtp")
    assert not problems
    return p


def test_a_list_is_one_pattern_per_recipient_and_a_single_one_holds_for_all():
    message = replies_for([SERVER])[7]
    ctx = Context()
    assert pattern([250, 452]).match(message, ctx).ok
    assert pattern(["2xx", "4xx"]).match(message, ctx).ok
    bad = pattern([250, 250]).match(message, ctx)
    assert not bad.ok and "recipient 2 of 2" in bad.reason
    count = pattern([250]).match(message, ctx)
    assert not count.ok and "expected 1 replies (one per recipient), got 2" in count.reason
    every = pattern(250).match(message, ctx)
    assert not every.ok and "recipient 2 of 2" in every.reason
    ordinary = replies_for([SERVER])[4]  # a RCPT reply: a list is alternatives there
    assert pattern([250, 550]).match(ordinary, ctx).ok


def mailrun(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )


DELIVER = """\
name: lmtp delivery
protocol: lmtp
connect: {connect}
steps:
  - S: 220
  - C: LHLO client.example.test
    S: 250
  - C: MAIL FROM:<alice@example.test>
    S: 250
  - C: RCPT TO:<alice@example.test>
    S: 250
  - C: RCPT TO:<nobody@example.test>
    S: 550
  - C: RCPT TO:<bob@example.test>
    S: 250
  - C: DATA
    S: 354
  - body: |
      Subject: {subject}

      delivered by LMTP
    S: {expect}
  - C: QUIT
    S: 221
"""


@pytest.mark.testbed
@pytest.mark.parametrize("over", ["tcp", "unix"])
def test_dovecot_lmtp_delivers_and_answers_per_recipient(testbed, tmp_path, over):
    subject = f"lmtp {over} {uuid.uuid4().hex}"
    connect = (
        f"{{host: {testbed.host}, port: {testbed.ports['lmtp']}}}"
        if over == "tcp"
        else f'{{unix: "{testbed.lmtp_socket}"}}'
    )
    path = tmp_path / "lmtp.yaml"
    path.write_text(DELIVER.format(connect=connect, subject=subject, expect='["250 2.0.0", "250 2.0.0"]'))
    r = mailrun(path, "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    if over == "unix":
        assert f"unix:{testbed.lmtp_socket}" in r.stdout
    for user in ("alice", "bob"):
        testbed.wait_for_message(user, lambda data: subject.encode() in data)
    # one pattern per recipient: three given for two accepted recipients fails, naming the count
    path.write_text(DELIVER.format(connect=connect, subject=subject + " again", expect="[250, 250, 250]"))
    r = mailrun(path)
    assert r.returncode == 1
    assert "expected 3 replies (one per recipient), got 2" in r.stdout
