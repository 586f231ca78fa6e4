"""What a scenario's result comes to, as every report words it: which session attempts count
(`last_attempts`, from runner.results), the step counts (and those a transport's program
performed: `performed_text`), the first problem, the verdict, the summary line and the
slowest steps."""

from __future__ import annotations

from runner.reporters.text import step_label, where
from runner.results import PROBLEMS, STATUSES, last_attempts, performed_counts

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from runner.results import ScenarioResult, SessionResult, StepResult

#: each status (runner.results.STATUSES) as a scenario's line begins
VERDICT = {
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "SKIP",
    "interrupted": "INTERRUPTED",
    "not run": "NOT RUN",
    "unchecked": "UNCHECKED",
}
#: each status as the count line words it ('3 passed, 1 error')
COUNTED = {
    "passed": "passed",
    "failed": "failed",
    "error": "errors",
    "skipped": "skipped",
    "interrupted": "interrupted",
    "not run": "not run",
    "unchecked": "unchecked",
}


def status_counts(results) -> dict[str, int]:
    """How many results have each status (every status of runner.results.STATUSES)."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def count_line(results) -> str:
    """'5 scenarios: 2 passed, 1 failed, 0 errors, 1 interrupted, 1 not run': what the console's
    last line, the interruption message and the reports' summaries count alike (passed, failed
    and errors always, the other statuses when there are any)."""
    counts = status_counts(results)
    parts = [f"{n} {COUNTED.get(k, k)}" for k, n in counts.items() if n or k in ("passed", "failed", "error")]
    return f"{len(results)} scenario{'' if len(results) == 1 else 's'}: " + ", ".join(parts)


def step_counts(result: ScenarioResult) -> tuple[int, int]:
    """(passed, total) steps of a ScenarioResult's sessions that count (last_attempts)."""
    steps = [st for sess in last_attempts(result) for st in sess.steps]
    return sum(1 for st in steps if st.status == "passed"), len(steps)


def performed_text(result: ScenarioResult) -> str:
    """' (3 performed by openssl s_client -starttls smtp, not checked)' after a step count, for the
    steps a transport's program played itself (runner.results.performed_counts); '' for none."""
    counts = performed_counts(result)
    if not counts:
        return ""
    parts = [
        f"{n} {'performed ' if i == 0 else ''}by {program}" for i, (program, n) in enumerate(counts.items())
    ]
    return f" ({', '.join(parts)}, not checked)"


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
            if st.status in PROBLEMS:
                desc = f"{step_label(st.index, st.section)} ({where(st.location, st.via)})"
                if len(result.sessions) > 1:
                    desc = f"session {sess.name}: {desc}"
                return st, f"{desc}: {st.reason or st.status}"
        if sess.status in PROBLEMS:
            return sess, f"session {sess.name}: {sess.reason or sess.status}"
    if result.status in PROBLEMS or result.reason:
        return result, result.reason or result.status
    return None


def summary_text(result: ScenarioResult, *, dash: str = "\u2014", sessions_shown: bool = False) -> str:
    """'PASS name[provider] — 12/12 steps, 0.35 s' / 'FAIL ... — first failure: step 5 (...): why'
    / 'NOT RUN name — interrupted by SIGTERM' / 'PASS name — 3/6 steps (3 performed by openssl
    s_client -starttls smtp, not checked), 0.35 s' / 'UNCHECKED name — 0/3 steps (...) — no
    check was played: ...'. `sessions_shown`: the reader has just seen each
    failed session's reason on a line of its own (the console), so a session's problem is
    referred to, not said twice."""
    s = f"{VERDICT.get(result.status, result.status.upper())} {result.display_name} {dash} "
    if result.status == "not run":
        return s + (result.reason or "not run")
    passed, total = step_counts(result)
    s += f"{passed}/{total} steps{performed_text(result)}, {result.duration:.2f} s"
    if result.retries:
        s += f" (after {result.retries} connection retr{'y' if result.retries == 1 else 'ies'})"
    if result.status == "skipped":  # a requires did not hold: not a failure
        return s + (f" {dash} skipped: {result.reason}" if result.reason else "")
    if result.status == "unchecked":  # the transport's program performed every check
        return s + f" {dash} {result.reason or 'no check was played'}"
    problem = first_problem(result)
    if problem is not None:
        if result.status == "interrupted":
            lead = "stopped at: " if total else ""
        else:
            lead = "first failure: " if total else "could not run: "
        text = problem[1]
        if sessions_shown and any(problem[0] is sess for sess in result.sessions):
            text = f"session {problem[0].name}: {problem[0].status} (above)"
        s += f" {dash} " + lead + text
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
