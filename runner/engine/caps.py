"""A session's capability list and what depends on it: `requires:`, `when:`, the session's (and
scenario's) `requires`, and the time limits `max_time` / `min_time`.

The list is the session's own: forgotten at connect and at the TLS upgrade (RFC 3207: what the
server said before TLS is not to be trusted after it), replaced by each later reply that
carries one (which replies do is protocol knowledge: runner.protocols.caps). It is set on the
context's root, where `{{ caps.NAME }}` reads it (runner.lang.render).

What a gate decides is said by fields of the StepResult (status, `condition`), the reason is
for people (runner.results).
"""

from __future__ import annotations

from runner.engine.verdicts import StepFailure
from runner.errors import ExitClass
from runner.lang.requires import check
from runner.protocols.caps import capabilities

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from runner.engine.plan import StepPlan
    from runner.lang.render import Context
    from runner.model.scenario import Session, Step
    from runner.protocols.base import Reply

__all__ = ["SessionCaps", "time_problem"]


class SessionCaps:
    """The capability list of the session being played, and its `requires` still to check."""

    def __init__(self, session: Session, ctx: Context):
        self.protocol = session.protocol
        self.ctx = ctx
        self.current: dict[str, str] | None = None
        #: the session's (and scenario's) requires, until checked against a list
        self.pending = session.requires or None
        self.skip: tuple[str, str] | None = None  # (condition, reason) once the session is skipped

    def reset(self) -> None:
        """At connect and at the TLS upgrade: no list until the server sends one again."""
        self._set(None)

    def seen(self, command: str | None, reply: Reply) -> None:
        """A reply arrived (command: the `C:` line it answers, None when nothing was sent)."""
        found = capabilities(self.protocol, command, reply)
        if found is not None:
            self._set(found)

    def _set(self, caps: dict[str, str] | None) -> None:
        self.current = caps
        self.ctx.set_caps(caps)

    def gate(self, step: Step) -> tuple[str, str, str] | None:
        """None when the step is to be played; else (status, condition, reason): 'skipped'
        for a `requires` not met, 'not needed' for a `when`. StepFailure (exit 2) when it
        asks before any capability list was seen."""
        for key, status in (("requires", "skipped"), ("when", "not needed")):
            source = getattr(step, key)
            if source is None:
                continue
            unmet = check(source, self._known(key))
            if unmet is not None:
                return status, unmet[0], unmet[1]
        return None

    def _known(self, key: str) -> dict[str, str]:
        if self.current is None:
            raise StepFailure(
                "error",
                ExitClass.INVALID,
                f"'{key}' is evaluated before any capability list was seen in this session "
                "(none yet, or the last was dropped at the TLS upgrade)",
            )
        return self.current

    def check_session(self, later: Sequence[StepPlan]) -> None:
        """After a step: the session's requires against the list, once one is seen and no
        STARTTLS step is still to come (the list after TLS is the one that counts)."""
        if self.pending is None or self.current is None or any(sp.step.starttls for sp in later):
            return
        unmet = check(self.pending, self.current)
        self.pending = None
        if unmet is not None:
            self.skip = unmet

    def unchecked(self) -> str | None:
        """The run error when the session's steps ended and its requires was never checked."""
        if self.pending is None:
            return None
        return "'requires' of the session: the server sent no capability list in this session"


def time_problem(step: Step, session: Session, took: float) -> tuple[str, str] | None:
    """(the limit, why) when a reply that took `took` seconds from the send breaks the step's
    max_time / min_time (else the session's, which holds the scenario's); else None."""
    most = step.max_time if step.max_time is not None else session.max_time
    least = step.min_time if step.min_time is not None else session.min_time
    if most is not None and took > most:
        return "max_time", f"reply took {took:.3f} s, {took - most:.3f} s over max_time {most:g} s"
    if least is not None and took < least:
        return "min_time", f"reply came after {took:.3f} s, {least - took:.3f} s before min_time {least:g} s"
    return None
