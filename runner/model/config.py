"""`connect:` settings: ConnectConfig (what a transport is given) and resolve_connect, which renders
a session's ConnectSpec, applies command-line overrides, converts types and checks them.

Kept apart from runner.load.loader so that playing a scenario from the model cache never
imports the loader (PyYAML, the schema machinery). runner.load.loader re-exports these
names for older imports.
"""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import ScenarioError
from runner.records import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any, Literal

    from runner.model.scenario import Session

    TLSMode = Literal["none", "implicit", "starttls"]
    TransportName = Literal["socket", "telnet", "openssl"]
    ProtocolName = Literal["smtp", "pop3", "imap", "line"]

__all__ = ["ConnectConfig", "DEFAULT_PORTS", "PROTOCOLS", "TLS_MODES", "TRANSPORTS", "resolve_connect"]


class ConnectConfig(Plain):
    """`connect:` after rendering and type conversion (plus command-line overrides).

    `family` is 4 or 6 (-4 / -6) or None. For transport openssl/telnet, `protocol` is the
    protocol name, for `-starttls smtp|pop3|imap`."""

    __slots__ = (
        "host",
        "port",
        "tls",
        "transport",
        "timeout",
        "connect_timeout",
        "tls_verify",
        "ca",
        "server_name",
        "tls_min_version",
        "client_cert",
        "client_key",
        "allow_plaintext_secrets",
        "family",
        "max_line",
        "max_reply",
        "protocol",
    )

    def __init__(
        self,
        host: str,
        port: int,
        tls: TLSMode = "none",
        transport: TransportName = "socket",
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        tls_verify: bool = True,
        ca: Path | None = None,
        server_name: str | None = None,
        tls_min_version: Literal["1.2", "1.3"] = "1.2",
        client_cert: Path | None = None,
        client_key: Path | None = None,
        allow_plaintext_secrets: bool = False,
        family: Literal[4, 6] | None = None,
        max_line: int = 1 << 20,
        max_reply: int = 256 << 20,
        protocol: ProtocolName = "smtp",
    ):
        self.host = host
        self.port = port
        self.tls = tls
        self.transport = transport
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.tls_verify = tls_verify
        self.ca = ca
        self.server_name = server_name
        self.tls_min_version = tls_min_version
        self.client_cert = client_cert
        self.client_key = client_key
        self.allow_plaintext_secrets = allow_plaintext_secrets
        self.family = family
        self.max_line = max_line
        self.max_reply = max_reply
        self.protocol = protocol

    def replace(self, **changes: Any) -> ConnectConfig:
        """A copy with `changes` applied (what dataclasses.replace did)."""
        values = {n: getattr(self, n) for n in ConnectConfig.__slots__}
        for name in changes:
            if name not in values:
                raise TypeError(f"ConnectConfig has no field {name!r}")
        values.update(changes)
        return ConnectConfig(**values)


PROTOCOLS = ("smtp", "pop3", "imap", "line")
TLS_MODES = ("none", "implicit", "starttls")
TRANSPORTS = ("socket", "telnet", "openssl")
DEFAULT_PORTS = {
    ("smtp", False): 25,
    ("smtp", True): 465,
    ("pop3", False): 110,
    ("pop3", True): 995,
    ("imap", False): 143,
    ("imap", True): 993,
}

_BOOL_KEYS = ("tls_verify", "allow_plaintext_secrets")
_FLOAT_KEYS = ("timeout", "connect_timeout")
_INT_KEYS = ("port", "max_line", "max_reply")
_PATH_KEYS = ("ca", "client_cert", "client_key")
_FIELDS = frozenset(ConnectConfig.__slots__) - {"protocol"}  # what `connect:` may set


def resolve_connect(session: Session, ctx, overrides: Mapping[str, Any] | None = None) -> ConnectConfig:
    """Render the session's connect values, apply overrides, convert types and check them."""
    from runner.lang import templates as T

    spec = session.connect
    problems: list[str] = []
    values: dict[str, Any] = {}
    shown: dict[str, str] = {}
    where: dict[str, str] = {}

    def here(key: str) -> str:
        loc = spec.key_locations.get(key, spec.location)
        return f"{loc.file}:{loc.line}:{loc.column}: connect.{key}"

    for key, raw in spec.values.items():
        where[key] = here(key)
        if isinstance(raw, str):
            try:
                r = T.render(raw, ctx)
            except T.TemplateError as e:
                problems.append(f"{where[key]}: {e}")
                continue
            values[key], shown[key] = r.value, ("****" if r.secret else repr(r.display))
        else:
            values[key], shown[key] = raw, repr(raw)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, v in overrides.items():
        values[key] = v
        shown[key] = repr(v)
        where[key] = f"command line: --{key.replace('_', '-')}"
    out: dict[str, Any] = {}
    for key, v in values.items():
        if key not in _FIELDS:
            problems.append(f"{where.get(key, 'connect')}: unknown connect setting '{key}'")
            continue
        try:
            out[key] = _convert(key, v, spec.base_dir, from_spec=key in spec.values and key not in overrides)
        except ValueError as e:
            problems.append(f"{where[key]}: {e} (got {shown[key]})")
    tls = out.get("tls", "none")
    if "tls" in out and tls not in TLS_MODES:
        problems.append(f"{where['tls']}: 'tls' must be one of none, implicit, starttls (got {shown['tls']})")
    transport = out.get("transport", "socket")
    if "transport" in out and transport not in TRANSPORTS:
        problems.append(
            f"{where['transport']}: 'transport' must be one of socket, telnet, openssl (got {shown['transport']})"
        )
    if out.get("tls_min_version", "1.2") not in ("1.2", "1.3"):
        problems.append(f"{where['tls_min_version']}: 'tls_min_version' must be 1.2 or 1.3")
    if transport == "telnet" and tls in ("implicit", "starttls"):
        problems.append(
            f"{where.get('transport', here('transport'))}: the telnet transport cannot speak TLS (tls: {tls}); "
            "use transport: socket or transport: openssl"
        )
    if "port" not in out:
        default = DEFAULT_PORTS.get((session.protocol, tls == "implicit"))
        if default is None:
            problems.append(f"{here('port')}: no port given (protocol {session.protocol} has no usual port)")
        else:
            out["port"] = default
    elif not 1 <= out["port"] <= 65535:
        problems.append(f"{where['port']}: must be a port number 1..65535 (got {shown['port']})")
    for key in _FLOAT_KEYS:
        if key in out and not out[key] > 0:
            problems.append(f"{where[key]}: must be greater than 0 (got {shown[key]})")
    for key in ("max_line", "max_reply"):
        if key in out and out[key] < 1:
            problems.append(f"{where[key]}: must be at least 1 (got {shown[key]})")
    for key in _PATH_KEYS:
        if out.get(key) is not None and not Path(out[key]).is_file():
            problems.append(f"{where[key]}: {key} file {shown[key]} not found")
    if not out.get("host"):
        problems.append(f"{here('host')}: host is empty")
    has_starttls = [s for s in (*session.steps, *session.finally_steps) if s.starttls]
    if tls == "starttls" and not has_starttls:
        problems.append(f"{where.get('tls', here('tls'))}: tls is starttls but no step has starttls: true")
    if tls != "starttls" and has_starttls:
        loc = has_starttls[0].location
        problems.append(
            f"{loc.file}:{loc.line}:{loc.column}: starttls: true needs connect.tls: starttls (it is {tls})"
        )
    if problems:
        raise ScenarioError(problems)
    out["protocol"] = session.protocol
    return ConnectConfig(**out)


def _convert(key: str, v: Any, base_dir: Path, from_spec: bool) -> Any:
    if key in _BOOL_KEYS:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        raise ValueError(f"'{key}' must be true or false")
    if key in _INT_KEYS:
        if isinstance(v, bool):
            raise ValueError(f"'{key}' must be an integer")
        if isinstance(v, int):
            return v
        if isinstance(v, str) and re.fullmatch(r"\s*[0-9]+\s*", v):
            return int(v)
        raise ValueError(f"'{key}' must be an integer")
    if key in _FLOAT_KEYS:
        if isinstance(v, bool):
            raise ValueError(f"'{key}' must be a number of seconds")
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*", v):
            return float(v)
        raise ValueError(f"'{key}' must be a number of seconds")
    if key in _PATH_KEYS:
        if v is None or v == "":
            return None
        p = Path(str(v)).expanduser()
        return p if p.is_absolute() or not from_spec else base_dir / p
    if key == "family":
        if v in (4, 6, None):
            return v
        raise ValueError("'family' must be 4 or 6")
    if key in ("host", "server_name", "tls", "transport", "tls_min_version"):
        return str(v)
    return v
