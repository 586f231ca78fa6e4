"""One session over one connection: connect (and announce it once), play the steps and the
`finally` steps, close.

A step: render and send (runner.engine.actions, one sender per action), read what `S:`
expects (runner.engine.receive, one deadline), match, capture, STARTTLS when asked; an error
becomes the step's verdict through runner.engine.verdicts. Every step ends in finish(), which
records and announces its StepResult.

Longer than 450 lines because SessionRunner is one state machine over one connection (its
transport and framer, the TLS checks, the capability gates, the masked incoming stream, the
snapshot and interrupt hooks): the senders and readers in the modules beside it take `run`,
this object, and splitting it further would pass that state around instead.
"""

from __future__ import annotations

import time

from runner import protocols, transports
from runner.engine.actions import READS_ITS_REPLY, SENDERS, deliver, plaintext_guard_applies, refusal
from runner.engine.caps import SessionCaps, time_problem
from runner.engine.plan import scoped
from runner.engine.receive import check_deadline, receive
from runner.engine.tls_check import no_handshake_step, tls_step
from runner.engine.verdicts import StepFailure, verdict
from runner.errors import ExitClass, MailrunError
from runner.events import Closed, Connected, Note, Received, StepFinished, TLSStarted
from runner.interrupt import Interrupt, Interrupted, interrupted_reason
from runner.lang.patterns import capture as capture_value
from runner.lang.secrets import RedactingStream
from runner.protocols.base import Reply
from runner.protocols.lines import PLAIN_LINES, reply_lines
from runner.transports.base import ConnectInfo

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runner.engine.plan import SessionPlan, StepPlan
    from runner.events import Event
    from runner.lang.render import Context
    from runner.lang.secrets import Redactor
    from runner.model.config import ConnectConfig
    from runner.results import SessionResult, Status, StepResult
    from runner.snapshot.check import SnapshotRun


CLOSED = "not run: the connection is closed"


class SessionRunner:
    """Plays one session's steps over one connection, into `result`."""

    def __init__(
        self,
        plan: SessionPlan,
        ctx: Context,
        config: ConnectConfig,
        result: SessionResult,
        emit: Callable[[Event], None],
        allow_plaintext_secrets: bool = False,
        snapshot: SnapshotRun | None = None,
        *,
        interrupt: Interrupt | None = None,
    ):
        self.plan = plan
        #: the run's Interrupt: it aborts this session's transport from another thread
        self.interrupt = Interrupt() if interrupt is None else interrupt
        self.ctx = ctx
        self.config = config
        self.result = result
        self.emit = emit  # straight to the listener: one call per event
        self.redactor: Redactor = ctx.redactor
        #: a secret sent on this connection unencrypted would be refused (the plaintext guard)
        self.guarded = plaintext_guard_applies(config, allow_plaintext_secrets)
        session = plan.session
        self.protocol = protocols.create(
            session.protocol, max_line=config.max_line, max_reply=config.max_reply
        )
        self.transport = None  # created by open()
        self.connected = False  # the connection is open and usable
        self.held: list[tuple[bytes, float]] | None = None  # received, passed on after a capture
        self.tls_unchecked = None  # the TLSInfo of a handshake whose tls_expect is still to check
        self.caps = SessionCaps(session, ctx)  # its capability list, its requires (engine.caps)
        # when the last step ended (or the connection opened): what a step that sends nothing
        # (the greeting's) measures its max_time / min_time from
        self.mark = 0.0
        # what arrives is announced masked as whole replies, whatever the reads (received())
        self.incoming = RedactingStream(self.redactor)
        self.closed_why = CLOSED  # a finally step's skip reason
        # include scope (its bindings' ids) -> its context, for the whole session: not a cache, a
        # capture updates a name where the scope binds it (Context.set), so later steps of the
        # same include must see that scope again, not one made anew from the bindings
        self._scopes: dict[tuple, Context] = {}
        self.snapshot = snapshot  # --snapshot: one more verdict on each step's reply
        self.snapshot_failed: StepResult | None = None  # the step a snapshot difference just failed
        #: session name -> its SessionResult, played now (the Engine's: an `idle:` step's during)
        self.during: Callable[[str], SessionResult] | None = None

    def note(self, kind: str, text: str) -> None:
        self.emit(Note(kind, self.redactor.redact(text), time.time()))

    # ------------------------------------------------------------------ the session
    def play(self) -> None:
        if not self.open():
            return
        result, plan = self.result, self.plan
        try:
            failed = self.run_steps(plan.steps, skip_until_starttls=bool(self.transport.performs_starttls))
            unchecked = self.caps.unchecked() if failed is None else None
            if self.connected:
                finally_failed = self.run_steps(plan.finally_steps, skip_until_starttls=False)
                failed = failed if failed is not None else finally_failed
            else:
                for sp in plan.finally_steps:
                    self.record_skip(sp, self.closed_why)
            if failed is not None:  # the session's verdict is its first failed step's
                result.status, result.exit_class, result.reason = (
                    failed.status,
                    failed.exit_class,
                    failed.reason,
                )
            elif self.caps.skip is not None:  # its requires did not hold: skipped, finally ran
                result.status, (result.condition, result.reason) = "skipped", self.caps.skip
            elif unchecked is not None:  # a run error: the requires could not be decided
                result.status, result.exit_class, result.reason = "error", ExitClass.INVALID, unchecked
        except KeyboardInterrupt as exc:
            result.status, result.exit_class, result.reason = interrupted_reason(exc)
            raise
        finally:
            result.capabilities = self.caps.current
            by = "client" if self.connected or self.closed_why != CLOSED else "server"
            self.interrupt.unwatch(self.transport)
            try:
                self.transport.close()
            finally:
                self.flush_received(force=True)
                self.emit(Closed(by=by, at=time.time()))

    def open(self) -> bool:
        """Connects and announces it: Connected once, then TLSStarted once when the connection is
        already encrypted (implicit TLS, or the STARTTLS a spawned program performed while
        connecting). False (the result says why) when the connection failed."""
        result = self.result
        try:
            self.transport = transports.create(self.config, on_note=self.note)
            self.interrupt.watch(self.transport)
            info = self.transport.connect()
            tls = info.tls
            if self.transport.performs_starttls:  # the program read the greeting
                self.protocol.greeting_read_elsewhere()
            if tls is None and self.transport.performs_starttls:
                tls = self.transport.start_tls()  # done by the program: only its TLSInfo
        except MailrunError as exc:
            result.status, result.exit_class, result.reason = (
                "error",
                exc.exit_class,
                self.redactor.redact(str(exc)),
            )
            self._close_quietly()
            if self.interrupt.triggered:  # the connect was aborted by a signal
                result.status, result.exit_class, result.reason = interrupted_reason(None, self.interrupt)
                raise Interrupted(self.interrupt.signum) from None
            return False
        except KeyboardInterrupt as exc:  # a signal while connecting: nothing to report but that
            result.status, result.exit_class, result.reason = interrupted_reason(exc)
            self._close_quietly()
            raise
        self.connected = True
        self.mark = time.monotonic()
        self.caps.reset()
        redactor = self.redactor
        if redactor.active and redactor.contains(f"{info.peer} {info.note or ''}"):
            # a secret rendered into the host: the peer (and a program's command line) masked
            info = ConnectInfo(
                redactor.redact(info.peer), info.transport, info.tls, info.note and redactor.redact(info.note)
            )
        result.peer = info.peer  # the address actually used (masked above when it must be)
        self.emit(Connected(info=info, at=time.time()))
        if tls is not None:
            self.tls_started(tls)
        if not self.config.tls_verify and self.config.tls != "none":
            self.note("warning", "TLS certificate verification is OFF (tls_verify: false / --insecure)")
        return True

    def tls_started(self, tls) -> None:
        self.result.tls = tls
        self.emit(TLSStarted(info=tls, at=time.time()))
        if self.plan.session.tls_expect is not None:
            self.tls_unchecked = tls  # checked as the TLS step, after the step that started it

    def check_tls(self) -> StepResult | None:
        """The TLS step (runner.engine.tls_check) for a handshake not checked yet, recorded and
        announced like any step; returned when it failed."""
        tls, self.tls_unchecked = self.tls_unchecked, None
        if tls is None:
            return None
        started = time.monotonic()
        sr = self.finish(tls_step(self.plan.session.tls_expect, tls, self.config, self.ctx), started)
        return sr if sr.status in ("failed", "error") else None

    def check_no_tls(self, steps) -> StepResult | None:
        """A session with `tls_expect` that ended its steps unencrypted: a failed TLS step."""
        expect = self.plan.session.tls_expect
        if expect is None or self.result.tls is not None or not steps or steps[0].section != "steps":
            return None
        return self.finish(no_handshake_step(expect), time.monotonic())

    def _close_quietly(self) -> None:
        if self.transport is None:
            return
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001 - closing after a failed connect: nothing more to say
            pass

    def deliver(
        self, step, data: bytes, deadline: float, line: str | None = None, shown: bytes | None = None, **kw
    ) -> None:
        """A step's bytes to the wire (runner.engine.actions.deliver), for senders that live
        outside that module (runner.engine.auth, append, literals)."""
        deliver(self, step, data, deadline, line, shown, **kw)

    def check_outgoing(self, line: str | None, secret: bool) -> None:
        """StepFailure (exit 2) when data about to be sent is refused (actions.refusal: CR/LF
        in a `C:` line, the plaintext guard)."""
        # (whether the connection is encrypted matters only for a secret: asked only then)
        problem = refusal(line, secret, secret and self.transport.encrypted, self.guarded, self.config.host)
        if problem is not None:
            raise StepFailure("error", ExitClass.INVALID, problem)

    def run_steps(self, steps: Sequence[StepPlan], skip_until_starttls: bool) -> StepResult | None:
        """Runs steps in order; returns the first failed StepResult (the rest are recorded as
        skipped), or None. With skip_until_starttls the steps up to and including the
        `starttls: true` one are recorded as performed by the transport's program. A step only
        its snapshot failed does not stop the others (its reply passed its `S:`)."""
        first_failure = snapshot_failure = None
        program = self.transport.performs_starttls
        caps = self.caps
        for i, sp in enumerate(steps):
            self.interrupt.check()  # (a worker thread's way to stop: its transport was aborted)
            greeting = i == 0 and sp.section == "steps" and sp.step.action == "read"
            if first_failure is None and not skip_until_starttls and not greeting:
                # after the handshake's step; implicit TLS's after the greeting (so `finally`
                # never takes the unread greeting for its reply when the check fails)
                first_failure = self.check_tls()
            if first_failure is not None:
                what = "the TLS check" if first_failure.section == "tls" else f"step {first_failure.index}"
                self.record_skip(sp, f"not run: {what} {first_failure.status}")
            elif skip_until_starttls:
                what = "STARTTLS performed by" if sp.step.starttls else "performed by"
                self.record_skip(sp, f"{what} {program}", performed_by=program)
                skip_until_starttls = not sp.step.starttls
            elif caps.skip is not None and sp.section == "steps":  # its session's requires did not hold
                self.record_skip(sp, caps.skip[1], condition=caps.skip[0])
            else:
                sr = self.gated(sp) or self.run_step(sp)
                if sr is self.snapshot_failed:
                    snapshot_failure = snapshot_failure or sr
                elif sr.status in ("failed", "error"):
                    first_failure = sr
                elif sp.section == "steps":
                    caps.check_session(steps[i + 1 :])
        if first_failure is None and not skip_until_starttls:
            first_failure = self.check_tls() or self.check_no_tls(steps)  # (the last step's handshake)
        return first_failure or snapshot_failure

    def gated(self, sp: StepPlan) -> StepResult | None:
        """The step's result when its requires or when keeps it from being played (or asks
        before any capability list was seen: a run error, exit 2); None to play it."""
        try:
            gate = self.caps.gate(sp.step)
        except StepFailure as exc:
            sr = sp.new_result()
            self.fail(sr, exc)
            return self.finish(sr, time.monotonic())
        if gate is None:
            return None
        status, condition, reason = gate
        return self.record_skip(sp, reason, condition=condition, status=status)

    def record_skip(
        self,
        sp: StepPlan,
        reason: str,
        performed_by: str | None = None,
        condition: str | None = None,
        status: Status = "skipped",
    ) -> StepResult:
        step = sp.step
        sr = sp.new_result()
        sr.status, sr.reason, sr.performed_by, sr.condition = status, reason, performed_by, condition
        # what the step would have sent, as written (the template source: a secret in it is a
        # {{ name }}; masking occurrences of a value in it would mask, and show, a short one's
        # characters everywhere)
        if step.action == "send":
            sr.sent = step.text or ""
        elif step.action in ("raw", "body", "bdat"):
            sr.sent = f"{step.action} (not sent)"
        elif step.action == "body_file":
            sr.sent = f"body_file {step.path} (not sent)"
        sr.expected = sp.expected  # (the pattern as written, like the template source)
        self.result.steps.append(sr)
        self.emit(StepFinished(result=sr, at=time.time()))
        return sr

    def scope(self, step) -> Context:
        """The context of an included step: the session's, with its include's bindings."""
        if not step.bindings:
            return self.ctx
        key = tuple(id(b) for b in step.bindings)
        ctx = self._scopes.get(key)
        if ctx is None:
            ctx = self._scopes[key] = scoped(step, self.ctx)
        return ctx

    # ------------------------------------------------------------------ one step
    def run_step(self, sp: StepPlan) -> StepResult:
        sr = sp.new_result()
        started = time.monotonic()
        try:
            self.play_step(sp, sr)
        except (StepFailure, MailrunError) as exc:
            self.fail(sr, exc)
            if self.interrupt.triggered:  # it failed because a signal aborted the transport
                sr.status, sr.exit_class, sr.reason = interrupted_reason(None, self.interrupt)
                self.finish(sr, started)
                raise Interrupted(self.interrupt.signum) from None
        except KeyboardInterrupt as exc:
            sr.status, sr.exit_class, sr.reason = interrupted_reason(exc)
            self.finish(sr, started)
            raise
        if self.snapshot is not None:
            session = self.plan.session
            failed = self.snapshot.check(session.name, session.protocol, sp.section, sp.index, sp.step, sr)
            self.snapshot_failed = sr if failed else None
        return self.finish(sr, started)

    def step_timeout(self, step) -> float:
        """Seconds the whole step (its send and its reply) may take: its own `timeout:`, else
        the session's."""
        return step.timeout if step.timeout is not None else self.config.timeout

    def play_step(self, sp: StepPlan, sr: StepResult) -> None:
        """Send, receive, match, capture, STARTTLS: raises StepFailure or MailrunError to fail."""
        step = sp.step
        redactor = self.redactor
        if step.capture and not self.ctx.secret_names.isdisjoint(step.capture):
            # the reply holds a secret that is registered only once captured: what arrives is
            # passed on (-v, transcripts) after that, so it is masked too
            self.held = []
        ctx = self.scope(step) if step.bindings else self.ctx
        expect = step.expect
        sr.expected = sp.expected  # the pattern as written (see record_skip)
        deadline = time.monotonic() + self.step_timeout(step)  # one deadline: send and reply
        sender = SENDERS.get(step.action)
        sent_at = time.monotonic() if sender is not None else self.mark
        got = sender(self, sp, ctx, sr, deadline) if sender is not None else None
        if expect is None:
            return
        reply = got if step.action in READS_ITS_REPLY else receive(self, step, ctx, deadline)
        if reply is None:  # the server closed: as `S: EOF` expects, or a pattern that allows it
            if step.capture and not expect.is_eof:
                raise StepFailure(
                    "failed", ExitClass.FAILED, "the server closed the connection; nothing to capture from"
                )
            return
        self.caps.seen(sr.sent if step.action == "send" else None, reply)
        sr.reply = self.masked(reply) if redactor.active else reply
        outcome = expect.match(reply, ctx)
        check_deadline(deadline, self.step_timeout(step))  # matching is part of the step's time
        if not outcome.ok:
            raise StepFailure(
                "failed", ExitClass.FAILED, redactor.redact(outcome.reason or "no match"), reply
            )
        late = time_problem(step, self.plan.session, (reply.completed_at or time.monotonic()) - sent_at)
        if late is not None:
            sr.time_limit = late[0]
            raise StepFailure("failed", ExitClass.FAILED, late[1], reply)
        for name, regex in step.capture.items() if step.capture else ():
            value = capture_value(reply, regex, ctx)
            if value is None:
                reason = f"capture '{name}': pattern {redactor.redact(regex)!r} did not match the reply"
                raise StepFailure("failed", ExitClass.FAILED, reason, reply)
            ctx.set(name, value)  # (holding a secret's value, it is rendered masked: render)
            sr.captures[name] = redactor.redact(value)
        if self.held is not None:
            sr.reply = self.masked(reply)  # again: the captured secret is known now
        if step.starttls:
            self.upgrade()

    def fail(self, sr: StepResult, exc: Exception) -> None:
        """The step's verdict for what it raised (runner.engine.verdicts), with the reply or
        the partial bytes that came with it."""
        redactor = self.redactor
        if isinstance(exc, StepFailure):
            sr.status, sr.exit_class, sr.reason = exc.status, exc.exit_class, exc.reason
            if exc.reply is not None and sr.reply is None:
                sr.reply = self.masked(exc.reply)
            return
        sr.status, sr.exit_class, closed = verdict(exc)
        sr.reason = redactor.redact(str(exc))
        if closed:
            self.connected = False
        partial = getattr(exc, "partial", b"")
        if partial:  # its lines built from the masked bytes when read (not a str per line now)
            raw = redactor.redact_cut(partial)  # (a secret it ends in the middle of, masked)
            sr.reply = Reply(raw=raw, lines=reply_lines(raw, PLAIN_LINES)[0])

    def finish(self, sr: StepResult, started: float) -> StepResult:
        self.mark = time.monotonic()
        sr.elapsed = self.mark - started
        if self.held is not None:
            self._release_held()
        self.flush_received()
        self.result.steps.append(sr)
        self.emit(StepFinished(result=sr, at=time.time()))
        return sr

    def _release_held(self) -> None:
        held, self.held = self.held, None
        for data, at in held:
            self.received(data, at)

    def received(self, data: bytes, at: float) -> None:
        """Announces bytes a transport read (receive.fill), masked as if the reply had come in
        one read: a tail that could begin a secret is held back (RedactingStream) until more
        bytes or flush_received() show what it is. Held whole during a step that captures a
        secret (the value is registered only once captured)."""
        if self.held is not None:
            self.held.append((data, at))
        elif not self.redactor.active and not self.incoming.holding:
            self.emit(Received(data, at))
        else:
            shown = self.incoming.feed(data)
            if shown:
                self.emit(Received(shown, at))

    def flush_received(self, force: bool = False) -> None:
        """Announces the held-back tail once it ends a reply (the protocol holds no partial
        reply), or, with force, at the end of the connection."""
        if self.incoming.holding and (force or not self.protocol.pending()):
            self.emit(Received(self.incoming.flush(), time.time()))

    def masked(self, reply: Reply) -> Reply:
        r = self.redactor
        # the texts are decoded from the raw bytes; the note may be decoded further (a 334
        # challenge's base64 can decode to a text holding the password): both are looked at
        if not r.active or not (r.contains(reply.raw) or (reply.note and r.contains(reply.note))):
            return reply
        return reply.redacted(r.redact_bytes(reply.raw), r.redact)  # lines masked as they are read

    def upgrade(self) -> None:
        """STARTTLS after its reply: refused when the server already sent more (CVE-2011-0411).
        Then the connection is closed: no further step, `finally` included, runs on it (the
        injected bytes would be taken as their replies)."""
        pending = self.protocol.pending()
        if pending:
            self.connected = False  # play() closes it
            self.closed_why = "not run: the connection was closed after the refused STARTTLS"
            raise StepFailure(
                "error",
                ExitClass.NETWORK,
                f"data received before TLS handshake; refusing to continue ({len(pending)} bytes "
                "after the STARTTLS reply were discarded unread; the connection was closed)",
            )
        self.caps.reset()  # RFC 3207: forget what the server said before TLS
        self.tls_started(self.transport.start_tls())
