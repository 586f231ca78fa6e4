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
from runner.lang.patterns import AllPattern, AnyPattern, LinePattern
from runner.protocols.base import Reply
from runner.protocols.lines import PLAIN_LINES, reply_lines

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
    if step.action == "read" and getattr(run.protocol, "in_continuation", False):
        return read_untagged(run, step.expect, ctx, deadline, timeout)  # IMAP, during IDLE
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
            check_deadline(deadline, timeout)  # framing the reply counts against the step's time
            return reply
        if proto.at_eof:
            if step.expect is not None and step.expect.accepts_eof:  # (None: a literal's `+`)
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


def read_untagged(run, expect, ctx: Context, deadline: float, timeout: float) -> Reply:
    """IMAP while a command runs after its `+` (IDLE): untagged responses, one at a time
    (IMAP.next_untagged), until one matches `expect`; the matching one is returned. A tagged
    completion or `+` ends the wait (returned: the step's match then says what came); so do
    EOF and the deadline, which name how many untagged responses came unmatched."""
    proto = run.protocol
    seen = 0
    while True:
        reply = proto.next_untagged()
        if reply is not None:
            reply.completed_at = time.monotonic()
            if reply.tag is not None or reply.code == "+" or expect.match(reply, ctx).ok:
                check_deadline(deadline, timeout)
                return reply
            seen += 1
            continue
        if proto.at_eof:
            raise ConnectionClosed(
                f"the server closed the connection while waiting for an untagged response ({seen} did not match)"
            )
        try:
            fill(run, deadline)
        except DeadlineError:
            raise DeadlineError(
                f"deadline: no untagged response matched {expect.describe()!r} within {timeout:g} s "
                f"({seen} received)",
                proto.pending(),
            ) from None


def check_deadline(deadline: float, timeout: float) -> None:
    """DeadlineError when the step's deadline has passed: the work done after the last byte
    arrived (framing, matching) is part of the step's time too."""
    if time.monotonic() > deadline:
        raise DeadlineError(f"deadline: the step took longer than {timeout:g} s (its reply had arrived)")


#: while a pattern that looks at the lines together waits, how long a read waits before the
#: lines gathered so far are matched again (a server that went quiet after the line it wanted)
IDLE_MATCH = 0.05


def read_lines(run, step: Step, ctx: Context, deadline: float, timeout: float) -> Reply:
    """The line protocol: lines until the pattern matches or the deadline passes. Linear in the
    lines: a pattern that looks at one line at a time (a regex, a text) is matched against each
    new line alone; one that looks at them together (`re:`, several `lines:`, `not:`) against
    all gathered lines when their size doubled or the server paused. The gathered lines count
    against max_reply."""
    proto, expect = run.protocol, step.expect
    got = _Gathered(proto)
    local = _line_local(expect)
    while True:
        reply = proto.next_reply()
        if reply is not None:
            got.add(reply)
            if local:
                if expect.match(reply, ctx).ok:
                    return got.reply()
            elif got.size >= 2 * got.matched and got.matches(expect, ctx):
                return got.reply()
            if time.monotonic() > deadline:
                return _at_deadline(got, expect, ctx, local, timeout)
            continue
        if proto.at_eof:
            if got.count:
                return got.reply()  # the match fails and says what arrived
            raise ConnectionClosed("the server closed the connection before sending a line")
        waiting = not local and got.size > got.matched
        try:
            fill(run, min(deadline, time.monotonic() + IDLE_MATCH) if waiting else deadline)
        except DeadlineError:
            if waiting and time.monotonic() < deadline:
                if got.matches(expect, ctx):
                    return got.reply()
                continue
            if got.count:
                return _at_deadline(got, expect, ctx, local, timeout)
            raise DeadlineError(f"deadline: nothing received within {timeout:g} s", proto.pending()) from None


def _at_deadline(got: _Gathered, expect, ctx: Context, local: bool, timeout: float) -> Reply:
    """The deadline passed with lines gathered: their reply if a last match of them all
    succeeds, else StepFailure."""
    if not local and got.size > got.matched and got.matches(expect, ctx):
        return got.reply()
    raise StepFailure(
        "failed",
        ExitClass.FAILED,
        f"no line matched {expect.describe()!r} within {timeout:g} s ({got.count} line(s) received)",
        got.reply(),
    ) from None


class _Gathered:
    """The lines a line-protocol step has received: their bytes only (a Reply of them all is
    made when asked), within the protocol's max_reply."""

    def __init__(self, proto):
        self.proto = proto
        self.data = bytearray()
        self.count = 0
        self.matched = 0  # len(data) when all of it was last matched

    @property
    def size(self) -> int:
        return len(self.data)

    def add(self, reply: Reply) -> None:
        self.data += reply.raw
        self.count += 1
        if len(self.data) > self.proto.max_reply:
            raise self.proto.limit_error("reply", f"{self.count} lines gathered while waiting for a match")

    def reply(self) -> Reply:
        raw = bytes(self.data)
        lines, _texts = reply_lines(raw, PLAIN_LINES)
        return Reply(raw=raw, lines=lines, code=None, texts=lines)

    def matches(self, expect, ctx: Context) -> bool:
        self.matched = len(self.data)
        return expect.match(self.reply(), ctx).ok


def _line_local(pattern) -> bool:
    """Does the pattern match lines gathered together exactly when it matches one of them?
    (A regex or a text searched in each line; not `re:` over the whole text, several `lines:`
    that may match different lines, or `not:`.)"""
    if isinstance(pattern, LinePattern):
        return True
    if isinstance(pattern, AnyPattern):
        return all(_line_local(a) for a in pattern.alternatives)
    if isinstance(pattern, AllPattern):
        checks = (pattern.text is not None) + len(pattern.lines or ())
        return pattern.regex is None and pattern.not_ is None and pattern.code is None and checks == 1
    return False


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
