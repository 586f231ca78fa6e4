"""Did a scenario run check anything? A run all of whose steps passed is a PASS only when at
least one of its checks was played. Its checks are the steps with an `S:` in `steps` and the TLS
step (`tls_expect`); `finally` is clean-up and does not count, nor does a step without `S:`.

    unchecked   some check was not played because the transport's program performed it
                (`performed_by`: openssl s_client -starttls plays the steps up to STARTTLS),
                and no other check was played: exit class 1, the run tested nothing
    skipped     every check was skipped by a `requires` or found not needed by a `when`: the
                scenario's own conditions, exit 0 (1 with --fail-on-skip), like a session's
                `requires`

A run with no check at all, or one that did not pass, is left as it is.
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
    """(status, exit class, reason) for a passed run none of whose checks was played; None when
    one was (or the run has none, or did not pass)."""
    if result.status != "passed":
        return None
    checks = [st for sess in last_attempts(result) for st in sess.steps if is_check(st)]
    if not checks or any(st.status in PLAYED for st in checks):
        return None
    programs = list(dict.fromkeys(st.performed_by for st in checks if st.performed_by))
    if programs:
        rest = sum(1 for st in checks if not st.performed_by)
        why = f"every step with an S: was performed by {' or '.join(programs)}"
        if rest:
            why = f"{len(checks) - rest} step(s) with an S: performed by {' or '.join(programs)}, {rest} not played"
        return "unchecked", ExitClass.FAILED, f"no check was played: {why} (the socket transport plays them)"
    return "skipped", ExitClass.OK, "no check was played: every step with an S: was skipped or not needed"
