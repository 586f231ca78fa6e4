"""`mailrun --list ...`: what a run would play, after every check a run makes before it
connects (files valid, filters, outputs), with nothing sent: one line per scenario run (name,
provider, file, tags) and, unless -q, one per session (protocol, host and port as written)."""

from __future__ import annotations

import sys


def show_plan(runs, args, out=None) -> int:
    out = out or sys.stdout
    providers = sorted({r.provider for r in runs if r.provider})
    head = f"{len(runs)} scenario run(s) would run"
    if providers:
        head += f" ({len({id(r.scenario) for r in runs})} scenario(s) x {len(providers)} provider(s))"
    print(head + "; nothing was sent", file=out)
    for run in runs:
        sc = run.scenario
        name = f"{sc.name}[{run.provider}]" if run.provider else sc.name
        tags = f"  tags: {', '.join(sc.tags)}" if sc.tags else ""
        print(f"  {name}  ({sc.path}){tags}", file=out)
        if args.quiet:
            continue
        for sess in sc.sessions:
            values = sess.connect.values
            host, port = values.get("host", "?"), values.get("port", "default port")
            tls = values.get("tls")
            where = f"{host}:{port}" + (f", TLS {tls}" if tls and tls != "none" else "")
            steps = len(sess.steps) + len(sess.finally_steps)
            print(f"      session {sess.name}: {sess.protocol} to {where}, {steps} step(s)", file=out)
    return 0
