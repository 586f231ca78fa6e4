"""Hostile SMTP servers for the leak, injection and escaping tests (issue 17: 1, 4, 7). Each is a
handler for tests.support.servers.Server (threads, real sockets on 127.0.0.1), and sets
TCP_NODELAY so each write is its own segment.

    with Server(echo_split(b"hunter2")) as srv: ...

  echo_split(secret, pause)     answers a line holding `secret` (as is, or in the base64 of its
                                last word: AUTH PLAIN, a LOGIN answer) with a 535 that echoes
                                that word and the secret, each split in its middle over two TCP
                                segments `pause` seconds apart; AUTH LOGIN gets the usual 334s
  challenge(text)               answers AUTH with `334 base64(text)`, the answer to it with 535
  starttls_injector(ctx)        answers STARTTLS with b"220 ready\\r\\n250 INJECTED\\r\\n" in ONE
                                segment (with delay: as a second segment `delay` s later),
                                then the TLS handshake with ctx (with None: nothing, until the
                                client closes)
  forger(reply)                 answers every other command with the bytes `reply` (several
                                lines, bare CR/LF, escape sequences: whatever the test forges)

Every handler greets with 220, answers EHLO with a STARTTLS-and-AUTH capability list and QUIT
with 221, so the same scenario shapes run against all of them. What the client sent is in
conn.received (tests.support.servers.Conn).
"""

from __future__ import annotations

import base64
import binascii
import socket
import ssl
import time

from tests.support.servers import Conn, Handler

EHLO = b"250-hostile.example\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"


def _serve(conn: Conn, answer) -> None:
    """Greets, then answers each line (without its CRLF): `answer(conn, line)` sends the reply
    itself and returns True, or returns False for the default (EHLO, QUIT, else 250 ok)."""
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.send(b"220 hostile.example ESMTP\r\n")
    while True:
        line = conn.recv_line(10)
        if line is None:
            return
        line = line.rstrip(b"\r\n")
        if answer(conn, line):
            continue
        word = line.split(b" ", 1)[0].upper()
        if word == b"EHLO":
            conn.send(EHLO)
        elif word == b"QUIT":
            conn.send(b"221 bye\r\n")
            return
        else:
            conn.send(b"250 ok\r\n")


def _b64decoded(word: bytes) -> bytes:
    try:
        return base64.b64decode(word + b"=" * (-len(word) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def echo_split(secret: bytes, pause: float = 0.3) -> Handler:
    def answer(conn: Conn, line: bytes) -> bool:
        if line.upper() == b"AUTH LOGIN":
            conn.send(b"334 VXNlcm5hbWU6\r\n")
            return True
        word = line.split(b" ")[-1]
        if secret not in line and secret not in _b64decoded(word):
            if line.upper().startswith((b"EHLO", b"QUIT", b"AUTH")):
                return False
            conn.send(b"334 UGFzc3dvcmQ6\r\n")  # (a LOGIN username: now the password)
            return True
        reply = b"535 5.7.8 " + word + b" means " + secret + b"\r\n"
        cuts = [len(b"535 5.7.8 ") + len(word) // 2, reply.rindex(secret) + len(secret) // 2]
        pos = 0
        for cut in cuts:
            conn.send(reply[pos:cut])
            time.sleep(pause)
            pos = cut
        conn.send(reply[pos:])
        return True

    return lambda conn: _serve(conn, answer)


def challenge(text: bytes) -> Handler:
    state = {"waiting": False}

    def answer(conn: Conn, line: bytes) -> bool:
        if state["waiting"]:
            state["waiting"] = False
            conn.send(b"535 5.7.8 no\r\n")
            return True
        if line.upper().startswith(b"AUTH"):
            state["waiting"] = True
            conn.send(b"334 " + base64.b64encode(text) + b"\r\n")
            return True
        return False

    return lambda conn: _serve(conn, answer)


def starttls_injector(
    ctx: ssl.SSLContext | None, injected: bytes = b"250 INJECTED\r\n", delay: float = 0.0
) -> Handler:
    def answer(conn: Conn, line: bytes) -> bool:
        if line.upper() != b"STARTTLS":
            return False
        if delay:  # two segments: the injected line comes once the client is in its handshake
            conn.send(b"220 ready\r\n")
            time.sleep(delay)
            conn.send(injected)
        else:
            conn.send(b"220 ready\r\n" + injected)  # one write, one segment
        if ctx is None:  # no handshake: wait for the client to give up (what it sends is kept)
            while conn.read_some(30):
                pass
            return True
        try:
            conn.start_tls(ctx)
        except (OSError, ssl.SSLError):
            pass  # the client refused to go on and closed
        return True

    return lambda conn: _serve(conn, answer)


def forger(reply: bytes) -> Handler:
    def answer(conn: Conn, line: bytes) -> bool:
        if line.upper().startswith((b"EHLO", b"QUIT")):
            return False
        conn.send(reply)
        return True

    return lambda conn: _serve(conn, answer)
