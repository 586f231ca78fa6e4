"""Reading what a step expects, under ONE deadline: `receive` starts the step's clock once and
every read of the step (a reply, the line protocol's lines, the server's EOF) waits against it.

Transports raise DeadlineError when the deadline passes; here it is turned into the step's
reason ("no complete reply within 5 s"), keeping the bytes of an incomplete reply.

`run` is the runner.engine.session.SessionRunner playing the step (not annotated: session.py
imports this module, and an annotation would import it back).
"""

from __future__ import annotations

import time

from runner.engine.verdicts import StepFailure
from runner.errors import ConnectionClosed, DeadlineError, ExitClass
from runner.protocols.base import Reply

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from runner.lang.render import Context
    from runner.model.scenario import Step


def receive(run, step: Step, ctx: Context, deadline: float) -> Reply | None:
    """What the step's `S:` expects, before the step's deadline (time.monotonic(); the send, if
    any, ran against the same one): the reply (None when the server closed cleanly and the
    pattern allows EOF; also None for `S: EOF`, once it closed)."""
    timeout = run.step_timeout(step)  # for the messages: "no complete reply within 5 s"
    if step.expect.is_eof:
        expect_eof(run, deadline, timeout)
        return None
    if run.protocol.expect_style:
        return read_lines(run, step, ctx, deadline, timeout)
    return read_reply(run, step, deadline, timeout)


def fill(run, deadline: float) -> None:
    """One transport read into the protocol. EOF is passed on to the protocol."""
    data = run.transport.recv(deadline)
    if not data:
        run.protocol.receive_eof()
        run.connected = False
        return
    run.received(data, time.time())  # announced masked as whole replies (SessionRunner.received)
    run.protocol.receive_data(data)


def read_reply(run, step: Step, deadline: float, timeout: float) -> Reply | None:
    proto = run.protocol
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
            fill(run, deadline)
        except DeadlineError:
            pending = proto.pending()
            what = f"got {len(pending)} bytes of an incomplete reply" if pending else "nothing received"
            raise DeadlineError(
                f"deadline: no complete reply within {timeout:g} s ({what})", pending
            ) from None
        if first_byte_at is None:
            first_byte_at = time.monotonic()


def read_lines(run, step: Step, ctx: Context, deadline: float, timeout: float) -> Reply:
    """The line protocol: lines until the pattern matches or the deadline passes."""
    proto = run.protocol
    got: list[Reply] = []
    while True:
        reply = proto.next_reply()
        if reply is not None:
            got.append(reply)
            merged = _merge(got)
            if step.expect.match(merged, ctx).ok:
                return merged
            continue
        if proto.at_eof:
            if got:
                return _merge(got)  # the match fails and says what arrived
            raise ConnectionClosed("the server closed the connection before sending a line")
        try:
            fill(run, deadline)
        except DeadlineError:
            if got:
                raise StepFailure(
                    "failed",
                    ExitClass.FAILED,
                    f"no line matched {step.expect.describe()!r} within {timeout:g} s "
                    f"({len(got)} line(s) received)",
                    _merge(got),
                ) from None
            raise DeadlineError(f"deadline: nothing received within {timeout:g} s", proto.pending()) from None


def expect_eof(run, deadline: float, timeout: float) -> None:
    proto = run.protocol
    while True:
        reply = proto.next_reply()
        if reply is not None:
            raise StepFailure(
                "failed",
                ExitClass.FAILED,
                f"expected the server to close the connection, got {run.masked(reply).first_line!r}",
                reply,
            )
        if proto.at_eof:
            return
        try:
            fill(run, deadline)
        except DeadlineError:
            raise DeadlineError(
                f"deadline: the server did not close the connection within {timeout:g} s"
            ) from None


def _merge(replies: list[Reply]) -> Reply:
    if len(replies) == 1:
        return replies[0]
    return Reply(
        raw=b"".join(r.raw for r in replies),
        lines=tuple(line for r in replies for line in r.lines),
        code=replies[-1].code,
        texts=tuple(t for r in replies for t in r.texts),
    )
