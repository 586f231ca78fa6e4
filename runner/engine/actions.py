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

from runner.engine.append import send_append
from runner.engine.bodies import content, read_body_file
from runner.engine.idle import send_idle
from runner.engine.literals import send_with_literals
from runner.engine.receive import receive
from runner.engine.verdicts import StepFailure
from runner.errors import DeadlineError, ExitClass
from runner.events import Sent
from runner.lang.render import render
from runner.lang.templates import parse
from runner.protocols.base import decode
from runner.protocols.smtp import bdat_chunks, encode_body
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
    """`C:` — one command line; the protocol frames it (CRLF, an IMAP tag). With `| literal` in
    it, runner.engine.literals sends it."""
    step = plan.step
    text = step.text or ""
    tpl = parse(text)
    if tpl.is_constant:  # no template: nothing to render, nothing from a secret
        value, display, secret = text, text, False
    else:
        rendered = render(tpl, ctx)
        if rendered.pieces is not None:  # `| literal`: counted and sent in pieces
            return send_with_literals(run, step, rendered, sr, deadline)
        value, display, secret = rendered.value, rendered.display, rendered.secret
    try:
        run.check_outgoing(value, secret)
    except StepFailure:
        sr.sent = text  # as written: the template source (a secret in it is a {{ name }})
        raise
    data = run.protocol.frame(value, tag=step.tag)
    # masked exactly where a secret was rendered (frame() records nothing: framing the
    # display gives the same bytes with MASK in those places), never by searching the text
    shown = data if display == value else run.protocol.frame(display, tag=step.tag)
    sr.sent = decode(shown[:-2])  # without the CRLF
    deliver(run, step, data, deadline, value, shown)


def send_body(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`body:` — a message after DATA's 354: rendered, line ends made CRLF, dot-stuffed, ended."""
    rendered = render(plan.step.text or "", ctx)
    data = encode_body(rendered.value.encode("utf-8"))
    shown = encode_body(rendered.display.encode("utf-8")) if rendered.secret else data
    _send_data(run, plan, sr, data, rendered.secret, deadline, f"body ({_size(data)})", shown)


def send_body_file(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`body_file:` — as `body:`, from a file's bytes (secret when they hold a secret's value)."""
    path = plan.step.path
    content = read_body_file(path)
    data = encode_body(content)
    secret = run.redactor.contains(content)
    _send_data(run, plan, sr, data, secret, deadline, f"body_file {path} ({_size(data)})")


def send_raw(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`raw:` — bytes as written (binary, or a rendered text), nothing added."""
    step = plan.step
    if step.data is not None:  # bytes as written: where a secret's value is in them is unknown
        data = step.data
        secret = run.redactor.contains(data)
        shown = run.redactor.redact_bytes(data) if secret else data
    else:
        rendered = render(step.text or "", ctx)
        data, secret = rendered.value.encode("utf-8"), rendered.secret
        shown = rendered.display.encode("utf-8") if secret else data
    _send_data(run, plan, sr, data, secret, deadline, "raw " + repr(decode(shown))[1:-1], shown)


def send_bdat(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`bdat:` — a message as BDAT chunks (runner.protocols.smtp.bdat_chunks). Each chunk's reply
    but the last is read and matched here against the step's `S:`; the last one is read by the
    step as usual. Without `S:` every chunk goes out unread (pipelined)."""
    step = plan.step
    message, secret = content(run, step.path, step.text, ctx)
    chunks = bdat_chunks(message, step.chunk)
    run.check_outgoing(None, secret)
    size = sum(len(c) - c.index(b"\r\n") - 2 for c in chunks)
    sr.sent = f"bdat {len(chunks)} chunk{'s' if len(chunks) != 1 else ''}, {size} bytes"
    for number, chunk in enumerate(chunks, start=1):
        deliver(run, step, chunk, deadline)
        if number == len(chunks) or step.expect is None:
            continue
        reply = receive(run, step, ctx, deadline)
        outcome = step.expect.match(reply, ctx) if reply is not None else None
        if outcome is None or not outcome.ok:
            why = outcome.reason if outcome is not None else "the server closed the connection"
            raise StepFailure(
                "failed",
                ExitClass.FAILED,
                run.redactor.redact(f"BDAT chunk {number} of {len(chunks)}: {why}"),
                reply,
            )


def send_auth(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float):
    """`auth:` — a SASL exchange (runner.engine.auth), imported when a run has one: its
    mechanisms bring hashlib and hmac, which a run without AUTH should not pay for at start."""
    from runner.engine.auth import send_auth as play

    return play(run, plan, ctx, sr, deadline)


def sleep(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    """`sleep:` — waits; sends nothing."""
    seconds = plan.step.seconds or 0
    sr.sent = f"sleep {seconds:g} s"
    run.interrupt.sleep(seconds)  # (a signal ends it)


#: step action -> its sender. A `read` step (only `S:`) sends nothing and has none.
#: A sender of READS_ITS_REPLY reads the step's reply itself and returns it (None: the server
#: closed); the others leave it to the step.
SENDERS = {
    "send": send_line,
    "body": send_body,
    "body_file": send_body_file,
    "raw": send_raw,
    "bdat": send_bdat,
    "auth": send_auth,
    "append": send_append,
    "idle": send_idle,
    "sleep": sleep,
}


READS_ITS_REPLY = frozenset({"auth", "idle"})


# ------------------------------------------------------------------ shared by the senders
def _send_data(
    run,
    plan: StepPlan,
    sr: StepResult,
    data: bytes,
    secret: bool,
    deadline: float,
    summary: str,
    shown: bytes | None = None,
) -> None:
    """Body and raw data: checked, summed up (`summary`), delivered (announced as `shown`,
    when given: data masked where secrets were rendered into it)."""
    run.check_outgoing(None, secret)
    sr.sent = summary
    deliver(run, plan.step, data, deadline, shown=shown)


def _size(body: bytes) -> str:
    """'3 lines, 42 bytes' of an encoded body (its terminating '.' line not counted)."""
    lines = body.count(b"\r\n") - 1
    return f"{lines} lines, {len(body)} bytes"


def deliver(
    run,
    step: Step,
    data: bytes,
    deadline: float,
    line: str | None = None,
    shown: bytes | None = None,
    *,
    literal: bool = False,
) -> None:
    """A step's bytes, in this order: refused (exit 2) when the transport cannot send them
    exactly; told to the protocol (the `C:` line; with `literal`, an IMAP literal's bytes and
    the rest of its command's line: protocol.sent_literal; else raw data); written
    before the step's deadline; announced as `shown` (data masked where secrets were rendered
    into it), else masked where a secret's value occurs in data (a body_file's bytes)."""
    problem = run.transport.check_sendable(data)
    if problem:
        raise StepFailure("error", ExitClass.INVALID, problem)
    if literal:
        run.protocol.sent_literal(data)
    elif line is None:
        run.protocol.sent_raw(data, multiline=step.multiline)
    else:
        run.protocol.command(line, tag=step.tag, multiline=step.multiline)
    try:
        run.transport.send(data, deadline)
    except DeadlineError:
        timeout = run.step_timeout(step)
        raise DeadlineError(f"deadline: sending did not complete within {timeout:g} s") from None
    if shown is not None:
        run.emit(Sent(shown, time.time()))
        return
    redactor = run.redactor
    run.emit(Sent(data, time.time(), redactor if redactor.active else None))
