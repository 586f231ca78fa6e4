"""BDAT / CHUNKING (RFC 3030): the `bdat:` step against a real Postfix (CHUNKING since 3.4), the
chunk framing, and a server refusing a chunk in the middle."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from runner.protocols.smtp import bdat_chunks

REPO = Path(__file__).resolve().parent.parent
T = 30


def mailrun(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "MAILRUN_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=T,
    )


def test_chunks_have_exact_sizes_no_dot_stuffing_and_last_on_the_final_one():

    chunks = bdat_chunks(b"ab\n.c\nd", 4)
    assert chunks == [b"BDAT 4\r\nab\r\n", b"BDAT 4\r\n.c\r\n", b"BDAT 1 LAST\r\nd"]
    assert bdat_chunks(b"hello\r\n", None) == [b"BDAT 7 LAST\r\nhello\r\n"]
    assert bdat_chunks(b"", 10) == [b"BDAT 0 LAST\r\n"]


def send_scenario(tmp_path: Path, port: int, step: str) -> Path:
    path = tmp_path / "bdat.yaml"
    path.write_text(
        f"""\
name: bdat
protocol: smtp
connect: {{host: 127.0.0.1, port: {port}}}
vars: {{tag: "{uuid.uuid4().hex}"}}
steps:
  - S: 220
  - C: EHLO client.example.test
    S: {{code: 250, lines: [CHUNKING]}}
  - C: MAIL FROM:<alice@example.test>
    S: 250
  - C: RCPT TO:<bob@example.test>
    S: 250
{step}
  - C: QUIT
    S: 221
"""
    )
    return path


@pytest.mark.testbed
def test_bdat_body_in_chunks_is_delivered_byte_for_byte(testbed, tmp_path):
    step = """\
  - bdat:
      body: |
        Subject: bdat {{ tag }}

        first line
        .a line with a leading dot, not stuffed
        last line
      chunk: 7
    S: 250"""
    path = send_scenario(tmp_path, testbed.ports["smtp"], step)
    r = mailrun(path, "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BDAT 7" in r.stdout and " LAST" in r.stdout  # -v shows the chunks as they went
    tag = path.read_text().split('tag: "')[1].split('"')[0]
    message = testbed.wait_for_message("bob", lambda data: f"bdat {tag}".encode() in data)
    assert b"\n.a line with a leading dot, not stuffed\n" in message.replace(b"\r\n", b"\n")
    assert b"..a line" not in message


@pytest.mark.testbed
def test_bdat_body_file_and_the_raw_form_both_work(testbed, tmp_path):
    tag = uuid.uuid4().hex
    (tmp_path / "msg.eml").write_bytes(f"Subject: bdat file {tag}\r\n\r\nfrom a file\r\n".encode())
    r = mailrun(
        send_scenario(tmp_path, testbed.ports["smtp"], "  - bdat: {body_file: msg.eml}\n    S: 250 2.0.0")
    )
    assert r.returncode == 0, r.stdout + r.stderr
    testbed.wait_for_message("bob", lambda data: f"bdat file {tag}".encode() in data)
    raw = f"Subject: raw bdat {tag}\r\n\r\nraw\r\n"
    step = f'  - C: "BDAT {len(raw)} LAST"\n  - raw: "{raw.encode("unicode_escape").decode()}"\n    S: 250'
    r = mailrun(send_scenario(tmp_path, testbed.ports["smtp"], step))
    assert r.returncode == 0, r.stdout + r.stderr
    testbed.wait_for_message("bob", lambda data: f"raw bdat {tag}".encode() in data)


def test_a_chunk_refused_in_the_middle_fails_the_step_naming_it(tmp_path):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"220 x ESMTP\r\n")
            f = conn.makefile("rb")
            answers = iter([b"250-x\r\n250 CHUNKING\r\n", b"250 ok\r\n", b"250 ok\r\n"])
            for _ in range(3):
                f.readline()
                conn.sendall(next(answers))
            for i, reply in enumerate([b"250 2.0.0 chunk ok\r\n", b"552 5.3.4 too big\r\n"]):
                size = int(f.readline().split()[1])
                got.append(f.read(size))
                conn.sendall(reply)
                if i == 1:
                    break
            f.readline()
            conn.sendall(b"221 bye\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        r = mailrun(
            send_scenario(tmp_path, port, '  - bdat: {body: "0123456789abcdef", chunk: 6}\n    S: 250')
        )
    finally:
        srv.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "BDAT chunk 2 of 3" in r.stdout and "552" in r.stdout
    assert got == [b"012345", b"6789ab"]
