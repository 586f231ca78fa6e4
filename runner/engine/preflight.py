"""Before anything connects: every connection that can be resolved is, and every step whose
template can already be rendered (it needs no capture) is rendered and checked with the same
rule the senders apply when it runs (runner.engine.actions.refusal: CR/LF in a `C:` line, the
plaintext guard). The first refusal ends the run before a byte is sent.
"""

from __future__ import annotations

import time

from runner.engine.actions import plaintext_guard_applies, refusal
from runner.engine.plan import SessionPlan, scoped
from runner.errors import ExitClass, ScenarioError
from runner.events import SessionFinished, SessionStarted, StepFinished
from runner.lang.render import render
from runner.lang.templates import TemplateError, parse
from runner.results import SessionResult

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.engine.plan import StepPlan
    from runner.events import Event
    from runner.lang.render import Context
    from runner.model.config import ConnectConfig
    from runner.model.scenario import Scenario, Session


def session_started(
    scenario: Scenario,
    session: Session,
    attempt: int,
    attempts: int,
    config: ConnectConfig | None,
    redact: Callable[[str], str],
) -> SessionStarted:
    """The SessionStarted event (config None: the connection could not be resolved yet); the
    host is masked, since a template may have rendered a secret into it."""
    return SessionStarted(
        scenario=scenario.name,
        name=session.name,
        protocol=session.protocol,
        attempt=attempt,
        attempts=attempts,
        host=redact(config.host) if config else "?",
        port=config.port if config else 0,
        transport=config.transport if config else "socket",
        tls_mode=config.tls if config else "none",
        at=time.time(),
    )


def shown_peer(config: ConnectConfig, redact: Callable[[str], str]) -> str:
    """'host:port' ('[::1]:25', 'unix:/run/dovecot/lmtp') for results and reports, masked; once
    connected, the session's result holds the address actually used instead."""
    if config.unix is not None:
        return redact(f"unix:{config.unix}")
    host = f"[{config.host}]" if ":" in config.host else config.host
    return redact(f"{host}:{config.port}")


def preflight_scenario(
    scenario: Scenario,
    plans: list[SessionPlan],
    ctx: Context,
    connect: Callable[[Session, Context], ConnectConfig],
    allow_plaintext_secrets: bool,
    emit: Callable[[Event], None],
) -> SessionResult | None:
    """Checks every session before the first connects (each plan keeps its resolved connection,
    for the first attempt). The first refused session's result (exit class 2, with
    the refused step in it) is returned, after its events; None when nothing is refused."""
    for plan in plans:
        session = plan.session
        result = SessionResult(name=session.name, protocol=session.protocol, attempt=1, attempts=1)
        result.status, result.exit_class = "error", ExitClass.INVALID
        try:
            plan.config = config = connect(session, ctx)
        except (ScenarioError, TemplateError) as exc:
            if not _needs_capture(session, ctx):
                # every value is known now (e.g. --transport telnet on a TLS session): a
                # later session's bad connection must not let earlier sessions send first
                result.reason = f"{ctx.redactor.redact(str(exc))}; nothing was sent"
                emit(SessionFinished(result=result, at=time.time()))
                return result
            config = None  # reported when the session runs, once the capture exists
        problem = first_refusal(plan, ctx, config, allow_plaintext_secrets)
        if problem is None:
            continue
        sp, reason = problem
        if config is not None:
            result.peer, result.transport = shown_peer(config, ctx.redactor.redact), config.transport
        emit(session_started(scenario, session, 1, 1, config, ctx.redactor.redact))
        result.steps.append(_refused(sp, ctx, reason))
        emit(StepFinished(result=result.steps[0], at=time.time()))
        result.reason = (
            f"step {sp.index} ({sp.step.location.describe()}): {result.steps[0].reason}; nothing was sent"
        )
        emit(SessionFinished(result=result, at=time.time()))
        return result
    return None


def first_refusal(
    plan: SessionPlan,
    ctx: Context,
    config: ConnectConfig | None,
    allow_plaintext_secrets: bool = False,
) -> tuple[StepPlan, str] | None:
    """The first templated step of the session that would be refused, with the reason (config
    None skips the plaintext guard). Renders, sends nothing: the step renders again when it runs."""
    guarded = config is not None and plaintext_guard_applies(config, allow_plaintext_secrets)
    # openssl s_client encrypts, and performs STARTTLS itself
    encrypted_from_start = config is not None and (config.tls == "implicit" or config.transport == "openssl")
    host = config.host if config is not None else ""
    for sp, after_starttls in plan.templated():  # (constant text was checked by the loader: no secret)
        step = sp.step
        encrypted = encrypted_from_start or after_starttls
        if step.action == "auth":  # credentials, whatever the templates say
            reason = refusal(None, True, encrypted, guarded, host)
            if reason is not None:
                return sp, reason
            continue
        try:
            rendered = render(step.text, scoped(step, ctx))
        except TemplateError:
            continue  # needs a capture (or is broken): checked when it runs
        line = rendered.outside_literals if step.action == "send" else None  # (a literal may hold CRLF)
        reason = refusal(line, rendered.secret, encrypted, guarded, host)
        if reason is not None:
            return sp, reason
    return None


def _refused(sp: StepPlan, ctx: Context, reason: str):
    redact = ctx.redactor.redact
    sr = sp.new_result()
    sr.status, sr.exit_class = "error", ExitClass.INVALID
    sr.reason = redact(reason)
    sr.sent = sp.step.text or ""  # as written (SessionRunner.record_skip says why)
    sr.expected = sp.expected
    return sr


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
