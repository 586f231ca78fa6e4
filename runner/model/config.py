"""`connect:` settings: ConnectConfig (what a transport is given) and resolve_connect, which renders
a session's ConnectSpec, applies command-line overrides, converts types and checks them.

check_connect holds every connect rule once: the loader calls it for a block's literal values,
resolve_connect for the rendered ones at run time. Kept apart from runner.load so that playing
a scenario from the model cache never imports the loader (PyYAML, the schema machinery).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from runner import protocols, transports
from runner.errors import ScenarioError
from runner.records import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from typing import Any, Literal

    from runner.model.scenario import Session

    TLSMode = Literal["none", "implicit", "starttls"]
    TransportName = Literal["socket", "telnet", "openssl"]
    ProtocolName = Literal["smtp", "lmtp", "pop3", "imap", "line"]

__all__ = [
    "ConnectConfig",
    "DEFAULT_PORTS",
    "PATH_KEYS",
    "PROTOCOLS",
    "TLS_MODES",
    "TRANSPORTS",
    "check_connect",
    "resolve_connect",
    "starttls_problem",
]


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
        "unix",
        "proxy",
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
        max_reply: int | None = None,  # None: the protocol's default (runner.protocols)
        unix: Path | None = None,
        proxy: dict | None = None,
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
        self.unix = unix  # a unix socket path to connect to instead of host:port
        self.proxy = proxy  # {version, source, destination}: a PROXY header sent first
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


PROTOCOLS = protocols.NAMES
TLS_MODES = ("none", "implicit", "starttls")
TRANSPORTS = transports.NAMES
DEFAULT_PORTS = {
    ("smtp", False): 25,
    ("smtp", True): 465,
    ("lmtp", False): 24,
    ("pop3", False): 110,
    ("pop3", True): 995,
    ("imap", False): 143,
    ("imap", True): 993,
}

_BOOL_KEYS = ("tls_verify", "allow_plaintext_secrets")
_FLOAT_KEYS = ("timeout", "connect_timeout")
_INT_KEYS = ("port", "max_line", "max_reply")
PATH_KEYS = ("ca", "client_cert", "client_key")  # files, relative to the scenario file
_FIELDS = frozenset(ConnectConfig.__slots__) - {"protocol"}  # what `connect:` may set


def check_connect(
    values: Mapping[str, Any],
    protocol: str,
    base_dir: Path,
    *,
    keys: Collection[str] | None = None,
    shown: Mapping[str, str] | None = None,
    relative: Collection[str] = (),
    base_display: str | None = None,
    tls_expect: bool = False,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Every `connect:` rule: convert `values` to their types and check them, alone and together.
    -> (converted values, problems as (connect key, message)); the caller says where the key is.

    The loader calls it with a connect block's literal values (templates are rendered later),
    resolve_connect with every value rendered plus the command-line overrides. keys: every key
    the block has, templated ones too (default: those of values); shown: how a value is quoted in
    a message (a secret's as ****; default repr); relative: keys whose relative paths resolve
    against base_dir; base_display: the file named in a "(relative to ...)" hint; tls_expect: the
    session has a `tls_expect:` (its problems come as key 'tls_expect')."""
    keys = set(values) if keys is None else set(keys)
    shown = {} if shown is None else shown

    def got(key: str) -> str:
        return shown.get(key) or repr(values[key])

    problems: list[tuple[str, str]] = []
    out: dict[str, Any] = {}
    for key, v in values.items():
        if key not in _FIELDS:
            problems.append((key, f"unknown connect setting '{key}'"))
            continue
        try:
            out[key] = _convert(key, v, base_dir, from_spec=key in relative)
        except ValueError as e:
            problems.append((key, f"{e} (got {got(key)})"))
    problems += _check_modes(out, got)
    if tls_expect:
        problems += _check_tls_expect(out, keys)
    problems += _check_numbers(out, keys, protocol, got)
    for key in PATH_KEYS:
        if out.get(key) is not None and not Path(out[key]).is_file():
            hint = ""
            if base_display is not None and key in relative and not Path(str(values[key])).is_absolute():
                hint = f" (relative to {base_display})"
            problems.append((key, f"{key} file {got(key)} not found{hint}"))
    if "client_key" in keys and "client_cert" not in keys:
        problems.append(("client_key", "client_key needs client_cert"))
    if "unix" in keys:
        out.setdefault("host", "localhost")  # for TLS's SNI and certificate name; the socket is local
    elif "host" not in keys:
        problems.append(("host", "missing required key 'host' (or 'unix': a socket path)"))
    elif "host" in out and not out["host"]:
        problems.append(("host", "host is empty"))
    problems += _check_transport_can(out, keys)
    return out, problems


def _check_transport_can(out: dict[str, Any], keys: set[str]) -> list[tuple[str, str]]:
    """unix and proxy: only the socket transport can; proxy needs a TCP connection."""
    problems = []
    transport = out.get("transport", "socket")
    for key in ("unix", "proxy"):
        if key in keys and transport != "socket":
            problems.append(
                (key, f"the {transport} transport cannot use connect.{key}; use transport: socket")
            )
    if "proxy" in out and isinstance(out["proxy"], dict):
        from runner.transports.proxy import check as proxy_problems

        problems += proxy_problems(out["proxy"])
    return problems


def _check_modes(out: dict[str, Any], got) -> list[tuple[str, str]]:
    """tls, transport, tls_min_version: known values, and a transport that can do the tls."""
    problems = []
    for key, allowed in (("tls", TLS_MODES), ("transport", TRANSPORTS), ("tls_min_version", ("1.2", "1.3"))):
        if key in out and out[key] not in allowed:
            problems.append((key, f"'{key}' must be one of {', '.join(allowed)} (got {got(key)})"))
    tls = out.get("tls", "none")
    if out.get("transport") == "telnet" and tls in ("implicit", "starttls"):
        problems.append(
            (
                "transport",
                f"the telnet transport cannot speak TLS (tls: {tls}); use transport: socket or transport: openssl",
            )
        )
    return problems


def _check_tls_expect(out: dict[str, Any], keys: set[str]) -> list[tuple[str, str]]:
    """tls_expect needs TLS, and a transport that reports its facts (telnet has none). A
    templated tls or transport is judged once rendered."""
    tls = out.get("tls", None if "tls" in keys else "none")
    transport = out.get("transport", None if "transport" in keys else "socket")
    if transport == "telnet":
        return [
            (
                "tls_expect",
                "needs the facts of a TLS handshake; the telnet transport has no TLS (use socket or openssl)",
            )
        ]
    if tls == "none":
        return [("tls_expect", "needs TLS: connect.tls is none (use implicit or starttls)")]
    return []


def _check_numbers(out: dict[str, Any], keys: set[str], protocol: str, got) -> list[tuple[str, str]]:
    """The port (or the protocol's usual one, put in `out`), timeouts > 0, limits >= 1."""
    problems = []
    if "unix" in keys and "port" not in keys:
        out["port"] = 0  # a unix socket has no port
    elif "port" not in keys:
        default = DEFAULT_PORTS.get((protocol, out.get("tls", "none") == "implicit"))
        if default is None:
            problems.append(("port", f"missing required key 'port' (protocol {protocol} has no usual port)"))
        else:
            out["port"] = default
    elif "port" in out and not 1 <= out["port"] <= 65535:
        problems.append(("port", f"must be a port number 1..65535 (got {got('port')})"))
    for key in _FLOAT_KEYS:
        problem = seconds_problem(out[key]) if key in out else None
        if problem is not None:
            problems.append((key, f"{problem} (got {got(key)})"))
    for key in ("max_line", "max_reply"):
        if key in out and out[key] < 1:
            problems.append((key, f"must be at least 1 (got {got(key)})"))
    return problems


def seconds_problem(value: float) -> str | None:
    """The rule of every timeout (connect's `timeout`, `connect_timeout`, --timeout): a finite
    number of seconds greater than 0. The problem in words, or None."""
    if not value > 0:
        return "must be greater than 0"
    if not math.isfinite(value):
        return "must be a finite number of seconds"
    return None


def starttls_problem(tls: str, has_starttls_step: bool) -> tuple[str, str] | None:
    """The rule tying connect.tls to the steps: tls: starttls needs a step with starttls: true
    and such a step needs tls: starttls. -> ("tls", message) for the connect value,
    ("step", message) for the starttls step, or None."""
    if tls == "starttls" and not has_starttls_step:
        return "tls", "tls is starttls but no step has starttls: true (put it on the STARTTLS step)"
    if tls != "starttls" and has_starttls_step:
        return "step", f"starttls: true needs connect.tls: starttls (it is {tls})"
    return None


def resolve_connect(session: Session, ctx, overrides: Mapping[str, Any] | None = None) -> ConnectConfig:
    """Render the session's connect values, apply overrides, then check_connect them."""
    from runner.lang.templates import TemplateError

    spec = session.connect
    problems: list[str] = []
    values: dict[str, Any] = {}
    shown: dict[str, str] = {}
    where: dict[str, str] = {}

    def here(key: str) -> str:
        if key in where:
            return where[key]
        loc = spec.key_locations.get(key, spec.location)
        return f"{loc.file}:{loc.line}:{loc.column}: connect.{key}"

    for key, raw in spec.values.items():
        try:
            values[key], shown[key] = _rendered(raw, ctx)
        except TemplateError as e:
            problems.append(f"{here(key)}: {e}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, v in overrides.items():
        values[key] = v
        shown[key] = repr(v)
        where[key] = f"command line: --{key.replace('_', '-')}"
    out, found = check_connect(
        values,
        session.protocol,
        spec.base_dir,
        keys=set(spec.values) | set(overrides),
        shown=shown,
        relative={k for k in spec.values if k not in overrides},
        base_display=spec.location.file,
        tls_expect=session.tls_expect is not None,
    )
    if session.tls_expect is not None:
        loc = session.tls_expect.location
        where["tls_expect"] = f"{loc.file}:{loc.line}:{loc.column}: tls_expect"
    problems.extend(f"{here(key)}: {message}" for key, message in found)
    has_starttls = [s for s in (*session.steps, *session.finally_steps) if s.starttls]
    mismatch = starttls_problem(out.get("tls", "none"), bool(has_starttls))
    if mismatch is not None:
        key, message = mismatch
        if key == "tls":
            problems.append(f"{here('tls')}: {message}")
        else:
            loc = has_starttls[0].location
            problems.append(f"{loc.file}:{loc.line}:{loc.column}: {message}")
    if problems:
        raise ScenarioError(problems)
    out["protocol"] = session.protocol
    return ConnectConfig(**out)


def _rendered(raw: Any, ctx) -> tuple[Any, str]:
    """A connect value rendered (a proxy mapping's strings too) and how a message shows it."""
    from runner.lang.render import render

    if isinstance(raw, str):
        r = render(raw, ctx)
        return r.value, ("****" if r.secret else repr(r.display))
    if isinstance(raw, dict):
        value = {k: render(v, ctx).value if isinstance(v, str) else v for k, v in raw.items()}
        return value, repr(value)
    return raw, repr(raw)


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
    if key in PATH_KEYS:
        if v is None or v == "":
            return None
        p = Path(str(v)).expanduser()
        return p if p.is_absolute() or not from_spec else base_dir / p
    if key == "family":
        if v in (4, 6, None):
            return v
        raise ValueError("'family' must be 4 or 6")
    if key == "host":  # an IPv6 literal may be written [::1], as in a URL
        v = str(v)
        return v[1:-1] if v.startswith("[") and v.endswith("]") else v
    if key == "unix":
        if not isinstance(v, str) or not v.strip():
            raise ValueError("'unix' must be the path of a unix socket")
        p = Path(v).expanduser()
        return p if p.is_absolute() or not from_spec else base_dir / p
    if key == "proxy":
        if isinstance(v, dict):
            return {k: (int(x) if k == "version" and str(x) in ("1", "2") else x) for k, x in v.items()}
        raise ValueError("'proxy' must be a mapping: {version: 1|2, source: IP:PORT, destination: IP:PORT}")
    if key in ("server_name", "tls", "transport", "tls_min_version"):
        return str(v)
    return v
