"""`connect:` settings at run time: render a session's ConnectSpec, apply command-line overrides,
convert types and check them (resolve_connect).

Kept apart from runner.scenario_loader so that playing a scenario from the model cache never
imports the loader (PyYAML, the schema machinery). runner.scenario_loader re-exports these
names for older imports.
"""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import ScenarioError
from runner.scenario import ConnectConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from runner.scenario import Session

__all__ = ["DEFAULT_PORTS", "PROTOCOLS", "TLS_MODES", "TRANSPORTS", "resolve_connect"]

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
    from runner import templates as T

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
