"""Did a scenario run check anything? A run all of whose steps passed is a PASS only when at
least one of its checks was played. Its checks are the steps with an `S:` in `steps` and the TLS
step (`tls_expect`); `finally` is clean-up and does not count, nor does a step without `S:`.

A run none of whose checks was played, some of them because the transport's program performed
them itself (`performed_by`: openssl s_client -starttls plays the steps up to STARTTLS), tested
nothing: it is `unchecked`, exit class 1. (A `requires` or `when` alone never leaves a run
without a played check: the reply that carried the capability list was one. A session's
`requires` makes the run `skipped`.)
"""

from __future__ import annotations

from runner.errors import ExitClass
from runner.results import last_attempts

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from runner.results import ScenarioResult, StepResult

PLAYED = ("passed", "failed", "error", "interrupted")


def is_check(st: StepResult) -> bool:
    """A step that checks what the server sent: an `S:` in `steps`, or the TLS step."""
    return st.section in ("steps", "tls") and st.expected is not None


def nothing_checked(result: ScenarioResult) -> tuple[str, ExitClass, str] | None:
    """('unchecked', exit class, reason) for a passed run none of whose checks was played, the
    transport's program having performed some; None otherwise."""
    if result.status != "passed":
        return None
    checks = [st for sess in last_attempts(result) for st in sess.steps if is_check(st)]
    programs = list(dict.fromkeys(st.performed_by for st in checks if st.performed_by))
    if not programs or any(st.status in PLAYED for st in checks):
        return None
    by = " or ".join(programs)
    rest = sum(1 for st in checks if not st.performed_by)
    why = f"every step with an S: was performed by {by}"
    if rest:
        why = f"{len(checks) - rest} step(s) with an S: performed by {by}, {rest} not played"
    return "unchecked", ExitClass.FAILED, f"no check was played: {why} (the socket transport plays them)"
