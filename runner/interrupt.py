"""Stopping a run on SIGINT, SIGTERM and SIGHUP, promptly and without losing what happened.

    interrupt = Interrupt()          # one per `mailrun run` (RunOptions.interrupt)
    with interrupt.handlers():       # SIGINT, SIGTERM, SIGHUP -> interrupt.trigger(signum)
        ...

The first signal triggers the Interrupt: every transport registered with `watch` is aborted
(Transport.abort: a read or write blocked on another thread returns at once, it never waits for
its deadline), sleeps end, and Interrupted (a KeyboardInterrupt) is raised on the main thread.
The engine records the step in flight as `interrupted` and the suite lists every run; the exit
status is 128 + the signal's number (130, 143, 129; runner.errors.ExitClass). Later signals are
said and ignored, so the reports and transcripts are always finished; while the main thread is
handing results to the reporters or writing them (`with interrupt.shield():`, `shielded`), a
first signal raises nothing there and takes effect when that ends. A signal the process was
started ignoring (nohup) stays ignored.
"""

from __future__ import annotations

import os
import signal
import time

from runner.errors import ExitClass

#: the signals a run stops on, and the exit class each gives
SIGNALS = {
    signal.SIGINT: ExitClass.INTERRUPTED,
    signal.SIGTERM: ExitClass.TERMINATED,
    signal.SIGHUP: ExitClass.HANGUP,
}


def exit_class_of(exc: BaseException | None) -> ExitClass:
    """The exit class of an interruption: Interrupted's signal's, else Ctrl-C's (130)."""
    return getattr(exc, "exit_class", ExitClass.INTERRUPTED)


def interrupted_reason(exc: BaseException | None, interrupt: Interrupt | None = None):
    """(status, exit_class, reason) of a result a signal stopped: from the exception that
    stopped it (Interrupted, or Ctrl-C's plain KeyboardInterrupt) or from the Interrupt."""
    signum = getattr(exc, "signum", None) or (interrupt.signum if interrupt else None) or signal.SIGINT
    return "interrupted", SIGNALS.get(signum, ExitClass.INTERRUPTED), f"interrupted by {signame(signum)}"


def signame(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A run was stopped by a signal (a plain KeyboardInterrupt is SIGINT's)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signame(signum))
        self.signum = signum
        self.exit_class = SIGNALS.get(signum, ExitClass.INTERRUPTED)


class Interrupt:
    """One run's interruption: `signum` is set by the first trigger; watched transports are
    aborted then (and at once when one is watched after it).

    No lock: trigger() runs in a signal handler, which interrupts the main thread wherever it
    is (inside watch() too, where a held lock would never be released). Under the GIL a dict
    item set or pop and a list() of its values are atomic; watch() adds first and then looks at
    `signum`, trigger() sets `signum` first and then copies: every transport is aborted at least
    once (twice does no harm)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._watched: dict[int, object] = {}
        #: the main thread is handing results to the reporters or writing them: a first signal
        #: then raises nothing (a report half given its events, or half written, would be
        #: lost); `pending` says one came, for the shield() that ends to raise
        self.shielded = False
        self.pending = False

    @property
    def triggered(self) -> bool:
        return self.signum is not None

    @property
    def exit_class(self) -> ExitClass:
        return SIGNALS.get(self.signum, ExitClass.INTERRUPTED) if self.signum else ExitClass.OK

    def trigger(self, signum: int = signal.SIGINT) -> bool:
        """Stops everything watched; True for the first trigger only."""
        if self.signum is not None:  # (only the main thread triggers: no race between two)
            return False
        self.signum = signum
        for t in list(self._watched.values()):
            _abort(t)
        return True

    def check(self) -> None:
        """Raises Interrupted when triggered (a worker thread's way to learn of it)."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def watch(self, transport) -> None:
        self._watched[id(transport)] = transport
        if self.signum is not None:
            _abort(transport)

    def unwatch(self, transport) -> None:
        self._watched.pop(id(transport), None)

    def sleep(self, seconds: float) -> None:
        """time.sleep that ends (raising Interrupted) when the run is interrupted."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, 0.05))
        self.check()

    def handlers(self) -> _Handlers:
        return _Handlers(self)

    def shield(self) -> _Shield:
        """`with interrupt.shield():` no Interrupted inside; one that came is raised at the end."""
        return _Shield(self)


class _Shield:
    __slots__ = ("interrupt", "was")

    def __init__(self, interrupt: Interrupt):
        self.interrupt = interrupt
        self.was = False

    def __enter__(self) -> None:
        self.was, self.interrupt.shielded = self.interrupt.shielded, True

    def __exit__(self, exc_type, *exc) -> None:
        interrupt = self.interrupt
        interrupt.shielded = self.was
        if not self.was and interrupt.pending and exc_type is None:
            interrupt.pending = False
            raise Interrupted(interrupt.signum)


def _abort(transport) -> None:
    try:
        transport.abort()
    except Exception:  # noqa: BLE001 - aborting is best effort: the deadline still holds
        pass


class _Handlers:
    """While entered: SIGINT, SIGTERM and SIGHUP trigger the Interrupt; the first raises
    Interrupted on the main thread, later ones are ignored (the reports are being written)."""

    def __init__(self, interrupt: Interrupt):
        self.interrupt = interrupt
        self.saved: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        interrupt = self.interrupt
        if interrupt.trigger(signum):
            if interrupt.shielded:  # (handing results to the reporters): raised when that ends
                interrupt.pending = True
                return
            raise Interrupted(signum)
        # a later one: said, and ignored (os.write: a print here could re-enter sys.stderr)
        os.write(2, f"mailrun: {signame(signum)} again: finishing the reports first\n".encode())

    def __enter__(self) -> Interrupt:
        for sig in SIGNALS:
            try:
                if signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # (nohup, a background job's SIGINT): ignored stays ignored
                self.saved[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # not the main thread: signals stay as they are
                pass
        return self.interrupt

    def __exit__(self, *exc) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)
