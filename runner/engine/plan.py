"""What one run works out once about its scenario, before anything connects: per step, what its
StepResult shows of it and never changes (where it is written, its pattern as text); per
session, its templated steps for preflight, and the connection preflight resolved, for the
first attempt.

A plan lives as long as one Engine.run: no table outlives the run, nothing is keyed by id.
"""

from __future__ import annotations

from runner.lang.templates import parse
from runner.results import StepResult

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from runner.lang.render import Context
    from runner.model.config import ConnectConfig
    from runner.model.scenario import Scenario, Session, Step


class StepPlan:
    """One step of a session, in its section ('steps' or 'finally', index 1-based), with what its
    StepResult shows of it: location 'file:line', via (the include chain, or None) and expected
    (the S pattern as written, or None)."""

    __slots__ = ("step", "section", "index", "location", "via", "expected")

    def __init__(self, step: Step, section: str, index: int):
        self.step = step
        self.section = section
        self.index = index
        loc = step.location
        self.location = str(loc)
        self.via = " <- ".join(map(str, reversed(loc.via))) if loc.via else None
        self.expected = step.expect.describe() if step.expect is not None else None

    def new_result(self) -> StepResult:
        step = self.step
        return StepResult(self.index, self.section, self.location, self.via, step.action, "passed", step.name)


class SessionPlan:
    """A session's steps as StepPlans; `config`: the connection preflight resolved, for the
    first attempt (taken once; a retry resolves again)."""

    __slots__ = ("session", "steps", "finally_steps", "config")

    def __init__(self, session: Session):
        self.session = session
        self.steps = tuple(StepPlan(step, "steps", i) for i, step in enumerate(session.steps, 1))
        self.finally_steps = tuple(
            StepPlan(step, "finally", i) for i, step in enumerate(session.finally_steps, 1)
        )
        self.config: ConnectConfig | None = None

    def templated(self) -> list[tuple[StepPlan, bool]]:
        """(step plan, after STARTTLS) of every `C`, `body`, `raw` and `bdat` step whose text is a
        template, and every `auth` step, in order. After STARTTLS: a `starttls: true` step comes before it (every
        `finally` step of a session that has one counts as after it)."""
        out = []
        after = False
        for sp in self.steps:
            if _is_template(sp.step):
                out.append((sp, after))
            after = after or sp.step.starttls
        for sp in self.finally_steps:
            if _is_template(sp.step):
                out.append((sp, after))
        return out

    def take_config(self) -> ConnectConfig | None:
        config, self.config = self.config, None
        return config


def _is_template(step: Step) -> bool:
    if step.action == "auth":
        return True  # it sends credentials: checked before connecting like a template with a secret
    return (
        step.action in ("send", "body", "raw", "bdat")
        and step.text is not None
        and not parse(step.text).is_constant
    )


def scoped(step: Step, ctx: Context) -> Context:
    """The context an included step renders in: ctx with its include's bindings (a fragment's
    default giving way to a value the run was given from outside the file)."""
    for binding, defaults in step.scopes():
        ctx = ctx.child(binding, defaults=defaults)
    return ctx


def plan_scenario(scenario: Scenario) -> list[SessionPlan]:
    return [SessionPlan(session) for session in scenario.sessions]
