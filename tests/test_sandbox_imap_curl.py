"""The sandbox's IMAP with curl, a second independent client (libcurl's IMAP: APPEND by upload,
LIST, UID FETCH of a message and of a MIME part by URL, custom UID COPY/MOVE and SEARCH)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from runner.sandbox.server import Sandbox

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

MESSAGE = (
    b"From: Alice <alice@mailrun.test>\r\nSubject: via curl\r\n"
    b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n\r\npart one\r\n"
    b"--z\r\nContent-Type: text/html\r\n\r\n<b>two</b>\r\n--z--\r\n"
)


@pytest.fixture
def sb():
    with Sandbox() as s:
        yield s


def curl(sb: Sandbox, path: str, *args: str) -> str:
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--user",
            "bob:builder",
            *args,
            f"imap://{sb.host}:{sb.ports['imap']}{path}",
        ],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def test_curl_appends_fetches_copies_and_moves(sb: Sandbox, tmp_path):
    message = tmp_path / "message.eml"
    message.write_bytes(MESSAGE)
    assert curl(sb, "/INBOX", "-X", "CREATE Archive") == ""
    curl(sb, "/INBOX", "-T", str(message))  # APPEND INBOX (\Seen) {n}, after the '+'
    (stored,) = sb.messages("bob", welcome=True)
    assert stored["Subject"] == "via curl"
    assert curl(sb, "/") == '* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren) "/" Archive\r\n'
    assert curl(sb, "/INBOX;UID=1").encode() == MESSAGE  # UID FETCH 1 BODY[]
    assert curl(sb, "/INBOX;UID=1/;SECTION=2") == "<b>two</b>"  # UID FETCH 1 BODY[2]
    assert curl(sb, "/INBOX?SUBJECT%20curl") == "* SEARCH 1\r\n"
    assert curl(sb, "/INBOX", "-X", "UID FETCH 1 (FLAGS)") == "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
    assert curl(sb, "/INBOX", "-X", "UID COPY 1 Archive") == ""  # (curl shows untagged lines only)
    moved = curl(sb, "/INBOX", "-X", "UID MOVE 1 Archive")
    assert moved.startswith("* OK [COPYUID ") and moved.endswith(" 1 2] Moved.\r\n* 1 EXPUNGE\r\n"), moved
    structure = curl(sb, "/Archive", "-X", "FETCH 2 BODYSTRUCTURE")
    assert structure == (
        '* 2 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 0 NIL NIL NIL NIL)'
        '("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL) "mixed" ("boundary" "z") '
        "NIL NIL NIL))\r\n"
    )
    assert curl(sb, "/INBOX", "-X", "STATUS Archive (MESSAGES)") == "* STATUS Archive (MESSAGES 2)\r\n"
