"""The validated scenario model: what runner.scenario_loader produces and the engine consumes.

Everything here is already checked against the schema and the semantic rules. The model is
treated as read-only once loaded; the classes are plain (not frozen, identity equality) because
generating frozen dataclasses costs about a millisecond each on every start of `mailrun`. Strings that may
hold templates (`{{ ... }}`) are kept as written; the engine renders them at run time with
runner.templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TLSMode = Literal["none", "implicit", "starttls"]
TransportName = Literal["socket", "telnet", "openssl"]
ProtocolName = Literal["smtp", "pop3", "imap", "line"]
StepAction = Literal["send", "body", "body_file", "raw", "sleep", "read"]


@dataclass(eq=False)
class Location:
    """Where something was written. `via` is the include chain: the locations of the
    `include:` steps that brought a fragment's step in, outermost first."""

    file: str
    line: int
    column: int = 1
    via: tuple[Location, ...] = ()

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def describe(self) -> str:
        """'lib/auth.yaml:4 (included from x.yaml:12)'"""
        s = str(self)
        if self.via:
            s += " (included from " + " <- ".join(str(v) for v in reversed(self.via)) + ")"
        return s


@dataclass(eq=False)
class ConnectConfig:
    """`connect:` after rendering and type conversion (plus command-line overrides)."""

    host: str
    port: int
    tls: TLSMode = "none"
    transport: TransportName = "socket"
    timeout: float = 10.0
    connect_timeout: float = 10.0
    tls_verify: bool = True
    ca: Path | None = None
    server_name: str | None = None
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    client_cert: Path | None = None
    client_key: Path | None = None
    allow_plaintext_secrets: bool = False
    family: Literal[4, 6] | None = None  # -4 / -6
    max_line: int = 1 << 20
    max_reply: int = 256 << 20
    # For transport: openssl/telnet: the protocol name, for `-starttls smtp|pop3|imap`.
    protocol: ProtocolName = "smtp"


@dataclass(eq=False)
class ConnectSpec:
    """`connect:` as written: values may be templates. runner.scenario_loader.resolve_connect
    renders, converts and checks them right before connecting."""

    values: Mapping[str, Any]
    base_dir: Path  # relative `ca`, `client_cert`, `client_key` resolve against this
    location: Location
    # Location of each key's value, for error messages after rendering.
    key_locations: Mapping[str, Location] = field(default_factory=dict)


@dataclass(eq=False)
class Step:
    """One step. `action` says what is sent:
      send      `C:` line (`text`), CRLF added, IMAP tag added unless tag=False
      body      `body:` (`text`): LF -> CRLF, dot-stuffed, ended with CRLF.CRLF
      body_file `body_file:` (`path`): the same, from the file's bytes (not templated)
      raw       `raw:` exact bytes: `text` rendered then UTF-8 encoded, or `data` (YAML !!binary)
      sleep     `sleep:` seconds
      read      `S:` only: nothing is sent
    `expect` is the `S:` pattern (a runner.patterns.Pattern) or None (send without reading)."""

    location: Location
    action: StepAction
    text: str | None = None
    data: bytes | None = None
    path: Path | None = None
    seconds: float | None = None
    expect: Any = None  # runner.patterns.Pattern | None
    name: str | None = None
    capture: Mapping[str, str] = field(default_factory=dict)  # name -> regex (template)
    timeout: float | None = None
    starttls: bool = False
    multiline: bool | None = None  # POP3: force a multi-line (True) or single-line reply
    tag: bool = True  # IMAP: add a tag to this `C:` line
    # Include scopes, outermost first: each mapping is an `include:` step's `vars` merged over
    # the fragment's own `vars` defaults (name -> template). The engine renders each mapping
    # in the context built by the ones before it (runner.templates.Context.child).
    bindings: tuple[Mapping[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return self.name or ""


@dataclass(eq=False)
class Retry:
    attempts: int = 1
    interval: float = 0.0


@dataclass(eq=False)
class Session:
    name: str
    protocol: ProtocolName
    connect: ConnectSpec
    steps: tuple[Step, ...]
    finally_steps: tuple[Step, ...] = ()
    retry: Retry | None = None
    location: Location | None = None


@dataclass(eq=False)
class Scenario:
    """One scenario file. A single-session file becomes one Session named after the file's
    `name`. `vars` values are templates (rendered in order at run time); `secrets` are the
    names whose values, and anything derived from them, are masked everywhere."""

    path: Path
    name: str
    sessions: tuple[Session, ...]
    description: str | None = None
    tags: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()
    # env.NAME references: NAME -> the `vars` entries (or locations) that need it
    env_refs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    location: Location | None = None
