"""What a scenario's result comes to, as every report words it: which session attempts count
(`last_attempts`), the step counts, the first problem, the verdict, the summary line and the
slowest steps."""

from __future__ import annotations

from runner.reporters.text import step_label, where

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from runner.results import ScenarioResult, SessionResult, StepResult

VERDICT = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}


def last_attempts(result: ScenarioResult) -> list[SessionResult]:
    """The sessions of a ScenarioResult that count: each session's last attempt (earlier
    attempts that a session `retry` replaced are left out), in order."""
    last: dict[str, SessionResult] = {}
    for sess in result.sessions:
        last[sess.name] = sess
    return list(last.values())


def step_counts(result: ScenarioResult) -> tuple[int, int]:
    """(passed, total) steps of a ScenarioResult's sessions that count (last_attempts)."""
    steps = [st for sess in last_attempts(result) for st in sess.steps]
    return sum(1 for st in steps if st.status == "passed"), len(steps)


def first_problem(
    result: ScenarioResult,
) -> tuple[StepResult | SessionResult | ScenarioResult, str] | None:
    """The first thing that went wrong in a ScenarioResult: (the result it is in, a one-line
    description), or None when it passed (a session attempt that failed before a retry passed
    does not count)."""
    if result.status in ("passed", "skipped") and not result.reason:
        return None
    for sess in last_attempts(result):
        for st in sess.steps:
            if st.status in ("failed", "error"):
                desc = f"{step_label(st.index, st.section)} ({where(st.location, st.via)})"
                if len(result.sessions) > 1:
                    desc = f"session {sess.name}: {desc}"
                return st, f"{desc}: {st.reason or st.status}"
        if sess.status in ("failed", "error"):
            return sess, f"session {sess.name}: {sess.reason or sess.status}"
    if result.status in ("failed", "error") or result.reason:
        return result, result.reason or result.status
    return None


def summary_text(result: ScenarioResult, *, dash: str = "\u2014") -> str:
    """'PASS name[provider] — 12/12 steps, 0.35 s' / 'FAIL ... — first failure: step 5 (...): why'"""
    passed, total = step_counts(result)
    s = f"{VERDICT.get(result.status, result.status.upper())} {result.display_name} {dash} "
    s += f"{passed}/{total} steps, {result.duration:.2f} s"
    if result.retries:
        s += f" (after {result.retries} connection retr{'y' if result.retries == 1 else 'ies'})"
    if result.status == "skipped":  # a requires did not hold: not a failure
        return s + (f" {dash} skipped: {result.reason}" if result.reason else "")
    problem = first_problem(result)
    if problem is not None:
        s += f" {dash} " + ("first failure: " if total else "could not run: ") + problem[1]
    return s


SLOWEST = 5  # steps listed under a suite's summary


def slowest_steps(results: list[ScenarioResult], n: int = SLOWEST) -> list[tuple[ScenarioResult, StepResult]]:
    """The n steps that took longest (of the session attempts that count), slowest first,
    with the scenario each is in; steps that were not played are left out."""
    played = [
        (r, st)
        for r in results
        for sess in last_attempts(r)
        for st in sess.steps
        if st.status in ("passed", "failed", "error")
    ]
    played.sort(key=lambda pair: pair[1].elapsed, reverse=True)
    return played[:n]
