"""The `append:` step (IMAP APPEND, RFC 3501 6.3.11): a message sent as a literal the runner
counts (runner.engine.literals). `APPEND mailbox (flags) {N}` goes out, the server's `+` is
awaited (a synchronizing literal: it works on every server; `{N+}` without waiting when the
session's capability list offers LITERAL+), then exactly N bytes of message (CRLF line ends, no
dot-stuffing, no final dot) and the line end that completes the command; the tagged reply is
the step's, matched against its `S:` (OK by default).
"""

from __future__ import annotations

import re

from runner.engine.bodies import content
from runner.engine.literals import announce, await_go_ahead
from runner.lang.render import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.engine.plan import StepPlan
    from runner.lang.render import Context
    from runner.results import StepResult

_ATOM_SPECIALS = re.compile(r'[\s(){%*"\\\]\x00-\x1f\x7f]')
_LINE_END = re.compile(rb"\r\n|\r|\n")


def imap_string(value: str) -> str:
    """A mailbox name as an IMAP astring: as is when it is an atom, else quoted."""
    if value and not _ATOM_SPECIALS.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def message_bytes(content: bytes) -> bytes:
    """A message as IMAP stores it: every line end CRLF, nothing else changed."""
    return _LINE_END.sub(b"\r\n", content)


def send_append(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> None:
    step = plan.step
    spec = step.mailbox
    body, secret = content(run, step.path, spec.get("body"), ctx)
    data = message_bytes(body)
    mailbox = render(spec["mailbox"], ctx)
    flags = " (" + " ".join(spec["flags"]) + ")" if spec.get("flags") else ""
    mark = announce(run, len(data))
    line = f"APPEND {imap_string(mailbox.value)}{flags} {mark}"
    run.check_outgoing(line, secret or mailbox.secret)
    sr.sent = run.redactor.redact(line) + f" + message ({len(data)} bytes)"
    run.deliver(step, run.protocol.frame(line, tag=True), deadline, line)
    if not mark.endswith("+}"):
        await_go_ahead(run, step, deadline, "APPEND")
    run.deliver(step, data + b"\r\n", deadline, literal=True)
