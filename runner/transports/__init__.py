"""Transports: move bytes between mailrun and a server.

  create(config, on_note=None) -> Transport   # by config.transport

socket   runner.transports.socket.SocketTransport: TCP (IPv4/IPv6); TLS (implicit, STARTTLS)
         through runner.transports.tls (the client context, handshake and encrypted I/O)
telnet   runner.transports.telnet.TelnetTransport: the system `telnet` under a pty (no TLS)
openssl  runner.transports.openssl.OpensslTransport: `openssl s_client` under a pty (TLS only)

The interface is runner.transports.base.Transport. A run imports only the transport it uses:
`create` imports its module when first asked for it (telnet and openssl bring pexpect, the
socket transport does not; ssl and runner.transports.tls come with the first TLS connection).
"""

from __future__ import annotations

from runner.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from runner.transports.base import NoteSink, Transport

#: transport name -> (module, class)
_CLASSES = {
    "socket": ("runner.transports.socket", "SocketTransport"),
    "telnet": ("runner.transports.telnet", "TelnetTransport"),
    "openssl": ("runner.transports.openssl", "OpensslTransport"),
}
NAMES = tuple(_CLASSES)  # every transport's name (the model's TRANSPORTS)
_loaded: dict[str, type[Transport]] = {}


def create(config, *, on_note: NoteSink | None = None) -> Transport:
    """The transport named by `config.transport` (not yet connected). Raises UsageError for an
    unknown name or a combination the transport cannot do (telnet with TLS, openssl without)."""
    name = config.transport
    cls = _loaded.get(name)
    if cls is None:
        where = _CLASSES.get(name) if isinstance(name, str) else None
        if where is None:
            raise UsageError(f"unknown transport '{name}': use {', '.join(NAMES)}")
        cls = _loaded[name] = getattr(__import__(where[0], fromlist=[where[1]]), where[1])
    return cls(config, on_note=on_note)
