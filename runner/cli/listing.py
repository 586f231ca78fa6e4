"""`mailrun --list ...`: what a run would play, after every check a run makes before it
connects (files valid, filters, outputs), with nothing sent: one line per scenario run (name,
provider, file, tags) and, unless -q, one per session: protocol, where it would connect (the
connection resolved as the run would, with the provider's vars and the command line's
overrides, masked; as written when it cannot be resolved yet, e.g. a captured value)."""

from __future__ import annotations

import sys


def show_plan(runs, args, options, out=None) -> int:
    out = out or sys.stdout
    providers = sorted({r.provider for r in runs if r.provider})
    head = f"{len(runs)} scenario run(s) would run"
    if providers:
        head += f" ({len({id(r.scenario) for r in runs})} scenario(s) x {len(providers)} provider(s))"
    if args.sandbox:
        head += " (--sandbox: against the sandbox, whatever the sessions say)"
    print(head + "; nothing was sent", file=out)
    for run in runs:
        sc = run.scenario
        name = f"{sc.name}[{run.provider}]" if run.provider else sc.name
        tags = f"  tags: {', '.join(sc.tags)}" if sc.tags else ""
        print(f"  {name}  ({sc.path}){tags}", file=out)
        if args.quiet:
            continue
        for sess in sc.sessions:
            where = _where(sess, run, options)
            steps = len(sess.steps) + len(sess.finally_steps)
            print(f"      session {sess.name}: {sess.protocol} to {where}, {steps} step(s)", file=out)
    return 0


def _where(session, run, options) -> str:
    """'host:port via transport, TLS mode' as the run would connect (masked), else as written."""
    from runner.engine.preflight import shown_peer
    from runner.engine.run import Engine

    try:
        engine = Engine(options, lambda event: None)
        ctx = engine.new_context(run.scenario, run.provider_vars)
        config = engine.connect_config(session, ctx)
        peer = shown_peer(config, ctx.redactor.redact)
        tls = "" if config.tls == "none" else f", TLS {config.tls}"
        return f"{peer} via {config.transport}{tls}"
    except Exception:  # noqa: BLE001 - not resolvable before the run (a capture, an unset variable)
        values = session.connect.values
        tls = values.get("tls")
        shown = f"{values.get('host', '?')}:{values.get('port', 'default port')}"
        return shown + (f", TLS {tls}" if tls and tls != "none" else "") + " (as written)"
