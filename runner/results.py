"""What a run produces: one StepResult per step, SessionResult per session, ScenarioResult per
scenario run. Every text in a result is already masked. The events that carry them as things
happen are in runner.events.
"""

from __future__ import annotations

from runner.errors import ExitClass
from runner.records import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)

if TYPE_CHECKING:  # names for annotations only: importing them costs start-up time
    from typing import Literal

    from runner.protocols.base import Reply
    from runner.transports.base import TLSInfo

    Status = Literal[
        "passed", "failed", "error", "skipped", "not needed", "interrupted", "not run", "unchecked"
    ]

#: Every status a result can have, in one place (reporters and the suite read these tables;
#: a new status is one entry here and its words in runner/reporters/summary.py); the fields
#: beside it say why, never the prose of `reason`:
#:   passed, failed, error, skipped   (StepResult's docstring says when)
#:   not needed   a step whose `when` does not hold (never a session or scenario)
#:   interrupted  a signal stopped it while it played (SIGINT, SIGTERM, SIGHUP)
#:   not run      a scenario run never started (the run was interrupted, or --fail-fast)
#:   unchecked    a scenario run none of whose checks was played, because the transport's
#:                program performed them (runner.engine.checks; never a step or session)
STATUSES = ("passed", "failed", "error", "skipped", "not needed", "interrupted", "not run", "unchecked")
#: the statuses that do not fail a run (a skip may, with --fail-on-skip: `skipped_by_requires`)
OK_STATUSES = frozenset({"passed", "skipped", "not needed"})
#: the statuses that are a problem: a run's first failure is its first step with one of these
PROBLEMS = ("failed", "error", "interrupted", "unchecked")

# Plain record classes (runner.records): results compare by value, events by identity.


class StepResult(Record):
    """One step's verdict. `status`:
    passed   the step did what it should
    failed   the server's reply did not match (exit class 1), or a capture did not match
    error    network / protocol / run-time error (exit class 3, or 2 for a refused step)
    skipped  not played: after an earlier failure; performed by openssl -starttls
             (`performed_by` set); or a `requires` the server does not meet (`condition` set)
    not needed  not played: its `when` does not hold (`condition` set); not a skip
    interrupted  a signal stopped the run while this step played (exit class 129, 130 or 143)

    index     1-based within its section ('steps', 'finally'; 'tls' for the TLS step)
    location  'file:line' (a fragment's file:line for included steps)
    via       the including step(s), 'x.yaml:12', when included
    action    send | body | body_file | raw | sleep | read | tls
    sent      what was sent, masked, for display (C line; body summary)
    expected  the S pattern as text, masked
    reply     masked copy of the reply (secrets replaced)
    reason    why it failed / was skipped
    elapsed   seconds, from send (or start of read) to reply complete
    captures  name -> masked value
    performed_by  for a step skipped because the spawned program performs it itself, that
              program ('openssl s_client -starttls smtp'); None otherwise. Reporters group such
              steps by this field; `reason` is for people and is never parsed
    tls       the TLS step (section and action 'tls', name 'TLS', index 1: a session's
              `tls_expect:` checked after its handshake): the facts it checked (TLSInfo);
              `expected` lists the checks, `reason` each failed one. None for other steps
    snapshot  with --snapshot (runner.snapshot.check): match | new | updated | differs |
              missing, or None when the reply was not compared
    snapshot_diff  the unified diff of the stored reply and this one (both masked), or None
    condition the capability expression (runner.lang.requires) that did not hold, for a step
              skipped by `requires` (its own or its session's) or not needed by `when`
    time_limit 'max_time' | 'min_time' for a step that failed because its reply came too late
              or too soon; None otherwise"""

    __slots__ = (
        "index",
        "section",
        "location",
        "via",
        "action",
        "status",
        "name",
        "sent",
        "expected",
        "reply",
        "reason",
        "exit_class",
        "elapsed",
        "captures",
        "performed_by",
        "tls",
        "snapshot",
        "snapshot_diff",
        "condition",
        "time_limit",
    )

    def __init__(
        self,
        index: int,
        section: str,
        location: str,
        via: str | None,
        action: str,
        status: Status,
        name: str | None = None,
        sent: str | None = None,
        expected: str | None = None,
        reply: Reply | None = None,
        reason: str | None = None,
        exit_class: ExitClass = ExitClass.OK,
        elapsed: float = 0.0,
        captures: dict[str, str] | None = None,
        performed_by: str | None = None,
        tls: TLSInfo | None = None,
        snapshot: str | None = None,
        snapshot_diff: str | None = None,
        condition: str | None = None,
        time_limit: str | None = None,
    ):
        self.index = index
        self.section = section
        self.location = location
        self.via = via
        self.action = action
        self.status = status
        self.name = name
        self.sent = sent
        self.expected = expected
        self.reply = reply
        self.reason = reason
        self.exit_class = exit_class
        self.elapsed = elapsed
        self.captures = {} if captures is None else captures
        self.performed_by = performed_by
        self.tls = tls
        self.snapshot = snapshot
        self.snapshot_diff = snapshot_diff
        self.condition = condition
        self.time_limit = time_limit

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


class SessionResult(Record):
    """attempt: 1-based, > 1 when retry re-ran the session; attempts: how many were allowed;
    reason: e.g. a connect error before any step ran; condition: for a session skipped by its
    (or its scenario's) `requires`, the expression that did not hold; capabilities: the last
    capability list the server sent (runner.protocols.caps), None when it sent none."""

    __slots__ = (
        "name",
        "protocol",
        "attempt",
        "attempts",
        "steps",
        "status",
        "exit_class",
        "reason",
        "peer",
        "transport",
        "tls",
        "duration",
        "condition",
        "capabilities",
    )

    def __init__(
        self,
        name: str,
        protocol: str,
        attempt: int,
        attempts: int,
        steps: list[StepResult] | None = None,
        status: Status = "passed",
        exit_class: ExitClass = ExitClass.OK,
        reason: str | None = None,
        peer: str | None = None,
        transport: str | None = None,
        tls: TLSInfo | None = None,
        duration: float = 0.0,
        condition: str | None = None,
        capabilities: dict[str, str] | None = None,
    ):
        self.name = name
        self.protocol = protocol
        self.attempt = attempt
        self.attempts = attempts
        self.steps = [] if steps is None else steps
        self.status = status
        self.exit_class = exit_class
        self.reason = reason
        self.peer = peer
        self.transport = transport
        self.tls = tls
        self.duration = duration
        self.condition = condition
        self.capabilities = capabilities


class ScenarioResult(Record):
    """provider: the matrix label, reported as name[provider]; reason: set when the scenario
    could not run at all (invalid, connect); started_at: time.time() (wall clock) for reports;
    retries: connection-class retries before the first byte (suite --retries)."""

    __slots__ = (
        "file",
        "name",
        "provider",
        "sessions",
        "status",
        "exit_class",
        "reason",
        "duration",
        "started_at",
        "retries",
    )

    def __init__(
        self,
        file: str,
        name: str,
        provider: str | None = None,
        sessions: list[SessionResult] | None = None,
        status: Status = "passed",
        exit_class: ExitClass = ExitClass.OK,
        reason: str | None = None,
        duration: float = 0.0,
        started_at: float = 0.0,
        retries: int = 0,
    ):
        self.file = file
        self.name = name
        self.provider = provider
        self.sessions = [] if sessions is None else sessions
        self.status = status
        self.exit_class = exit_class
        self.reason = reason
        self.duration = duration
        self.started_at = started_at
        self.retries = retries

    @property
    def display_name(self) -> str:
        return f"{self.name}[{self.provider}]" if self.provider else self.name

    @property
    def steps(self) -> list[StepResult]:
        return [s for sess in self.sessions for s in sess.steps]


def last_attempts(result: ScenarioResult) -> list[SessionResult]:
    """The sessions of a ScenarioResult that count: each session's last attempt (earlier
    attempts that a session `retry` replaced are left out), in order."""
    last: dict[str, SessionResult] = {}
    for sess in result.sessions:
        last[sess.name] = sess
    return list(last.values())


def performed_counts(result: ScenarioResult) -> dict[str, int]:
    """program -> how many steps of the sessions that count (last_attempts) it performed itself
    (`performed_by`: openssl s_client -starttls plays the steps up to STARTTLS), in the order
    first met; empty when no program performed any."""
    counts: dict[str, int] = {}
    for sess in last_attempts(result):
        for st in sess.steps:
            if st.performed_by:
                counts[st.performed_by] = counts.get(st.performed_by, 0) + 1
    return counts


def performed_total(result: ScenarioResult) -> int:
    """How many steps the transport's program performed (the sum of performed_counts)."""
    return sum(performed_counts(result).values())


def skipped_by_requires(result: ScenarioResult) -> bool:
    """Did a `requires` skip anything in this run (what --fail-on-skip makes exit 1)?"""
    return any(s.condition is not None and s.status == "skipped" for s in result.sessions) or any(
        st.condition is not None and st.status == "skipped" for st in result.steps
    )
