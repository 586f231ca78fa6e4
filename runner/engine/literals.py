"""IMAP literals the runner counts (RFC 3501 4.3, RFC 7888): a `C:` line whose template has
`{{ value | literal }}` (runner.lang.render: Rendered.pieces), and the `append:` step's message.

The line goes out in pieces: its text up to the literal and `{N}` (N: the value's bytes, UTF-8)
and CRLF; the server's `+` is awaited (a reply read here; anything else fails the step, naming
it); then the N bytes, the rest of the line (which may announce another literal) and CRLF. The
tagged reply is the step's, read by its `S:`. When the session's capability list has LITERAL+
(or LITERAL- and the literal is at most 4096 bytes) the literal is announced `{N+}` and sent
without waiting. A literal's bytes may hold CR and LF (they are not part of the line); the line's
own text may not (actions.refusal). A secret in a literal is masked in everything shown, and so
is its length (`{****}`).
"""

from __future__ import annotations

from runner.engine.receive import read_reply
from runner.engine.verdicts import StepFailure
from runner.errors import ExitClass
from runner.lang.secrets import MASK

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.lang.render import Rendered
    from runner.model.scenario import Step
    from runner.results import StepResult

__all__ = ["announce", "await_go_ahead", "send_with_literals"]

#: RFC 7888 LITERAL-: a non-synchronizing literal is allowed up to this many bytes
LITERAL_MINUS_MAX = 4096
#: how much of a literal sr.sent shows (the wire and the transcripts get all of it)
SHOWN = 60


def non_synchronizing(run, size: int) -> bool:
    """May a literal of `size` bytes go out without waiting for `+` (the session's capability
    list has LITERAL+, or LITERAL- and the literal is small enough)?"""
    caps = run.caps.current or {}
    return "LITERAL+" in caps or ("LITERAL-" in caps and size <= LITERAL_MINUS_MAX)


def announce(run, size: int) -> str:
    """`{N}`, or `{N+}` when the server takes it without a `+` (non_synchronizing)."""
    return f"{{{size}+}}" if non_synchronizing(run, size) else f"{{{size}}}"


def await_go_ahead(run, step: Step, deadline: float, what: str) -> None:
    """The server's `+` for a synchronizing literal, read before the step's deadline; a tagged
    NO or BAD (or the connection closing) fails the step, naming it."""
    reply = read_reply(run, step, deadline, run.step_timeout(step))
    if reply is not None and reply.code == "+":
        return
    got = "the server closed the connection" if reply is None else run.masked(reply).first_line
    raise StepFailure("failed", ExitClass.FAILED, f"{what}: the server refused the literal: {got}", reply)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # as the protocols frame a line


def _masked_mark(mark: str, masked: bool) -> str:
    """How a literal's `{N}` / `{N+}` is shown: its count masked when its value is."""
    if not masked:
        return mark
    return "{" + MASK + ("+}" if mark.endswith("+}") else "}")


def _shown_literal(display: str, size: int) -> str:
    text = repr(display)[1:-1]
    return text if len(text) <= SHOWN else f"{text[: SHOWN - 3]}... ({size} bytes)"


def send_with_literals(run, step: Step, rendered: Rendered, sr: StepResult, deadline: float) -> None:
    """Sends the `C:` line of `rendered` (which has pieces) with its literals counted."""
    if run.protocol.name != "imap":  # (the loader refuses it; a fragment checked alone cannot)
        raise StepFailure(
            "error", ExitClass.INVALID, f"'| literal' is IMAP's (this session is {run.protocol.name})"
        )
    pieces = rendered.pieces or ()
    literals = [_encode(value) for value, _ in pieces[1::2]]
    marks = [announce(run, len(data)) for data in literals] + [""]
    # a secret's literal is shown with its length masked too: `{****}`
    said = [_masked_mark(m, v != d) for m, (v, d) in zip(marks, pieces[1::2], strict=False)] + [""]
    texts = [(v + mark, d + m) for (v, d), mark, m in zip(pieces[::2], marks, said, strict=True)]
    try:
        run.check_outgoing("".join(v for v, _ in texts), rendered.secret)  # the line's own text
    except StepFailure:
        sr.sent = step.text or ""  # as written (see actions.send_line)
        raise
    # (bytes, shown, summary) of each piece: the tagged first line, then each literal with the
    # rest of the line after it
    first = run.protocol.frame(texts[0][0], tag=step.tag)
    shown = run.protocol.frame(texts[0][1], tag=step.tag)
    chunks = [(first, shown, shown[:-2].decode("utf-8", "replace"))]
    for k, data in enumerate(literals):
        display = pieces[2 * k + 1][1]
        rest, rest_shown = texts[k + 1]
        chunks.append(
            (
                data + _encode(rest) + b"\r\n",
                _encode(display + rest_shown) + b"\r\n",
                _shown_literal(display, len(data)) + rest_shown,
            )
        )
    for data, _, _ in chunks:  # every piece, before the first goes out
        if problem := run.transport.check_sendable(data):
            raise StepFailure("error", ExitClass.INVALID, problem)
    summary = []
    for k, (data, shown, text) in enumerate(chunks):
        if k and not marks[k - 1].endswith("+}"):
            await_go_ahead(run, step, deadline, f"literal {said[k - 1]}")
        if k:
            run.deliver(step, data, deadline, shown=shown, literal=True)
        else:
            run.deliver(step, data, deadline, texts[0][0], shown=shown)
        summary.append(text)
        sr.sent = "\\r\\n".join(summary)  # (CRLF shown escaped: sr.sent is one line)
