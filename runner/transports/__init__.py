"""Transports: move bytes between mailrun and a server.

  create(config, on_note=None) -> Transport   # by config.transport
  tls_context(config) -> ssl.SSLContext        # the client context the socket transport uses

socket   runner.transports.tcp.SocketTransport: TCP (IPv4/IPv6), implicit TLS, STARTTLS
telnet   runner.transports.telnet.TelnetTransport: the system `telnet` under a pty (no TLS)
openssl  runner.transports.openssl.OpensslTransport: `openssl s_client` under a pty (TLS only)
"""

from __future__ import annotations

from runner.errors import UsageError
from runner.transports.base import ConnectInfo, NoteSink, TLSInfo, Transport
from runner.transports.tcp import SocketTransport, tls_context

__all__ = ["ConnectInfo", "NoteSink", "TLSInfo", "Transport", "SocketTransport", "create", "tls_context"]


def create(config, *, on_note: NoteSink | None = None) -> Transport:
    """The transport named by `config.transport` (not yet connected). Raises UsageError for an
    unknown name or a combination the transport cannot do (telnet with TLS, openssl without)."""
    name = config.transport
    if name == "socket":
        return SocketTransport(config, on_note=on_note)
    if name == "telnet":
        from runner.transports.telnet import TelnetTransport

        return TelnetTransport(config, on_note=on_note)
    if name == "openssl":
        from runner.transports.openssl import OpensslTransport

        return OpensslTransport(config, on_note=on_note)
    raise UsageError(f"unknown transport '{name}': use socket, telnet or openssl")
