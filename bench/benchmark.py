#!/usr/bin/env python3
"""mailrun benchmark: speed measured as ratios against baselines run in the same invocation.

    python3 bench/benchmark.py            full mode (about a minute and a half)
    python3 bench/benchmark.py --quick    smoke mode: every figure, few iterations
    python3 bench/benchmark.py --json     machine output on stdout instead of the table
    python3 bench/benchmark.py --json out.json   the table on stdout and the JSON in out.json

It starts its own Postfix `smtp-sink` on a free 127.0.0.1 port, writes a 10-step send scenario
to a temporary directory, and measures:

1. engine    the engine (runner.engine.run.Engine) vs a minimal hand-written socket client playing
             the same SMTP conversation, interleaved rounds; medians of wall and CPU time per
             conversation and their ratios (reported, no target: the old 1.2x target is retired).
2. process   whole processes: `mailrun FILE` (warm and cold validation cache), `python -m runner
             FILE`, `python -c pass` and `swaks` doing the same send (target: mailrun no slower
             than swaks), plus the import costs of the run path (python -X importtime).
3. telnet    the same conversation over `transport: telnet` vs the socket transport: per-step
             time ratio (reported, no target), spawn/connect and close costs reported separately.
4. suite     200 scenario runs through runner.suite.execute at -j 1, -j 8, -j 32: conversations
             per second and CPU per conversation (no target).
5. memory    a `python -m runner` child receiving a 100 MB RETR (POP3, 4-byte lines) and a 100 MB
             FETCH literal (IMAP, 3-byte lines) from a loopback server of the section's own: peak
             RSS and its ratio to the body size (goal: at most 2x the body plus 100 MiB; quick
             mode: 10 MB bodies).

Nothing here is a test assertion: targets are reported as met / not met. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common import FULL, HOST, PASSWORD_ENV, QUICK, RCPT, SCENARIO, USER, BenchError, Redact, Report, SmtpSink
from section_engine import bench_engine, bench_engine_postfix
from section_memory import bench_memory
from section_process import bench_process
from section_telnet_suite import bench_suite, bench_telnet


# ----------------------------------------------------------------------------------- output
def render_table(report: Report, header: str) -> str:
    lines = [header]
    section = None
    width = max((len(f.label) for f in report.figures), default=20)
    for f in report.figures:
        if f.section != section:
            section = f.section
            lines += ["", section]
        verdict = "" if f.met is None else ("met" if f.met else "NOT MET")
        target = f"target {f.target}" if f.target else ""
        row = f"  {f.label:<{width}}  {f.shown():>14}  {target:<16} {verdict}".rstrip()
        if f.note:
            row += f"  ({f.note})"
        lines.append(row)
    if report.imports:
        lines += [
            "",
            "run-path imports (python -X importtime -m runner FILE, cached run; top level, cumulative)",
        ]
        for row in report.imports:
            if "imported" in row:
                state = f"imported, {row['cumulative_ms']:.1f} ms" if row["imported"] else "not imported"
                lines.append(f"  jsonschema on a {row['run']} run: {state}")
            else:
                lines.append(
                    f"  {row['module']:<40} {row['cumulative_ms']:8.1f} ms  (self {row['self_ms']:.1f} ms)"
                )
    targets = [f for f in report.figures if f.target]
    met = sum(1 for f in targets if f.met)
    lines += ["", f"targets met: {met} of {len(targets)}"]
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"ERROR: {e}" for e in report.errors]
    return "\n".join(lines) + "\n"


def as_json(report: Report, machine: dict) -> dict:
    targets = [f for f in report.figures if f.target]
    return {
        "mode": report.mode,
        "machine": machine,
        "figures": {
            f.key: {
                "label": f.label,
                "section": f.section,
                "value": f.value,
                "unit": f.unit,
                "target": f.target or None,
                "met": f.met,
                "note": f.note or None,
            }
            for f in report.figures
        },
        "targets": {"total": len(targets), "met": sum(1 for f in targets if f.met)},
        "imports": report.imports,
        "notes": report.notes,
        "errors": report.errors,
    }


# ------------------------------------------------------------------------------------ main
SECTIONS = ("engine", "postfix", "process", "telnet", "suite", "memory")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="mailrun benchmark: ratios against baselines run in the same invocation"
    )
    p.add_argument("--quick", action="store_true", help="smoke mode: every figure, few iterations")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="machine output: to stdout instead of the table, or to PATH beside the table",
    )
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    args = p.parse_args(argv)
    mode = QUICK if args.quick else FULL
    only = set(args.only or SECTIONS)

    password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(12)
    redact = Redact(password)
    report = Report("quick" if args.quick else "full")
    load = os.getloadavg()
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }
    header = (
        f"mailrun benchmark ({report.mode} mode): Python {machine['python']}, {machine['cpus']} CPUs, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    env = {PASSWORD_ENV: password}
    sink = SmtpSink()
    status = 0
    with tempfile.TemporaryDirectory(prefix="mailrun-bench-") as tmpname:
        tmp = Path(tmpname)
        try:
            sink.start()
            header += f"\nserver: smtp-sink on {HOST}:{sink.port} (its own process)"
            scenario_file = tmp / "bench_send.yaml"
            scenario_file.write_text(
                SCENARIO.format(host=HOST, port=sink.port, user=USER, rcpt=RCPT, env=PASSWORD_ENV)
            )
            from runner.load.api import load_scenario

            scenario = load_scenario(scenario_file, use_cache=False)
            steps = [
                ("engine", lambda: bench_engine(report, mode, scenario, env, sink.port, password)),
                ("postfix", lambda: bench_engine_postfix(report, mode, tmp)),
                (
                    "process",
                    lambda: bench_process(report, mode, tmp, scenario_file, sink.port, password, redact),
                ),
                ("telnet", lambda: bench_telnet(report, mode, scenario, env)),
                ("suite", lambda: bench_suite(report, mode, scenario, env)),
                ("memory", lambda: bench_memory(report, mode, tmp)),
            ]
            for name, fn in steps:
                if name not in only:
                    continue
                try:
                    fn()
                except BenchError as exc:
                    report.errors.append(f"{name}: {redact(str(exc))}")
                    status = 1
        except BenchError as exc:
            report.errors.append(redact(str(exc)))
            status = 2
        except KeyboardInterrupt:
            report.errors.append("interrupted")
            status = 130
        finally:
            sink.stop()
    data = as_json(report, machine)
    if args.json == "-":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(report, header))
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
