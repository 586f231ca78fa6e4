"""What a run produces: per-step results and the event stream reporters listen to.

The engine emits events as things happen; every reporter (console, JSON, JUnit, transcript)
is a listener with `handle(event)`. Every text in an event is already masked: no event
carries a secret's value. `Sent.data`/`Received.data` hold the bytes as they crossed the wire
with secret values replaced by `****` (runner.secrets.Redactor.redact_bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from runner.errors import ExitClass
from runner.protocols.base import Reply
from runner.transports.base import ConnectInfo, TLSInfo

Status = Literal["passed", "failed", "error", "skipped"]


@dataclass
class StepResult:
    """One step's verdict. `status`:
    passed   the step did what it should
    failed   the server's reply did not match (exit class 1), or a capture did not match
    error    network / protocol / run-time error (exit class 3, or 2 for a refused step)
    skipped  not played (after an earlier failure, or performed by openssl -starttls)"""

    index: int  # 1-based within its section
    section: Literal["steps", "finally"]
    location: str  # 'file:line' (a fragment's file:line for included steps)
    via: str | None  # the including step(s), 'x.yaml:12', when included
    action: str  # send | body | body_file | raw | sleep | read
    status: Status
    name: str | None = None
    sent: str | None = None  # what was sent, masked, for display (C line; body summary)
    expected: str | None = None  # the S pattern as text, masked
    reply: Reply | None = None  # masked copy of the reply (secrets replaced)
    reason: str | None = None  # why it failed / was skipped
    exit_class: ExitClass = ExitClass.OK
    elapsed: float = 0.0  # seconds, from send (or start of read) to reply complete
    captures: dict[str, str] = field(default_factory=dict)  # masked values

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")


@dataclass
class SessionResult:
    name: str
    protocol: str
    attempt: int  # 1-based; > 1 when retry re-ran the session
    attempts: int  # how many were allowed
    steps: list[StepResult] = field(default_factory=list)
    status: Status = "passed"
    exit_class: ExitClass = ExitClass.OK
    reason: str | None = None  # e.g. a connect error before any step ran
    peer: str | None = None
    transport: str | None = None
    tls: TLSInfo | None = None
    duration: float = 0.0


@dataclass
class ScenarioResult:
    file: str
    name: str
    provider: str | None = None  # matrix label, reported as name[provider]
    sessions: list[SessionResult] = field(default_factory=list)
    status: Status = "passed"
    exit_class: ExitClass = ExitClass.OK
    reason: str | None = None  # set when the scenario could not run at all (invalid, connect)
    duration: float = 0.0
    started_at: float = 0.0  # time.time() (wall clock) for reports
    retries: int = 0  # connection-class retries before the first byte (suite --retries)

    @property
    def display_name(self) -> str:
        return f"{self.name}[{self.provider}]" if self.provider else self.name

    @property
    def steps(self) -> list[StepResult]:
        return [s for sess in self.sessions for s in sess.steps]


# ---------------------------------------------------------------- events
# Events are made once and never changed; they are plain (not frozen, no generated __eq__)
# because building frozen dataclasses costs about 0.7 ms each at import, on every run.
@dataclass(eq=False)
class ScenarioStarted:
    file: str
    name: str
    provider: str | None
    at: float  # time.time()


@dataclass(eq=False)
class SessionStarted:
    scenario: str
    name: str
    protocol: str
    attempt: int
    attempts: int
    host: str
    port: int
    transport: str
    tls_mode: str
    at: float


@dataclass(eq=False)
class Connected:
    info: ConnectInfo
    at: float


@dataclass(eq=False)
class TLSStarted:
    info: TLSInfo
    at: float


@dataclass(eq=False)
class Sent:
    data: bytes  # masked
    at: float


@dataclass(eq=False)
class Received:
    data: bytes  # masked
    at: float


@dataclass(eq=False)
class Note:
    kind: str  # 'chatter' (telnet/openssl output that is not the server's), 'info', 'warning'
    text: str
    at: float


@dataclass(eq=False)
class Closed:
    by: Literal["client", "server"]
    at: float


@dataclass(eq=False)
class StepFinished:
    result: StepResult
    at: float


@dataclass(eq=False)
class SessionFinished:
    result: SessionResult
    at: float


@dataclass(eq=False)
class ScenarioFinished:
    result: ScenarioResult
    at: float


Event = (
    ScenarioStarted
    | SessionStarted
    | Connected
    | TLSStarted
    | Sent
    | Received
    | Note
    | Closed
    | StepFinished
    | SessionFinished
    | ScenarioFinished
)
