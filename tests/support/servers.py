"""Small loopback test servers (threads, real sockets, real TLS). Shared by the test suites.

    from tests.support.servers import PKI, Server, record, scripted, close_mid_reply, drip, silent
    from tests.support.servers import WIRE_PAYLOADS, ipv6_available, full_backlog_port

    pki = PKI(tmp_path)                    # trustme CA + cert for localhost/127.0.0.1/::1
    pki.ca_file, pki.other_ca_file         # Path of the CA PEM; a CA that signed nothing we serve
    pki.server_context(max_version=None, require_client_cert=False)  # ssl.SSLContext (server side)
    pki.client_cert_file, pki.client_key_file                        # a client cert signed by the CA

    with Server(record(b"220 rec\\r\\n")) as srv:   # host='127.0.0.1' | '::1', tls=None | SSLContext
        srv.port, srv.host
        conn = srv.wait_connection(timeout=5)    # the n-th accepted Conn (index=0 by default)
        conn.wait_received(b"QUIT\\r\\n", 5)      # bytes received so far, once they end with / contain it
        conn.wait_closed(5); conn.received       # every (plaintext) byte the client sent, exactly

Handlers (a handler is `fn(conn: Conn) -> None`, run in its own thread per connection):
  record(greeting)                 send greeting, then store everything until the client closes
  scripted(greeting, replies, starttls=None, inject=b"", inject_delay=0.0)
                                   answer each received CRLF line: replies is a dict
                                   {b"EHLO": b"250 ok\\r\\n"} keyed by the line's first word
                                   (upper case), with b"*" as the default. With starttls=SSLContext,
                                   a b"STARTTLS" line gets b"220 2.0.0 Ready to start TLS\\r\\n", then
                                   (after inject_delay s, as a separate write) `inject`: bytes the
                                   client must refuse; then the connection is wrapped.
  close_mid_reply(greeting, partial)   after the first line, send `partial` and close
  drip(data, interval)             send data one byte per `interval` seconds
  silent()                         accept and never send a byte (keeps the connection open)

Every server-side read has a timeout; `Server.__exit__` closes the listener and every connection.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import trustme


class PKI:
    """A throwaway CA (trustme) with a server certificate for localhost, 127.0.0.1 and ::1, a client
    certificate, and an unrelated CA for 'unknown CA' tests. Files are written under `directory`."""

    def __init__(self, directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert(*names, common_name=names[0])
        self.client_cert = self.ca.issue_cert("client@example.test", common_name="client")
        self.other_ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.other_ca_file = directory / "other-ca.pem"
        self.client_cert_file = directory / "client.pem"
        self.client_key_file = directory / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.other_ca.cert_pem.write_to_path(str(self.other_ca_file))
        with open(self.client_cert_file, "wb") as f:
            for blob in self.client_cert.cert_chain_pems:
                f.write(blob.bytes())
        self.client_cert.private_key_pem.write_to_path(str(self.client_key_file))

    def server_context(
        self, max_version: ssl.TLSVersion | None = None, require_client_cert: bool = False
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_cert.configure_cert(ctx)
        if max_version is not None:
            ctx.maximum_version = max_version
        if require_client_cert:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class Conn:
    """One accepted connection, seen from the server."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.received = b""
        self.peer_cert: dict | None = None
        self.error: BaseException | None = None
        self._buf = b""
        self._cond = threading.Condition()
        self._closed = False

    # server-side primitives ---------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_some(self, timeout: float = 10.0) -> bytes:
        """Read what is there (b'' on EOF, TimeoutError after `timeout`)."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        with self._cond:
            self.received += data
            self._cond.notify_all()
        return data

    def recv_line(self, timeout: float = 10.0) -> bytes | None:
        """The next line including its CRLF/LF, or None on EOF."""
        while b"\n" not in self._buf:
            data = self.read_some(timeout)
            if not data:
                return None
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def start_tls(self, ctx: ssl.SSLContext) -> None:
        self.sock.settimeout(10)
        self.sock = ctx.wrap_socket(self.sock, server_side=True)
        self.peer_cert = self.sock.getpeercert()

    def _mark_closed(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # test-side waiting ---------------------------------------------------------------------
    def wait_received(self, marker: bytes | int, timeout: float = 10.0) -> bytes:
        """Wait until `received` contains `marker` (or holds `marker` bytes if an int); return it."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                if isinstance(marker, int) and len(self.received) >= marker:
                    return self.received
                if isinstance(marker, bytes) and marker in self.received:
                    return self.received
                if self._closed:
                    return self.received
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"server did not receive {marker!r:.40} in {timeout}s")
                self._cond.wait(left)

    def wait_closed(self, timeout: float = 10.0) -> bytes:
        end = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"connection not closed within {timeout}s")
                self._cond.wait(left)
            return self.received

    @property
    def closed(self) -> bool:
        return self._closed


Handler = Callable[[Conn], None]


class Server:
    """A listening socket on host:0 that runs `handler(conn)` for each connection in a thread.
    `tls` wraps every connection at accept (implicit TLS). For a connect that hangs, see
    full_backlog_port()."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.handler = handler
        self.host = host
        self.tls = tls
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(fam, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.conns: list[Conn] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> Server:
        self._accept_thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._accept_thread.join(2)
        self.listener.close()
        for c in self.conns:
            try:
                c.sock.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(2)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            conn = Conn(sock)
            with self._cond:
                self.conns.append(conn)
                self._cond.notify_all()
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: Conn) -> None:
        try:
            if self.tls is not None:
                conn.start_tls(self.tls)
            self.handler(conn)
        except (OSError, ssl.SSLError) as e:
            conn.error = e
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass
            conn._mark_closed()

    def wait_connection(self, index: int = 0, timeout: float = 10.0) -> Conn:
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.conns) <= index:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no connection #{index} within {timeout}s")
                self._cond.wait(left)
            return self.conns[index]


# -- handlers -----------------------------------------------------------------------------------
def record(greeting: bytes = b"220 recorder ready\r\n", timeout: float = 30.0) -> Handler:
    def handler(conn: Conn) -> None:
        if greeting:
            conn.send(greeting)
        while conn.read_some(timeout):
            pass

    return handler


def scripted(
    greeting: bytes,
    replies: dict[bytes, bytes],
    *,
    starttls: ssl.SSLContext | None = None,
    inject: bytes = b"",
    inject_delay: float = 0.0,
    timeout: float = 30.0,
) -> Handler:
    def handler(conn: Conn) -> None:
        conn.send(greeting)
        while True:
            line = conn.recv_line(timeout)
            if line is None:
                return
            word = line.split(b" ", 1)[0].strip().upper()
            if starttls is not None and word == b"STARTTLS":
                conn.send(b"220 2.0.0 Ready to start TLS\r\n")
                if inject:
                    time.sleep(inject_delay)
                    conn.send(inject)
                conn.start_tls(starttls)
                continue
            conn.send(replies.get(word, replies.get(b"*", b"250 ok\r\n")))
            if word == b"QUIT":
                return

    return handler


def close_mid_reply(greeting: bytes = b"220 ready\r\n", partial: bytes = b"250-first\r\n250-sec") -> Handler:
    def handler(conn: Conn) -> None:
        conn.send(greeting)
        conn.recv_line(10)
        conn.send(partial)
        time.sleep(0.05)

    return handler


def drip(data: bytes, interval: float = 0.1) -> Handler:
    def handler(conn: Conn) -> None:
        for i in range(len(data)):
            conn.send(data[i : i + 1])
            time.sleep(interval)
        conn.read_some(10)

    return handler


def silent(hold: float = 30.0) -> Handler:
    def handler(conn: Conn) -> None:
        end = time.monotonic() + hold
        while time.monotonic() < end:
            try:
                if not conn.read_some(min(0.5, max(0.01, end - time.monotonic()))):
                    return
            except TimeoutError:
                continue

    return handler


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def full_backlog_port() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket (backlog 0, never accepting) whose queue is already full, so a further
    connect to it hangs until the client's deadline. Returns (listener, fillers): close them all."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    fillers = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(lst.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.05)
    return lst, fillers


#: Byte payloads for wire-identity tests: each transport must deliver them byte for byte, or
#: refuse them with a clear error before sending.
WIRE_PAYLOADS: dict[str, bytes] = {
    "crlf lines": b"EHLO client.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n",
    "quit": b"QUIT\r\n",
    "dot-stuffed body": b"Subject: hi\r\n\r\n..leading dot, stuffed\r\nbody\r\n.\r\n",
    "utf-8": "UTF-8: Grüße, ✓ 日本\r\n".encode(),
    "10 kB line": b"x" * 10_000 + b"\r\n",
    "controls and high bytes": bytes(b for b in range(256) if b not in (0x0A, 0x0D, 0x05, 0x85, 0xFF))
    + b"\r\n",
    "raw bare CR": b"bare\rCR\r\n",
    "raw bare LF": b"bare\nLF\r\n",
    "byte 0xff": b"IAC \xff here\r\n",
}


def read_until(t, marker: bytes, timeout: float = 5.0) -> bytes:
    """Reads from a transport until `marker` arrived, EOF, or the deadline (DeadlineError)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while marker not in buf:
        data = t.recv(deadline)
        if not data:
            break
        buf += data
    return buf
