"""The conversation engine: plays a scenario's sessions, in order, each over one transport and one
protocol, and emits the events of runner.events as things happen; reporters listen. The same
engine serves every transport (socket, telnet, openssl) and every protocol (smtp, pop3, imap, line).

    run.py        Engine: the scenario (context, preflight, sessions in order, a session's retry)
    plan.py       what a run works out once about its sessions and steps
    preflight.py  the checks before anything connects
    session.py    SessionRunner: connect, the steps, close
    actions.py    one sender per step action, and the one check of outgoing data
    receive.py    reading what a step expects, under one deadline
    idle.py       the idle: step (IMAP IDLE), the session it names in `during` played inside it
    verdicts.py   a step's error -> its verdict
    checks.py     a run none of whose checks was played is not a pass
"""

from __future__ import annotations

import os
import time

from runner.engine.checks import nothing_checked
from runner.engine.idle import during_sessions
from runner.engine.plan import plan_scenario
from runner.engine.preflight import preflight_scenario, session_started, shown_peer
from runner.engine.session import SessionRunner
from runner.errors import ExitClass, ScenarioError, most_severe
from runner.events import Event, Retrying, ScenarioFinished, ScenarioStarted, SessionFinished
from runner.interrupt import Interrupt, interrupted_reason
from runner.lang.render import Context
from runner.lang.secrets import Redactor
from runner.lang.templates import TemplateError
from runner.model.config import resolve_connect
from runner.results import ScenarioResult, SessionResult

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from runner.engine.plan import SessionPlan
    from runner.model.config import ConnectConfig
    from runner.model.scenario import Scenario, Session
    from runner.snapshot.check import SnapshotBook, SnapshotRun

    Emit = Callable[[Event], None]


class RunOptions:
    """What the command line adds to every scenario run: env (`env.*`), variables (--vars-file,
    --var), overrides (--host, --port, ...), adjust_connect (--sandbox), the plaintext opt-in,
    the run id, snapshots (--snapshot: a runner.snapshot.check.SnapshotBook, or None) and the
    run's Interrupt (runner.interrupt: a signal stops every session)."""

    __slots__ = (
        "env",
        "variables",
        "overrides",
        "adjust_connect",
        "allow_plaintext_secrets",
        "run_id",
        "snapshots",
        "interrupt",
    )

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        adjust_connect: Callable[[ConnectConfig], ConnectConfig] | None = None,
        allow_plaintext_secrets: bool = False,
        run_id: str = "",
        snapshots: SnapshotBook | None = None,
        interrupt: Interrupt | None = None,
    ):
        self.env = {} if env is None else env
        self.variables = {} if variables is None else variables
        self.overrides = {} if overrides is None else overrides
        self.adjust_connect = adjust_connect
        self.allow_plaintext_secrets = allow_plaintext_secrets
        self.run_id = run_id
        self.snapshots = snapshots
        self.interrupt = Interrupt() if interrupt is None else interrupt

    def __repr__(self) -> str:  # names only: values may be secrets
        return f"RunOptions(env={sorted(self.env)}, variables={sorted(self.variables)}, overrides={self.overrides!r})"


class Engine:
    """Plays scenarios for one set of RunOptions; `emit` receives every event."""

    def __init__(self, options: RunOptions, emit: Emit):
        self.options = options
        self._emit = emit
        self.redactor: Redactor | None = None  # the running scenario's (for an internal error)
        self.snapshot: SnapshotRun | None = None  # the running scenario's snapshot (--snapshot)
        self.session: SessionResult | None = None  # the session playing (kept when interrupted)
        self.inner: dict[str, SessionPlan] = {}  # the sessions `idle:` steps play (during)
        self.inner_results: list[SessionResult] = []  # theirs, reported after their outer one

    def emit(self, event: Event) -> None:
        self._emit(event)

    def connect_config(self, session: Session, ctx: Context) -> ConnectConfig:
        """The session's connection: its `connect` resolved with the overrides, then adjusted
        (--sandbox). Raises ScenarioError / TemplateError."""
        options = self.options
        config = resolve_connect(session, ctx, options.overrides)
        if options.adjust_connect:
            config = options.adjust_connect(config)
        return config

    # ------------------------------------------------------------------ scenario
    def new_context(self, scenario: Scenario, extra_vars: Mapping[str, Any] | None = None) -> Context:
        """Variables, later ones winning: the scenario's `vars`, then the provider's (`--matrix`:
        values are templates, so a provider file can say `password: "{{ env.GMAIL_PASSWORD }}"`),
        then the command line's (--vars-file, --var: literal values). Names the scenario does
        not define come first, so the scenario's own vars may use them. Raises TemplateError."""
        ctx = Context(
            env=self.options.env, secrets=scenario.secrets, redactor=Redactor(), run_id=self.options.run_id
        )
        matrix = dict(extra_vars or {})
        given = dict(self.options.variables)
        ctx.outside = frozenset(matrix) | frozenset(given)  # (these win over a fragment's defaults)
        for name, value in matrix.items():
            if name not in scenario.vars and name not in given:
                ctx.define_vars({name: value})
        for name, value in given.items():
            if name not in scenario.vars:
                ctx.set(name, value)
        for name, value in scenario.vars.items():
            if name in given:
                ctx.set(name, given[name])
            elif name in matrix:
                ctx.define_vars({name: matrix[name]})
            else:
                ctx.define_vars({name: value})
        return ctx

    def run(
        self, scenario: Scenario, *, provider: str | None = None, extra_vars: Mapping[str, str] | None = None
    ) -> ScenarioResult:
        started = time.monotonic()
        result = ScenarioResult(
            file=str(scenario.path), name=scenario.name, provider=provider, started_at=time.time()
        )
        self.emit(
            ScenarioStarted(file=result.file, name=scenario.name, provider=provider, at=result.started_at)
        )
        try:
            self.play(scenario, extra_vars, result)
            return result
        except KeyboardInterrupt as exc:
            result.status, result.exit_class, result.reason = interrupted_reason(exc)
            raise
        except Exception as exc:  # a bug of ours: reported as this run's error, never as a pass
            if os.environ.get("MAILRUN_DEBUG"):
                import traceback

                traceback.print_exc()
            redactor = self.redactor
            text = f"{type(exc).__name__}: {exc}"
            result.status, result.exit_class = "error", ExitClass.NETWORK
            result.reason = "internal error: " + (redactor.redact(text) if redactor else type(exc).__name__)
            return result
        finally:
            result.duration = time.monotonic() - started
            self.emit(ScenarioFinished(result=result, at=time.time()))

    def play(self, scenario: Scenario, extra_vars: Mapping[str, str] | None, result: ScenarioResult) -> None:
        """Context, preflight, then the sessions in order until one does not pass; into result.
        The plans (with preflight's renderings, secrets among them) end with the run."""
        try:
            ctx = self.new_context(scenario, extra_vars)
        except (TemplateError, ScenarioError) as exc:
            result.status, result.exit_class, result.reason = "error", ExitClass.INVALID, str(exc)
            return
        self.redactor = ctx.redactor
        plans = plan_scenario(scenario)
        options = self.options
        if options.snapshots is not None:
            self.snapshot = options.snapshots.run_for(scenario, result.provider, ctx.redactor, options.run_id)
        refused = preflight_scenario(
            scenario, plans, ctx, self.connect_config, options.allow_plaintext_secrets, self._emit
        )
        if refused is not None:
            result.sessions.append(refused)
            result.status, result.exit_class, result.reason = "error", ExitClass.INVALID, refused.reason
            return
        inner = during_sessions(scenario)
        self.inner = {p.session.name: p for p in plans if p.session.name in inner}
        self.inner_results = []
        plans = [p for p in plans if p.session.name not in inner]
        for i, plan in enumerate(plans):
            options.interrupt.check()
            self.session = None
            try:
                session_result = self.run_session_with_retry(scenario, plan, ctx)
            except KeyboardInterrupt:  # the steps the session played are reported
                if self.session is not None:
                    result.sessions.append(self.session)
                result.sessions.extend(self.take_inner())
                raise
            result.sessions.append(session_result)
            result.sessions.extend(self.take_inner())
            if session_result.status != "passed":
                later = len(plans) - i - 1
                if later:
                    result.reason = f"session '{plan.session.name}' {session_result.status}; {later} later session(s) not run"
                break
        result.exit_class = most_severe([s.exit_class for s in result.sessions])
        result.status = _status_for(result.exit_class)
        if result.status == "passed" and any(s.status == "skipped" for s in result.sessions):
            result.status = "skipped"  # a session's (or the scenario's) requires did not hold
        if (unchecked := nothing_checked(result)) is not None:  # no check was played
            result.status, result.exit_class, result.reason = unchecked
        if result.status != "passed" and result.reason is None:
            failed = next((s for s in result.sessions if s.status != "passed"), None)
            result.reason = failed.reason if failed else None

    def run_session_with_retry(self, scenario: Scenario, plan: SessionPlan, ctx: Context) -> SessionResult:
        """The session, played again (its `retry:`) while it fails for a reason other than an
        invalid scenario; one Retrying event before each new attempt."""
        session = plan.session
        attempts = session.retry.attempts if session.retry else 1
        interval = session.retry.interval if session.retry else 0.0
        attempt = 1
        while True:
            result = self.run_session(scenario, plan, ctx, attempt, attempts)
            if (
                result.status in ("passed", "skipped")
                or result.exit_class == ExitClass.INVALID
                or attempt >= attempts
            ):
                return result
            if self.snapshot is not None:
                from runner.snapshot.check import only_snapshot_failures

                if only_snapshot_failures(result.steps):
                    return result  # a snapshot difference would only come again
            self.emit(
                Retrying("session", session.name, attempt, attempts, result.reason, interval, time.time())
            )
            if interval > 0:
                self.options.interrupt.sleep(interval)
            attempt += 1

    def take_inner(self) -> list[SessionResult]:
        taken, self.inner_results = self.inner_results, []
        return taken

    def run_during(self, scenario: Scenario, name: str, ctx: Context) -> SessionResult:
        """A session an `idle:` step plays while its connection idles: with the same context,
        announced and retried like any session; its result follows the outer one's."""
        outer = self.session
        try:
            inner = self.run_session_with_retry(scenario, self.inner[name], ctx)
        except KeyboardInterrupt:
            if self.session is not None and self.session is not outer:
                self.inner_results.append(self.session)
            raise
        finally:
            self.session = outer
        self.inner_results.append(inner)
        return inner

    # ------------------------------------------------------------------ session
    def run_session(
        self, scenario: Scenario, plan: SessionPlan, ctx: Context, attempt: int, attempts: int
    ) -> SessionResult:
        started = time.monotonic()
        session = plan.session
        result = self.session = SessionResult(
            name=session.name, protocol=session.protocol, attempt=attempt, attempts=attempts
        )
        try:
            try:
                config = plan.take_config() or self.connect_config(session, ctx)
            except (ScenarioError, TemplateError) as exc:
                result.status, result.exit_class, result.reason = "error", ExitClass.INVALID, str(exc)
                return result
            result.peer = shown_peer(config, ctx.redactor.redact)
            result.transport = config.transport
            self.emit(session_started(scenario, session, attempt, attempts, config, ctx.redactor.redact))
            runner = SessionRunner(
                plan,
                ctx,
                config,
                result,
                self._emit,
                self.options.allow_plaintext_secrets,
                self.snapshot,
                interrupt=self.options.interrupt,
            )
            runner.during = lambda name: self.run_during(scenario, name, ctx)
            runner.play()
            return result
        finally:
            result.duration = time.monotonic() - started
            self.emit(SessionFinished(result=result, at=time.time()))


def _status_for(exit_class: ExitClass) -> str:
    if exit_class == ExitClass.OK:
        return "passed"
    if exit_class == ExitClass.FAILED:
        return "failed"
    return "error"
