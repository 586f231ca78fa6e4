"""Sans-IO protocol framers: bytes in, complete replies out (runner.protocols.base holds the
contract, Reply and the shared framing machinery).

The registry: `_CLASSES` names every protocol (NAMES, which the model, the schema test and the
pattern parser read), and `create(name)` imports only the protocol asked for. Code imports any
other name from the module that defines it."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from runner.protocols.base import Protocol

#: protocol name -> (module, class)
_CLASSES = {
    "smtp": ("runner.protocols.smtp", "SMTP"),
    "lmtp": ("runner.protocols.lmtp", "LMTP"),
    "pop3": ("runner.protocols.pop3", "POP3"),
    "imap": ("runner.protocols.imap", "IMAP"),
    "line": ("runner.protocols.line", "Line"),
}
NAMES = tuple(_CLASSES)  # every protocol's name, in the order shown to people
_loaded: dict[str, type[Protocol]] = {}


def _load(name: str) -> type[Protocol]:
    cls = _loaded.get(name)
    if cls is None:
        module, attr = _CLASSES[name]
        cls = _loaded[name] = getattr(__import__(module, fromlist=[attr]), attr)
    return cls


def create(name: str, *, max_line: int | None = None, max_reply: int | None = None) -> Protocol:
    """A new protocol object: 'smtp' | 'pop3' | 'imap' | 'line'. A limit left None is the
    protocol's own default (runner.protocols.base: DEFAULT_MAX_LINE, `default_max_reply`)."""
    try:
        cls = _load(name)
    except (KeyError, TypeError):
        raise ValueError(f"unknown protocol {name!r} (expected {', '.join(NAMES)})") from None
    limits = {k: v for k, v in (("max_line", max_line), ("max_reply", max_reply)) if v is not None}
    if any(v < 1 for v in limits.values()):
        raise ValueError("max_line and max_reply must be positive")
    return cls(**limits)
