"""`mailrun report merge REPORT.json... --report FORMAT=PATH... [--transcript DIR]`: the JSON
reports of several runs (the shards of one suite) played back into the reporters a run uses, so
every format is rebuilt from them as if one run had played every scenario
(runner.reporters.replay)."""

from __future__ import annotations

import sys

from runner.errors import ExitClass


def build_parser():
    from runner.cli.args import _report, _report_forms, new_parser

    p = new_parser(prog="mailrun report", description="Work with the JSON reports of earlier runs.")
    sub = p.add_subparsers(dest="action", metavar="merge", required=True)
    m = sub.add_parser(
        "merge",
        help="rebuild every report format from JSON reports (the shards of a suite)",
        description=(
            "Read JSON reports (written by --report json=PATH) and write the reports one run of "
            "every scenario in them would have written. The scenario runs come in file order."
        ),
    )
    m.add_argument("inputs", nargs="+", metavar="REPORT.json", help="JSON reports of earlier runs")
    m.add_argument(
        "--report",
        action="append",
        type=_report,
        default=[],
        metavar=_report_forms("|"),
        required=True,
        help="a report to write (repeatable)",
    )
    m.add_argument("--transcript", metavar="DIR", help="write one transcript file per scenario run")
    return p


def main(argv: list[str]) -> int:
    """Exit status: 0 when every report was written (whatever the runs' verdicts: the merged JSON
    report's exit_class holds the suite's), 2 for an unreadable or invalid input."""
    from runner.cli.paths import check_outputs
    from runner.errors import MailrunError
    from runner.reporters.replay import duplicates, scenario_runs

    args = build_parser().parse_args(argv)
    docs, problems = read_all(args.inputs)
    runs = []
    if not problems:
        try:  # every run rebuilt before anything is written
            runs = list(scenario_runs(docs))
        except MailrunError as exc:
            problems.append(str(exc))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"mailrun: {len(problems)} unusable report(s); nothing was written", file=sys.stderr)
        return int(ExitClass.INVALID)
    check_outputs(args.report, args.transcript)
    for line in duplicates(docs):
        print(f"mailrun: warning: {line}: it is merged once per report", file=sys.stderr)
    counts = merge(runs, args)
    statuses = ", ".join(f"{n} {status}" for status, n in counts.items() if status != "runs")
    print(
        f"merged {counts['runs']} scenario run(s) from {len(docs)} report(s)"
        + (f": {statuses}" if statuses else "")
        + f" -> {', '.join(path for _, path in args.report)}"
        + (f", transcripts in {args.transcript}" if args.transcript else ""),
        file=sys.stderr,
    )
    return 0


def read_all(paths: list[str]) -> tuple[list[tuple[str, dict]], list[str]]:
    """Every input read and checked, so that one command names every unusable one."""
    from runner.errors import MailrunError
    from runner.reporters.replay import read_report

    docs, problems = [], []
    for path in paths:
        try:
            docs.append((path, read_report(path)))
        except MailrunError as exc:
            problems.append(str(exc))
    return docs, problems


def merge(runs: list, args) -> dict[str, int]:
    """Plays every scenario run (result, events) into the reporters and closes them; the runs'
    counts."""
    from runner.reporters.base import Tee
    from runner.reporters.formats import create

    reporters = Tee([create(kind, path) for kind, path in args.report])
    transcripts = None
    if args.transcript:
        from runner.reporters.transcript import TranscriptReporter

        transcripts = TranscriptReporter(args.transcript)
    counts = {"runs": 0}
    try:
        for result, events in runs:
            counts["runs"] += 1
            counts[result.status] = counts.get(result.status, 0) + 1
            writer = transcripts.for_run(result.file, result.name, result.provider) if transcripts else None
            for ev in events:
                reporters.handle(ev)
                if writer is not None:
                    writer.handle(ev)
    finally:
        if transcripts is not None:
            transcripts.close()
    reporters.close()
    return counts
