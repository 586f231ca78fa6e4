"""`mailrun import`: pasted conversations (the README's walk-through, telnet pastes, mailrun and
swaks transcripts) made into scenarios that validate and replay, with no credential in them."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.load.api import load_scenario

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "transcripts"
T = 60


def mailrun(*args, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=T,
        input=stdin,
    )


def import_text(tmp_path: Path, text: str, *args) -> tuple[subprocess.CompletedProcess, Path]:
    src = tmp_path / "pasted.txt"
    src.write_text(text)
    out = tmp_path / "imported.yaml"
    return mailrun("import", src, "-o", out, *args), out


def steps(path: Path):
    scenario = load_scenario(path, use_cache=False)
    return [(s.action, s.text, s.expect.describe() if s.expect else None) for s in scenario.sessions[0].steps]


def test_the_readme_walk_through_imports_to_a_scenario_that_validates(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```\n(\$ telnet mail\.example\.com 25\n.*?)```", readme, re.S).group(1)
    r, out = import_text(tmp_path, block)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "d29uZGVybGFuZA==" not in text and "wonderland" not in text  # the password, base64 and plain
    assert 'host: "mail.example.com"' in text and "port: 25" in text
    got = steps(out)
    assert got[0] == ("read", None, "220")
    sent = [t for action, t, _ in got if action == "send"]
    assert sent == [
        "EHLO me.example",
        "AUTH LOGIN",
        "{{ env.MAIL_USER | b64 }}",
        "{{ env.MAIL_PASSWORD | b64 }}",
        "MAIL FROM:<alice@example.com>",
        "RCPT TO:<bob@example.com>",
        "DATA",
        "QUIT",
    ]
    body = [s for s in got if s[0] == "body"]
    assert body == [("body", "Subject: hello\n\nHi Bob.\n", "250 2.0.0")]
    assert mailrun("validate", out).returncode == 0


def test_a_telnet_paste_without_prefixes(tmp_path):
    r, out = import_text(tmp_path, (DATA / "telnet_pop3.txt").read_text(), "--protocol", "pop3")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "builder-secret" not in text
    assert 'host: "pop.example.test"' in text and "port: 110" in text
    got = steps(out)
    assert [(a, t) for a, t, _ in got if a == "send"] == [
        ("send", "USER {{ env.MAIL_USER }}"),
        ("send", "PASS {{ env.MAIL_PASSWORD }}"),
        ("send", "LIST"),
        ("send", "RETR 1"),
        ("send", "QUIT"),
    ]
    assert len(got) == 6  # the body lines (one looks like a reply) stayed in RETR's reply


def test_the_protocol_is_guessed_from_the_greeting(tmp_path):
    r, out = import_text(tmp_path, "S: +OK hi\nC: QUIT\nS: +OK bye\n")
    assert r.returncode == 0, r.stderr
    assert "protocol: pop3" in out.read_text()


def test_an_imap_transcript_with_a_literal_and_escapes(tmp_path):
    r, out = import_text(tmp_path, (DATA / "imap_literal.txt").read_text())
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "builder-secret" not in text and "protocol: imap" in text
    got = steps(out)
    assert [(a, t, e) for a, t, e in got] == [
        ("read", None, "OK"),
        ("send", "LOGIN {{ env.MAIL_USER }} {{ env.MAIL_PASSWORD }}", "OK"),
        ("send", "SELECT INBOX", "OK"),
        ("send", "FETCH 1 BODY[]", "OK"),  # the literal's 'a3 OK' line did not end the reply
        ("send", "LOGOUT", "OK"),
    ]


def test_rfc_examples_with_their_text_in_a_column_and_narration(tmp_path):
    """RFC 3501's example (`S:   * OK ...`, text set three spaces in, a literal) and RFC 1939's
    (four spaces in, with `<open connection>` narration) import as the conversations they show."""
    r, out = import_text(tmp_path, (DATA / "rfc3501_example.txt").read_text())
    assert r.returncode == 0, r.stderr
    assert "protocol: imap" in out.read_text() and "mrc secret" not in out.read_text()
    assert [(a, t) for a, t, _ in steps(out)] == [
        ("read", None),
        ("send", "login {{ env.MAIL_USER }} {{ env.MAIL_PASSWORD }}"),
        ("send", "select inbox"),
        ("send", "fetch 12 full"),
        ("send", "fetch 12 body[header]"),  # the {342} literal, counted across the column
        ("send", "store 12 +flags \\deleted"),
        ("send", "logout"),
    ]
    r, out = import_text(tmp_path, (DATA / "rfc1939_example.txt").read_text(), "--force")
    assert r.returncode == 0, r.stderr
    assert "protocol: pop3" in out.read_text() and "c4c9334bac560ecc979e58001b3e22fb" not in out.read_text()
    assert [(a, t, e) for a, t, e in steps(out)][2:] == [
        ("send", "STAT", "+OK"),
        ("send", "LIST", "+OK"),
        ("send", "RETR 1", "+OK"),
        ("send", "DELE 1", "+OK"),
        ("send", "QUIT", "+OK"),
    ]


def test_an_rfc_2033_lmtp_example_is_lmtp_with_a_reply_per_recipient(tmp_path):
    """RFC 2033's example does not say LMTP but its LHLO does; the message gets one reply per
    accepted recipient (two of the three), with or without the greeting shown."""
    text = (DATA / "rfc2033_example.txt").read_text()
    for pasted in (text, text.split("\n", 1)[1]):
        r, out = import_text(tmp_path, pasted, "--force")
        assert r.returncode == 0, r.stderr
        scenario = load_scenario(out, use_cache=False)
        assert scenario.sessions[0].protocol == "lmtp"
        body = [s for s in scenario.sessions[0].steps if s.action == "body"][0]
        assert body.text == "Blah blah blah...\n..etc. etc. etc.\n"  # (un-dot-stuffed)
        assert 'S: ["250", "452"]' in out.read_text()


def test_an_rfc_3030_bdat_example_imports_and_replays(sandbox, tmp_path):
    """`BDAT n LAST` and the n bytes after it (`<CR><LF>` marking the line ends, as RFC 3030's
    examples do) become the command and a `raw:` chunk; the scenario replays as written."""
    text = (DATA / "rfc3030_example.txt").read_text()
    r, out = import_text(tmp_path, text, "--host", "127.0.0.1", "--port", str(sandbox.ports["smtp"]))
    assert r.returncode == 0, r.stderr
    got = steps(out)
    assert ("send", "BDAT 86 LAST", None) in got  # sent with its chunk: no reply in between
    chunk = "To: Susan@random.com\r\nFrom: Sam@random.com\r\nSubject: This is a bodyless test message\r\n"
    assert [(a, t, e) for a, t, e in got if a == "raw"] == [("raw", chunk, "250")]
    assert len(chunk.encode()) == 86
    play = mailrun(out, "-v")
    assert play.returncode == 0, play.stdout + play.stderr
    assert "S: 250 2.0.0 Ok: queued as" in play.stdout


def test_after_a_refused_auth_the_next_command_is_a_command_not_a_credential(tmp_path):
    """A server that refuses AUTH at once (530 before STARTTLS): the STARTTLS after it stays
    STARTTLS; were it taken for the planned answer, the replay would send the password in the
    clear where STARTTLS was. Base64 lines after the refusal are still taken for answers."""
    r, out = import_text(
        tmp_path,
        "S: 220 mx\nC: EHLO me\nS: 250 mx\nC: AUTH PLAIN\nS: 530 5.7.0 Must issue a STARTTLS command first\n"
        "C: STARTTLS\nS: 220 2.0.0 Ready to start TLS\n",
    )
    assert r.returncode == 0, r.stderr
    assert [(a, t) for a, t, _ in steps(out)][-2:] == [("send", "AUTH PLAIN"), ("send", "STARTTLS")]
    r, out = import_text(
        tmp_path,
        "S: * OK ready\nC: a1 AUTHENTICATE PLAIN\nS: a1 NO no\nC: a2 STARTTLS\nS: a2 OK go\n",
        "--force",
    )
    assert r.returncode == 0, r.stderr
    assert [(a, t) for a, t, _ in steps(out)][-1] == ("send", "STARTTLS")
    user, password = base64.b64encode(b"alice").decode(), base64.b64encode(b"wonderland").decode()
    r, out = import_text(
        tmp_path,
        f"S: 220 mx\nC: AUTH LOGIN\nS: 503 5.5.1 no\nC: {user}\nS: 500 what\nC: {password}\nS: 500 what\n"
        "C: MAIL FROM:<a@x>\nS: 250 ok\n",
        "--force",
    )
    assert r.returncode == 0, r.stderr
    assert password not in out.read_text()
    assert [t for _, t, _ in steps(out)][-3:] == [
        "{{ env.MAIL_USER | b64 }}",
        "{{ env.MAIL_PASSWORD | b64 }}",
        "MAIL FROM:<a@x>",
    ]


def test_a_password_met_later_is_replaced_only_where_it_stands_as_a_word(tmp_path):
    """docker-mailserver's tests log in with `123`: `FETCH 1:123` is a message range, and
    `passwords@` holds the password `pass` only by chance. A password echoed as a word is
    replaced (plain or base64), so it never reaches the file."""
    r, out = import_text(
        tmp_path,
        "S: * OK ready\nC: A LOGIN user1@localhost 123\nS: A OK in\nC: B SELECT INBOX\nS: B OK sel\n"
        "C: C FETCH 1:123 (FLAGS)\nS: C OK done\n",
    )
    assert r.returncode == 0, r.stderr
    assert [t for _, t, _ in steps(out)][-1] == "FETCH 1:123 (FLAGS)"
    blob = base64.b64encode(b"\0u\0pass").decode()
    r, out = import_text(
        tmp_path,
        f"S: 220 mx\nC: AUTH PLAIN {blob}\nS: 235 ok\nC: MAIL FROM:<passwords@example.com>\nS: 250 ok\n"
        "C: RCPT TO:<b@example.com>\nS: 250 ok\nC: DATA\nS: 354 go\nC: Your pass is expiring.\n"
        "C: Echoed: cGFzcw== and pass\nC: .\nS: 250 ok\n",
        "--force",
    )
    assert r.returncode == 0, r.stderr
    got = steps(out)
    assert ("send", "MAIL FROM:<passwords@example.com>", "250") in got
    body = [t for a, t, _ in got if a == "body"][0]
    assert body == (
        "Your {{ env.MAIL_PASSWORD }} is expiring.\n"
        "Echoed: {{ env.MAIL_PASSWORD | b64 }} and {{ env.MAIL_PASSWORD }}\n"
    )


@pytest.mark.parametrize("indent", ["   ", "\t", " "])
def test_a_transcript_indented_as_a_whole_imports_as_it_does_flush_left(tmp_path, indent):
    """RFC text is indented: RFC 5321's D.1 example, set three spaces (or a tab) in."""
    flush = (DATA / "rfc5321_d1.txt").read_text()
    r, out = import_text(tmp_path, flush)
    assert r.returncode == 0, r.stderr
    want = steps(out)
    indented = "".join(indent + line if line.strip() else line for line in flush.splitlines(True))
    r, out = import_text(tmp_path, indented, "--force")
    assert r.returncode == 0, r.stderr
    assert steps(out) == want and ("send", "RCPT TO:<Green@foo.com>", "550") in want


@pytest.mark.testbed
def test_a_refused_password_then_the_right_one_replays_as_the_negative_test_it_is(testbed, tmp_path):
    """Two different passwords (the first refused) get two variables, so the imported scenario
    replays against Dovecot: the wrong one refused again, the right one accepted."""
    text = (
        "S: +OK Dovecot ready.\nC: USER bob@example.test\nS: +OK\nC: PASS Not-His-99\n"
        "S: -ERR [AUTH] Authentication failed.\nC: USER bob@example.test\nS: +OK\nC: PASS builder\n"
        "S: +OK Logged in.\nC: QUIT\nS: +OK Logging out.\n"
    )
    r, out = import_text(tmp_path, text, "--host", "127.0.0.1", "--port", str(testbed.ports["pop3"]))
    assert r.returncode == 0, r.stderr
    written = out.read_text()
    assert "Not-His-99" not in written and "builder" not in written
    assert "secrets: [env.MAIL_PASSWORD, env.MAIL_PASSWORD_2]" in written
    sent = [t for a, t, _ in steps(out) if a == "send"]
    assert sent[1] == "PASS {{ env.MAIL_PASSWORD }}" and sent[3] == "PASS {{ env.MAIL_PASSWORD_2 }}"
    env = {"MAIL_USER": "bob@example.test", "MAIL_PASSWORD": "Not-His-99", "MAIL_PASSWORD_2": "builder"}
    again = mailrun(out, "-v", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Not-His-99" not in again.stdout and "builder" not in again.stdout


def test_a_telnet_paste_of_an_imap_append_keeps_the_literal_whole(tmp_path):
    """Unprefixed (a telnet session pasted): the literal's blank lines are data, counted into
    its {310} bytes, and the tagged OK after it is the server's."""
    r, out = import_text(tmp_path, (DATA / "telnet_append.txt").read_text())
    assert r.returncode == 0, r.stderr
    got = steps(out)
    raw = [t for a, t, _ in got if a == "raw"][0]
    assert len(raw.encode()) == 310 + 2  # the literal, then the CRLF that ends the command
    assert "\r\n\r\nHello Joe" in raw
    assert [(a, t) for a, t, _ in got][-1] == ("send", "LOGOUT")


def test_a_count_that_overruns_its_data_is_an_error_naming_the_line(tmp_path):
    """A BDAT count larger than the lines after it: the server's reply would be swallowed as
    data and later commands with it. That is an error naming where the count was given."""
    text = (
        "S: 220 mx\nC: EHLO me\nS: 250 mx\nC: MAIL FROM:<a@x>\nS: 250 ok\nC: RCPT TO:<b@x>\nS: 250 ok\n"
        "C: BDAT 100 LAST\nC: Subject: short\nS: 250 ok\nC: QUIT\nS: 221 bye\n"
    )
    r, out = import_text(tmp_path, text)
    assert r.returncode == 2 and not out.exists()
    assert (
        "pasted.txt:10: a server line while the client's literal or BDAT chunk still needs 84 byte(s) (from line 8)"
        in r.stderr
    )
    r, out = import_text(tmp_path, text.replace("BDAT 100 LAST", "BDAT 3 LAST"), "--force")
    assert (
        r.returncode == 2
        and "pasted.txt:9: the BDAT chunk ends 11 byte(s) before the end of this line" in r.stderr
    )


def test_an_openssl_s_client_paste_gives_its_host_port_and_implicit_tls(tmp_path):
    r, out = import_text(
        tmp_path,
        "$ openssl s_client -connect smtp.example.com:465 -crlf -quiet\ndepth=0 CN = smtp.example.com\n"
        "verify return:1\n220 smtp.example.com ESMTP\nEHLO me\n250 smtp.example.com\nQUIT\n221 bye\n",
    )
    assert r.returncode == 0, r.stderr
    connect = load_scenario(out, use_cache=False).sessions[0].connect.values
    assert (connect["host"], connect["port"], connect["tls"]) == ("smtp.example.com", 465, "implicit")
    assert [(a, t) for a, t, _ in steps(out)][0] == ("read", None)
    # -starttls: openssl played the greeting, EHLO and STARTTLS unseen; the paste cannot replay
    r, out = import_text(
        tmp_path,
        "$ openssl s_client -starttls smtp -connect smtp.example.com:587 -crlf -quiet\n"
        "verify return:1\n250 CHUNKING\nEHLO me\n250 smtp.example.com\nQUIT\n221 bye\n",
        "--force",
    )
    assert r.returncode == 2 and "pasted.txt:1:" in r.stderr and "--tls starttls" in r.stderr


def test_spaces_beyond_the_column_are_the_lines_own(tmp_path):
    text = (
        "S:   220 mx ESMTP\nC:   HELO me\nS:   250 mx\nC:   DATA\nS:   354 go\n"
        "C:   Subject: a long\nC:     folded subject\nC:   \nC:    indented body\nC:   .\nS:   250 ok\n"
    )
    r, out = import_text(tmp_path, text)
    assert r.returncode == 0, r.stderr
    body = load_scenario(out, use_cache=False).sessions[0].steps[3].text
    assert body.startswith("Subject: a long\n  folded subject\n\n indented body"), repr(body)


def test_a_swaks_transcript(tmp_path):
    r, out = import_text(tmp_path, (DATA / "swaks_style.txt").read_text())
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "AGFsaWNlAHdvbmRlcmxhbmQ=" not in text
    assert 'tls: "starttls"' in text and "port: 2525" in text
    got = steps(out)
    assert ("send", "AUTH PLAIN {{ auth_plain(env.MAIL_USER, env.MAIL_PASSWORD) }}", "235 2.7.0") in got
    assert ("send", "RCPT TO:<nobody@example.test>", "550 5.1.1") in got
    assert "auth_plain" in r.stderr  # it says what it replaced


def test_template_braces_in_a_client_line_are_kept_literal(tmp_path):
    r, out = import_text(tmp_path, "S: 220 hi\nC: HELO {{ not_a_var }}\nS: 250 ok\n")
    assert r.returncode == 0, r.stderr
    assert 'C: "HELO {{ \\"{{\\" }} not_a_var }}"' in out.read_text()


def test_lines_it_cannot_place_are_errors_with_their_line_number(tmp_path):
    r, out = import_text(tmp_path, "S: 220 hi\nC: EHLO x\nthis is prose\nS: 250 ok\n")
    assert r.returncode == 2 and not out.exists()
    assert "pasted.txt:3: cannot place this line" in r.stderr
    r, _ = import_text(tmp_path, "S: 220 hi\nC: EHLO x\nS: hello there\n")
    assert r.returncode == 2 and "pasted.txt:3: not a smtp reply" in r.stderr
    r, _ = import_text(tmp_path, "S: 220 hi\nC: EHLO x\nS: 250-a\n")
    assert r.returncode == 2 and "pasted.txt:3: this reply is not complete" in r.stderr
    r, _ = import_text(tmp_path, "just words\n")
    assert r.returncode == 2 and "no conversation found" in r.stderr
    r, _ = import_text(tmp_path, "EHLO me\nMAIL FROM:<a@x>\nQUIT\n", "--force")  # client lines only
    assert r.returncode == 2 and "mailrun record HOST PORT --script FILE" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_transcript_from_stdin(tmp_path):
    out = tmp_path / "from-stdin.yaml"
    r = mailrun(
        "import",
        "-",
        "-o",
        out,
        "--host",
        "127.0.0.1",
        "--port",
        "2525",
        stdin="S: 220 x\nC: QUIT\nS: 221 bye\n",
    )
    assert r.returncode == 0, r.stderr
    assert 'host: "127.0.0.1"' in out.read_text()


def test_an_lmtp_transcript_gives_a_pattern_per_recipient(tmp_path):
    text = (
        "S: 220 lmtp\nC: LHLO x\nS: 250 lmtp\nC: MAIL FROM:<a@x>\nS: 250 2.1.0 ok\n"
        "C: RCPT TO:<b@x>\nS: 250 2.1.5 ok\nC: RCPT TO:<c@x>\nS: 250 2.1.5 ok\nC: DATA\nS: 354 go\n"
        "C: Subject: x\nC:\nC: hi\nC: .\nS: 250 2.0.0 <b@x> saved\nS: 452 4.2.2 <c@x> over quota\n"
        "C: QUIT\nS: 221 bye\n"
    )
    r, out = import_text(tmp_path, text, "--protocol", "lmtp", "--port", "24")
    assert r.returncode == 0, r.stderr
    assert 'S: ["250 2.0.0", "452 4.2.2"]' in out.read_text()
    body = [s for s in steps(out) if s[0] == "body"]
    assert body == [("body", "Subject: x\n\nhi\n", "[250 2.0.0, 452 4.2.2]")]


# --------------------------------------------------------------------------- real transcripts, replayed
@pytest.fixture
def sandbox():
    from runner.sandbox.server import Sandbox

    with Sandbox(accept_any_login=True) as s:
        yield s


def test_mailruns_own_transcript_imports_and_replays(sandbox, tmp_path):
    scenario = tmp_path / "send.yaml"
    scenario.write_text(
        f"""\
name: send for the transcript
protocol: smtp
connect: {{host: 127.0.0.1, port: {sandbox.ports["smtp"]}, tls: starttls, ca: "{sandbox.ca_path}"}}
vars: {{user: erin@mailrun.test, password: "Imp0rt-secret"}}
secrets: [password]
steps:
  - S: 220
  - C: EHLO me
    S: 250
  - C: STARTTLS
    S: 220
    starttls: true
  - C: EHLO me
    S: 250
  - C: AUTH LOGIN
    S: 334
  - C: "{{{{ user | b64 }}}}"
    S: 334
  - C: "{{{{ password | b64 }}}}"
    S: 235
  - C: QUIT
    S: 221
"""
    )
    r = mailrun(scenario, "--transcript", tmp_path / "tr")
    assert r.returncode == 0, r.stdout + r.stderr
    (log,) = (tmp_path / "tr").iterdir()
    out = tmp_path / "imported.yaml"
    r = mailrun("import", log, "-o", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert 'tls: "starttls"' in text and "starttls: true" in text
    assert "Imp0rt-secret" not in text and base64.b64encode(b"Imp0rt-secret").decode() not in text
    text = text.replace("port:", f'ca: "{sandbox.ca_path}"\n  port:', 1)
    out.write_text(text)
    again = mailrun(out, env={"MAIL_USER": "erin@mailrun.test", "MAIL_PASSWORD": "Imp0rt-secret"})
    assert again.returncode == 0, again.stdout + again.stderr


def test_real_swaks_output_imports_and_replays(sandbox, tmp_path):
    if not shutil.which("swaks"):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("swaks is not installed (scripts/test installs it)")
        pytest.skip("swaks is not installed (scripts/test installs it)")
    swaks = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{sandbox.ports['smtp']}", "--from", "frank@mailrun.test",
         "--to", "bob@mailrun.test", "--auth", "LOGIN", "--auth-user", "frank@mailrun.test",
         "--auth-password", "Swaks-secret-1"],
        capture_output=True, text=True, timeout=T,
    )  # fmt: skip
    assert swaks.returncode == 0, swaks.stdout + swaks.stderr
    r, out = import_text(tmp_path, swaks.stdout)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "Swaks-secret-1" not in text and base64.b64encode(b"Swaks-secret-1").decode() not in text
    again = mailrun(out, env={"MAIL_USER": "frank@mailrun.test", "MAIL_PASSWORD": "Swaks-secret-1"})
    assert again.returncode == 0, again.stdout + again.stderr


def test_real_swaks_output_of_a_refused_login_imports_as_a_negative_test(tmp_path):
    """swaks prints `*** No authentication type succeeded` when AUTH fails: its remark, not the
    conversation. The imported scenario expects the refusal, and replays it."""
    from runner.sandbox.server import Sandbox

    if not shutil.which("swaks"):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("swaks is not installed (scripts/test installs it)")
        pytest.skip("swaks is not installed (scripts/test installs it)")
    with Sandbox() as strict:  # published users only: a wrong password is refused
        swaks = subprocess.run(
            [
                "swaks",
                "--server",
                f"127.0.0.1:{strict.ports['smtp']}",
                "--from",
                "alice@mailrun.test",
                "--to",
                "bob@mailrun.test",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice@mailrun.test",
                "--auth-password",
                "Wrong-secret-2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=T,
        )  # fmt: skip (`swaks ... 2>&1`: its remarks go to stderr)
        assert "*** No authentication type succeeded" in swaks.stdout, swaks.stdout
        r, out = import_text(tmp_path, swaks.stdout)
        assert r.returncode == 0, r.stderr
        assert "Wrong-secret-2" not in out.read_text()
        assert (
            "send",
            "AUTH PLAIN {{ auth_plain(env.MAIL_USER, env.MAIL_PASSWORD) }}",
            "535 5.7.8",
        ) in steps(out)
        again = mailrun(out, env={"MAIL_USER": "alice@mailrun.test", "MAIL_PASSWORD": "Wrong-secret-2"})
        assert again.returncode == 0, again.stdout + again.stderr


def test_an_import_without_its_host_runs_in_the_sandbox_with_a_host_name(tmp_path):
    """`mailrun import` writes `{{ env.MAIL_HOST }}` for a transcript that does not name its
    server; --sandbox fills that in with a host name, not a mail address."""
    r, out = import_text(tmp_path, "S: 220 mx\nC: EHLO client.example\nS: 250 mx\nC: QUIT\nS: 221 bye\n")
    assert r.returncode == 0 and "{{ env.MAIL_HOST }}" in out.read_text(), r.stderr
    out.write_text(out.read_text().replace("EHLO client.example", "EHLO {{ env.MAIL_HOST }}"))
    env = {k: v for k, v in os.environ.items() if k != "MAIL_HOST"}
    run = subprocess.run(
        [sys.executable, "-m", "runner", "--sandbox", "-v", str(out)],
        cwd=REPO, env={**env, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=T,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "C: EHLO localhost" in run.stdout and "@" not in run.stdout.split("EHLO", 1)[1].split()[0]


# --------------------------------------------------------------------------- any input
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from runner.errors import ScenarioError  # noqa: E402
from runner.record.transcript import read_transcript  # noqa: E402
from runner.record.write import scenario_text  # noqa: E402

LINES = st.sampled_from(
    [
        "S: 220 hi",
        "S: 250-a",
        "S: 250 b",
        "S: 354 go",
        "S: 334 VXNlcm5hbWU6",
        "S: 235 2.7.0 ok",
        "S: +OK",
        "S: -ERR no",
        "S: + ",
        "S: * OK ready",
        "S: a1 OK done",
        "S: * 1 FETCH (BODY[] {3}",
        "S: )",
        "C: EHLO x",
        "C: DATA",
        "C: .",
        "C: ..x",
        "C: AUTH LOGIN",
        "C: YWxpY2U=",
        "C: a1 LOGIN u {3}",
        "C: pwd",
        "C: STARTTLS",
        "C: STLS",
        "C: USER u",
        "C: PASS p",
        "C: {{ x }}",
        "C: ",
        "--- connected to 127.0.0.1:25 ---",
        "garbage line",
        "",
        "S:",
        "C:",
        "$ telnet h 25",
        "220 bare",
        "EHLO bare",
        "<-  250 ok",
        " -> QUIT",
        "S: \\x00\\r\\n",
    ]  # fmt: skip
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINES, max_size=25), st.sampled_from([None, "smtp", "pop3", "imap", "line"]))
def test_any_transcript_is_an_error_with_line_numbers_or_a_scenario_that_validates(tmp_path, lines, protocol):
    text = "\n".join(lines)
    try:
        imported = read_transcript(text, "t.txt", protocol)
    except ScenarioError as exc:
        assert all(p.startswith("t.txt:") for p in exc.problems), exc.problems
        return
    out = tmp_path / "any.yaml"
    out.write_text(scenario_text("any", imported.sessions, []))
    load_scenario(out, use_cache=False)  # what import writes always validates


def test_client_lines_first_mean_a_blind_script_or_a_greeting_not_pasted(tmp_path):
    # the first server line is a greeting: the client lines were sent blind before it
    r, out = import_text(tmp_path, "C: EHLO x\nS: 220 mail ESMTP\nS: 250 ok\n", "--host", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    assert steps(out)[:2] == [("read", None, "220"), ("send", "EHLO x", "250")]
    # it is not: the paste began after the greeting, which the scenario then expects as usual
    r, out = import_text(
        tmp_path, "C: EHLO x\nS: 250 ok\nC: QUIT\nS: 221 bye\n", "--host", "127.0.0.1", "--force"
    )
    assert r.returncode == 0, r.stderr
    assert steps(out) == [("read", None, "220"), ("send", "EHLO x", "250"), ("send", "QUIT", "221")]
    assert "does not show the greeting" in out.read_text()
