"""Issue 17, part 1: secret leaks, tried against real hostile servers (tests/support/hostile_server.py)
with the real command: `-v` output, stderr, the transcript, the JSON and the JUnit reports.

- A server echoes the password (and the base64 the client sent) split over TCP segments with a
  pause between: no output shows it, nor any half of it.
- A 334 challenge whose base64 decodes to a text holding the password: the decoded note and the
  base64 itself are masked.
- What we send is masked where a secret was rendered into it: with a one-character password
  `QUIT` stays `QUIT`; a short secret is warned about before the run (stderr).
- Masking a byte stream (RedactingStream) gives, for any split, what masking it whole gives.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.lang.secrets import RedactingStream, Redactor
from tests.support.hostile_server import challenge, echo_split, forger
from tests.support.reported_run import run_reported
from tests.support.servers import Server, drip

PASSWORD = "hunter2"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def secret_forms(user: str, password: str) -> list[str]:
    """The password and every encoding of it the client sends or a server may echo."""
    return [
        password,
        b64(password),
        b64(password).rstrip("="),
        b64(f"\0{user}\0{password}").rstrip("="),
    ]


def assert_no_secret(outputs: dict, forms: list[str]) -> None:
    for name, text in outputs.items():
        if name == "rc":
            continue
        for form in forms:
            assert form not in text, f"{form!r} in {name}:\n{text}"
        # nor inside a longer base64 text: no base64 run decodes to anything holding the password
        for token in re.findall(r"[A-Za-z0-9+/]{8,}={0,2}", text):
            for start in range(4):
                piece = token[start:]
                piece = piece[: len(piece) // 4 * 4]
                try:
                    decoded = base64.b64decode(piece)
                except ValueError:
                    continue
                assert forms[0].encode() not in decoded, f"{token!r} in {name} decodes to the password"


ECHO = """\
    name: echo
    protocol: smtp
    connect: {{host: 127.0.0.1, port: {port}, timeout: 5, transport: {transport}}}
    secrets: [pw]
    vars: {{user: alice, pw: {pw}}}
    steps:
      - S: 220
      - C: EHLO client.example
        S: 250
      - C: AUTH PLAIN {{{{ auth_plain(user, pw) }}}}
        S: 535
      - C: AUTH LOGIN
        S: 334
      - C: "{{{{ user | b64 }}}}"
        S: 334
      - C: "{{{{ pw | b64 }}}}"
        S: 535
      - C: XPASS {{{{ pw }}}}
        S: 535
        capture: {{got: 'means (\\S+)'}}
      - C: NOOP {{{{ got }}}}
        S: 535
    finally:
      - C: QUIT
        S: 221
    """


@pytest.mark.parametrize("transport", ["socket", pytest.param("telnet", marks=pytest.mark.telnet)])
def test_a_password_echoed_in_two_segments_is_never_shown(tmp_path, transport):
    with Server(echo_split(PASSWORD.encode(), pause=0.3)) as srv:
        out = run_reported(tmp_path, ECHO, port=srv.port, pw=PASSWORD, transport=transport)
        received = srv.wait_connection().wait_closed(10)
    assert out["rc"] == 0, out["stdout"] + out["stderr"]
    # the secret really went out (three encodings) and came back, split
    assert f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + PASSWORD)}".encode() in received
    assert f"XPASS {PASSWORD}\r\n".encode() in received and f"NOOP {PASSWORD}\r\n".encode() in received
    s_lines = [line for line in out["transcript"].splitlines() if " S: " in line]
    assert any(not line.endswith("\\r\\n") for line in s_lines), "the reply never arrived in pieces"
    assert_no_secret(out, secret_forms("alice", PASSWORD))
    # masked as whole replies: the conversation is still readable
    assert "S: 535 5.7.8 **** means ****" in out["stdout"]
    assert "C: XPASS ****" in out["stdout"] and "C: NOOP ****" in out["stdout"]  # the capture too
    assert out["stdout"].count("**** means ****") >= 3


def test_a_challenge_that_decodes_to_the_password_is_masked(tmp_path):
    text = b"Your password is hunter2, right?"
    with Server(challenge(text)) as srv:
        out = run_reported(
            tmp_path,
            """\
            name: challenge
            protocol: smtp
            connect: {{host: 127.0.0.1, port: {port}, timeout: 5}}
            secrets: [pw]
            vars: {{user: alice, pw: {pw}}}
            steps:
              - S: 220
              - C: EHLO client.example
                S: 250
              - C: AUTH LOGIN
                S: 235
            finally:
              - C: QUIT
                S: 221
            """,
            port=srv.port,
            pw=PASSWORD,
        )
    assert out["rc"] == 1, out["stdout"] + out["stderr"]
    assert_no_secret(out, secret_forms("alice", PASSWORD))
    doc = json.loads(out["json"])
    step = doc["scenarios"][0]["steps"][2]
    assert step["reply"]["note"] == "Your password is ****, right?"
    assert "(Your password is ****, right?)" in out["stdout"]
    assert "(Your password is ****, right?)" in out["transcript"]
    assert "(Your password is ****, right?)" in out["junit"]


def test_a_one_character_password_masks_only_where_it_was_rendered(tmp_path):
    with Server(forger(b"250 ok\r\n")) as srv:
        out = run_reported(
            tmp_path,
            """\
            name: short
            protocol: smtp
            connect: {{host: 127.0.0.1, port: {port}, timeout: 5}}
            secrets: [pw]
            vars: {{user: alice, pw: Q}}
            steps:
              - S: 220
              - C: AUTH PLAIN {{{{ auth_plain(user, pw) }}}}
                S: 250
              - C: QUIT
                S: 221
            """,
            port=srv.port,
        )
    assert out["rc"] == 0, out["stdout"] + out["stderr"]
    assert "C: QUIT" in out["stdout"] and "****UIT" not in out["stdout"]
    assert "C: QUIT\\r\\n" in out["transcript"] and "****UIT" not in out["transcript"]
    assert "step 3: C: QUIT" in out["junit"]
    steps = json.loads(out["json"])["scenarios"][0]["steps"]
    assert [s["sent"] for s in steps] == [None, "AUTH PLAIN ****", "QUIT"]
    assert b64("\0alice\0Q") not in out["stdout"] + out["transcript"]
    # warned before the run, on stderr, without the value
    assert re.search(r"s\.yaml: secret 'pw' is only 1 character long", out["stderr"]), out["stderr"]
    assert "warning" in out["stderr"]


def test_no_warning_for_a_secret_of_four_characters_or_more(tmp_path):
    with Server(forger(b"250 ok\r\n")) as srv:
        out = run_reported(
            tmp_path,
            """\
            name: long enough
            protocol: smtp
            connect: {{host: 127.0.0.1, port: {port}, timeout: 5}}
            secrets: [pw, env.MAILRUN_TEST_PW]
            vars: {{pw: abcd}}
            steps:
              - S: 220
              - C: "QUIT {{{{ env.MAILRUN_TEST_PW }}}}"
                S: 221
            """,
            "--env-file",
            str(_env_file(tmp_path, "MAILRUN_TEST_PW=xy")),
            port=srv.port,
        )
    assert out["rc"] == 0, out["stdout"] + out["stderr"]
    assert "'pw'" not in out["stderr"]
    assert "secret 'env.MAILRUN_TEST_PW' is only 2 characters long" in out["stderr"]


def _env_file(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "env"
    path.write_text(line + "\n")
    return path


def test_a_greeting_dripped_byte_by_byte_shows_the_secret_only_as_a_whole_mask(tmp_path):
    """Every byte its own segment: each read is announced as soon as it cannot begin the secret,
    and the secret's bytes only as one ****."""
    with Server(drip(f"220 {PASSWORD} ready\r\n".encode(), interval=0.02)) as srv:
        out = run_reported(
            tmp_path,
            """\
            name: drip
            protocol: smtp
            connect: {{host: 127.0.0.1, port: {port}, timeout: 5}}
            secrets: [pw]
            vars: {{pw: {pw}}}
            steps:
              - S: 220
            """,
            port=srv.port,
            pw=PASSWORD,
        )
    assert out["rc"] == 0, out["stdout"] + out["stderr"]
    pieces = [line.split(" S: ", 1)[1] for line in out["transcript"].splitlines() if " S: " in line]
    assert len(pieces) > 5, pieces  # it really came in pieces
    assert "".join(pieces) == "220 **** ready\\r\\n"
    # the mask came in one piece (held until the next byte showed the secret ended there)
    masked = [p for p in pieces if "*" in p]
    assert len(masked) == 1 and masked[0].startswith("****"), pieces
    assert "S: 220 **** ready" in out["stdout"]
    assert_no_secret(out, secret_forms("alice", PASSWORD))


@given(st.binary(max_size=8), st.text(min_size=5, max_size=16), st.binary(max_size=8))
def test_the_secret_inside_a_longer_base64_text_is_masked_at_any_offset(before, secret, after):
    r = Redactor([secret])
    shown = r.redact(base64.b64encode(before + secret.encode() + after).decode())
    for piece in shown.split("****"):
        for start in range(4):
            chunk = piece[start:][: (len(piece) - start) // 4 * 4]
            try:
                assert secret.encode() not in base64.b64decode(chunk)
            except ValueError:
                pass


# ------------------------------------------------------------------ the stream, any split
SECRETS = ["hunter2", "abab", "x"]


@given(
    st.lists(
        st.sampled_from(["hunter2", "abab", "aHVudGVyMg==", "ab", "hun", "\r\n", "535 ", "zz"]), max_size=12
    ),
    st.lists(st.integers(min_value=0, max_value=80), max_size=6),
)
def test_a_stream_masks_as_the_whole_does_for_any_split(words, cuts):
    r = Redactor(SECRETS)
    data = "".join(words).encode()
    stream = RedactingStream(r)
    pieces, pos = [], 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        pieces.append(stream.feed(data[pos:cut]))
        pos = cut
    pieces.append(stream.feed(data[pos:]))
    pieces.append(stream.flush())
    assert b"".join(pieces) == r.redact_bytes(data)
    assert not any(r.contains(p) for p in pieces)


def test_a_reply_cut_in_the_middle_of_a_secret_shows_none_of_it(tmp_path):
    """The server sends the first 11 of 13 characters of the password, then stalls: the
    deadline ends the reply, and neither -v, the transcript nor the reports show that part."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"220 x ESMTP\r\n")
            conn.makefile("rb").readline()
            conn.sendall(b"250 you are hunter2secr")
            conn.recv(1)  # until the client closes

    threading.Thread(target=serve, daemon=True).start()
    path = tmp_path / "cut.yaml"
    path.write_text(
        f"""\
name: cut
protocol: smtp
connect: {{host: 127.0.0.1, port: {port}, timeout: 1}}
vars: {{password: hunter2secret}}
secrets: [password]
steps:
  - S: 220
  - C: "EHLO {{{{ password }}}}"
    S: 250
"""
    )
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "runner", str(path), "-v", "--transcript", str(tmp_path / "t"),
         "--report", f"json={tmp_path / 'r.json'}", "--report", f"junit={tmp_path / 'r.xml'}"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    srv.close()
    assert r.returncode == 3, r.stdout + r.stderr
    outputs = [r.stdout, r.stderr, (tmp_path / "r.json").read_text(), (tmp_path / "r.xml").read_text()]
    outputs += [p.read_text() for p in (tmp_path / "t").iterdir()]
    for text in outputs:
        assert "hunter2s" not in text
    assert "250 you are ****" in r.stdout
