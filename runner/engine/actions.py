"""What a step sends: one sender per step action (`SENDERS`), and the one check of outgoing
bytes (`refusal`) that preflight and every sender use.

A sender renders its text and asks `refusal` (through SessionRunner.check_outgoing: a `C:` line
with CR or LF, a secret about to travel unencrypted); `deliver` then asks the transport whether
it can send the bytes exactly (check_sendable), and only then tells the protocol (which records
the command) and writes the bytes before the step's deadline (the same one its reply is read
against). So a refused step leaves the
protocol and the wire untouched.
"""

from __future__ import annotations

import time

from runner.engine.verdicts import StepFailure
from runner.errors import DeadlineError, ExitClass
from runner.events import Sent
from runner.lang.render import render
from runner.lang.templates import parse
from runner.protocols.base import decode
from runner.protocols.smtp import encode_body
from runner.transports.base import is_loopback

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from runner.engine.plan import StepPlan
    from runner.lang.render import Context
    from runner.model.config import ConnectConfig
    from runner.model.scenario import Step
    from runner.results import StepResult

CRLF_REFUSAL = (
    "refusing to send: the rendered C line contains a CR or LF (command injection); "
    "use raw: or body: for multi-line data"
)


def plaintext_refusal(host: str) -> str:
    return (
        f"refusing to send a secret unencrypted to {host} (not loopback); use tls: implicit or "
        "starttls, or opt in with connect.allow_plaintext_secrets: true or --allow-plaintext-secrets"
    )


def plaintext_guard_applies(config: ConnectConfig, allow_plaintext_secrets: bool) -> bool:
    """Whether a secret sent unencrypted on this connection is refused: the host is outside
    loopback and neither the scenario nor the command line opted in."""
    return not (allow_plaintext_secrets or config.allow_plaintext_secrets or is_loopback(config.host))


def refusal(line: str | None, secret: bool, encrypted: bool, guarded: bool, host: str) -> str | None:
    """Why outgoing data must not be sent (None: it may). `line`: a rendered `C:` line (None for
    body and raw data), refused when it holds CR or LF (command injection); `secret`: the data
    comes from a secret, refused on a connection that is not `encrypted` when the plaintext
    guard applies (`guarded`: plaintext_guard_applies) to `host`."""
    if line is not None and ("\r" in line or "\n" in line):
        return CRLF_REFUSAL
    if secret and guarded and not encrypted:
        return plaintext_refusal(host)
    return None


# ------------------------------------------------------------------ the senders
# Each takes (run: the runner.engine.session.SessionRunner playing the step, its StepPlan, the
# context it renders in, its StepResult, the step's deadline: time.monotonic() by which the
# whole step, send and reply, must be done). `run` is not annotated: session.py
# imports this module, and an annotation would import it back.


def send_line(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`C:` — one command line; the protocol frames it (CRLF, an IMAP tag)."""
    step = plan.step
    text = step.text or ""
    tpl = parse(text)
    if tpl.is_constant:  # no template: nothing to render, nothing from a secret
        value, secret = text, False
    else:
        rendered = render(tpl, ctx)
        value, secret = rendered.value, rendered.secret
    try:
        run.check_outgoing(value, secret)
    except StepFailure:
        sr.sent = run.redactor.redact(text)  # as written: the template source
        raise
    data = run.protocol.frame(value, tag=step.tag)
    shown = decode(data[:-2])  # without the CRLF
    sr.sent = run.redactor.redact(shown) if run.redactor.active else shown
    deliver(run, step, data, deadline, value)


def send_body(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`body:` — a message after DATA's 354: rendered, line ends made CRLF, dot-stuffed, ended."""
    rendered = render(plan.step.text or "", ctx)
    data = encode_body(rendered.value.encode("utf-8"))
    _send_data(run, plan, sr, data, rendered.secret, deadline, f"body ({_size(data)})")


def send_body_file(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`body_file:` — as `body:`, from a file's bytes (secret when they hold a secret's value)."""
    path = plan.step.path
    try:
        content = path.read_bytes()  # type: ignore[union-attr]
    except OSError as exc:
        raise StepFailure(
            "error", ExitClass.INVALID, f"cannot read body_file {path}: {exc.strerror}"
        ) from None
    data = encode_body(content)
    secret = run.redactor.contains(content)
    _send_data(run, plan, sr, data, secret, deadline, f"body_file {path} ({_size(data)})")


def send_raw(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`raw:` — bytes as written (binary, or a rendered text), nothing added."""
    step = plan.step
    if step.data is not None:
        data = step.data
        secret = run.redactor.contains(data)
    else:
        rendered = render(step.text or "", ctx)
        data, secret = rendered.value.encode("utf-8"), rendered.secret
    _send_data(run, plan, sr, data, secret, deadline, "raw " + run.redactor.redact(repr(decode(data))[1:-1]))


def sleep(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`sleep:` — waits; sends nothing."""
    seconds = plan.step.seconds or 0
    sr.sent = f"sleep {seconds:g} s"
    run.interrupt.sleep(seconds)  # (a signal ends it)


#: step action -> its sender. A `read` step (only `S:`) sends nothing and has none.
SENDERS = {
    "send": send_line,
    "body": send_body,
    "body_file": send_body_file,
    "raw": send_raw,
    "sleep": sleep,
}


# ------------------------------------------------------------------ shared by the senders
def _send_data(
    run, plan: StepPlan, sr: StepResult, data: bytes, secret: bool, deadline: float, shown: str
) -> None:
    """Body and raw data: checked, shown, delivered."""
    run.check_outgoing(None, secret)
    sr.sent = shown
    deliver(run, plan.step, data, deadline)


def _size(body: bytes) -> str:
    """'3 lines, 42 bytes' of an encoded body (its terminating '.' line not counted)."""
    lines = body.count(b"\r\n") - 1
    return f"{lines} lines, {len(body)} bytes"


def deliver(run, step: Step, data: bytes, deadline: float, line: str | None = None) -> None:
    """A step's bytes, in this order: refused (exit 2) when the transport cannot send them
    exactly; told to the protocol (the `C:` line, or raw data when `line` is None); written
    before the step's deadline; announced (masked when read)."""
    problem = run.transport.check_sendable(data)
    if problem:
        raise StepFailure("error", ExitClass.INVALID, problem)
    if line is None:
        run.protocol.sent_raw(data, multiline=step.multiline)
    else:
        run.protocol.command(line, tag=step.tag, multiline=step.multiline)
    try:
        run.transport.send(data, deadline)
    except DeadlineError:
        timeout = run.step_timeout(step)
        raise DeadlineError(f"deadline: sending did not complete within {timeout:g} s") from None
    redactor = run.redactor
    run.emit(Sent(data, time.time(), redactor if redactor.active else None))
