"""May a loaded model be written to the model cache? Not when it would put a secret on disk.

The cache (runner.cache.store) writes what it is given; this policy is the loader's, and it
reads templates with the one `{{ }}` parser (runner.lang.templates).
"""

from __future__ import annotations

from runner.lang.templates import TemplateError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.model.scenario import Scenario

__all__ = ["holds_secret_literal"]


def _template_names(value: str) -> set[str] | None:
    """The names the `{{ }}` expressions of a pure template use, or None when the value holds
    literal text: characters outside `{{ }}`, or a quoted string inside one (a
    `default('...')` can carry a password as well as plain text can)."""
    try:
        t = parse(value)
    except TemplateError:
        return None
    if t.is_constant or t.literal_text().strip() or any(e.strings() for e in t.expressions):
        return None
    return t.names()


def holds_secret_literal(sc: Scenario) -> bool:
    """Do the scenario's vars (or an include's bindings) give a secret, or a variable a secret's
    template uses, a literal value? Then the model must not be written to disk."""
    mappings = [sc.vars]
    for sess in sc.sessions:
        for step in (*sess.steps, *sess.finally_steps):
            mappings.extend(b for b in step.bindings if b not in mappings)
    tainted = {s for s in sc.secrets if not s.startswith("env.")}
    todo = list(tainted)
    while todo:
        name = todo.pop()
        for m in mappings:
            if name not in m:
                continue
            value = m[name]
            names = _template_names(value) if isinstance(value, str) else None
            if names is None:
                return True
            for n in names - tainted:
                tainted.add(n)
                todo.append(n)
    return False
