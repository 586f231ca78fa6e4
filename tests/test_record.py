"""`mailrun record`: live sessions against real Postfix and Dovecot (the test bed), the sandbox
and small misbehaving servers, written as scenarios that replay, with no credential in them."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pexpect
import pytest

from runner.load.api import load_scenario

REPO = Path(__file__).resolve().parent.parent
T = 60


def mailrun(*args, env: dict | None = None, timeout: float = T) -> subprocess.CompletedProcess:
    full = {**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def secret_forms(password: str) -> list[str]:
    return [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0alice\0{password}".encode()).decode(),
        base64.b64encode(f"\0alice@example.test\0{password}".encode()).decode(),
    ]


def assert_no_secret(password: str, *texts: str) -> None:
    for text in texts:
        for form in secret_forms(password):
            assert form not in text, f"{form!r} leaked"


def record(
    tmp_path: Path, script: str, *args, name: str = "rec.yaml"
) -> tuple[subprocess.CompletedProcess, Path]:
    script_file = tmp_path / "client.txt"
    script_file.write_text(script)
    out = tmp_path / name
    r = mailrun("record", *args, "--script", script_file, "-o", out)
    return r, out


def replay(path: Path, user: str, password: str) -> subprocess.CompletedProcess:
    return mailrun(path, "-v", env={"MAIL_USER": user, "MAIL_PASSWORD": password})


# --------------------------------------------------------------------------- the test bed
SMTP_SCRIPT = """\
EHLO client.example.test
STARTTLS
EHLO client.example.test
AUTH LOGIN
{user_b64}
{password_b64}
MAIL FROM:<alice@example.test>
RCPT TO:<bob@example.test>
DATA
From: <alice@example.test>
To: <bob@example.test>
Subject: recorded {tag}

..a line that starts with a dot
.
QUIT
"""


@pytest.mark.testbed
def test_record_smtp_send_with_auth_then_replay_delivers_again(testbed, tmp_path):
    user, password = testbed.address("alice"), testbed.users["alice"]
    script = SMTP_SCRIPT.format(
        user_b64=base64.b64encode(user.encode()).decode(),
        password_b64=base64.b64encode(password.encode()).decode(),
        tag="smtp-1",
    )
    port = testbed.ports["submission"]
    r, out = record(tmp_path, script, testbed.host, port, "--ca", testbed.ca_path)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert_no_secret(password, text, r.stdout, r.stderr)
    assert "{{ env.MAIL_PASSWORD | b64 }}" in text and "secrets: [env.MAIL_PASSWORD]" in text
    assert "MAIL_PASSWORD" in r.stderr  # it says what to set
    # expectations are the codes and enhanced codes the server answered
    for expect in (
        'S: "220"',
        'S: "220 2.0.0"',
        'S: "235 2.7.0"',
        'S: "250 2.1.0"',
        'S: "250 2.1.5"',
        'S: "221 2.0.0"',
    ):
        assert expect in text
    assert "starttls: true" in text and 'tls: "starttls"' in text
    assert ".a line that starts with a dot\n" in text and "..a line" not in text  # un-stuffed body
    # the shown conversation decodes the challenges and masks the answers
    assert "(Username:)" in r.stdout and "(Password:)" in r.stdout
    scenario = load_scenario(out, use_cache=False)
    assert [s.action for s in scenario.sessions[0].steps].count("body") == 1
    testbed.clear_mailbox("bob")
    again = replay(out, user, password)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_no_secret(password, again.stdout, again.stderr)
    message = testbed.wait_for_message("bob", lambda data: b"Subject: recorded smtp-1" in data)
    assert b"\n.a line that starts with a dot" in message


@pytest.mark.testbed
def test_record_pop3_retrieve_replays(testbed, tmp_path):
    user, password = testbed.address("bob"), testbed.users["bob"]
    script = f"CAPA\nUSER {user}\nPASS {password}\nSTAT\nLIST\nQUIT\n"
    r, out = record(tmp_path, script, testbed.host, testbed.ports["pop3"], "--protocol", "pop3")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert_no_secret(password, text, r.stdout, r.stderr)
    assert 'C: "PASS {{ env.MAIL_PASSWORD }}"' in text and 'C: "USER {{ env.MAIL_USER }}"' in text
    assert "protocol: pop3" in text
    again = replay(out, user, password)
    assert again.returncode == 0, again.stdout + again.stderr
    wrong = replay(out, user, "not-the-password")
    assert wrong.returncode == 1  # the recorded +OK of PASS is checked
    assert "not-the-password" not in wrong.stdout + wrong.stderr


@pytest.mark.testbed
def test_record_imap_fetch_with_tags_and_a_literal_login(testbed, tmp_path):
    user, password = testbed.address("bob"), testbed.users["bob"]
    script = (
        "x1 CAPABILITY\n"
        f"x2 LOGIN {user} {{{len(password)}}}\n{password}\n"
        "x3 SELECT INBOX\n"
        "x4 FETCH 1:* (FLAGS)\n"
        "x5 LOGOUT\n"
    )
    r, out = record(tmp_path, script, testbed.host, testbed.ports["imap"], "--protocol", "imap")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert_no_secret(password, text, r.stdout, r.stderr)
    assert "x1" not in text  # mailrun tags the lines itself
    assert (
        'C: "LOGIN {{ env.MAIL_USER }} \\"{{ env.MAIL_PASSWORD }}\\""' in text
    )  # the literal became a quoted string
    assert 'C: "SELECT INBOX"\n    S: "OK"' in text
    again = replay(out, user, password)
    assert again.returncode == 0, again.stdout + again.stderr


# --------------------------------------------------------------------------- the sandbox
@pytest.fixture
def sandbox():
    from runner.sandbox.server import Sandbox

    with Sandbox(accept_any_login=True) as s:
        yield s


def test_record_auth_plain_and_imap_authenticate_in_the_sandbox(sandbox, tmp_path):
    plain = base64.b64encode(b"\0carol@mailrun.test\0Hunter2-pass").decode()
    r, out = record(
        tmp_path,
        f"EHLO me\nAUTH PLAIN {plain}\nQUIT\n",
        sandbox.host,
        sandbox.ports["smtp"],
    )
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "{{ auth_plain(env.MAIL_USER, env.MAIL_PASSWORD) }}" in text
    assert plain not in text + r.stdout + r.stderr and "Hunter2-pass" not in text
    assert replay(out, "carol@mailrun.test", "Hunter2-pass").returncode == 0

    r, out = record(
        tmp_path,
        f"a AUTHENTICATE PLAIN\n{plain}\nb LOGOUT\n",
        sandbox.host,
        sandbox.ports["imap"],
        "--protocol",
        "imap",
        name="imap.yaml",
    )
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert 'C: "AUTHENTICATE PLAIN"\n    S: "+"' in text
    assert plain not in text + r.stdout + r.stderr
    assert replay(out, "carol@mailrun.test", "Hunter2-pass").returncode == 0


@pytest.mark.parametrize(
    "protocol, script, expected",
    [
        ("pop3", "USER carol@mailrun.test\nPASS Hunter2-pass\nLIST\nQUIT\n", "+OK"),
        ("imap", "a1 LOGIN carol@mailrun.test Hunter2-pass\na2 LOGOUT\n", "OK"),
    ],
)
def test_on_a_port_of_no_usual_protocol_the_greeting_tells_it(sandbox, tmp_path, protocol, script, expected):
    """The sandbox's ports are not 110 or 143: without --protocol, the greeting says POP3 or
    IMAP (it used to be taken for SMTP: an error, and a scenario with no step that passed)."""
    r, out = record(tmp_path, script, sandbox.host, sandbox.ports[protocol])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the greeting says {protocol.upper()}" in r.stdout
    scenario = load_scenario(out, use_cache=False)
    assert scenario.sessions[0].protocol == protocol and len(scenario.sessions[0].steps) >= 3
    assert "Hunter2-pass" not in out.read_text()
    again = replay(out, "carol@mailrun.test", "Hunter2-pass")
    assert again.returncode == 0, again.stdout + again.stderr


def test_an_existing_output_is_not_overwritten_without_force(sandbox, tmp_path):
    out = tmp_path / "rec.yaml"
    out.write_text("keep me")
    script = tmp_path / "s.txt"
    script.write_text("QUIT\n")
    r = mailrun("record", sandbox.host, sandbox.ports["smtp"], "--script", script, "-o", out)
    assert r.returncode == 2 and "--force" in r.stderr and out.read_text() == "keep me"
    r = mailrun("record", sandbox.host, sandbox.ports["smtp"], "--script", script, "-o", out, "--force")
    assert r.returncode == 0 and 'C: "QUIT"' in out.read_text()


def test_typed_lines_at_a_terminal_with_the_password_not_echoed(sandbox, tmp_path):
    out = tmp_path / "typed.yaml"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "runner", "record", sandbox.host, str(sandbox.ports["smtp"]), "-o", str(out)],
        cwd=str(REPO),
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1"},
        encoding="utf-8",
        timeout=20,
    )
    child.expect("S: 220 ")
    child.expect("C: ")
    child.sendline("EHLO typed.example")
    child.expect("S: 250 ")
    child.sendline("AUTH LOGIN")
    child.expect(r"S: 334 VXNlcm5hbWU6\s+\(Username:\)")
    child.sendline(base64.b64encode(b"dave@mailrun.test").decode())
    child.expect(r"\(Password:\)")
    child.expect(r"not shown")
    child.sendline(base64.b64encode(b"Typed-Secret-9").decode())
    child.expect("S: 235 ")
    child.sendline("QUIT")
    child.expect("S: 221 ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    shown = child.before or ""
    text = out.read_text()
    assert_no_secret("Typed-Secret-9", text, shown)
    assert 'C: "{{ env.MAIL_PASSWORD | b64 }}"' in text and 'C: "{{ env.MAIL_USER | b64 }}"' in text


# --------------------------------------------------------------------------- sessions ending in errors
class Scripted:
    """A one-connection TCP server on loopback that sends `greeting`, then for each line it
    receives the next answer (None: close the connection; '' : stay silent)."""

    def __init__(self, greeting: bytes, answers: list[bytes | None]):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting, self.answers = greeting, answers
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.sendall(self.greeting)
            f = conn.makefile("rb")
            for answer in self.answers:
                if not f.readline():
                    return
                if answer is None:
                    return
                if answer:
                    conn.sendall(answer)
            f.readline()

    def close(self) -> None:
        self.sock.close()


def test_a_server_that_closes_is_recorded_as_eof_and_replays(tmp_path):
    srv = Scripted(b"220 fault ESMTP\r\n", [b"250 ok\r\n", None])
    try:
        r, out = record(tmp_path, "EHLO a\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\n", "127.0.0.1", srv.port)
    finally:
        srv.close()
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert 'C: "MAIL FROM:<a@b>"\n    S: "EOF"' in text
    assert "RCPT" not in text  # nothing was sent after the server closed
    assert load_scenario(out, use_cache=False)


def test_a_reply_that_never_comes_still_writes_the_scenario_and_exits_3(tmp_path):
    srv = Scripted(b"220 fault ESMTP\r\n", [b"250 ok\r\n", b""])
    try:
        r, out = record(tmp_path, "EHLO a\nNOOP\nQUIT\n", "127.0.0.1", srv.port, "--timeout", "1")
    finally:
        srv.close()
    assert r.returncode == 3, r.stderr
    assert "ended in an error" in r.stderr
    text = out.read_text()
    assert "# no reply within 1 s" in text and 'C: "NOOP"' in text and "QUIT" not in text
    assert load_scenario(out, use_cache=False)


def test_data_after_the_starttls_reply_is_refused_and_the_session_ends(tmp_path):
    srv = Scripted(b"220 fault ESMTP\r\n", [b"220 go ahead\r\n250 INJECTED\r\n"])
    try:
        r, out = record(tmp_path, "STARTTLS\nEHLO a\n", "127.0.0.1", srv.port, "--insecure")
    finally:
        srv.close()
    assert r.returncode != 0
    assert "STARTTLS" in r.stderr
    text = out.read_text()
    assert "refused" in text and 'C: "EHLO a"' not in text


def test_connection_refused_writes_nothing_and_exits_3(tmp_path, free_port):
    script = tmp_path / "s.txt"
    script.write_text("QUIT\n")
    out = tmp_path / "none.yaml"
    r = mailrun("record", "127.0.0.1", free_port(), "--script", script, "-o", out)
    assert r.returncode == 3 and not out.exists()
    assert "Traceback" not in r.stderr


@pytest.mark.testbed
def test_record_imap_append_with_a_literal_then_replay_appends_again(testbed, tmp_path):
    user, password = testbed.address("alice"), testbed.users["alice"]
    message = "Subject: appended by record\r\n\r\nline one\r\n{{ not a template }}\r\n"
    size = len(message.encode())
    script = (
        f"t1 LOGIN {user} {password}\nt2 APPEND INBOX {{{size}}}\n{message.replace(chr(13), '')}\nt3 LOGOUT\n"
    )
    r, out = record(tmp_path, script, testbed.host, testbed.ports["imap"], "--protocol", "imap")
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()
    assert_no_secret(password, text, r.stdout, r.stderr)
    assert f'C: "APPEND INBOX {{{size}}}"\n    S: "+"' in text
    assert '- raw: "Subject: appended by record\\r\\n' in text and '{{ \\"{{\\" }} not a template }}' in text
    before = len(testbed.messages("alice"))
    again = replay(out, user, password)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(testbed.messages("alice")) == before + 1
    assert any(b"{{ not a template }}" in m for m in testbed.messages("alice"))


@pytest.mark.testbed
def test_record_lmtp_keeps_one_expectation_per_recipient(testbed, tmp_path):
    script = (
        "LHLO client.example.test\nMAIL FROM:<alice@example.test>\nRCPT TO:<alice@example.test>\n"
        "RCPT TO:<nobody@example.test>\nRCPT TO:<bob@example.test>\nDATA\nSubject: recorded lmtp\n\nhi\n.\nQUIT\n"
    )
    r, out = record(tmp_path, script, testbed.host, testbed.ports["lmtp"], "--protocol", "lmtp")
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()
    assert "protocol: lmtp" in text and 'S: "550 5.1.1"' in text
    assert (
        '  - body: |\n      Subject: recorded lmtp\n\n      hi\n    S: "250 2.0.0"' in text
    )  # both accepted
    assert replay(out, "x", "y").returncode == 0


@pytest.mark.testbed
@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_record_bdat_chunks_sent_blind_then_replay_delivers_again(testbed, tmp_path, protocol):
    """`BDAT n` lines and their n bytes (RFC 3030) in a blind script: each chunk goes out right
    after its command and is answered once; Postfix (SMTP) and Dovecot (LMTP) deliver it."""
    hello, port = ("EHLO", testbed.ports["smtp"]) if protocol == "smtp" else ("LHLO", testbed.ports["lmtp"])
    subject = f"Subject: recorded bdat {protocol}"
    first = f"{subject}\r\n"
    script = (
        f"{hello} client.example.test\nMAIL FROM:<alice@example.test>\nRCPT TO:<bob@example.test>\n"
        f"BDAT {len(first)}\n{subject}\nBDAT 4 LAST\nhi\nQUIT\n"
    )
    r, out = record(tmp_path, script, testbed.host, port, "--protocol", protocol)
    assert r.returncode == 0, r.stdout + r.stderr
    got = [(s.action, s.text) for s in load_scenario(out, use_cache=False).sessions[0].steps]
    assert got[4:8] == [
        ("send", f"BDAT {len(first)}"),
        ("raw", first),
        ("send", "BDAT 4 LAST"),
        ("raw", "hi\r\n"),
    ]
    testbed.clear_mailbox("bob")
    again = replay(out, "x", "y")
    assert again.returncode == 0, again.stdout + again.stderr
    testbed.wait_for_message("bob", lambda data: subject.encode() in data)


def test_a_bdat_chunk_that_ends_inside_a_line_is_refused_not_sent_as_a_command(sandbox, tmp_path):
    """`BDAT 3 LAST` then `Hello`: the chunk is `Hel`, and `lo` would follow as a command. The
    session ends with that error (exit 1) instead of recording a command that was never sent."""
    script = "EHLO me\nMAIL FROM:<a@mailrun.test>\nRCPT TO:<b@mailrun.test>\nBDAT 3 LAST\nHello\nQUIT\n"
    r, out = record(tmp_path, script, sandbox.host, sandbox.ports["smtp"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the BDAT chunk ends 2 byte(s) before the end of this line" in r.stderr
    assert "C: lo" not in r.stdout and '"lo"' not in out.read_text()


@pytest.mark.testbed
def test_a_refused_auth_in_a_blind_script_still_keeps_its_answers_out(testbed, tmp_path):
    """Postfix's submission port refuses AUTH before STARTTLS: the script's answers go out as
    commands (blind), and are still credentials: neither shown nor written."""
    password = testbed.users["alice"]
    user_b64 = base64.b64encode(testbed.address("alice").encode()).decode()
    pass_b64 = base64.b64encode(password.encode()).decode()
    plain = base64.b64encode(f"\0alice\0{password}".encode()).decode()
    script = f"EHLO me.example\nAUTH LOGIN\n{user_b64}\n{pass_b64}\nNOOP {plain}\nQUIT\n"
    r, out = record(tmp_path, script, testbed.host, testbed.ports["submission"])
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()
    assert_no_secret(password, text, r.stdout, r.stderr)
    assert (
        '"{{ env.MAIL_PASSWORD | b64 }}"' in text and "auth_plain(env.MAIL_USER, env.MAIL_PASSWORD)" in text
    )
