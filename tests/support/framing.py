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
