"""Helpers for the sans-IO protocol tests."""

from __future__ import annotations


def drain(proto, data: bytes = b"") -> list:
    """Feeds `data` (if any) and returns every complete reply the protocol then has."""
    if data:
        proto.receive_data(data)
    out = []
    while (r := proto.next_reply()) is not None:
        out.append(r)
    return out


_GREETINGS = {
    "pop3": b"+OK ready\r\n",
    "imap": b"* OK ready\r\n",
    "smtp": b"220 ready\r\n",
    "lmtp": b"220 ready\r\n",
}


def greeted(proto):
    """The framer past its connection's greeting (one fed and read), for tests of the replies
    that come after it: the first reply of a connection is always the greeting."""
    (greeting,) = drain(proto, _GREETINGS[proto.name])
    assert greeting.raw == _GREETINGS[proto.name]
    return proto
