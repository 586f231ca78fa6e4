"""Sans-IO protocol framers: bytes in, complete replies out (runner.protocols.base holds the
contract, Reply and the shared framing machinery).

`create(name)` imports only the protocol asked for (smtp, pop3, imap, line). Code imports a
name from the module that defines it; for older callers the classes (`SMTP`, `POP3`, `IMAP`,
`Line`), `decode_challenge`, `encode_body` and `PROTOCOLS` are still found here, loaded on first
access."""

from __future__ import annotations

from runner.protocols.base import DEFAULT_MAX_LINE, DEFAULT_MAX_REPLY

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from runner.protocols.base import Protocol

#: protocol name -> (module, class)
_CLASSES = {
    "smtp": ("runner.protocols.smtp", "SMTP"),
    "pop3": ("runner.protocols.pop3", "POP3"),
    "imap": ("runner.protocols.imap", "IMAP"),
    "line": ("runner.protocols.line", "Line"),
}
#: the other names loaded lazily: name -> module
_LAZY = {cls: mod for mod, cls in _CLASSES.values()}
_LAZY.update(decode_challenge="runner.protocols.smtp", encode_body="runner.protocols.smtp")
_loaded: dict[str, type[Protocol]] = {}


def _load(name: str) -> type[Protocol]:
    cls = _loaded.get(name)
    if cls is None:
        module, attr = _CLASSES[name]
        cls = _loaded[name] = getattr(__import__(module, fromlist=[attr]), attr)
    return cls


def create(name: str, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int = DEFAULT_MAX_REPLY) -> Protocol:
    """A new protocol object: 'smtp' | 'pop3' | 'imap' | 'line'."""
    try:
        cls = _load(name)
    except (KeyError, TypeError):
        raise ValueError(f"unknown protocol {name!r} (expected smtp, pop3, imap or line)") from None
    if max_line < 1 or max_reply < 1:
        raise ValueError("max_line and max_reply must be positive")
    return cls(max_line=max_line, max_reply=max_reply)


def __getattr__(name: str):
    if name == "PROTOCOLS":  # every protocol class, by name
        return {key: _load(key) for key in _CLASSES}
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(__import__(module, fromlist=[name]), name)
