"""Transports: move bytes between mailrun and a server.

  create(config, on_note=None) -> Transport   # by config.transport
  tls_context(config) -> ssl.SSLContext        # the client context the socket transport uses

socket   runner.transports.tcp.SocketTransport: TCP (IPv4/IPv6), implicit TLS, STARTTLS
telnet   runner.transports.telnet.TelnetTransport: the system `telnet` under a pty (no TLS)
openssl  runner.transports.openssl.OpensslTransport: `openssl s_client` under a pty (TLS only)

A run imports only the transport it uses: `create` imports its module when first asked for it
(telnet and openssl bring pexpect, the socket transport does not), and `SocketTransport` /
`tls_context` are loaded from runner.transports.tcp on first access.
"""

from __future__ import annotations

from runner.errors import UsageError
from runner.transports.base import ConnectInfo, NoteSink, TLSInfo, Transport

__all__ = ["ConnectInfo", "NoteSink", "TLSInfo", "Transport", "SocketTransport", "create", "tls_context"]

#: transport name -> (module, class)
_CLASSES = {
    "socket": ("runner.transports.tcp", "SocketTransport"),
    "telnet": ("runner.transports.telnet", "TelnetTransport"),
    "openssl": ("runner.transports.openssl", "OpensslTransport"),
}
_loaded: dict[str, type[Transport]] = {}


def create(config, *, on_note: NoteSink | None = None) -> Transport:
    """The transport named by `config.transport` (not yet connected). Raises UsageError for an
    unknown name or a combination the transport cannot do (telnet with TLS, openssl without)."""
    name = config.transport
    cls = _loaded.get(name)
    if cls is None:
        where = _CLASSES.get(name) if isinstance(name, str) else None
        if where is None:
            raise UsageError(f"unknown transport '{name}': use socket, telnet or openssl")
        cls = _loaded[name] = getattr(__import__(where[0], fromlist=[where[1]]), where[1])
    return cls(config, on_note=on_note)


def __getattr__(name: str):
    if name in ("SocketTransport", "tls_context"):
        from runner.transports import tcp

        return getattr(tcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
