"""The warning, before a run, about a secret too short to mask well (issue 17): a secret shorter
than runner.lang.secrets.MIN_LENGTH characters is masked wherever it occurs in what the server
sends, so it hides ordinary text and shows where its characters appear. A warning on stderr,
not an error: the run goes on."""

from __future__ import annotations

from runner.errors import MailrunError
from runner.lang.secrets import Secret, short_secret_warning


def short_secret_warnings(runs, options) -> list[str]:
    """One line per short secret of the chosen runs, each value computed the way the run will
    (runner.engine.run.Engine.new_context: scenario vars, provider vars, --var, env); a value
    that cannot be computed yet (an error the run reports) is skipped."""
    from runner.engine.run import Engine

    engine = Engine(options, lambda event: None)
    out: list[str] = []
    for run in runs:
        sc = run.scenario
        if not sc.secrets:
            continue
        try:
            ctx = engine.new_context(sc, run.provider_vars)
        except MailrunError:
            continue
        where = f"{sc.path}" + (f" [{run.provider}]" if run.provider else "")
        for name in sorted(sc.secrets):
            value = ctx.get(name) if ctx.has(name) else None
            value = value.reveal() if isinstance(value, Secret) else value
            line = short_secret_warning(where, name, value or "")
            if line and f"warning: {line}" not in out:
                out.append(f"warning: {line}")
    return out
