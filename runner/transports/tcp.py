"""The socket transport: TCP over IPv4/IPv6, optional TLS (implicit or STARTTLS) via `ssl`.

Every blocking operation has a deadline: connect and the TLS handshake use
`config.connect_timeout`, `send` uses `config.timeout`, `recv` the caller's deadline.
Error messages name the host, port and reason, never payload bytes.

Cost per step matters (the engine's benchmark compares it with a hand-written client): a plain
connection keeps its socket non-blocking and waits with one poll() object, so a step costs
send + poll + recv and no per-call timeout switching (each settimeout() is a syscall). `ssl` is
imported only when a connection uses TLS.
"""

from __future__ import annotations

import errno
import select
import socket
import time

from runner.errors import ConnectError, ConnectionClosed, DeadlineError, NetworkError, TLSError
from runner.transports.base import ConnectInfo, TLSInfo, Transport

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import ssl

    from runner.transports.base import NoteSink

CHUNK = 64 * 1024


def _host_arg(host: str) -> str | bytes:
    """getaddrinfo() encodes a str host with the 'idna' codec, whose import (with stringprep)
    costs a few ms on every start; an ASCII name is passed as bytes, which skips it."""
    return host.encode("ascii") if host.isascii() else host


def format_peer(host: str, port: int) -> str:
    """'127.0.0.1:25', '[::1]:25'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _secs(value: float) -> str:
    return f"{value:g}s"


def tls_context(config) -> ssl.SSLContext:
    """The client SSLContext for a ConnectConfig: verification on (system store, or `ca`), hostname
    check, TLS >= 1.2 (or 1.3), optional client certificate. `tls_verify: false` turns both checks off.
    Raises TLSError for unreadable CA / certificate files."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if config.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    if config.tls_verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            if config.ca:
                ctx.load_verify_locations(cafile=str(config.ca))
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as e:
            raise TLSError(f"cannot load CA file '{config.ca}': {_reason(e)}") from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.client_cert:
        try:
            ctx.load_cert_chain(
                str(config.client_cert), str(config.client_key) if config.client_key else None
            )
        except (OSError, ssl.SSLError) as e:
            raise TLSError(f"cannot load client certificate '{config.client_cert}': {_reason(e)}") from None
    return ctx


def _reason(e: BaseException) -> str:
    import ssl

    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return e.reason.replace("_", " ").lower() if e.reason else str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "domainComponent": "DC",
}


def _name(parts) -> str | None:
    """getpeercert()'s subject/issuer tuple -> 'O=Example, CN=localhost'."""
    if not parts:
        return None
    return ", ".join(f"{_SHORT.get(k, k)}={v}" for rdn in parts for k, v in rdn) or None


def _name_from_der(der: bytes | None) -> tuple[str | None, str | None]:
    if not der:
        return None, None
    try:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
    except Exception:
        return None, None

    def fmt(name) -> str | None:
        return ", ".join(attr.rfc4514_string() for attr in name) or None

    return fmt(cert.subject), fmt(cert.issuer)


def tls_info(sock: ssl.SSLSocket, verified: bool) -> TLSInfo:
    cipher = sock.cipher()
    subject = issuer = None
    if verified:
        cert = sock.getpeercert() or {}
        subject, issuer = _name(cert.get("subject")), _name(cert.get("issuer"))
    else:
        subject, issuer = _name_from_der(sock.getpeercert(binary_form=True))
    return TLSInfo(
        version=sock.version() or "?",
        cipher=cipher[0] if cipher else "?",
        peer_subject=subject,
        peer_issuer=issuer,
        verified=verified,
    )


# OpenSSL's reasons when the peer's first bytes are not a TLS record
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "UNEXPECTED_RECORD",
        "HTTP_REQUEST",
        "UNKNOWN_PROTOCOL",
    }
)


class SocketTransport(Transport):
    name = "socket"

    def __init__(self, config, *, on_note: NoteSink | None = None):
        super().__init__(config, on_note=on_note)
        self.sock: socket.socket | None = None
        self.peer = format_peer(config.host, config.port)
        self._tls: TLSInfo | None = None
        self._poll = None  # select.poll() watching the plain socket for input

    @property
    def encrypted(self) -> bool:
        return self._tls is not None

    # -- connect -------------------------------------------------------------------------------
    def connect(self) -> ConnectInfo:
        cfg = self.config
        deadline = time.monotonic() + cfg.connect_timeout
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
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = ConnectError(f"connect to {peer} timed out after {_secs(cfg.connect_timeout)}")
                break
            s = socket.socket(fam, stype, proto)
            try:
                s.settimeout(remaining)
                s.connect(addr)
            except TimeoutError:
                s.close()
                last = ConnectError(f"connect to {peer} timed out after {_secs(cfg.connect_timeout)}")
                continue
            except ConnectionRefusedError:
                s.close()
                last = ConnectError(f"connection to {peer} refused")
                continue
            except OSError as e:
                s.close()
                last = ConnectError(f"connect to {peer} failed: {e.strerror or e}")
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)  # plain I/O waits in poll(); TLS sets its own timeouts
            self._poll = select.poll()
            self._poll.register(s.fileno(), select.POLLIN)
            self.sock = s
            self.peer = peer
            break
        if self.sock is None:
            raise last or ConnectError(f"cannot resolve '{cfg.host}': no addresses")
        self.on_note("info", f"connected to {self.peer}")
        tls = None
        if cfg.tls == "implicit":
            try:
                tls = self._handshake()
            except BaseException:
                self.close()
                raise
        return ConnectInfo(peer=self.peer, transport=self.name, tls=tls)

    def _server_hostname(self) -> str:
        return self.config.server_name or self.config.host

    def _handshake(self, after_starttls: bool = False) -> TLSInfo:
        import ssl

        cfg = self.config
        ctx = tls_context(cfg)
        assert self.sock is not None
        self.sock.settimeout(cfg.connect_timeout)
        try:
            ss = ctx.wrap_socket(self.sock, server_hostname=self._server_hostname())
        except TimeoutError:
            raise TLSError(
                f"TLS handshake with {self.peer} timed out after {_secs(cfg.connect_timeout)}"
            ) from None
        except ssl.SSLCertVerificationError as e:
            raise TLSError(f"TLS handshake with {self.peer} failed: {_reason(e)}") from None
        except ssl.SSLError as e:
            if after_starttls and getattr(e, "reason", None) in _NOT_TLS_REASONS:
                # plaintext arrived where the server's TLS records belong: the same injection as
                # bytes already waiting before the handshake, only a moment later
                raise TLSError(
                    "data received before TLS handshake; refusing to continue (the server's first "
                    f"bytes after the STARTTLS reply were not TLS: {_reason(e)})"
                ) from None
            raise TLSError(f"TLS handshake with {self.peer} failed: {_reason(e)}") from None
        except ConnectionError as e:
            raise TLSError(
                f"TLS handshake with {self.peer} failed: connection closed by server ({e.strerror or e})"
            ) from None
        except OSError as e:
            raise TLSError(f"TLS handshake with {self.peer} failed: {e.strerror or e}") from None
        self.sock = ss
        self._tls = tls_info(ss, verified=cfg.tls_verify)
        self.on_note("info", f"TLS established: {self._tls.describe()}")
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
            except BlockingIOError:
                pending = b""
            except OSError:
                pending = b""
            if pending:
                raise TLSError("data received before TLS handshake; refusing to continue")
        return self._handshake(after_starttls=True)

    # -- I/O -----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        s = self.sock
        if s is None:
            raise ConnectionClosed("send: not connected")
        if self._tls is not None:
            return self._send_tls(data)
        try:
            sent = s.send(data)
        except BlockingIOError:
            sent = 0
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise ConnectionClosed(f"connection closed by {self.peer} while sending") from None
        except OSError as e:
            raise NetworkError(f"sending to {self.peer} failed: {e.strerror or e}") from None
        if sent < len(data):
            self._send_rest(memoryview(data)[sent:])

    def _send_rest(self, view: memoryview) -> None:
        """The rest of a send the socket buffer could not take at once, within config.timeout."""
        s = self.sock
        timeout = self.config.timeout
        deadline = time.monotonic() + timeout
        out = select.poll()
        out.register(s.fileno(), select.POLLOUT)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineError(f"sending to {self.peer} did not complete within {_secs(timeout)}")
            if not out.poll(remaining * 1000.0):
                continue
            try:
                view = view[s.send(view) :]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                raise ConnectionClosed(f"connection closed by {self.peer} while sending") from None
            except OSError as e:
                raise NetworkError(f"sending to {self.peer} failed: {e.strerror or e}") from None

    def _send_tls(self, data: bytes) -> None:
        import ssl

        self.sock.settimeout(self.config.timeout)
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise DeadlineError(
                f"sending to {self.peer} did not complete within {_secs(self.config.timeout)}"
            ) from None
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise ConnectionClosed(f"connection closed by {self.peer} while sending") from None
        except ssl.SSLError as e:
            raise ConnectionClosed(f"TLS error while sending to {self.peer}: {_reason(e)}") from None
        except OSError as e:
            raise NetworkError(f"sending to {self.peer} failed: {e.strerror or e}") from None

    def recv(self, deadline: float) -> bytes:
        s = self.sock
        if s is None:
            raise ConnectionClosed("recv: not connected")
        if self._tls is not None:
            return self._recv_tls(deadline)
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

    def _recv_tls(self, deadline: float) -> bytes:
        import ssl

        s = self.sock
        while True:
            # TLS may already hold decrypted bytes that select() cannot see.
            if not s.pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineError(f"no data from {self.peer} before the deadline")
                r, _, _ = select.select([s], [], [], remaining)
                if not r:
                    continue
            try:
                s.settimeout(0)
                return s.recv(CHUNK)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue  # a TLS record is incomplete, or a non-data record arrived
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                return b""
            except (ConnectionResetError, ConnectionAbortedError):
                return b""
            except ssl.SSLError as e:
                raise ConnectionClosed(f"TLS error while reading from {self.peer}: {_reason(e)}") from None
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                raise NetworkError(f"reading from {self.peer} failed: {e.strerror or e}") from None

    def close(self) -> None:
        s, self.sock = self.sock, None
        if s is None:
            return
        try:
            s.close()
        except OSError:
            pass
