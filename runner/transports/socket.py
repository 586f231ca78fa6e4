"""The socket transport: TCP over IPv4/IPv6; TLS (implicit or STARTTLS) through
runner.transports.tls, imported only when a connection uses it.

Every blocking operation has a deadline: connect and the TLS handshake use
`config.connect_timeout`, `send` and `recv` the caller's deadline.
Error messages name the host, port and reason, never payload bytes.

Cost per step matters (the engine's benchmark compares it with a hand-written client): a plain
connection keeps its socket non-blocking and waits with one poll() object, so a step costs
send + poll + recv and no per-call timeout switching (each settimeout() is a syscall).
"""

from __future__ import annotations

import errno
import select
import socket
import time

from runner.errors import ConnectError, ConnectionClosed, DeadlineError, NetworkError, TLSError, UsageError
from runner.transports.base import CHUNK, ConnectInfo, TLSInfo, Transport

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from runner.transports.base import NoteSink


def _host_arg(host: str) -> str | bytes:
    """getaddrinfo() encodes a str host with the 'idna' codec, whose import (with stringprep)
    costs a few ms on every start; an ASCII name is passed as bytes, which skips it."""
    return host.encode("ascii") if host.isascii() else host


def format_peer(host: str, port: int) -> str:
    """'127.0.0.1:25', '[::1]:25'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _secs(value: float) -> str:
    return f"{value:g}s"


class SocketTransport(Transport):
    name = "socket"

    def __init__(self, config, *, on_note: NoteSink | None = None):
        super().__init__(config, on_note=on_note)
        self.sock: socket.socket | None = None
        self.peer = format_peer(config.host, config.port)
        self._tls: TLSInfo | None = None
        self._poll = None  # select.poll() watching the plain socket for input
        self._connecting: socket.socket | None = None  # (for abort)

    @property
    def encrypted(self) -> bool:
        return self._tls is not None

    # -- connect -------------------------------------------------------------------------------
    def connect(self) -> ConnectInfo:
        cfg = self.config
        deadline = time.monotonic() + cfg.connect_timeout
        if cfg.unix is not None:
            self._connect_unix(deadline)
        else:
            self._connect_tcp(deadline)
        tls = None
        try:
            if cfg.proxy:
                self._send_proxy_header(deadline)
            if cfg.tls == "implicit":
                tls = self._handshake(after_starttls=False)
        except BaseException:
            self.close()
            raise
        return ConnectInfo(peer=self.peer, transport=self.name, tls=tls)

    def _connect_tcp(self, deadline: float) -> None:
        cfg = self.config
        family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(cfg.family, socket.AF_UNSPEC)
        try:
            infos = socket.getaddrinfo(_host_arg(cfg.host), cfg.port, family, socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ConnectError(f"cannot resolve '{cfg.host}': {e.strerror}") from None
        except UnicodeError:
            raise ConnectError(f"cannot resolve '{cfg.host}': invalid host name") from None
        last: ConnectError | None = None
        for fam, stype, proto, _canon, addr in infos:
            peer = format_peer(addr[0], addr[1])
            if deadline - time.monotonic() <= 0:
                last = ConnectError(f"connect to {peer} timed out after {_secs(cfg.connect_timeout)}")
                break
            last = self._try(socket.socket(fam, stype, proto), addr, peer, deadline)
            if last is None:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return
        raise last or ConnectError(f"cannot resolve '{cfg.host}': no addresses")

    def _connect_unix(self, deadline: float) -> None:
        path = str(self.config.unix)
        problem = self._try(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path, f"unix:{path}", deadline)
        if problem is not None:
            raise problem

    def _try(self, s: socket.socket, addr, peer: str, deadline: float) -> ConnectError | None:
        """Connects `s` to `addr` before the deadline; None when it did (the socket is then
        the transport's, non-blocking), else the error to report."""
        timeout = _secs(self.config.connect_timeout)
        self._connecting = s  # (abort() shuts it down from another thread)
        try:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            s.connect(addr)
        except TimeoutError:
            s.close()
            return ConnectError(f"connect to {peer} timed out after {timeout}")
        except ConnectionRefusedError:
            s.close()
            return ConnectError(f"connection to {peer} refused")
        except FileNotFoundError:
            s.close()
            return ConnectError(f"connect to {peer} failed: no such socket")
        except OSError as e:
            s.close()
            return ConnectError(f"connect to {peer} failed: {e.strerror or e}")
        finally:
            self._connecting = None
        s.setblocking(False)  # plain I/O waits in poll(); TLS sets its own timeouts
        self._poll = select.poll()
        self._poll.register(s.fileno(), select.POLLIN)
        self.sock, self.peer = s, peer
        return None

    def _send_proxy_header(self, deadline: float) -> None:
        """The PROXY protocol header, first on the wire (before TLS)."""
        from runner.transports import proxy

        spec = self.config.proxy
        destination = spec.get("destination")
        if destination is None:
            if self.config.unix is not None:
                raise UsageError("connect.proxy needs a destination on a unix socket (IP:PORT)")
            host, port = self.sock.getpeername()[:2]
            destination = format_peer(host, port)
        try:
            data = proxy.header(spec.get("version", 1), spec["source"], destination)
        except ValueError as exc:
            raise UsageError(f"connect.proxy: {exc}") from None
        self.send(data, deadline)
        self.on_note(
            "info",
            f"PROXY v{spec.get('version', 1)} header sent: client {spec['source']}, server {destination}",
        )

    def _handshake(self, after_starttls: bool) -> TLSInfo:
        from runner.transports import tls

        assert self.sock is not None
        self.sock = tls.handshake(self.sock, self.config, self.peer, after_starttls)
        self._tls = tls.tls_info(self.sock, verified=self.config.tls_verify)
        return self._tls

    def start_tls(self) -> TLSInfo:
        if self.sock is None:
            raise ConnectionClosed("start_tls: not connected")
        if self._tls is not None:
            raise TLSError("start_tls: the connection is already encrypted")
        # Client side of CVE-2011-0411: bytes that arrived before the handshake were sent in
        # plaintext by whoever sits on the path; never use them.
        r, _, _ = select.select([self.sock], [], [], 0)
        if r:
            try:
                pending = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except OSError:  # (BlockingIOError among them)
                pending = b""
            if pending:
                raise TLSError("data received before TLS handshake; refusing to continue")
        return self._handshake(after_starttls=True)

    # -- I/O -----------------------------------------------------------------------------------
    def send(self, data: bytes, deadline: float) -> None:
        s = self.sock
        if s is None:
            raise ConnectionClosed("send: not connected")
        if self._tls is not None:
            from runner.transports import tls

            return tls.send(s, data, deadline, self.peer)
        view = memoryview(data)
        out = None  # a poll() for room in the socket buffer, made when the first write fell short
        while True:
            try:
                view = view[s.send(view) :]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                raise ConnectionClosed(f"connection closed by {self.peer} while sending") from None
            except OSError as e:
                raise NetworkError(f"sending to {self.peer} failed: {e.strerror or e}") from None
            if not view:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineError(f"sending to {self.peer} did not complete before the deadline")
            if out is None:
                out = select.poll()
                out.register(s.fileno(), select.POLLOUT)
            out.poll(remaining * 1000.0)

    def recv(self, deadline: float) -> bytes:
        s = self.sock
        if s is None:
            raise ConnectionClosed("recv: not connected")
        if self._tls is not None:
            from runner.transports import tls

            return tls.recv(s, deadline, self.peer)
        poll = self._poll.poll
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineError(f"no data from {self.peer} before the deadline")
            if not poll(remaining * 1000.0):
                continue
            try:
                return s.recv(CHUNK)
            except BlockingIOError:
                continue
            except (ConnectionResetError, ConnectionAbortedError):
                return b""
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    continue
                raise NetworkError(f"reading from {self.peer} failed: {e.strerror or e}") from None

    def abort(self) -> None:
        # the plain socket's shutdown (an SSLSocket's own would drop its TLS state under the
        # reading thread): poll() and recv() on the other thread return at once, a connect fails
        for s in (self._connecting, self.sock):
            if s is not None:
                try:
                    socket.socket.shutdown(s, socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        s, self.sock = self.sock, None
        if s is None:
            return
        try:
            s.close()
        except OSError:
            pass
