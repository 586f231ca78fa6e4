"""The conversation engine: walks a scenario's steps over one transport and one protocol.

For each step it renders the templates (secrets stay secret), sends, asks the sans-IO protocol
for the reply, matches the `S:` pattern, captures, and records a StepResult. It emits the
events of runner.results as things happen; reporters listen. The same engine serves every
transport (socket, telnet, openssl) and every protocol (smtp, pop3, imap, line).
"""

from __future__ import annotations

import os
import time

from runner import protocols, transports
from runner.errors import (
    ConnectionClosed,
    DeadlineError,
    ExitClass,
    MailrunError,
    NetworkError,
    ProtocolError,
    ScenarioError,
    most_severe,
)
from runner.events import (
    Closed,
    Connected,
    Event,
    Note,
    Received,
    ScenarioFinished,
    ScenarioStarted,
    Sent,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TLSStarted,
)
from runner.lang.patterns import capture as capture_value
from runner.lang.secrets import Redactor
from runner.lang.templates import Context, Rendered, TemplateError, parse, render
from runner.model.config import resolve_connect
from runner.protocols.base import Reply, decode
from runner.protocols.smtp import encode_body
from runner.results import ScenarioResult, SessionResult, StepResult
from runner.transports.base import is_loopback

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from runner.model.config import ConnectConfig
    from runner.model.scenario import Scenario, Session, Step

    Emit = Callable[[Event], None]


class StepFailure(Exception):
    """Internal: ends a step with a verdict."""

    def __init__(self, status: str, exit_class: ExitClass, reason: str, reply: Reply | None = None):
        super().__init__(reason)
        self.status = status
        self.exit_class = exit_class
        self.reason = reason
        self.reply = reply


class RunOptions:
    """What the command line adds to every scenario run: env (`env.*`), variables (--vars-file,
    --var), overrides (--host, --port, ...), adjust_connect (--sandbox), the plaintext opt-in
    and the run id."""

    __slots__ = ("env", "variables", "overrides", "adjust_connect", "allow_plaintext_secrets", "run_id")

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        adjust_connect: Callable[[ConnectConfig], ConnectConfig] | None = None,
        allow_plaintext_secrets: bool = False,
        run_id: str = "",
    ):
        self.env = {} if env is None else env
        self.variables = {} if variables is None else variables
        self.overrides = {} if overrides is None else overrides
        self.adjust_connect = adjust_connect
        self.allow_plaintext_secrets = allow_plaintext_secrets
        self.run_id = run_id

    def __repr__(self) -> str:  # names only: values may be secrets
        return f"RunOptions(env={sorted(self.env)}, variables={sorted(self.variables)}, overrides={self.overrides!r})"


class Engine:
    def __init__(self, options: RunOptions, emit: Emit):
        self.options = options
        self._emit = emit
        self._configs: dict[int, ConnectConfig] = {}  # resolved by preflight, used by the first attempt
        # step id -> (step, Rendered): what preflight rendered, for steps whose text depends on
        # nothing the conversation can change (no capture, no include scope, no `now`); used once
        self._prerendered: dict[int, tuple[Step, Rendered]] = {}

    def emit(self, event: Event) -> None:
        self._emit(event)

    def prerendered(self, step: Step) -> Rendered | None:
        """What preflight rendered for this step, once (see preflight's `keep`)."""
        entry = self._prerendered.pop(id(step), None)
        return entry[1] if entry is not None and entry[0] is step else None

    def connect_config(self, session: Session, ctx: Context) -> ConnectConfig:
        options = self.options
        config = _constant_connect(session, options.overrides)
        if config is None:
            config = resolve_connect(session, ctx, options.overrides)
            _remember_connect(session, options.overrides, config)
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
            try:
                ctx = self.new_context(scenario, extra_vars)
            except (TemplateError, ScenarioError) as exc:
                result.status, result.exit_class, result.reason = "error", ExitClass.INVALID, str(exc)
                return result
            self.redactor = ctx.redactor
            refused = self.preflight_all(scenario, ctx)
            if refused is not None:
                result.sessions.append(refused)
                result.status, result.exit_class, result.reason = "error", ExitClass.INVALID, refused.reason
                return result
            for i, session in enumerate(scenario.sessions):
                session_result = self.run_session_with_retry(scenario, session, ctx)
                result.sessions.append(session_result)
                if session_result.status != "passed":
                    later = len(scenario.sessions) - i - 1
                    if later:
                        result.reason = f"session '{session.name}' {session_result.status}; {later} later session(s) not run"
                    break
            classes = [s.exit_class for s in result.sessions]
            result.exit_class = most_severe(classes)
            result.status = _status_for(result.exit_class)
            if result.status != "passed" and result.reason is None:
                failed = next((s for s in result.sessions if s.status != "passed"), None)
                result.reason = failed.reason if failed else None
            return result
        except KeyboardInterrupt:
            result.status, result.exit_class, result.reason = "error", ExitClass.INTERRUPTED, "interrupted"
            raise
        except Exception as exc:  # a bug of ours: reported as this run's error, never as a pass
            if os.environ.get("MAILRUN_DEBUG"):
                import traceback

                traceback.print_exc()
            redactor = getattr(self, "redactor", None)
            text = f"{type(exc).__name__}: {exc}"
            result.status, result.exit_class = "error", ExitClass.NETWORK
            result.reason = "internal error: " + (redactor.redact(text) if redactor else type(exc).__name__)
            return result
        finally:
            self._prerendered.clear()  # renderings (secrets among them) do not outlive the run
            result.duration = time.monotonic() - started
            self.emit(ScenarioFinished(result=result, at=time.time()))

    def preflight_all(self, scenario: Scenario, ctx: Context) -> SessionResult | None:
        """Before anything connects: every step of every session whose templates can already be
        rendered (they need no capture) is rendered and checked (CR/LF in a `C` line, the
        plaintext guard). The first refused step ends the run before a byte is sent: its
        session's result (exit class 2) is returned, with that step's result in it."""
        captured = _captured_names(scenario)
        for session in scenario.sessions:
            try:
                config = self.connect_config(session, ctx)
                self._configs[id(session)] = config
            except (ScenarioError, TemplateError) as exc:
                if _needs_capture(session, ctx):
                    config = None  # reported when the session runs, once the capture exists
                else:
                    # every value is known now (e.g. --transport telnet on a TLS session): a
                    # later session's bad connection must not let earlier sessions send first
                    result = SessionResult(
                        name=session.name, protocol=session.protocol, attempt=1, attempts=1
                    )
                    result.status, result.exit_class = "error", ExitClass.INVALID
                    result.reason = f"{ctx.redactor.redact(str(exc))}; nothing was sent"
                    self.emit(SessionFinished(result=result, at=time.time()))
                    return result
            problem = preflight(
                session, ctx, config, self.options.allow_plaintext_secrets, self._prerendered, captured
            )
            if problem is None:
                continue
            step, section, index, reason = problem
            result = SessionResult(name=session.name, protocol=session.protocol, attempt=1, attempts=1)
            if config is not None:
                result.peer, result.transport = f"{config.host}:{config.port}", config.transport
            self.emit(
                SessionStarted(
                    scenario=scenario.name,
                    name=session.name,
                    protocol=session.protocol,
                    attempt=1,
                    attempts=1,
                    host=config.host if config else "?",
                    port=config.port if config else 0,
                    transport=config.transport if config else "socket",
                    tls_mode=config.tls if config else "none",
                    at=time.time(),
                )
            )
            sr = _new_result(step, index, section)
            sr.status, sr.exit_class = "error", ExitClass.INVALID
            sr.reason = ctx.redactor.redact(reason)
            sr.sent = ctx.redactor.redact(step.text or "")
            if step.expect is not None:
                sr.expected = ctx.redactor.redact(step.expect.describe())
            result.steps.append(sr)
            self.emit(StepFinished(result=sr, at=time.time()))
            result.status, result.exit_class = "error", ExitClass.INVALID
            result.reason = f"step {index} ({step.location.describe()}): {sr.reason}; nothing was sent"
            self.emit(SessionFinished(result=result, at=time.time()))
            return result
        return None

    def run_session_with_retry(self, scenario: Scenario, session: Session, ctx: Context) -> SessionResult:
        attempts = session.retry.attempts if session.retry else 1
        interval = session.retry.interval if session.retry else 0.0
        result = None
        for attempt in range(1, attempts + 1):
            result = self.run_session(scenario, session, ctx, attempt, attempts)
            if result.status == "passed" or result.exit_class == ExitClass.INVALID:
                break
            if attempt < attempts and interval > 0:
                self.emit(
                    Note(
                        "info",
                        f"session '{session.name}' attempt {attempt} of {attempts} "
                        f"{result.status}; retrying in {interval:g} s",
                        time.time(),
                    )
                )
                time.sleep(interval)
        assert result is not None
        return result

    # ------------------------------------------------------------------ session
    def run_session(
        self, scenario: Scenario, session: Session, ctx: Context, attempt: int, attempts: int
    ) -> SessionResult:
        started = time.monotonic()
        result = SessionResult(
            name=session.name, protocol=session.protocol, attempt=attempt, attempts=attempts
        )
        runner = None
        try:
            try:
                config = self._configs.pop(id(session), None) or self.connect_config(session, ctx)
            except (ScenarioError, TemplateError) as exc:
                result.status, result.exit_class, result.reason = "error", ExitClass.INVALID, str(exc)
                return result
            result.peer = f"{config.host}:{config.port}"
            result.transport = config.transport
            self.emit(
                SessionStarted(
                    scenario=scenario.name,
                    name=session.name,
                    protocol=session.protocol,
                    attempt=attempt,
                    attempts=attempts,
                    host=config.host,
                    port=config.port,
                    transport=config.transport,
                    tls_mode=config.tls,
                    at=time.time(),
                )
            )
            runner = SessionRunner(self, session, ctx, config, result)
            runner.play()
            return result
        finally:
            result.duration = time.monotonic() - started
            self.emit(SessionFinished(result=result, at=time.time()))


CRLF_REFUSAL = (
    "refusing to send: the rendered C line contains a CR or LF (command injection); "
    "use raw: or body: for multi-line data"
)


def plaintext_refusal(host: str) -> str:
    return (
        f"refusing to send a secret unencrypted to {host} (not loopback); use tls: implicit or "
        "starttls, or opt in with connect.allow_plaintext_secrets: true or --allow-plaintext-secrets"
    )


def _needs_capture(session: Session, ctx: Context) -> bool:
    """True when a `connect` value names a variable nobody has defined yet (a capture of an
    earlier session will): its checks can only run when the session starts."""
    for raw in session.connect.values.values():
        if not isinstance(raw, str):
            continue
        try:
            names = parse(raw).required_names()
        except TemplateError:
            return False
        if any(not n.startswith("env.") and not ctx.has(n) for n in names):
            return True
    return False


def plaintext_guard_applies(config: ConnectConfig, allow_plaintext_secrets: bool) -> bool:
    """Whether a secret sent unencrypted on this connection is refused: the host is outside
    loopback and neither the scenario nor the command line opted in."""
    return not (allow_plaintext_secrets or config.allow_plaintext_secrets or is_loopback(config.host))


def _step_context(step: Step, ctx: Context) -> Context:
    for b in step.bindings:
        ctx = ctx.child(b)
    return ctx


def preflight(
    session: Session,
    ctx: Context,
    config: ConnectConfig | None,
    allow_plaintext_secrets: bool = False,
    keep: dict[int, tuple[Step, Rendered]] | None = None,
    captured: frozenset[str] = frozenset(),
) -> tuple[Step, str, int, str] | None:
    """The checks that can be made before connecting: renders every `C`, `body` and `raw` step
    whose templates need nothing the conversation will capture, and returns the first
    (step, section, index, reason) that would be refused: a `C` line containing CR or LF, or a
    secret that would travel unencrypted to a host outside loopback (the plaintext guard;
    `config` None skips that check). None when nothing is refused. Sends nothing.
    `keep` collects the renderings that stay valid until the step runs."""
    guard = config is not None and plaintext_guard_applies(config, allow_plaintext_secrets)
    if config is None or config.tls == "implicit" or config.transport == "openssl":
        plaintext = False  # openssl s_client encrypts, and performs STARTTLS itself
    else:
        plaintext = True
    for section, index, step, encrypted, names in _templated_steps(session):
        # (constant text was checked by the loader and cannot hold a secret)
        try:
            rendered = render(step.text, _step_context(step, ctx))
        except TemplateError:
            continue  # needs a capture (or is broken): checked when it runs
        if (
            keep is not None
            and step.action != "raw"  # (a raw step renders when it runs)
            and not step.bindings
            and "now" not in names
            and not (names & captured)
        ):
            # still what rendering would give when the step runs: no include scope (whose
            # bindings may use captures), no variable a capture can set, not the time
            keep[id(step)] = (step, rendered)
        if step.action == "send" and ("\r" in rendered.value or "\n" in rendered.value):
            return step, section, index, CRLF_REFUSAL
        if guard and plaintext and not encrypted and rendered.secret:
            return step, section, index, plaintext_refusal(config.host)  # type: ignore[union-attr]
    return None


# What never changes for a model object, worked out once per object rather than on every run:
# id -> (object, value). The entry holds the object, so its id cannot be reused while the entry
# lives; these memos (and _CONNECT_MEMO) rely on the model being read-only once loaded.
_TEMPLATED: dict[int, tuple[Session, tuple]] = {}  # per session: _find_templated_steps
_STEP_INFO: dict[int, tuple[Step, tuple]] = {}  # per step: _find_step_info


def _memo(table: dict, obj, make, limit: int):
    entry = table.get(id(obj))
    if entry is not None and entry[0] is obj:
        return entry[1]
    if len(table) > limit:
        table.clear()
    value = make(obj)
    table[id(obj)] = (obj, value)
    return value


def _templated_steps(session: Session) -> tuple[tuple[str, int, Step, bool, frozenset[str]], ...]:
    return _memo(_TEMPLATED, session, _find_templated_steps, 256)


def _step_info(step: Step) -> tuple[str, str | None, str | None]:
    return _memo(_STEP_INFO, step, _find_step_info, 4096)


def _find_templated_steps(session: Session) -> tuple[tuple[str, int, Step, bool, frozenset[str]], ...]:
    """(section, index, step, after STARTTLS, names used) of every `C`, `body` and `raw` step
    whose text is a template, in order. 'after STARTTLS': a STARTTLS step comes before it
    (every `finally` step of a session that has one counts as after it)."""
    out = []
    encrypted = False
    has_starttls = any(s.starttls for s in session.steps)
    for section, steps in (("steps", session.steps), ("finally", session.finally_steps)):
        if section == "finally" and has_starttls:
            encrypted = True
        for index, step in enumerate(steps, 1):
            if (
                step.action in ("send", "body", "raw")
                and step.text is not None
                and not parse(step.text).is_constant
            ):
                out.append((section, index, step, encrypted, frozenset(parse(step.text).names())))
            if step.starttls:
                encrypted = True
    return tuple(out)


def _find_step_info(step: Step) -> tuple[str, str | None, str | None]:
    """What a StepResult shows of its step that never changes: ('file:line', the include chain
    or None, the S pattern as written or None)."""
    loc = step.location
    via = " <- ".join(str(v) for v in reversed(loc.via)) or None
    return str(loc), via, step.expect.describe() if step.expect is not None else None


def _captured_names(scenario: Scenario) -> frozenset[str]:
    """Every variable a capture of this scenario can set."""
    return frozenset(
        name for sess in scenario.sessions for st in (*sess.steps, *sess.finally_steps) for name in st.capture
    )


# Connect settings with no template in them resolve to the same ConnectConfig on every run:
# session id -> (session, overrides, config). The entry holds the session, so the id cannot be
# reused while it lives; the overrides are compared by value.
_CONNECT_MEMO: dict[int, tuple[Session, dict, ConnectConfig]] = {}


def _constant_connect(session: Session, overrides: Mapping[str, Any]) -> ConnectConfig | None:
    memo = _CONNECT_MEMO.get(id(session))
    if memo is not None and memo[0] is session and memo[1] == overrides:
        return memo[2]
    return None


def _remember_connect(session: Session, overrides: Mapping[str, Any], config: ConnectConfig) -> None:
    if any(isinstance(v, str) and not parse(v).is_constant for v in session.connect.values.values()):
        return
    if len(_CONNECT_MEMO) > 256:
        _CONNECT_MEMO.clear()
    _CONNECT_MEMO[id(session)] = (session, dict(overrides), config)


def _new_result(step: Step, index: int, section: str) -> StepResult:
    location, via, _ = _step_info(step)
    return StepResult(index, section, location, via, step.action, "passed", step.name)


def _status_for(exit_class: ExitClass) -> str:
    if exit_class == ExitClass.OK:
        return "passed"
    if exit_class == ExitClass.FAILED:
        return "failed"
    return "error"


class SessionRunner:
    """Plays one session's steps over one connection."""

    def __init__(
        self, engine: Engine, session: Session, ctx: Context, config: ConnectConfig, result: SessionResult
    ):
        self.engine = engine
        self.session = session
        self.ctx = ctx
        self.config = config
        self.result = result
        self.redactor: Redactor = ctx.redactor
        self.protocol = protocols.create(
            session.protocol, max_line=config.max_line, max_reply=config.max_reply
        )
        self.transport = None
        self.connected = False  # the connection is open and usable
        self.emit = engine._emit  # straight to the listener: one call per event
        self._check_sendable = None  # the transport's check of bytes it cannot send exactly
        self._held: list[tuple[bytes, float]] | None = None  # received, passed on after a capture
        self._scopes: dict[tuple, Context] = {}

    def note(self, kind: str, text: str) -> None:
        self.emit(Note(kind, self.redactor.redact(text), time.time()))

    # ------------------------------------------------------------------
    def play(self) -> None:
        result = self.result
        try:
            self.transport = transports.create(self.config, on_note=self.note)
            info = self.transport.connect()
        except MailrunError as exc:
            result.status = "error"
            result.exit_class = exc.exit_class
            result.reason = self.redactor.redact(str(exc))
            self._close_quietly()
            return
        except KeyboardInterrupt:  # Ctrl-C while connecting: nothing to report but the interruption
            result.status, result.exit_class, result.reason = "error", ExitClass.INTERRUPTED, "interrupted"
            self._close_quietly()
            raise
        self.connected = True
        self._check_sendable = getattr(self.transport, "check_sendable", None)
        self.emit(Connected(info=info, at=time.time()))
        if info.tls is not None:
            result.tls = info.tls
            self.emit(TLSStarted(info=info.tls, at=time.time()))
        if not self.config.tls_verify and self.config.tls != "none":
            self.note("warning", "TLS certificate verification is OFF (tls_verify: false / --insecure)")
        try:
            skip_until_starttls = self.transport.performs_starttls and self.config.tls == "starttls"
            failed = self.run_steps(self.session.steps, "steps", skip_until_starttls)
            if failed is not None:
                result.status, result.exit_class, result.reason = (
                    failed.status,
                    failed.exit_class,
                    failed.reason,
                )
            if self.connected and self.session.finally_steps:
                ffailed = self.run_steps(self.session.finally_steps, "finally", False)
                if ffailed is not None and failed is None:
                    result.status, result.exit_class, result.reason = (
                        ffailed.status,
                        ffailed.exit_class,
                        ffailed.reason,
                    )
            elif self.session.finally_steps:
                for i, step in enumerate(self.session.finally_steps, 1):
                    self.record_skip(step, i, "finally", "not run: the connection is closed")
        except KeyboardInterrupt:
            result.status, result.exit_class, result.reason = "error", ExitClass.INTERRUPTED, "interrupted"
            raise
        finally:
            by = "client" if self.connected else "server"
            try:
                self.transport.close()
            finally:
                self.emit(Closed(by=by, at=time.time()))

    def _close_quietly(self) -> None:
        if self.transport is not None:
            try:
                self.transport.close()
            except Exception:  # noqa: BLE001 - closing after a failed connect: nothing more to say
                pass

    def run_steps(self, steps, section: str, skip_until_starttls: bool):
        """Runs steps in order; returns the first failed StepResult (the rest are recorded as
        skipped), or None."""
        first_failure = None
        for i, step in enumerate(steps, 1):
            if first_failure is not None:
                self.record_skip(
                    step, i, section, f"not run: step {first_failure.index} {first_failure.status}"
                )
                continue
            if skip_until_starttls:
                reason = (
                    f"performed by openssl s_client -starttls {self.config.protocol}"
                    if not step.starttls
                    else f"STARTTLS performed by openssl s_client -starttls {self.config.protocol}"
                )
                sr = self.record_skip(step, i, section, reason)
                if step.starttls:
                    skip_until_starttls = False
                    tls = self.transport.start_tls()
                    self.result.tls = tls
                    self.emit(TLSStarted(info=tls, at=time.time()))
                continue
            sr = self.run_step(step, i, section)
            if sr.status in ("failed", "error"):
                first_failure = sr
        return first_failure

    def record_skip(self, step: Step, index: int, section: str, reason: str) -> StepResult:
        sr = _new_result(step, index, section)
        sr.status = "skipped"
        sr.reason = reason
        # what the step would have sent, as written (template source: holds no secret value)
        if step.action in ("send", "raw", "body"):
            sr.sent = (
                self.redactor.redact(step.text or "")
                if step.action == "send"
                else f"{step.action} (not sent)"
            )
        elif step.action == "body_file":
            sr.sent = f"body_file {step.path} (not sent)"
        if step.expect is not None:
            sr.expected = self.redactor.redact(step.expect.describe())
        self.result.steps.append(sr)
        self.emit(StepFinished(result=sr, at=time.time()))
        return sr

    def scope(self, step: Step) -> Context:
        if not step.bindings:
            return self.ctx
        key = tuple(id(b) for b in step.bindings)
        ctx = self._scopes.get(key)
        if ctx is None:
            ctx = self._scopes[key] = _step_context(step, self.ctx)
        return ctx

    # ------------------------------------------------------------------ one step
    def run_step(self, step: Step, index: int, section: str) -> StepResult:
        location, via, expected = _step_info(step)
        sr = StepResult(index, section, location, via, step.action, "passed", step.name)
        started = time.monotonic()
        redactor = self.redactor
        if step.capture and not self.ctx.secret_names.isdisjoint(step.capture):
            # the reply holds a secret that is registered only once captured: what arrives is
            # passed on (-v, transcripts) after that, so it is masked too
            self._held = []
        try:
            ctx = self.scope(step) if step.bindings else self.ctx
            expect = step.expect
            if expect is not None:
                sr.expected = redactor.redact(expected) if redactor.active else expected
            if step.action != "read":
                self.send(step, ctx, sr)
            if expect is not None:
                timeout = step.timeout if step.timeout is not None else self.config.timeout
                deadline = time.monotonic() + timeout
                if expect.is_eof:
                    self.expect_eof(deadline, timeout)
                else:
                    reply = self.read_reply(step, ctx, deadline, timeout)
                    if reply is None:  # the server closed cleanly and the pattern allows EOF
                        if step.capture:
                            raise StepFailure(
                                "failed",
                                ExitClass.FAILED,
                                "the server closed the connection; nothing to capture from",
                            )
                        return self.finish(sr, started)
                    sr.reply = self.masked(reply) if redactor.active else reply
                    outcome = expect.match(reply, ctx)
                    if not outcome.ok:
                        raise StepFailure(
                            "failed",
                            ExitClass.FAILED,
                            self.redactor.redact(outcome.reason or "no match"),
                            reply,
                        )
                    for name, regex in step.capture.items() if step.capture else ():
                        value = capture_value(reply, regex, ctx)
                        if value is None:
                            raise StepFailure(
                                "failed",
                                ExitClass.FAILED,
                                f"capture '{name}': pattern {self.redactor.redact(regex)!r} did not match the reply",
                                reply,
                            )
                        ctx.set(name, value)
                        sr.captures[name] = self.redactor.redact(value)
                    if self._held is not None:
                        sr.reply = self.masked(reply)  # again: the captured secret is known now
                    if step.starttls:
                        self.upgrade()
        except StepFailure as exc:
            sr.status, sr.exit_class, sr.reason = exc.status, exc.exit_class, exc.reason
            if exc.reply is not None and sr.reply is None:
                sr.reply = self.masked(exc.reply)
        except (ConnectionClosed, DeadlineError) as exc:
            sr.status, sr.exit_class, sr.reason = "error", ExitClass.NETWORK, self.redactor.redact(str(exc))
            if isinstance(exc, ConnectionClosed):
                self.connected = False
            partial = getattr(exc, "partial", b"")
            if partial:
                sr.reply = Reply(
                    raw=self.redactor.redact_bytes(partial),
                    lines=tuple(self.redactor.redact(decode(partial)).splitlines()),
                )
        except ProtocolError as exc:
            sr.status, sr.exit_class, sr.reason = "failed", ExitClass.FAILED, self.redactor.redact(str(exc))
        except (TemplateError, ScenarioError) as exc:
            sr.status, sr.exit_class, sr.reason = "error", ExitClass.INVALID, self.redactor.redact(str(exc))
        except NetworkError as exc:
            sr.status, sr.exit_class, sr.reason = "error", ExitClass.NETWORK, self.redactor.redact(str(exc))
            self.connected = False
        except MailrunError as exc:
            sr.status, sr.exit_class, sr.reason = "error", exc.exit_class, self.redactor.redact(str(exc))
        except KeyboardInterrupt:
            sr.status, sr.exit_class, sr.reason = "error", ExitClass.INTERRUPTED, "interrupted"
            self.finish(sr, started)
            raise
        return self.finish(sr, started)

    def finish(self, sr: StepResult, started: float) -> StepResult:
        sr.elapsed = time.monotonic() - started
        if self._held is not None:
            self._release_held()
        self.result.steps.append(sr)
        self.emit(StepFinished(result=sr, at=time.time()))
        return sr

    def _release_held(self) -> None:
        held, self._held = self._held, None
        redactor = self.redactor
        for data, at in held:
            self.emit(Received(data, at, redactor if redactor.active else None))

    def masked(self, reply: Reply) -> Reply:
        r = self.redactor
        # every text of a reply is decoded from its raw bytes (a 334 note from base64 in them,
        # whose forms the redactor knows too): no secret in raw, nothing to mask
        if not r.active or not r.contains(reply.raw):
            return reply
        return reply.replace(
            raw=r.redact_bytes(reply.raw),
            lines=tuple(r.redact(x) for x in reply.lines),
            texts=tuple(r.redact(x) for x in reply.texts),
            note=r.redact(reply.note) if reply.note else reply.note,
        )

    # ------------------------------------------------------------------ sending
    def send(self, step: Step, ctx: Context, sr: StepResult) -> None:
        action = step.action
        if action == "read":
            return
        if action == "sleep":
            sr.sent = f"sleep {step.seconds:g} s"
            time.sleep(step.seconds or 0)
            return
        secret = False
        redactor = self.redactor
        if action == "send":
            text = step.text or ""
            tpl = parse(text)
            if tpl.is_constant:  # no template: nothing to render, nothing from a secret
                value = text
            else:
                rendered = self.engine.prerendered(step) or render(tpl, ctx)
                value = rendered.value
                secret = rendered.secret
            if "\r" in value or "\n" in value:
                sr.sent = redactor.redact(text)  # as written: the template source
                raise StepFailure("error", ExitClass.INVALID, CRLF_REFUSAL)
            if secret:
                self.guard_plaintext(secret)
            data = self.protocol.command(value, tag=step.tag, multiline=step.multiline)
            shown = decode(data[:-2] if data.endswith(b"\r\n") else data)
            sr.sent = redactor.redact(shown) if redactor.active else shown
        elif action in ("body", "body_file"):
            if action == "body":
                rendered = self.engine.prerendered(step) or render(step.text or "", ctx)
                secret = rendered.secret
                content = rendered.value.encode("utf-8")
            else:
                try:
                    content = step.path.read_bytes()  # type: ignore[union-attr]
                except OSError as exc:
                    raise StepFailure(
                        "error", ExitClass.INVALID, f"cannot read body_file {step.path}: {exc.strerror}"
                    ) from None
                secret = self.redactor.contains(content)
            self.guard_plaintext(secret)
            data = encode_body(content)
            self.protocol.sent_raw(data, multiline=step.multiline)
            lines = data.count(b"\r\n") - 1
            sr.sent = f"{'body' if action == 'body' else 'body_file ' + str(step.path)} ({lines} lines, {len(data)} bytes)"
        elif action == "raw":
            if step.data is not None:
                data = step.data
                secret = self.redactor.contains(data)
            else:
                rendered = render(step.text or "", ctx)
                secret = rendered.secret
                data = rendered.value.encode("utf-8")
            self.guard_plaintext(secret)
            self.protocol.sent_raw(data, multiline=step.multiline)
            sr.sent = "raw " + self.redactor.redact(repr(decode(data))[1:-1])
        else:  # pragma: no cover - the loader only produces the actions above
            raise StepFailure("error", ExitClass.INVALID, f"unknown step action {action!r}")
        check = self._check_sendable
        if check is not None:
            problem = check(data)
            if problem:
                raise StepFailure("error", ExitClass.INVALID, problem)
        self.transport.send(data)
        redactor = self.redactor
        self.emit(Sent(data, time.time(), redactor if redactor.active else None))  # masked when read

    def guard_plaintext(self, secret: bool) -> None:
        if not secret or self.transport.encrypted:
            return
        if not plaintext_guard_applies(self.config, self.engine.options.allow_plaintext_secrets):
            return
        raise StepFailure("error", ExitClass.INVALID, plaintext_refusal(self.config.host))

    # ------------------------------------------------------------------ receiving
    def fill(self, deadline: float) -> None:
        """One transport read into the protocol. EOF is passed on to the protocol."""
        data = self.transport.recv(deadline)
        if not data:
            self.protocol.receive_eof()
            self.connected = False
            return
        if self._held is not None:
            self._held.append((data, time.time()))
        else:
            redactor = self.redactor
            self.emit(Received(data, time.time(), redactor if redactor.active else None))  # masked when read
        self.protocol.receive_data(data)

    def read_reply(self, step: Step, ctx: Context, deadline: float, timeout: float) -> Reply | None:
        proto = self.protocol
        if proto.expect_style:
            return self.read_lines(step, ctx, deadline, timeout)
        first_byte_at = None
        while True:
            reply = proto.next_reply()
            if reply is not None:
                reply.first_byte_at = first_byte_at
                reply.completed_at = time.monotonic()
                return reply
            if proto.at_eof:
                if step.expect.accepts_eof:
                    return None
                raise ConnectionClosed("the server closed the connection before replying")
            try:
                self.fill(deadline)
            except DeadlineError:
                pending = proto.pending()
                what = f"got {len(pending)} bytes of an incomplete reply" if pending else "nothing received"
                raise DeadlineError(
                    f"deadline: no complete reply within {timeout:g} s ({what})", pending
                ) from None
            if first_byte_at is None:
                first_byte_at = time.monotonic()

    def read_lines(self, step: Step, ctx: Context, deadline: float, timeout: float) -> Reply:
        """line protocol: read lines until the pattern matches or the deadline passes."""
        got: list[Reply] = []
        while True:
            reply = self.protocol.next_reply()
            if reply is not None:
                got.append(reply)
                merged = _merge(got)
                if step.expect.match(merged, ctx).ok:
                    return merged
                continue
            if self.protocol.at_eof:
                if got:
                    return _merge(got)  # the match fails and says what arrived
                raise ConnectionClosed("the server closed the connection before sending a line")
            try:
                self.fill(deadline)
            except DeadlineError:
                if got:
                    merged = _merge(got)
                    raise StepFailure(
                        "failed",
                        ExitClass.FAILED,
                        f"no line matched {step.expect.describe()!r} within {timeout:g} s "
                        f"({len(got)} line(s) received)",
                        merged,
                    ) from None
                raise DeadlineError(
                    f"deadline: nothing received within {timeout:g} s", self.protocol.pending()
                ) from None

    def expect_eof(self, deadline: float, timeout: float) -> None:
        while True:
            reply = self.protocol.next_reply()
            if reply is not None:
                raise StepFailure(
                    "failed",
                    ExitClass.FAILED,
                    f"expected the server to close the connection, got {self.masked(reply).first_line!r}",
                    reply,
                )
            if self.protocol.at_eof:
                return
            try:
                self.fill(deadline)
            except DeadlineError:
                raise DeadlineError(
                    f"deadline: the server did not close the connection within {timeout:g} s"
                ) from None

    def upgrade(self) -> None:
        pending = self.protocol.pending()
        if pending:
            raise StepFailure(
                "error",
                ExitClass.NETWORK,
                f"data received before TLS handshake; refusing to continue ({len(pending)} bytes "
                "after the STARTTLS reply were discarded unread)",
            )
        tls = self.transport.start_tls()
        self.result.tls = tls
        self.emit(TLSStarted(info=tls, at=time.time()))


def _merge(replies: list[Reply]) -> Reply:
    if len(replies) == 1:
        return replies[0]
    return Reply(
        raw=b"".join(r.raw for r in replies),
        lines=tuple(line for r in replies for line in r.lines),
        code=replies[-1].code,
        texts=tuple(t for r in replies for t in r.texts),
    )
