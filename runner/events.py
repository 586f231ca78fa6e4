"""The event stream: what the engine (and the suite) emit as things happen; every reporter
(console, JSON, JUnit, transcript) is a listener with `handle(event)`.

Each thing is announced once, by one event: a connection by Connected, a TLS handshake by
TLSStarted (also for implicit TLS and for a handshake a spawned program performed), a retry by
Retrying, a step by StepFinished (a skipped step says why in its result's fields:
`performed_by` names the program that performed it). Transports never announce these
themselves: their Notes are only a spawned program's own output ('chatter') and warnings.
Reporters show what the fields say and never read meaning into a text (a Note, a reason), so
they keep no memory of what was already shown. Every text in an event is already masked: no event carries a
secret's value. `Sent.data`/`Received.data` hold the bytes as they crossed the wire with
secrets replaced by `****`: in Sent exactly where one was rendered (runner.engine.actions), in
Received every whole occurrence, masked as if the reply had come in one read (the engine's
runner.lang.secrets.RedactingStream: no Received holds part of a secret, whatever the split).
"""

from __future__ import annotations

from runner.records import Plain

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)

if TYPE_CHECKING:  # names for annotations only: importing them costs start-up time
    from runner.lang.secrets import Redactor
    from runner.results import ScenarioResult, SessionResult, StepResult
    from runner.transports.base import ConnectInfo, TLSInfo


# Events are made once and never changed; identity equality.
class ScenarioStarted(Plain):
    __slots__ = ("file", "name", "provider", "at")

    def __init__(self, file: str, name: str, provider: str | None, at: float):
        self.file = file
        self.name = name
        self.provider = provider
        self.at = at  # time.time()


class SessionStarted(Plain):
    __slots__ = (
        "scenario",
        "name",
        "protocol",
        "attempt",
        "attempts",
        "host",
        "port",
        "transport",
        "tls_mode",
        "at",
    )

    def __init__(
        self,
        scenario: str,
        name: str,
        protocol: str,
        attempt: int,
        attempts: int,
        host: str,
        port: int,
        transport: str,
        tls_mode: str,
        at: float,
    ):
        self.scenario = scenario
        self.name = name
        self.protocol = protocol
        self.attempt = attempt
        self.attempts = attempts
        self.host = host
        self.port = port
        self.transport = transport
        self.tls_mode = tls_mode
        self.at = at


class Connected(Plain):
    """Once per connection, when it is up. `info.tls` may be set (implicit TLS), but the
    handshake is announced by the TLSStarted that follows, not by this event."""

    __slots__ = ("info", "at")

    def __init__(self, info: ConnectInfo, at: float):
        self.info = info
        self.at = at


class TLSStarted(Plain):
    """Exactly once per TLS handshake, when it happened: right after Connected for implicit TLS
    and for a handshake a spawned program performed at connect (openssl -starttls), after the
    STARTTLS step's reply otherwise."""

    __slots__ = ("info", "at")

    def __init__(self, info: TLSInfo, at: float):
        self.info = info
        self.at = at


class _Wire(Plain):
    """Bytes that crossed the wire. `data` is masked (secret values replaced by `****`): given
    masked, or (with a redactor: a body_file's bytes) masked when `data` is first read, so a run
    whose listeners never look at the bytes does not pay for it. The unmasked bytes are private
    to the event."""

    __slots__ = ("_raw", "_redactor", "at")

    def __init__(self, data: bytes, at: float, redactor: Redactor | None = None):
        self._raw = data
        self._redactor = redactor
        self.at = at

    @property
    def data(self) -> bytes:
        r = self._redactor
        if r is not None:
            self._raw = r.redact_bytes(self._raw)
            self._redactor = None
        return self._raw

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data={self.data!r}, at={self.at!r})"


class Sent(_Wire):
    __slots__ = ()


class Received(_Wire):
    __slots__ = ()


class Note(Plain):
    __slots__ = ("kind", "text", "at")

    def __init__(self, kind: str, text: str, at: float):
        self.kind = kind  # 'chatter' (telnet/openssl output that is not the server's), 'info', 'warning'
        self.text = text
        self.at = at


class Closed(Plain):
    __slots__ = ("by", "at")

    def __init__(self, by: str, at: float):
        self.by = by  # 'client' | 'server'
        self.at = at


class Retrying(Plain):
    """A run is played again: one event before each further attempt (whatever the interval,
    0 too). what: 'session' (a session's `retry:`; name is the session's) or 'scenario' (the
    suite's --retries, for a connection failure before anything was sent; name is the
    scenario's display name). attempt: the attempt that just failed (1-based); attempts: how
    many attempts are allowed in all, the first one included (a session's retry.attempts; for
    the suite 1 + --retries, so `--retries 2` gives attempts=3 and the retries say 'retry 1 of
    2', 'retry 2 of 2'); reason: why it failed (masked); interval: seconds waited before the
    next attempt."""

    __slots__ = ("what", "name", "attempt", "attempts", "reason", "interval", "at")

    def __init__(
        self,
        what: str,
        name: str,
        attempt: int,
        attempts: int,
        reason: str | None,
        interval: float,
        at: float,
    ):
        self.what = what
        self.name = name
        self.attempt = attempt
        self.attempts = attempts
        self.reason = reason
        self.interval = interval
        self.at = at


class StepFinished(Plain):
    __slots__ = ("result", "at")

    def __init__(self, result: StepResult, at: float):
        self.result = result
        self.at = at


class SessionFinished(Plain):
    __slots__ = ("result", "at")

    def __init__(self, result: SessionResult, at: float):
        self.result = result
        self.at = at


class ScenarioFinished(Plain):
    __slots__ = ("result", "at")

    def __init__(self, result: ScenarioResult, at: float):
        self.result = result
        self.at = at


Event = (
    ScenarioStarted
    | SessionStarted
    | Connected
    | TLSStarted
    | Sent
    | Received
    | Note
    | Closed
    | Retrying
    | StepFinished
    | SessionFinished
    | ScenarioFinished
)
