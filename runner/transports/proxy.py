"""The HAProxy PROXY protocol header (version 1 text, version 2 binary) a connection sends before
anything else, so that a server behind a load balancer sees the client address the scenario
names (haproxy.org/download/2.9/doc/proxy-protocol.txt).

    header(1, "203.0.113.7:4242", "198.51.100.1:25")
        -> b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 25\\r\\n"

Addresses are `IP:PORT`, an IPv6 one as `[IP]:PORT`; source and destination must be of the same
family. `check` says what is wrong with a `connect.proxy` mapping (the loader and the run both
use it); the socket transport sends `header(...)` right after connecting, before TLS.
"""

from __future__ import annotations

import ipaddress
import re
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # version 2's fixed 12-byte signature
_ADDRESS = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):([0-9]{1,5})$")
KEYS = ("version", "source", "destination")


def parse_address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """'203.0.113.7:4242' / '[2001:db8::1]:4242' -> (address, port); ValueError says why not."""
    m = _ADDRESS.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not IP:PORT (an IPv6 address as [IP]:PORT)")
    try:
        ip = ipaddress.ip_address(m.group(1) or m.group(2))
    except ValueError:
        raise ValueError(f"{text!r}: not an IP address") from None
    if m.group(1) and ip.version != 6:
        raise ValueError(f"{text!r}: [..] is for IPv6 addresses")
    port = int(m.group(3))
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be 0..65535")
    return ip, port


def check(spec) -> list[tuple[str, str]]:
    """Problems of a `connect.proxy` value as (key, message); `destination` may be left out
    (the address connected to is used)."""
    if not isinstance(spec, dict):
        return [("proxy", "proxy must be a mapping: {version: 1|2, source: IP:PORT, destination: IP:PORT}")]
    problems = [("proxy", f"unknown proxy key '{k}' (use {', '.join(KEYS)})") for k in spec if k not in KEYS]
    version = spec.get("version", 1)
    if version not in (1, 2, "1", "2") or isinstance(version, bool):
        problems.append(("proxy", f"proxy.version must be 1 or 2 (got {version!r})"))
    if "source" not in spec:
        problems.append(("proxy", "proxy.source is required (the client address the server should see)"))
    families = set()
    for key in ("source", "destination"):
        if key in spec and not _templated(spec[key]):
            try:
                families.add(parse_address(spec[key])[0].version)
            except ValueError as exc:
                problems.append(("proxy", f"proxy.{key}: {exc}"))
    if len(families) > 1:
        problems.append(("proxy", "proxy.source and proxy.destination must both be IPv4 or both IPv6"))
    return problems


def _templated(value) -> bool:
    return isinstance(value, str) and "{{" in value


def header(version: int, source: str, destination: str) -> bytes:
    """The header bytes. ValueError for addresses of different families."""
    src, sport = parse_address(source)
    dst, dport = parse_address(destination)
    if src.version != dst.version:
        raise ValueError(
            f"PROXY source {source} and destination {destination} are not the same family "
            "(give proxy.destination of the source's family)"
        )
    if int(version) == 1:
        family = "TCP4" if src.version == 4 else "TCP6"
        return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode("ascii")
    addresses = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    family = 0x11 if src.version == 4 else 0x21  # AF_INET / AF_INET6, over STREAM
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(addresses)) + addresses
