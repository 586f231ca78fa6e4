"""One session over one connection: connect (and announce it once), play the steps and the
`finally` steps, close.

A step: render and send (runner.engine.actions, one sender per action), read what `S:`
expects (runner.engine.receive, one deadline), match, capture, STARTTLS when asked; an error
becomes the step's verdict through runner.engine.verdicts. Every step ends in finish(), which
records and announces its StepResult.
"""

from __future__ import annotations

import time

from runner import protocols, transports
from runner.engine.actions import SENDERS, plaintext_guard_applies, refusal
from runner.engine.plan import scoped
from runner.engine.receive import check_deadline, receive
from runner.engine.verdicts import StepFailure, verdict
from runner.errors import ExitClass, MailrunError
from runner.events import Closed, Connected, Note, Received, StepFinished, TLSStarted
from runner.lang.patterns import capture as capture_value
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
    from runner.results import SessionResult, StepResult


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
    ):
        self.plan = plan
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
        # include scope (its bindings' ids) -> its context, for the whole session: not a cache, a
        # capture updates a name where the scope binds it (Context.set), so later steps of the
        # same include must see that scope again, not one made anew from the bindings
        self._scopes: dict[tuple, Context] = {}

    def note(self, kind: str, text: str) -> None:
        self.emit(Note(kind, self.redactor.redact(text), time.time()))

    # ------------------------------------------------------------------ the session
    def play(self) -> None:
        if not self.open():
            return
        result, plan = self.result, self.plan
        try:
            failed = self.run_steps(plan.steps, skip_until_starttls=bool(self.transport.performs_starttls))
            if self.connected:
                finally_failed = self.run_steps(plan.finally_steps, skip_until_starttls=False)
                failed = failed if failed is not None else finally_failed
            else:
                for sp in plan.finally_steps:
                    self.record_skip(sp, "not run: the connection is closed")
            if failed is not None:  # the session's verdict is its first failed step's
                result.status, result.exit_class, result.reason = (
                    failed.status,
                    failed.exit_class,
                    failed.reason,
                )
        except KeyboardInterrupt:
            result.status, result.exit_class, result.reason = "error", ExitClass.INTERRUPTED, "interrupted"
            raise
        finally:
            by = "client" if self.connected else "server"
            try:
                self.transport.close()
            finally:
                self.emit(Closed(by=by, at=time.time()))

    def open(self) -> bool:
        """Connects and announces it: Connected once, then TLSStarted once when the connection is
        already encrypted (implicit TLS, or the STARTTLS a spawned program performed while
        connecting). False (the result says why) when the connection failed."""
        result = self.result
        try:
            self.transport = transports.create(self.config, on_note=self.note)
            info = self.transport.connect()
            tls = info.tls
            if tls is None and self.transport.performs_starttls:
                tls = self.transport.start_tls()  # done by the program: only its TLSInfo
        except MailrunError as exc:
            result.status, result.exit_class, result.reason = (
                "error",
                exc.exit_class,
                self.redactor.redact(str(exc)),
            )
            self._close_quietly()
            return False
        except KeyboardInterrupt:  # Ctrl-C while connecting: nothing to report but the interruption
            result.status, result.exit_class, result.reason = "error", ExitClass.INTERRUPTED, "interrupted"
            self._close_quietly()
            raise
        self.connected = True
        redactor = self.redactor
        if redactor.active and redactor.contains(f"{info.peer} {info.note or ''}"):
            # a secret rendered into the host: the peer (and a program's command line) masked
            info = ConnectInfo(
                redactor.redact(info.peer), info.transport, info.tls, info.note and redactor.redact(info.note)
            )
        self.emit(Connected(info=info, at=time.time()))
        if tls is not None:
            self.tls_started(tls)
        if not self.config.tls_verify and self.config.tls != "none":
            self.note("warning", "TLS certificate verification is OFF (tls_verify: false / --insecure)")
        return True

    def tls_started(self, tls) -> None:
        self.result.tls = tls
        self.emit(TLSStarted(info=tls, at=time.time()))

    def _close_quietly(self) -> None:
        if self.transport is None:
            return
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001 - closing after a failed connect: nothing more to say
            pass

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
        `starttls: true` one are recorded as performed by the transport's program."""
        first_failure = None
        program = self.transport.performs_starttls
        for sp in steps:
            if first_failure is not None:
                self.record_skip(sp, f"not run: step {first_failure.index} {first_failure.status}")
            elif skip_until_starttls:
                what = "STARTTLS performed by" if sp.step.starttls else "performed by"
                self.record_skip(sp, f"{what} {program}", performed_by=program)
                skip_until_starttls = not sp.step.starttls
            else:
                sr = self.run_step(sp)
                if sr.status in ("failed", "error"):
                    first_failure = sr
        return first_failure

    def record_skip(self, sp: StepPlan, reason: str, performed_by: str | None = None) -> StepResult:
        step = sp.step
        sr = sp.new_result()
        sr.status, sr.reason, sr.performed_by = "skipped", reason, performed_by
        # what the step would have sent, as written (template source: holds no secret value)
        if step.action == "send":
            sr.sent = self.redactor.redact(step.text or "")
        elif step.action in ("raw", "body"):
            sr.sent = f"{step.action} (not sent)"
        elif step.action == "body_file":
            sr.sent = f"body_file {step.path} (not sent)"
        if sp.expected is not None:
            sr.expected = self.redactor.redact(sp.expected)
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
        except KeyboardInterrupt:
            sr.status, sr.exit_class, sr.reason = "error", ExitClass.INTERRUPTED, "interrupted"
            self.finish(sr, started)
            raise
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
        if expect is not None:
            sr.expected = redactor.redact(sp.expected) if redactor.active else sp.expected
        deadline = time.monotonic() + self.step_timeout(step)  # one deadline: send and reply
        sender = SENDERS.get(step.action)
        if sender is not None:
            sender(self, sp, ctx, sr, deadline)
        if expect is None:
            return
        reply = receive(self, step, ctx, deadline)
        if reply is None:  # the server closed: as `S: EOF` expects, or a pattern that allows it
            if step.capture and not expect.is_eof:
                raise StepFailure(
                    "failed", ExitClass.FAILED, "the server closed the connection; nothing to capture from"
                )
            return
        sr.reply = self.masked(reply) if redactor.active else reply
        outcome = expect.match(reply, ctx)
        check_deadline(deadline, self.step_timeout(step))  # matching is part of the step's time
        if not outcome.ok:
            raise StepFailure(
                "failed", ExitClass.FAILED, redactor.redact(outcome.reason or "no match"), reply
            )
        for name, regex in step.capture.items() if step.capture else ():
            value = capture_value(reply, regex, ctx)
            if value is None:
                reason = f"capture '{name}': pattern {redactor.redact(regex)!r} did not match the reply"
                raise StepFailure("failed", ExitClass.FAILED, reason, reply)
            ctx.set(name, value)
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
            raw = redactor.redact_bytes(partial)
            sr.reply = Reply(raw=raw, lines=reply_lines(raw, PLAIN_LINES)[0])

    def finish(self, sr: StepResult, started: float) -> StepResult:
        sr.elapsed = time.monotonic() - started
        if self.held is not None:
            self._release_held()
        self.result.steps.append(sr)
        self.emit(StepFinished(result=sr, at=time.time()))
        return sr

    def _release_held(self) -> None:
        held, self.held = self.held, None
        redactor = self.redactor
        for data, at in held:
            self.emit(Received(data, at, redactor if redactor.active else None))

    def masked(self, reply: Reply) -> Reply:
        r = self.redactor
        # every text of a reply is decoded from its raw bytes (a 334 note from base64 in them,
        # whose forms the redactor knows too): no secret in raw, nothing to mask
        if not r.active or not r.contains(reply.raw):
            return reply
        return reply.redacted(r.redact_bytes(reply.raw), r.redact)  # lines masked as they are read

    def upgrade(self) -> None:
        """STARTTLS after its reply: refused when the server already sent more (CVE-2011-0411)."""
        pending = self.protocol.pending()
        if pending:
            raise StepFailure(
                "error",
                ExitClass.NETWORK,
                f"data received before TLS handshake; refusing to continue ({len(pending)} bytes "
                "after the STARTTLS reply were discarded unread)",
            )
        self.tls_started(self.transport.start_tls())
