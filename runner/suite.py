"""Suites: many scenario runs (files x matrix providers), in parallel, reported in a stable order.

A *run* is one scenario file played once, optionally with one provider's vars (`--matrix`).
Runs are played by workers (`-j N`: N worker threads; `-j 1`: one worker, the calling thread,
the same code); each run's events are buffered and handed to the ordered reporters (console,
JSON, JUnit) run after run in the order the runs were listed, so the output never depends on
which finished first. Live listeners (transcripts, the console at -j 1) see events as they
happen.

Interrupted (SIGINT, SIGTERM, SIGHUP; runner.interrupt): no run starts, the runs playing stop
at once (their transports are aborted, their step in flight is `interrupted`), and every run is
still reported: the played and interrupted ones with the steps they completed, the others as
`not run` (so are the runs --fail-fast never started). `execute` returns the signal's exit class.

Longer than the size rule because the one executor keeps its three ends (done, --fail-fast,
a signal) together: the delivery of every run, played or not, is one piece of code.
"""

from __future__ import annotations

import os
import time
from _thread import allocate_lock  # what threading.Lock() returns, without importing threading

from runner.errors import ExitClass, UsageError, most_severe
from runner.events import Retrying, ScenarioFinished, ScenarioStarted, Sent
from runner.interrupt import Interrupted, signame
from runner.records import Record

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

    from runner.engine.run import RunOptions
    from runner.events import Event
    from runner.model.scenario import Scenario
    from runner.results import ScenarioResult


#: seconds an interrupted suite waits for its worker threads to stop (an aborted transport
#: returns at once; this bounds a program that does not die)
STOP_WAIT = 5.0


class Run(Record):
    """One scenario played once, with one provider's vars."""

    __slots__ = (
        "index",
        "scenario",
        "provider",
        "provider_vars",
        "result",
        "events",
        "interrupted",
        "started",
    )

    def __init__(
        self,
        index: int,
        scenario: Scenario,
        provider: str | None = None,
        provider_vars: Mapping[str, str] | None = None,
        result: ScenarioResult | None = None,  # None when the run never finished (interrupted, not started)
        events: list[Event] | None = None,
        interrupted: bool = False,  # a signal arrived while this run was playing
        started: bool = False,  # a worker took it (a run never started is reported `not run`)
    ):
        self.index = index
        self.scenario = scenario
        self.provider = provider
        self.provider_vars = {} if provider_vars is None else provider_vars
        self.result = result
        self.events = [] if events is None else events
        self.interrupted = interrupted
        self.started = started

    @property
    def passed(self) -> bool:
        # a scenario a `requires` skipped did not fail (it exits 0): --fail-fast goes on
        return self.result is not None and self.result.status in ("passed", "skipped")


def select(
    scenarios: Iterable[Scenario], *, tags: Sequence[str] = (), keyword: str | None = None
) -> list[Scenario]:
    """`--tag T` (repeatable; a scenario must carry at least one of the plain tags given) and
    `--tag not:T` (must carry none of them); `-k SUBSTRING` matches the scenario's name, its
    file name or a session name (case-insensitive)."""
    want = {t for t in tags if not t.startswith("not:")}
    avoid = {t[4:] for t in tags if t.startswith("not:")}
    out = []
    for sc in scenarios:
        st = set(sc.tags)
        if want and not (st & want):
            continue
        if st & avoid:
            continue
        if keyword:
            k = keyword.lower()
            # the file's own name only: a directory on the way (a temp dir, a CI checkout path)
            # must not make every scenario below it match
            names = [sc.name, os.path.basename(sc.path)] + [s.name for s in sc.sessions]
            if not any(k in n.lower() for n in names):
                continue
        out.append(sc)
    return out


def plan(
    scenarios: Sequence[Scenario],
    matrix: Sequence[tuple[str, Mapping[str, str]]] = (),
    keep: Callable[[Path, str | None], bool] | None = None,
) -> list[Run]:
    """Every scenario once per matrix entry (or once when there is no matrix); `keep(path,
    provider)`, when given, says which of those runs to plan (--shard: runner.shard)."""
    runs: list[Run] = []
    for sc in scenarios:
        for label, values in matrix or [(None, None)]:
            if keep is None or keep(sc.path, label):
                runs.append(Run(len(runs), sc, label, values))
    return runs


class Listener:
    """What the suite tells reporters. `ordered` reporters get each run's events in one block,
    runs in plan order, always on the thread that called `execute` (so does `progress`);
    `live(run)` returns a per-run event sink called as events happen (on the run's worker
    thread). `unplayed`: live reporters that also want the events of the runs never played
    (`not run`), which the ordered ones get in their place (the console at -j 1)."""

    def __init__(
        self,
        ordered: Sequence = (),
        live: Sequence[Callable[[Run], Callable[[Event], None] | None]] = (),
        progress: Callable[[int, int, int, int, float], None] | None = None,
        unplayed: Sequence = (),
    ):
        self.ordered = list(ordered)
        self.live = list(live)
        self.progress = progress
        self.unplayed = list(unplayed)


def execute(
    runs: list[Run],
    options: RunOptions,
    listener: Listener,
    *,
    jobs: int = 1,
    fail_fast: bool = False,
    retries: int = 0,
    retry_interval: float = 1.0,
) -> ExitClass:
    """Plays the runs and returns the suite's exit class (the most severe of any run; a signal's
    when interrupted, with every run reported: runs never started get a `not run` result).
    Threads (and the threading module) only when there are `jobs` > 1 runs to share out: one
    worker plays on the calling thread."""
    suite = _Executor(
        runs, options, listener, fail_fast=fail_fast, retries=retries, retry_interval=retry_interval
    )
    interrupt = options.interrupt
    try:
        suite.play_all(workers=max(1, min(jobs, len(runs))))
    except KeyboardInterrupt:  # reported by play_all; Ctrl-C without runner.interrupt's handlers
        interrupt.trigger()
    worst = most_severe(r.result.exit_class for r in runs if r.result is not None)
    return most_severe([worst, interrupt.exit_class])


def _after_start(events: list, retries: list[Retrying]) -> list:
    """The final attempt's events with the earlier attempts' Retrying events right after its
    ScenarioStarted: ordered reporters show them inside the scenario they belong to."""
    if not retries:
        return events
    if events and isinstance(events[0], ScenarioStarted):
        return [events[0], *retries, *events[1:]]
    return [*retries, *events]


class _Executor:
    """One `execute` call. Workers take runs from the plan in order, play them and hand each
    played run to `finish`, which runs on the calling thread only: it counts the run and gives
    the ordered reporters every run now due, so they see runs in plan order whatever finished
    first, and always from one thread. With one worker, the worker is the calling thread; with
    more, they are threads and played runs reach the calling thread through a queue.

    --retries: a run whose attempt failed with a connection-class error before anything was sent
    is played again (up to `retries` times, `retry_interval` seconds apart). Each failed attempt
    is announced by one Retrying event, which live sinks get as it happens (after that attempt's
    events); ordered reporters never see the attempts a retry replaced, only every Retrying event,
    in order, before the final attempt's events."""

    def __init__(
        self,
        runs: list[Run],
        options: RunOptions,
        listener: Listener,
        *,
        fail_fast: bool,
        retries: int,
        retry_interval: float,
    ):
        self.runs = runs
        self.options = options
        self.listener = listener
        self.fail_fast = fail_fast
        self.retries = retries
        self.retry_interval = retry_interval
        self.todo = iter(runs)  # the work list, shared by the workers
        self.todo_lock = allocate_lock()
        self.stop = False  # --fail-fast or a signal: start no further run (and no retry)
        self.threads = False  # the workers are threads (set by _work_on_threads)
        # the calling thread's own: played runs the ordered reporters have not had yet
        self.finished: dict[int, Run] = {}
        self.next_index = 0  # the run the ordered reporters get next
        self.done = self.passed = self.failed = 0
        self.started = time.monotonic()

    # --- workers -------------------------------------------------------------------------
    def play_all(self, workers: int) -> None:
        """Plays every run; then (at the end, on --fail-fast, or when interrupted) delivers
        every run not yet delivered, those never started as `not run`. An interruption
        propagates (KeyboardInterrupt) after that."""
        try:
            if workers == 1:
                self.work(self.finish)
            else:
                self._work_on_threads(workers)
        finally:
            self.stop = True
            self.flush_all()

    def _work_on_threads(self, workers: int) -> None:
        """The calling thread hands played runs on; the workers play. A signal raises nothing
        here (runner.interrupt's shield: it could land anywhere in this loop): the Interrupt is
        triggered, which aborts the workers' transports, and the loop waits for the workers to
        hand over what they did (at most STOP_WAIT), then the interruption propagates."""
        import queue
        import threading

        played: queue.SimpleQueue[Run | None] = queue.SimpleQueue()  # None: a worker is done
        self.threads = True
        for i in range(workers):
            threading.Thread(target=self._thread, args=(played,), daemon=True, name=f"mailrun-{i}").start()
        interrupt = self.options.interrupt
        running, give_up = workers, None
        with interrupt.shield():
            while running:
                try:
                    if interrupt.triggered and give_up is None:  # stop the workers
                        self.stop, give_up = True, time.monotonic() + STOP_WAIT
                    if give_up is not None and time.monotonic() > give_up:
                        break  # a worker that does not stop: its run is reported as interrupted
                    try:
                        run = played.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if run is None:
                        running -= 1
                    else:
                        self.finish(run)
                except KeyboardInterrupt:  # Ctrl-C without runner.interrupt's handlers
                    interrupt.trigger()
        if interrupt.triggered:
            interrupt.pending = False
            raise Interrupted(interrupt.signum)

    def _thread(self, played) -> None:
        """A worker thread: hands played runs to the calling thread, then None (done)."""
        try:
            self.work(played.put)
        finally:
            played.put(None)

    def take(self) -> Run | None:
        """The next run to play, or None when there is none or the suite stops."""
        with self.todo_lock:
            if self.stop or self.options.interrupt.triggered:
                return None
            run = next(self.todo, None)
            if run is not None:
                run.started = True
            return run

    def work(self, played: Callable[[Run], None]) -> None:
        """One worker: plays runs until none is left and hands each to `played` (an interrupted
        one too, with what it did). An interruption ends the worker: on the calling thread it
        propagates, on a worker thread the calling thread already knows."""
        while (run := self.take()) is not None:
            try:
                self.play(run)
            except KeyboardInterrupt:
                self.stop = True
                played(run)
                if self.threads:
                    return
                raise
            except Exception as exc:
                self.crashed(run, exc)
            if self.fail_fast and not run.passed:
                self.stop = True  # at once: no worker takes another run
            played(run)

    # --- one run -------------------------------------------------------------------------
    def play(self, run: Run) -> None:
        """Plays `run` (again, for --retries) and leaves its result and events on it."""
        from runner.engine.run import Engine

        sinks = [s for s in (mk(run) for mk in self.listener.live) if s is not None]
        announced: list[Retrying] = []  # one per earlier attempt, for the ordered reporters
        while True:
            attempt = _Attempt(sinks, retries_before=len(announced), keep=bool(self.listener.ordered))
            try:
                result = Engine(self.options, attempt.emit).run(
                    run.scenario, provider=run.provider, extra_vars=run.provider_vars
                )
            except KeyboardInterrupt:  # what happened still reaches the reports
                run.events = _after_start(attempt.events, announced)
                run.result = attempt.result  # (None when the engine had not begun the run)
                run.interrupted = True
                raise
            if not self.may_retry(result, attempt, len(announced)):
                run.result = result
                run.events = _after_start(attempt.events, announced)
                return
            retry = Retrying(
                "scenario",
                result.display_name,
                attempt=len(announced) + 1,
                attempts=self.retries + 1,
                reason=result.reason,
                interval=self.retry_interval,
                at=time.time(),
            )
            announced.append(retry)
            for s in sinks:
                s(retry)
            try:
                self.options.interrupt.sleep(self.retry_interval)
            except KeyboardInterrupt:  # while waiting to retry: the attempt that failed is the result
                run.result = result
                run.events = [*_after_start(attempt.events, announced[:-1]), retry]
                raise

    def may_retry(self, result: ScenarioResult, attempt: _Attempt, retried: int) -> bool:
        """--retries: only connection-class failures before the first byte went out."""
        return (
            result.exit_class == ExitClass.NETWORK
            and not attempt.sent_any
            and retried < self.retries
            and not self.stop
        )

    def crashed(self, run: Run, exc: BaseException) -> None:
        """Never lose a run silently: an internal error is reported as that run's error."""
        from runner.results import ScenarioResult

        res = ScenarioResult(
            file=str(run.scenario.path),
            name=run.scenario.name,
            provider=run.provider,
            status="error",
            exit_class=ExitClass.NETWORK,
            reason=f"internal error: {exc!r}",
        )
        run.result = res
        run.events = [
            ScenarioStarted(res.file, res.name, run.provider, time.time()),
            ScenarioFinished(res, time.time()),
        ]

    # --- delivery (on the calling thread) ---------------------------------------------
    def finish(self, run: Run) -> None:
        """Counts a played run, gives the ordered reporters every run now due and tells the
        progress line."""
        self.finished[run.index] = run
        self.done += 1
        if run.passed:
            self.passed += 1
        else:
            self.failed += 1
        while self.next_index in self.finished:
            self.deliver(self.finished.pop(self.next_index))
            self.next_index += 1
        if self.listener.progress:
            self.listener.progress(
                self.done, len(self.runs), self.passed, self.failed, time.monotonic() - self.started
            )

    def flush_all(self) -> None:
        """The end (or a signal, or --fail-fast): every run not yet delivered, in plan order;
        a run never played is given a `not run` result, so every report lists every run."""
        for run in self.runs[self.next_index :]:
            held = self.finished.pop(run.index, None)
            if held is not None:
                if held.result is None:  # interrupted before the engine began it
                    self.not_run(held)
                self.deliver(held)
            elif run.result is None:
                self.not_run(run, stuck=run.started)
                self.deliver(run, unplayed=True)
            elif run.events:  # played, but a signal came before it was handed over
                self.deliver(run)
        self.next_index = len(self.runs)

    def not_run(self, run: Run, stuck: bool = False) -> None:
        """Gives a run that never played its `not run` result and events (`stuck`: it started,
        but its worker did not stop when interrupted)."""
        from runner.results import ScenarioResult

        interrupt = self.options.interrupt
        why = (
            f"interrupted by {signame(interrupt.signum)}"
            if interrupt.triggered
            else "--fail-fast: an earlier run failed"
        )
        res = ScenarioResult(
            file=str(run.scenario.path),
            name=run.scenario.name,
            provider=run.provider,
            status="not run",
            exit_class=interrupt.exit_class,  # (a signal's, so the reports' exit class is mailrun's)
            reason=why,
        )
        if stuck:  # its worker did not stop in time: what it did is lost, not hidden
            res.status = "interrupted"
            res.reason = f"{why} (the run did not stop within {STOP_WAIT:g} s)"
        run.result = res
        run.events = [ScenarioFinished(res, time.time())]

    def deliver(self, run: Run, unplayed: bool = False) -> None:
        """A run's events to the ordered reporters, whole: a signal meanwhile takes effect after."""
        reporters = [*self.listener.ordered, *(self.listener.unplayed if unplayed else ())]
        with self.options.interrupt.shield():
            for ev in run.events:
                for rep in reporters:
                    rep.handle(ev)
            run.events = []


class _Attempt:
    """One attempt at a run: the engine's event sink. Live sinks get each event as it happens;
    `events` keeps them for the ordered reporters."""

    __slots__ = ("sinks", "retries_before", "events", "sent_any", "result", "keep")

    def __init__(self, sinks: list[Callable[[Event], None]], retries_before: int, keep: bool = True):
        self.sinks = sinks
        self.retries_before = retries_before
        self.events: list[Event] = []
        self.sent_any = False
        self.result: ScenarioResult | None = None  # the ScenarioFinished's
        self.keep = keep  # an ordered reporter will want them (else every byte received stays)

    def emit(self, ev: Event) -> None:
        if isinstance(ev, Sent):
            self.sent_any = True
        elif isinstance(ev, ScenarioFinished):
            # before any reporter formats it (live ones do so right away)
            ev.result.retries = self.retries_before
            self.result = ev.result
        for s in self.sinks:
            s(ev)
        if self.keep:
            self.events.append(ev)


def load_matrix(paths: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """`--matrix FILE|DIR` (repeatable): each vars file is one provider, labelled by its stem;
    a directory means every *.yaml/*.yml file directly in it (sorted). Raises UsageError for a
    directory without vars files and for two files that would get the same label, and
    ScenarioError (naming the file) for a missing or malformed file."""
    from pathlib import Path

    from runner.load.varfiles import load_vars_file

    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(x for x in path.iterdir() if x.suffix in (".yaml", ".yml") and x.is_file())
            if not found:
                raise UsageError(f"--matrix {p}: the directory holds no vars files (*.yaml, *.yml)")
            files.extend(found)
        else:
            files.append(path)
    labels: dict[str, Path] = {}
    for f in files:
        if f.stem in labels and labels[f.stem].resolve() != f.resolve():
            raise UsageError(
                f"--matrix: {labels[f.stem]} and {f} would both be reported as [{f.stem}]; rename one"
            )
        labels[f.stem] = f
    seen: set[Path] = set()
    out = []
    for f in files:  # the same file given twice runs once
        if f.resolve() in seen:
            continue
        seen.add(f.resolve())
        out.append((f.stem, load_vars_file(f)))
    return out
