"""Every exit status of `mailrun`, proved with the real command (`python -m runner`) against real
servers on loopback: 0, 1 (a wrong reply code), 2 (invalid scenario or command line: nothing
sent), 3 (connect, DNS, TLS, deadline, connection closed) and 130 (Ctrl-C)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from string import Template

import pytest

from tests.support.servers import PKI, Server, close_mid_reply, full_backlog_port, record, silent

REPO = Path(__file__).resolve().parent.parent
T = 30  # seconds: the deadline of every subprocess here


def write(tmp_path: Path, text: str, name: str = "s.yaml", **subs) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Template(textwrap.dedent(text)).safe_substitute(**{k: str(v) for k, v in subs.items()}))
    return path


def mailrun(*args, env: dict | None = None, timeout: float = T) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SMTP = """\
    name: greet and noop
    protocol: smtp
    connect: {host: $host, port: $port, timeout: 5}
    steps:
      - S: 220
      - C: EHLO client.example
        S: $ehlo
      - C: NOOP
        S: 250
    finally:
      - C: QUIT
        S: 221
      - S: EOF
    """


# --------------------------------------------------------------------------- 0 and 1


def test_exit_0_when_every_step_passes(testbed, tmp_path):
    path = write(tmp_path, SMTP, host=testbed.host, port=testbed.ports["smtp"], ehlo="250 PIPELINING")
    r = mailrun(path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS greet and noop" in r.stdout
    assert "5/5 steps" in r.stdout


def test_exit_1_on_a_wrong_reply_code_shows_expected_and_received(testbed, tmp_path):
    path = write(tmp_path, SMTP, host=testbed.host, port=testbed.ports["smtp"], ehlo="251")
    r = mailrun(path)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "expected: 251" in out
    assert "received: 250-mail.example.test" in out
    assert f"at:       {path}:6" in out  # the failing step's file:line
    # the failure stops the steps (NOOP is skipped) but `finally` still runs while connected
    assert "C: NOOP" in out and "not run: step 2 failed" in out
    assert "S: 221 2.0.0 Bye" in out
    assert "FAIL greet and noop" in out


# --------------------------------------------------------------------------- 2: nothing is sent


def test_exit_2_invalid_scenario_sends_nothing(tmp_path):
    with Server(record(b"220 recorder\r\n")) as srv:
        path = write(
            tmp_path,
            """\
            name: invalid
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port}
            steps:
              - S: 220
              - C: MAIL FROM: <a@b>
                S: 250
            """,
            port=srv.port,
        )
        r = mailrun(path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"{path}:6" in r.stderr and "nothing was sent" in r.stderr
        time.sleep(0.2)
        assert srv.conns == []  # not even a connection


def test_exit_2_unset_environment_variable_names_it(tmp_path):
    with Server(record()) as srv:
        path = write(
            tmp_path,
            """\
            name: env
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port}
            vars:
              who: "{{ env.MAILRUN_TEST_NOT_SET }}"
            steps:
              - S: 220
              - C: "VRFY {{ who }}"
                S: 250
            """,
            port=srv.port,
        )
        env = {k: v for k, v in os.environ.items() if k != "MAILRUN_TEST_NOT_SET"}
        r = subprocess.run(
            [sys.executable, "-m", "runner", str(path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=T,
        )
        assert r.returncode == 2, r.stdout + r.stderr
        assert "MAILRUN_TEST_NOT_SET" in r.stderr and "vars.who" in r.stderr
        assert "Traceback" not in r.stderr
        time.sleep(0.2)
        assert srv.conns == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--port", "70000"], "not a TCP port"),
        (["--timeout=-1"], "must be greater than 0"),
        (["--timeout", "inf"], "must be a finite number of seconds"),  # was an internal error, exit 3
        (["--tls", "sometimes"], "invalid choice"),
        (["--var", "novalue"], "--var wants name=value"),
    ],
)
def test_exit_2_bad_command_line_option(tmp_path, args, message):
    with Server(record()) as srv:
        path = write(tmp_path, SMTP, host="127.0.0.1", port=srv.port, ehlo=250)
        r = mailrun(path, *args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert message in r.stderr
        assert "Traceback" not in r.stderr
        assert srv.conns == []


def test_exit_2_missing_file_and_no_files(tmp_path):
    r = mailrun(tmp_path / "nope.yaml")
    assert r.returncode == 2
    assert "nope.yaml" in r.stderr and "Traceback" not in r.stderr
    r = mailrun()
    assert r.returncode == 2


def test_exit_2_unwritable_report_or_transcript_destination_sends_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with Server(record()) as srv:
        path = write(tmp_path, SMTP, host="127.0.0.1", port=srv.port, ehlo=250)
        for args, message in [
            (["--report", f"json={tmp_path}"], "is a directory"),
            (["--report", f"junit={blocker}/r.xml"], "cannot create"),
            (["--transcript", blocker], "not a directory"),
        ]:
            r = mailrun(path, *args)
            assert r.returncode == 2, (args, r.stdout + r.stderr)
            assert message in r.stderr and "Traceback" not in r.stderr
        time.sleep(0.2)
        assert srv.conns == []


def test_exit_2_crlf_injected_by_var_is_refused_before_connecting(tmp_path):
    with Server(record()) as srv:
        path = write(
            tmp_path,
            """\
            name: inject
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port}
            vars: {who: postmaster}
            steps:
              - S: 220
              - C: "VRFY {{ who }}"
                S: 250
            finally:
              - C: QUIT
            """,
            port=srv.port,
        )
        r = mailrun(path, "--var", "who=x\r\nRCPT TO:<victim@example.test>")
        assert r.returncode == 2, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert "CR or LF" in out and f"{path}:7" in out
        time.sleep(0.2)
        # nothing was sent: no connection was even opened
        assert srv.conns == [] or srv.conns[0].received == b""


# --------------------------------------------------------------------------- 3: network failures


def test_exit_3_connection_refused(tmp_path, free_port):
    path = write(tmp_path, SMTP, host="127.0.0.1", port=free_port(), ehlo=250)
    r = mailrun(path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "refused" in r.stdout


def test_exit_3_unknown_host(tmp_path):
    path = write(tmp_path, SMTP, host="nohost.invalid", port=25, ehlo=250)
    r = mailrun(path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "nohost.invalid" in r.stdout and "resolve" in r.stdout


def test_exit_3_deadline_on_a_silent_server(tmp_path):
    with Server(silent(hold=10)) as srv:
        path = write(tmp_path, SMTP, host="127.0.0.1", port=srv.port, ehlo=250)
        started = time.monotonic()
        r = mailrun(path, "--timeout", "0.5")
        assert r.returncode == 3, r.stdout + r.stderr
        assert time.monotonic() - started < 10
        assert "deadline" in r.stdout and "0.5 s" in r.stdout and "nothing received" in r.stdout
        srv.wait_connection().wait_closed(5)


def test_exit_3_server_closes_mid_reply(tmp_path):
    with Server(close_mid_reply(b"220 ready\r\n", b"250-first\r\n250-sec")) as srv:
        path = write(tmp_path, SMTP, host="127.0.0.1", port=srv.port, ehlo=250)
        r = mailrun(path)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "closed" in r.stdout
        assert "250-first" in r.stdout  # what did arrive is shown


def test_exit_3_tls_unknown_ca_without_ca_option(tmp_path):
    pki = PKI(tmp_path / "pki")
    with Server(record(b"220 tls\r\n"), tls=pki.server_context()) as srv:
        path = write(
            tmp_path,
            """\
            name: implicit tls
            protocol: smtp
            connect: {host: localhost, port: $port, tls: implicit, timeout: 5}
            steps:
              - S: 220
            """,
            port=srv.port,
        )
        r = mailrun(path)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "certificate verify failed" in r.stdout
        # the same server with its CA given: passes
        r = mailrun(path, "--ca", pki.ca_file)
        assert r.returncode == 0, r.stdout + r.stderr


def _starttls_injector(ctx: ssl.SSLContext):
    """A STARTTLS server on the attacker's path: the plaintext reply to STARTTLS carries one more
    line (CVE-2011-0411), then the handshake."""

    def handler(conn):
        conn.send(b"220 ready\r\n")
        conn.recv_line(10)
        conn.send(b"250-x\r\n250 STARTTLS\r\n")
        conn.recv_line(10)
        conn.send(b"220 2.0.0 Ready to start TLS\r\n250 injected\r\n")
        conn.start_tls(ctx)
        while conn.read_some(10):
            pass

    return handler


def test_exit_3_starttls_with_injected_pre_handshake_data(tmp_path):
    pki = PKI(tmp_path / "pki")
    with Server(_starttls_injector(pki.server_context())) as srv:
        path = write(
            tmp_path,
            """\
            name: injection
            protocol: smtp
            connect: {host: localhost, port: $port, tls: starttls, ca: $ca, timeout: 5}
            steps:
              - S: 220
              - C: EHLO client.example
                S: 250
              - C: STARTTLS
                S: 220
                starttls: true
              - C: EHLO client.example
                S: 250
            """,
            port=srv.port,
            ca=pki.ca_file,
        )
        r = mailrun(path)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "data received before TLS handshake; refusing to continue" in r.stdout
        assert "250 injected" not in r.stdout  # never used, never shown as a reply
        received = srv.wait_connection().wait_closed(5)
        assert received == b"EHLO client.example\r\nSTARTTLS\r\n"  # nothing sent after the refusal


# --------------------------------------------------------------------------- line protocol


def _line_scenario(tmp_path, port, pattern):
    return write(
        tmp_path,
        """\
        name: expect style
        protocol: line
        connect: {host: 127.0.0.1, port: $port, timeout: 0.6}
        steps:
          - S: '$pattern'
        """,
        port=port,
        pattern=pattern,
    )


def test_line_protocol_reads_until_the_pattern_matches(tmp_path):
    with Server(record(b"hello\r\nlogin: \r\nready> go\r\n")) as srv:
        r = mailrun(_line_scenario(tmp_path, srv.port, "^ready> "))
        assert r.returncode == 0, r.stdout + r.stderr


def test_line_protocol_lines_but_no_match_is_exit_1_with_the_lines(tmp_path):
    with Server(record(b"first line\r\nsecond line\r\n")) as srv:
        r = mailrun(_line_scenario(tmp_path, srv.port, "^never"))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "first line" in r.stdout and "second line" in r.stdout
        assert "2 line(s) received" in r.stdout


def test_line_protocol_nothing_arrived_is_exit_3(tmp_path):
    with Server(silent(hold=5)) as srv:
        r = mailrun(_line_scenario(tmp_path, srv.port, "^never"))
        assert r.returncode == 3, r.stdout + r.stderr
        assert "nothing received" in r.stdout


# --------------------------------------------------------------------------- 130: Ctrl-C


def _greet_then_silence(conn):
    conn.send(b"220 ready\r\n")
    conn.recv_line(10)
    conn.send(b"250 hello\r\n")
    conn.recv_line(10)  # NOOP: never answered
    conn.read_some(20)  # wait for the client to close (b'' on EOF)


def test_exit_130_on_sigint_prints_what_ran_and_closes(tmp_path):
    with Server(_greet_then_silence) as srv:
        path = write(tmp_path, SMTP, host="127.0.0.1", port=srv.port, ehlo=250)
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", str(path), "--timeout", "30"],
            cwd=REPO,
            env={**os.environ, "NO_COLOR": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            conn = srv.wait_connection(timeout=10)
            conn.wait_received(b"NOOP\r\n", 10)
            time.sleep(0.2)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert proc.returncode == 130, out + err
        assert time.monotonic() - started < 5
        assert "S: 220 ready" in out and "S: 250 hello" in out  # the steps that ran are printed
        assert "interrupted" in out + err
        assert "Traceback" not in err
        conn.wait_closed(5)  # the client closed the connection


def test_tls_error_names_hostname_mismatch(tmp_path):
    pki = PKI(tmp_path / "pki", names=("mail.example.test",))
    with Server(record(b"220 tls\r\n"), tls=pki.server_context()) as srv:
        path = write(
            tmp_path,
            """\
            name: mismatch
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port, tls: implicit, ca: $ca, timeout: 5}
            steps:
              - S: 220
            """,
            port=srv.port,
            ca=pki.ca_file,
        )
        r = mailrun(path)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "127.0.0.1" in r.stdout and ("mismatch" in r.stdout or "match" in r.stdout)
        assert ssl.HAS_SNI


def test_exit_130_on_sigint_while_connecting(tmp_path):
    listener, fillers = full_backlog_port()  # a connect to it hangs until the deadline
    try:
        path = write(tmp_path, SMTP, host="127.0.0.1", port=listener.getsockname()[1], ehlo=250)
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", str(path)],
            cwd=REPO,
            env={**os.environ, "NO_COLOR": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # wait until the run has started (the session line is printed before connecting)
            first = proc.stdout.readline()
            assert "greet and noop" in first
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert proc.returncode == 130, first + out + err
        assert "interrupted" in out + err and "Traceback" not in err
    finally:
        listener.close()
        for s in fillers:
            s.close()


def test_exit_2_a_later_sessions_bad_connection_is_found_before_the_first_connects(tmp_path):
    """`--transport telnet` on a file whose second session wants TLS: the run is refused before
    the first (plaintext) session connects, so exit 2 still means nothing was sent."""
    with Server(record()) as srv:
        path = write(
            tmp_path,
            """\
            name: two sessions
            sessions:
              - name: plain
                protocol: smtp
                connect: {host: 127.0.0.1, port: $port, timeout: 5}
                steps:
                  - S: 220
                  - C: NOOP
              - name: wants tls
                protocol: smtp
                connect: {host: 127.0.0.1, port: $port, tls: implicit}
                steps:
                  - S: 220
            """,
            port=srv.port,
        )
        proc = mailrun(path, "--transport", "telnet")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "cannot speak TLS" in proc.stdout + proc.stderr
        assert "nothing was sent" in proc.stdout + proc.stderr
        time.sleep(0.3)
        assert srv.conns == []
