"""Sans-IO protocol framers: bytes in, complete replies out (see base.py for the contract)."""

from __future__ import annotations

from runner.protocols.base import DEFAULT_MAX_LINE, DEFAULT_MAX_REPLY, Protocol, Reply, decode
from runner.protocols.imap import IMAP
from runner.protocols.line import Line
from runner.protocols.pop3 import POP3
from runner.protocols.smtp import SMTP, decode_challenge, encode_body

PROTOCOLS: dict[str, type[Protocol]] = {"smtp": SMTP, "pop3": POP3, "imap": IMAP, "line": Line}

__all__ = [
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_REPLY",
    "IMAP",
    "POP3",
    "PROTOCOLS",
    "SMTP",
    "Line",
    "Protocol",
    "Reply",
    "create",
    "decode",
    "decode_challenge",
    "encode_body",
]


def create(name: str, *, max_line: int = DEFAULT_MAX_LINE, max_reply: int = DEFAULT_MAX_REPLY) -> Protocol:
    """A new protocol object: 'smtp' | 'pop3' | 'imap' | 'line'."""
    try:
        cls = PROTOCOLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown protocol {name!r} (expected smtp, pop3, imap or line)") from None
    if max_line < 1 or max_reply < 1:
        raise ValueError("max_line and max_reply must be positive")
    return cls(max_line=max_line, max_reply=max_reply)
