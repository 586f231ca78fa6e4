"""`mailrun validate FILE|DIR... [--strict]`: check scenarios without connecting."""

from __future__ import annotations

import sys

from runner.cli.variables import read_variables
from runner.errors import ExitClass


def cmd_validate(args) -> int:
    from runner.load.api import validate_paths

    env, variables = read_variables(args)
    report = validate_paths(args.paths, env=env, defined=variables.keys(), strict=args.strict)
    for line in report.errors:
        print(line)
    for line in report.warnings:
        print(f"warning: {line}" if not line.startswith("warning") else line)
    bad = bool(report.errors) or (args.strict and bool(report.warnings))
    n = report.files
    if bad:
        print(f"{len(report.errors)} error(s) in {n} file(s)", file=sys.stderr)
        return int(ExitClass.INVALID)
    print(
        f"{n} file(s) valid" + (f", {len(report.warnings)} warning(s)" if report.warnings else ""),
        file=sys.stderr,
    )
    return 0
