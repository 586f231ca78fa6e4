"""TLS for the socket transport: the client context, the handshake (implicit TLS and after a
STARTTLS reply), and I/O on the encrypted socket, every wait bounded by a deadline.

Imported only when a connection uses TLS (it loads `ssl`). Error messages name the peer and
the reason, never payload bytes.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time

from runner.errors import ConnectionClosed, DeadlineError, NetworkError, TLSError
from runner.transports.base import CHUNK, TLSInfo
from runner.transports.certinfo import cert_facts, is_ip, verify_failed

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


def tls_context(config) -> ssl.SSLContext:
    """The client SSLContext for a ConnectConfig: verification on (system store, or `ca`), hostname
    check, TLS >= 1.2 (or 1.3), optional client certificate. `tls_verify: false` turns both checks off.
    Raises TLSError for unreadable CA / certificate files."""
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
            raise TLSError(f"cannot load CA file '{config.ca}': {reason(e)}") from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.client_cert:
        try:
            ctx.load_cert_chain(
                str(config.client_cert), str(config.client_key) if config.client_key else None
            )
        except (OSError, ssl.SSLError) as e:
            raise TLSError(f"cannot load client certificate '{config.client_cert}': {reason(e)}") from None
    return ctx


def reason(e: BaseException) -> str:
    """A short human reason for an ssl/OS error."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return e.reason.replace("_", " ").lower() if e.reason else str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def tls_info(sock: ssl.SSLSocket, verified: bool) -> TLSInfo:
    """The handshake's facts. The certificate is read from its DER form, which Python gives
    whether or not it was verified (the dict form is empty when verification is off), by the
    one certificate parser, runner.transports.certinfo. The SNI is the name the handshake was
    given, unless that is an IP address (Python sends none then)."""
    cipher = sock.cipher()
    facts = cert_facts(sock.getpeercert(binary_form=True))
    name = sock.server_hostname
    return TLSInfo(
        version=sock.version() or "?",
        cipher=cipher[0] if cipher else "?",
        peer_subject=facts.subject if facts else None,
        peer_issuer=facts.issuer if facts else None,
        verified=verified,
        cert=facts,
        sni=name if name and not is_ip(name) else None,
    )


def handshake(sock: socket.socket, config, peer: str, after_starttls: bool) -> ssl.SSLSocket:
    """The TLS client handshake on a connected socket, within config.connect_timeout. Raises
    TLSError; after a STARTTLS reply, plaintext where the server's first TLS record belongs is
    named as the injection it is."""
    ctx = tls_context(config)
    timeout = config.connect_timeout
    sock.settimeout(timeout)
    try:
        return ctx.wrap_socket(sock, server_hostname=config.server_name or config.host)
    except TimeoutError:
        raise TLSError(f"TLS handshake with {peer} timed out after {timeout:g}s") from None
    except ssl.SSLCertVerificationError as e:
        raise TLSError(verify_failed(peer, e.verify_code, e.verify_message)) from None
    except ssl.SSLError as e:
        if after_starttls and getattr(e, "reason", None) in _NOT_TLS_REASONS:
            # plaintext arrived where the server's TLS records belong: the same injection as
            # bytes already waiting before the handshake, only a moment later
            raise TLSError(
                "data received before TLS handshake; refusing to continue (the server's first "
                f"bytes after the STARTTLS reply were not TLS: {reason(e)})"
            ) from None
        raise TLSError(f"TLS handshake with {peer} failed: {reason(e)}") from None
    except ConnectionError as e:
        raise TLSError(
            f"TLS handshake with {peer} failed: connection closed by server ({e.strerror or e})"
        ) from None
    except OSError as e:
        raise TLSError(f"TLS handshake with {peer} failed: {e.strerror or e}") from None


def send(sock: ssl.SSLSocket, data: bytes, deadline: float, peer: str) -> None:
    """All of data, before the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineError(f"sending to {peer} did not complete before the deadline")
    sock.settimeout(remaining)
    try:
        sock.sendall(data)
    except TimeoutError:
        raise DeadlineError(f"sending to {peer} did not complete before the deadline") from None
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        raise ConnectionClosed(f"connection closed by {peer} while sending") from None
    except ssl.SSLError as e:
        raise ConnectionClosed(f"TLS error while sending to {peer}: {reason(e)}") from None
    except OSError as e:
        raise NetworkError(f"sending to {peer} failed: {e.strerror or e}") from None


def recv(sock: ssl.SSLSocket, deadline: float, peer: str) -> bytes:
    """Decrypted bytes (at least one), b'' at EOF; DeadlineError when the deadline passes."""
    while True:
        # TLS may already hold decrypted bytes that select() cannot see.
        if not sock.pending():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineError(f"no data from {peer} before the deadline")
            r, _, _ = select.select([sock], [], [], remaining)
            if not r:
                continue
        try:
            sock.settimeout(0)
            return sock.recv(CHUNK)
        except (ssl.SSLWantReadError, BlockingIOError):
            continue  # a TLS record is incomplete, or a non-data record arrived
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError, ConnectionAbortedError):
            return b""
        except ssl.SSLError as e:
            raise ConnectionClosed(f"TLS error while reading from {peer}: {reason(e)}") from None
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                continue
            raise NetworkError(f"reading from {peer} failed: {e.strerror or e}") from None
