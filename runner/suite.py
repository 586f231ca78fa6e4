"""Suites: many scenario runs (files x matrix providers), in parallel, reported in a stable order.

A *run* is one scenario file played once, optionally with one provider's vars (`--matrix`).
Runs execute on worker threads (`-j N`); each run's events are buffered and handed to the
ordered reporters (console, JSON, JUnit) run after run in the order the runs were listed, so the
output never depends on which finished first. Live listeners (transcripts, the progress line)
see events as they happen.
"""

from __future__ import annotations

import os
import sys
import time
from _thread import allocate_lock  # what threading.Lock() returns, without importing threading

from runner.errors import ExitClass, UsageError, most_severe
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
    runs in plan order; `live(run)` returns a per-run event sink called as events happen (from
    worker threads)."""

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
    threading and queue modules) only when there are `jobs` > 1 runs to share out."""
    from runner.engine.run import Engine
    from runner.events import Note, ScenarioFinished, ScenarioStarted, Sent
    from runner.results import ScenarioResult

    total = len(runs)
    lock = allocate_lock()
    state = {"done": 0, "passed": 0, "failed": 0, "next": 0, "stop": False}
    started = time.monotonic()
    finished: dict[int, Run] = {}

    def deliver(run: Run) -> None:
        for ev in run.events:
            for rep in listener.ordered:
                rep.handle(ev)
        run.events = []

    def flush_in_order() -> None:
        while state["next"] in finished:
            deliver(finished.pop(state["next"]))
            state["next"] += 1

    def flush_all() -> None:
        # after an interruption or --fail-fast, runs that never ran leave holes
        for idx in sorted(finished):
            deliver(finished.pop(idx))

    def play(run: Run) -> None:
        sinks = [s for s in (mk(run) for mk in listener.live) if s is not None]
        attempt = 0
        retry_notes: list[str] = []  # one per earlier attempt, shown after the next ScenarioStarted
        while True:
            buffer: list[Event] = []
            sent_any = False

            def emit(ev: Event, buffer: list[Event] = buffer, attempt: int = attempt) -> None:
                nonlocal sent_any
                if isinstance(ev, Sent):
                    sent_any = True
                elif isinstance(ev, ScenarioFinished):
                    # before any reporter formats it (live ones do so right away)
                    ev.result.retries = attempt
                    if isinstance(sys.exc_info()[1], KeyboardInterrupt):
                        _mark_interrupted(ev.result)
                for s in sinks:
                    s(ev)
                buffer.append(ev)
                if isinstance(ev, ScenarioStarted) and retry_notes:
                    # ordered reporters see every earlier attempt's note (they never see the
                    # attempts themselves); live ones saw those attempts and get the newest note
                    notes = [Note("warning", text, ev.at) for text in retry_notes]
                    buffer.extend(notes)
                    for s in sinks:
                        s(notes[-1])

            try:
                result = Engine(options, emit).run(
                    run.scenario, provider=run.provider, extra_vars=run.provider_vars
                )
            except KeyboardInterrupt:
                run.events = buffer  # what happened so far still reaches the reports
                run.interrupted = True
                raise
            # --retries: only connection-class failures before the first byte went out
            if (
                result.exit_class == ExitClass.NETWORK
                and not sent_any
                and attempt < retries
                and not state["stop"]
            ):
                attempt += 1
                retry_notes.append(
                    f"retry {attempt} of {retries}: attempt {attempt} failed before anything was sent "
                    f"({result.reason}); retried after {retry_interval:g} s"
                )
                time.sleep(retry_interval)
                continue
            run.result = result
            run.events = buffer
            return

    def finish(run: Run) -> None:  # caller holds the lock
        finished[run.index] = run
        state["done"] += 1
        if run.result is not None and run.result.status == "passed":
            state["passed"] += 1
        else:
            state["failed"] += 1
            if fail_fast:
                state["stop"] = True
        flush_in_order()
        if listener.progress:
            listener.progress(
                state["done"], total, state["passed"], state["failed"], time.monotonic() - started
            )

    def crashed(run: Run, exc: BaseException) -> None:
        # never lose a run silently: an internal error is reported as that run's error
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

    if jobs <= 1 or total <= 1:
        try:
            for run in runs:
                if state["stop"]:
                    break
                try:
                    play(run)
                except KeyboardInterrupt:
                    with lock:  # reported (as interrupted) by flush_all, but not counted
                        finished[run.index] = run
                    raise
                except Exception as exc:
                    crashed(run, exc)
                with lock:
                    finish(run)
        finally:
            with lock:
                flush_all()
    else:
        import queue
        import threading

        work: queue.Queue[Run] = queue.Queue()
        for run in runs:
            work.put(run)

        def worker() -> None:
            while not state["stop"]:
                try:
                    run = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    play(run)
                except BaseException as exc:
                    crashed(run, exc)
                with lock:
                    finish(run)

        threads = [
            threading.Thread(target=worker, daemon=True, name=f"mailrun-{i}") for i in range(min(jobs, total))
        ]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.1)
        finally:
            state["stop"] = True
            with lock:
                flush_all()

    return most_severe(r.result.exit_class for r in runs if r.result is not None)


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

    from runner.load.loader import load_vars_file

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
