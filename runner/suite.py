"""Suites: many scenario runs (files x matrix providers), in parallel, reported in a stable order.

A *run* is one scenario file played once, optionally with one provider's vars (`--matrix`).
Runs are played by workers (`-j N`: N worker threads; `-j 1`: one worker, the calling thread,
the same code); each run's events are buffered and handed to the ordered reporters (console,
JSON, JUnit) run after run in the order the runs were listed, so the output never depends on
which finished first. Live listeners (transcripts, the console at -j 1) see events as they
happen.
"""

from __future__ import annotations

import os
import sys
import time
from _thread import allocate_lock  # what threading.Lock() returns, without importing threading

from runner.errors import ExitClass, UsageError, most_severe
from runner.events import Retrying, ScenarioFinished, ScenarioStarted, Sent
from runner.records import Record

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

    from runner.engine.run import RunOptions
    from runner.events import Event
    from runner.model.scenario import Scenario
    from runner.results import ScenarioResult


class Run(Record):
    """One scenario played once, with one provider's vars."""

    __slots__ = ("index", "scenario", "provider", "provider_vars", "result", "events", "interrupted")

    def __init__(
        self,
        index: int,
        scenario: Scenario,
        provider: str | None = None,
        provider_vars: Mapping[str, str] | None = None,
        result: ScenarioResult | None = None,  # None when the run never finished (interrupted, not started)
        events: list[Event] | None = None,
        interrupted: bool = False,  # Ctrl-C arrived while this run was playing
    ):
        self.index = index
        self.scenario = scenario
        self.provider = provider
        self.provider_vars = {} if provider_vars is None else provider_vars
        self.result = result
        self.events = [] if events is None else events
        self.interrupted = interrupted

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.status == "passed"


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


def plan(scenarios: Sequence[Scenario], matrix: Sequence[tuple[str, Mapping[str, str]]] = ()) -> list[Run]:
    """Every scenario once per matrix entry (or once when there is no matrix)."""
    runs: list[Run] = []
    for sc in scenarios:
        if matrix:
            for label, values in matrix:
                runs.append(Run(len(runs), sc, label, values))
        else:
            runs.append(Run(len(runs), sc))
    return runs


class Listener:
    """What the suite tells reporters. `ordered` reporters get each run's events in one block,
    runs in plan order, always on the thread that called `execute` (so does `progress`);
    `live(run)` returns a per-run event sink called as events happen (on the run's worker
    thread)."""

    def __init__(
        self,
        ordered: Sequence = (),
        live: Sequence[Callable[[Run], Callable[[Event], None] | None]] = (),
        progress: Callable[[int, int, int, int, float], None] | None = None,
    ):
        self.ordered = list(ordered)
        self.live = list(live)
        self.progress = progress


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
    """Plays the runs and returns the suite's exit class (the most severe of any run).
    KeyboardInterrupt propagates after the runs that finished were reported. Threads (and the
    threading module) only when there are `jobs` > 1 runs to share out: one worker plays on the
    calling thread."""
    suite = _Executor(
        runs, options, listener, fail_fast=fail_fast, retries=retries, retry_interval=retry_interval
    )
    suite.play_all(workers=max(1, min(jobs, len(runs))))
    return most_severe(r.result.exit_class for r in runs if r.result is not None)


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
        self.stop = False  # --fail-fast or Ctrl-C: start no further run (and no retry)
        # the calling thread's own: played runs the ordered reporters have not had yet
        self.finished: dict[int, Run] = {}
        self.next_index = 0  # the run the ordered reporters get next
        self.done = self.passed = self.failed = 0
        self.started = time.monotonic()

    # --- workers -------------------------------------------------------------------------
    def play_all(self, workers: int) -> None:
        try:
            if workers == 1:
                self.work(self.finish)
            else:
                self._work_on_threads(workers)
        finally:
            self.stop = True
            self.flush_all()

    def _work_on_threads(self, workers: int) -> None:
        import queue
        import threading

        played: queue.SimpleQueue[Run | None] = queue.SimpleQueue()  # None: a worker is done
        for i in range(workers):
            threading.Thread(target=self._thread, args=(played,), daemon=True, name=f"mailrun-{i}").start()
        running = workers
        try:
            while running:
                try:  # with a timeout, so that Ctrl-C reaches this (the main) thread at once
                    run = played.get(timeout=0.1)
                except queue.Empty:
                    continue
                if run is None:
                    running -= 1
                else:
                    self.finish(run)
        finally:  # Ctrl-C: runs already played are still reported (not counted)
            self.stop = True
            while not played.empty():
                run = played.get_nowait()
                if run is not None:
                    self.finished[run.index] = run

    def _thread(self, played) -> None:
        """A worker thread: hands played runs to the calling thread, then None (done)."""
        try:
            self.work(played.put)
        finally:
            played.put(None)

    def take(self) -> Run | None:
        """The next run to play, or None when there is none or the suite stops."""
        with self.todo_lock:
            return None if self.stop else next(self.todo, None)

    def work(self, played: Callable[[Run], None]) -> None:
        """One worker: plays runs until none is left and hands each to `played`. Ctrl-C (only
        ever on the calling thread) keeps what the interrupted run did for the reports (it is
        not counted) and propagates."""
        while (run := self.take()) is not None:
            try:
                self.play(run)
            except KeyboardInterrupt:
                self.finished[run.index] = run
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
            except KeyboardInterrupt:
                run.events = _after_start(
                    attempt.events, announced
                )  # what happened still reaches the reports
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
            time.sleep(self.retry_interval)

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
        """The end (or Ctrl-C, or --fail-fast): every played run still held, in order; runs
        that never ran leave no holes."""
        for index in sorted(self.finished):
            self.deliver(self.finished.pop(index))

    def deliver(self, run: Run) -> None:
        for ev in run.events:
            for rep in self.listener.ordered:
                rep.handle(ev)
        run.events = []


class _Attempt:
    """One attempt at a run: the engine's event sink. Live sinks get each event as it happens;
    `events` keeps them for the ordered reporters."""

    __slots__ = ("sinks", "retries_before", "events", "sent_any", "keep")

    def __init__(self, sinks: list[Callable[[Event], None]], retries_before: int, keep: bool = True):
        self.sinks = sinks
        self.retries_before = retries_before
        self.events: list[Event] = []
        self.sent_any = False
        self.keep = keep  # an ordered reporter will want them (else every byte received stays)

    def emit(self, ev: Event) -> None:
        if isinstance(ev, Sent):
            self.sent_any = True
        elif isinstance(ev, ScenarioFinished):
            # before any reporter formats it (live ones do so right away)
            ev.result.retries = self.retries_before
            if isinstance(sys.exc_info()[1], KeyboardInterrupt):
                _mark_interrupted(ev.result)
        for s in self.sinks:
            s(ev)
        if self.keep:
            self.events.append(ev)


def _mark_interrupted(result: ScenarioResult) -> None:
    """The engine leaves a run that Ctrl-C ended looking as if it passed; say what happened."""
    result.status = "error"
    result.exit_class = ExitClass.INTERRUPTED
    result.reason = result.reason or "interrupted"


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
