"""What one run works out once about its scenario, before anything connects: per session, per
step, the facts that do not change while it plays (where the step is written, its pattern as
text, the names its template uses, whether it comes after STARTTLS), plus the connection
preflight resolved, for the first attempt.

A plan lives as long as one Engine.run: no table outlives the run, nothing is keyed by id.
"""

from __future__ import annotations

from runner.lang.templates import parse
from runner.results import StepResult

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from runner.lang.templates import Context
    from runner.model.config import ConnectConfig
    from runner.model.scenario import Scenario, Session, Step


class StepPlan:
    """One step of a session, in its section ('steps' or 'finally', index 1-based).

    location   'file:line' as StepResult shows it; via: the include chain, or None
    expected   the S pattern as written, or None
    names      the names its `C`/`body`/`raw` template uses; None when its text is constant
    after_starttls  a STARTTLS step comes before it (every `finally` step of a session with one)
    """

    __slots__ = (
        "step",
        "section",
        "index",
        "location",
        "via",
        "expected",
        "names",
        "after_starttls",
    )

    def __init__(self, step: Step, section: str, index: int, after_starttls: bool):
        self.step = step
        self.section = section
        self.index = index
        loc = step.location
        self.location = str(loc)
        self.via = " <- ".join(map(str, reversed(loc.via))) if loc.via else None
        self.expected = step.expect.describe() if step.expect is not None else None
        templated = step.action in ("send", "body", "raw") and step.text is not None
        tpl = parse(step.text) if templated else None
        self.names = frozenset(tpl.names()) if tpl is not None and not tpl.is_constant else None
        self.after_starttls = after_starttls

    def new_result(self) -> StepResult:
        step = self.step
        return StepResult(self.index, self.section, self.location, self.via, step.action, "passed", step.name)


class SessionPlan:
    """A session's steps as StepPlans; `config`: the connection preflight resolved, for the
    first attempt (taken once; a retry resolves again)."""

    __slots__ = ("session", "steps", "finally_steps", "config")

    def __init__(self, session: Session):
        self.session = session
        has_starttls = any(s.starttls for s in session.steps)
        steps, after = [], False
        for index, step in enumerate(session.steps, 1):
            steps.append(StepPlan(step, "steps", index, after))
            after = after or step.starttls
        self.steps = tuple(steps)
        self.finally_steps = tuple(
            StepPlan(step, "finally", index, has_starttls)
            for index, step in enumerate(session.finally_steps, 1)
        )
        self.config: ConnectConfig | None = None

    def templated(self):
        """The StepPlans whose text is a template, in order (both sections)."""
        return [p for p in (*self.steps, *self.finally_steps) if p.names is not None]

    def take_config(self) -> ConnectConfig | None:
        config, self.config = self.config, None
        return config


def scoped(step: Step, ctx: Context) -> Context:
    """The context an included step renders in: ctx with its include's bindings."""
    for b in step.bindings:
        ctx = ctx.child(b)
    return ctx


def plan_scenario(scenario: Scenario) -> list[SessionPlan]:
    return [SessionPlan(session) for session in scenario.sessions]
