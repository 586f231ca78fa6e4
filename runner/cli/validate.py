"""`mailrun validate FILE|DIR... [--strict]`: check scenarios without connecting."""

from __future__ import annotations

import sys

from runner.cli.args import build_validate_parser as build_parser
from runner.cli.variables import read_variables
from runner.errors import ExitClass


def main(rest: list[str]) -> int:
    return cmd_validate(build_parser().parse_intermixed_args(rest))


def cmd_validate(args) -> int:
    from runner.cli.paths import missing_paths
    from runner.load.api import validate_paths

    env, variables = read_variables(args)
    missing = missing_paths(args.paths)
    given = [p for p in args.paths if p not in missing]
    report = validate_paths(given, env=env, defined=variables.keys(), strict=args.strict)
    from runner.reporters.text import safe_text  # (a line break in a path: never a forged line)

    errors = [f"{safe_text(p)}: file not found" for p in missing]
    errors += [] if (missing and not given) else report.errors
    warnings = list(report.warnings)
    if args.strict:  # --strict: an unset environment variable is an error, and is counted as one
        errors += [w.removeprefix("warning: ") for w in warnings]
        warnings = []
    warnings += _short_secrets(report.scenarios, env, variables)  # what a run warns of too
    for line in errors:
        print(line)
    for line in warnings:
        print(line if line.startswith("warning") else f"warning: {line}")
    n = report.files if given else 0
    sys.stdout.flush()
    if errors or warnings:  # the count apart from the list above it
        print(file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s) in {n} file(s)" + _extra(missing, warnings), file=sys.stderr)
        return int(ExitClass.INVALID)
    print(f"{n} file(s) valid" + _extra(missing, warnings), file=sys.stderr)
    return 0


def _short_secrets(scenarios, env, variables) -> list[str]:
    from runner.cli.secret_check import short_secret_warnings
    from runner.engine.run import RunOptions
    from runner.suite import plan

    return short_secret_warnings(plan(scenarios), RunOptions(env=env, variables=variables))


def _extra(missing: list[str], warnings: list[str]) -> str:
    out = f", {len(warnings)} warning(s)" if warnings else ""
    return out + (f"; {len(missing)} path(s) not found" if missing else "")
