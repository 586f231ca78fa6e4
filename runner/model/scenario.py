"""The validated scenario model: what runner.load.build produces and the engine consumes.

Everything here is already checked against the schema and the semantic rules. The model is
treated as read-only once loaded; the classes are plain records (runner.records: `__slots__`,
identity equality, no dataclass machinery). Strings that may hold templates (`{{ ... }}`) are
kept as written; the engine renders them at run time with runner.lang.render.

runner.cache.codec writes and rebuilds these records from their constructors' arguments, so a
field added here needs no line there; a change to this file changes every cache key.
"""

from __future__ import annotations

from runner.records import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:  # names only the annotations use: no `typing` import at run time
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any, Literal

    ProtocolName = Literal["smtp", "lmtp", "pop3", "imap", "line"]
    StepAction = Literal[
        "send", "body", "body_file", "raw", "bdat", "auth", "append", "idle", "sleep", "read"
    ]

__all__ = [
    "ConnectSpec",
    "Location",
    "Retry",
    "Scenario",
    "Session",
    "SnapshotSpec",
    "Step",
    "TLSCheck",
    "TLSExpect",
    "env_warnings",
]


class Location(Plain):
    """Where something was written. `via` is the include chain: the locations of the
    `include:` steps that brought a fragment's step in, outermost first."""

    __slots__ = ("file", "line", "column", "via")

    def __init__(self, file: str, line: int, column: int = 1, via: tuple[Location, ...] = ()):
        self.file = file
        self.line = line
        self.column = column
        self.via = via

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def describe(self) -> str:
        """'lib/auth.yaml:4 (included from x.yaml:12)'"""
        s = str(self)
        if self.via:
            s += " (included from " + " <- ".join(str(v) for v in reversed(self.via)) + ")"
        return s


class ConnectSpec(Plain):
    """`connect:` as written: values may be templates. runner.model.config.resolve_connect
    renders, converts and checks them right before connecting. `base_dir`: relative `ca`,
    `client_cert`, `client_key` resolve against it; `key_locations`: where each key's value
    was written, for error messages after rendering."""

    __slots__ = ("values", "base_dir", "location", "key_locations")

    def __init__(
        self,
        values: Mapping[str, Any],
        base_dir: Path,
        location: Location,
        key_locations: Mapping[str, Location] | None = None,
    ):
        self.values = values
        self.base_dir = base_dir
        self.location = location
        self.key_locations = {} if key_locations is None else key_locations


class Step(Plain):
    """One step. `action` says what is sent:
      send      `C:` line (`text`), CRLF added, IMAP tag added unless tag=False
      body      `body:` (`text`): LF -> CRLF, dot-stuffed, ended with CRLF.CRLF
      body_file `body_file:` (`path`): the same, from the file's bytes (not templated)
      raw       `raw:` exact bytes: `text` rendered then UTF-8 encoded, or `data` (YAML !!binary)
      bdat      `bdat:` a message (`text`, or the file `path`) as BDAT chunks of `chunk` bytes
                (RFC 3030): CRLF line ends, no dot-stuffing, `LAST` on the final chunk
      auth      `auth:` a whole SASL exchange (`auth`: mechanism and templated credentials)
      append    `append:` IMAP APPEND of a message as a counted literal (`mailbox`; `path`)
      idle      `idle:` IMAP IDLE until an untagged response matches `until` (a pattern; its
                source `until_source`), the session named `during` played meanwhile; then DONE
      sleep     `sleep:` seconds
      read      `S:` only: nothing is sent
    `expect` is the `S:` pattern (a runner.lang.patterns.Pattern) or None (send without reading);
    `expect_source` is the `S:` value as written (what runner.lang.pattern_parse.parse_pattern parsed).
    `capture`: name -> regex (template). `multiline` (POP3) forces a multi-line (True) or
    single-line reply; `tag` (IMAP): add a tag to this `C:` line.
    `snapshot`: False when the step opts out of `--snapshot` (`snapshot: false`).
    `bindings`: include scopes, outermost first: each mapping is an `include:` step's `vars`
    merged over the fragment's own `vars` defaults (name -> template). The engine renders each
    mapping in the context built by the ones before it (runner.lang.render.Context.child).
    `defaults`: for each mapping of `bindings`, the names in it that are the fragment's own
    defaults (not the include step's `vars`): a name the run is given from outside the file
    (--var, --vars-file, a --matrix provider) is not bound there, so its outside value wins.
    `requires` / `when`: capability expressions as written (runner.lang.requires), None when
    absent; `max_time` / `min_time`: seconds the reply must take at most / at least (None: the
    session's)."""

    __slots__ = (
        "location",
        "action",
        "text",
        "data",
        "path",
        "seconds",
        "expect",
        "name",
        "capture",
        "timeout",
        "starttls",
        "multiline",
        "tag",
        "bindings",
        "defaults",
        "expect_source",
        "chunk",
        "auth",
        "mailbox",
        "snapshot",
        "requires",
        "when",
        "max_time",
        "min_time",
        "until",
        "until_source",
        "during",
    )

    def __init__(
        self,
        location: Location,
        action: StepAction,
        text: str | None = None,
        data: bytes | None = None,
        path: Path | None = None,
        seconds: float | None = None,
        expect: Any = None,
        name: str | None = None,
        capture: Mapping[str, str] | None = None,
        timeout: float | None = None,
        starttls: bool = False,
        multiline: bool | None = None,
        tag: bool = True,
        bindings: tuple[Mapping[str, Any], ...] = (),
        defaults: tuple[frozenset[str], ...] = (),
        expect_source: Any = None,
        chunk: int | None = None,
        auth: Mapping[str, Any] | None = None,
        mailbox: Mapping[str, Any] | None = None,
        snapshot: bool = True,
        requires: Any = None,
        when: Any = None,
        max_time: float | None = None,
        min_time: float | None = None,
        until: Any = None,
        until_source: Any = None,
        during: str | None = None,
    ):
        self.location = location
        self.action = action
        self.text = text
        self.data = data
        self.path = path
        self.seconds = seconds
        self.expect = expect
        self.name = name
        self.capture = {} if capture is None else capture
        self.timeout = timeout
        self.starttls = starttls
        self.multiline = multiline
        self.tag = tag
        self.bindings = bindings
        self.defaults = defaults
        self.expect_source = expect_source
        self.chunk = chunk  # bdat: bytes per BDAT chunk (None: one chunk)
        self.auth = auth  # auth: {mechanism, user, password | token, authzid, initial_response}
        self.mailbox = mailbox  # append: {mailbox, flags, body} (a body_file is `path`)
        self.snapshot = snapshot
        self.requires = requires
        self.when = when
        self.max_time = max_time
        self.min_time = min_time
        self.until = until  # idle: the pattern of the untagged response that ends the wait
        self.until_source = until_source
        self.during = during  # idle: the session played while idling

    @property
    def label(self) -> str:
        return self.name or ""

    def scopes(self) -> list[tuple[Mapping[str, Any], frozenset[str]]]:
        """(bindings, the names among them that are the fragment's own defaults) of each include
        the step is in, outermost first (a step made without `defaults` has none)."""
        return [
            (binding, self.defaults[i] if i < len(self.defaults) else frozenset())
            for i, binding in enumerate(self.bindings)
        ]


class SnapshotSpec(Plain):
    """A file's `snapshot:` settings: `ignore`, its own regexes (each match masked as
    `<ignored>`); `off`, the names of built-in rules it turns off (runner.snapshot.rules)."""

    __slots__ = ("ignore", "off")

    def __init__(self, ignore: tuple[str, ...] = (), off: tuple[str, ...] = ()):
        self.ignore = ignore
        self.off = off


class Retry(Plain):
    __slots__ = ("attempts", "interval")

    def __init__(self, attempts: int = 1, interval: float = 0.0):
        self.attempts = attempts
        self.interval = interval


class TLSCheck(Plain):
    """One `tls_expect:` key, parsed (runner.lang.tls_expect.parse_check): key 'version' with
    op '>=' and wanted 'TLSv1.2'; 'days_left' '>=' 21; 'cipher'/'issuer'/'subject' 'search' and
    the regex; 'name' 'valid_for' and the template; 'verified' '==' True. source: the value as
    written."""

    __slots__ = ("key", "op", "wanted", "source", "location")

    def __init__(self, key: str, op: str, wanted: Any, source: Any, location: Location):
        self.key = key
        self.op = op
        self.wanted = wanted
        self.source = source
        self.location = location


class TLSExpect(Plain):
    """A session's `tls_expect:`: its checks in the order written, made after each handshake."""

    __slots__ = ("checks", "location")

    def __init__(self, checks: tuple[TLSCheck, ...], location: Location):
        self.checks = checks
        self.location = location


class Session(Plain):
    """`requires`: the session's and the scenario's capability expressions (a list, each item as
    written; empty when none); `max_time` / `min_time`: the default of its steps (the session's,
    else the scenario's), None when neither says."""

    __slots__ = (
        "name",
        "protocol",
        "connect",
        "steps",
        "finally_steps",
        "retry",
        "location",
        "requires",
        "max_time",
        "min_time",
        "tls_expect",
    )

    def __init__(
        self,
        name: str,
        protocol: ProtocolName,
        connect: ConnectSpec,
        steps: tuple[Step, ...],
        finally_steps: tuple[Step, ...] = (),
        retry: Retry | None = None,
        location: Location | None = None,
        requires: tuple = (),
        max_time: float | None = None,
        min_time: float | None = None,
        tls_expect: TLSExpect | None = None,
    ):
        self.name = name
        self.protocol = protocol
        self.connect = connect
        self.steps = steps
        self.finally_steps = finally_steps
        self.retry = retry
        self.location = location
        self.requires = requires
        self.max_time = max_time
        self.min_time = min_time
        self.tls_expect = tls_expect


class Scenario(Plain):
    """One scenario file. A single-session file becomes one Session named after the file's
    `name`. `vars` values are templates (rendered in order at run time); `secrets` are the
    names whose values, and anything derived from them, are masked everywhere. `env_refs`:
    env.NAME references: NAME -> the `vars` entries (or locations) that need it. `snapshot`: its
    `snapshot:` settings (SnapshotSpec), or None."""

    __slots__ = (
        "path",
        "name",
        "sessions",
        "description",
        "tags",
        "vars",
        "secrets",
        "env_refs",
        "location",
        "snapshot",
    )

    def __init__(
        self,
        path: Path,
        name: str,
        sessions: tuple[Session, ...],
        description: str | None = None,
        tags: tuple[str, ...] = (),
        vars: Mapping[str, Any] | None = None,
        secrets: frozenset[str] = frozenset(),
        env_refs: Mapping[str, tuple[str, ...]] | None = None,
        location: Location | None = None,
        snapshot: SnapshotSpec | None = None,
    ):
        self.path = path
        self.name = name
        self.sessions = sessions
        self.description = description
        self.tags = tags
        self.vars = {} if vars is None else vars
        self.secrets = secrets
        self.env_refs = {} if env_refs is None else env_refs
        self.location = location
        self.snapshot = snapshot


def env_warnings(scenario: Scenario, env: Mapping[str, str]) -> list[str]:
    """One line per place that needs an environment variable that is not set."""
    out = []
    for name, refs in scenario.env_refs.items():
        if name in env:
            continue
        for ref in refs:
            out.append(f"{ref} needs environment variable {name}, which is not set")
    return out
