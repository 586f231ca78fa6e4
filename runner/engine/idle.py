"""The `idle:` step (IMAP IDLE, RFC 2177): `IDLE` goes out and its `+` is awaited; the session
named in `during` is played meanwhile (by the Engine, through SessionRunner.during: same
context, its events and result reported like any session's); untagged responses are read one at
a time (receive.read_untagged) until one matches `until`; then `DONE` goes out and the tagged
reply is the step's, matched against its `S:` (OK by default). The whole step runs against the
step's deadline (`idle: {timeout}`, else the session's).

When anything fails after the `+`, DONE is still sent (its reply read, best effort, within the
session's timeout), so the connection leaves IDLE: a `finally` LOGOUT is a command again, not
IDLE continuation data.
"""

from __future__ import annotations

import time

from runner.engine.receive import read_reply, read_untagged
from runner.engine.verdicts import StepFailure
from runner.errors import ExitClass, MailrunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.engine.plan import StepPlan
    from runner.lang.render import Context
    from runner.model.scenario import Scenario
    from runner.protocols.base import Reply
    from runner.results import StepResult


def during_sessions(scenario: Scenario) -> frozenset[str]:
    """The sessions an `idle:` step plays (`during`): the Engine leaves them out of the sequence."""
    return frozenset(
        step.during
        for session in scenario.sessions
        for step in (*session.steps, *session.finally_steps)
        if step.action == "idle" and step.during
    )


def send_idle(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> Reply | None:
    """Plays the step; returns the tagged reply to DONE for the step's `S:` (None: closed)."""
    step = plan.step
    timeout = run.step_timeout(step)
    shown = ["IDLE"]
    sr.sent = "IDLE"
    run.deliver(step, run.protocol.frame("IDLE", tag=True), deadline, "IDLE")
    go_ahead = read_reply(run, step, deadline, timeout)
    if go_ahead is None or go_ahead.code != "+":
        got = "the server closed the connection" if go_ahead is None else run.masked(go_ahead).first_line
        raise StepFailure("failed", ExitClass.FAILED, f"IDLE: the server did not accept it: {got}", go_ahead)
    try:
        if step.during:
            shown.append(_play_during(run, step.during))
        woke = read_untagged(run, step.until, ctx, deadline, timeout)
        if woke.tag is not None or woke.code == "+":  # the server ended IDLE itself
            raise StepFailure(
                "failed",
                ExitClass.FAILED,
                f"IDLE ended before an untagged response matched {step.until.describe()!r}: "
                f"{run.masked(woke).first_line}",
                woke,
            )
        shown.append(run.masked(woke).first_line)
    except (StepFailure, MailrunError):
        sr.sent = "; ".join(shown)
        _leave(run, step)
        raise
    shown.append("DONE")
    sr.sent = "; ".join(shown)
    run.deliver(step, run.protocol.frame("DONE"), deadline, "DONE")
    return read_reply(run, step, deadline, timeout)


def _play_during(run, name: str) -> str:
    """The `during` session, played by the Engine; what the step shows of it. StepFailure when
    it did not pass."""
    if run.during is None:
        raise StepFailure("error", ExitClass.INVALID, f"IDLE: session {name!r} cannot be played here")
    result = run.during(name)
    if result.status != "passed":
        why = f": {result.reason}" if result.reason else ""
        raise StepFailure(
            "failed" if result.status in ("failed", "skipped") else result.status,
            result.exit_class if result.status != "skipped" else ExitClass.FAILED,
            run.redactor.redact(f"IDLE: session {name!r} {result.status}{why}"),
        )
    return f"session {name} passed"


def _leave(run, step) -> None:
    """DONE after a failure, its tagged reply read (best effort) within the session's timeout."""
    if not run.connected or not run.protocol.in_continuation:
        return
    deadline = time.monotonic() + run.config.timeout
    try:
        run.deliver(step, run.protocol.frame("DONE"), deadline, "DONE")
        read_reply(run, step, deadline, run.config.timeout)
    except (StepFailure, MailrunError):
        pass  # the step's own failure is what is reported
