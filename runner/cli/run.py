"""`mailrun [run] FILE|DIR|GLOB... [options]`: load every scenario, check everything that can
be checked before a byte is sent (invalid files, output paths, filters, unset environment
variables), then play the runs with the reporters the options ask for (and --sandbox)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runner.cli.secret_check import short_secret_warnings
from runner.cli.variables import (
    matrix_env_refs,
    read_variables,
    supplied_names,
    unneeded_env,
    unused_vars,
)
from runner.errors import ExitClass, UsageError, most_severe
from runner.prepare import defined_names, fill_sandbox_env, load_all, unset_env

#: the connect keys that a command-line option of the same name overrides
OVERRIDDEN = ("host", "port", "tls", "transport", "timeout", "ca", "family")


def main(rest: list[str]) -> int:
    """`mailrun [run] ...`: the run command (without options, argparse is never imported)."""
    from runner.cli.args import build_run_parser, parse_run_args

    if not rest:
        build_run_parser().error("no scenario file given (mailrun FILE..., mailrun --help for more)")
    if rest[0] in ("-h", "--help"):
        build_run_parser().parse_args(rest)
    from runner.interrupt import Interrupt

    # SIGINT, SIGTERM, SIGHUP from here on stop the run with every report written (runner.interrupt)
    interrupt = Interrupt()
    with interrupt.handlers():
        return cmd_run(parse_run_args(rest), interrupt)


def build_parser():
    from runner.cli.args import build_run_parser

    return build_run_parser()


def cmd_run(args, interrupt=None) -> int:
    # long: every check before a run, in the order a person needs them, then the run
    # a warm run takes every model from the cache: the full load (runner.load.build: PyYAML, jsonschema)
    # is imported only for a file the cache does not hold
    from runner.cli.paths import check_outputs, missing_paths
    from runner.load.api import discover
    from runner.suite import load_matrix, plan, select

    missing = missing_paths(args.paths)
    if missing:
        from runner.reporters.text import safe_text  # (a line break in a path: never a forged line)

        raise UsageError("; ".join(f"{safe_text(p)}: file not found" for p in missing))
    env, variables = read_variables(args)
    files = discover(args.paths)
    if not files:
        raise UsageError(f"no scenario files found in {' '.join(args.paths)}")
    # provider vars (--matrix) define names the scenarios may use
    matrix = load_matrix(args.matrix) if args.matrix else []
    defined = defined_names(variables, matrix)
    scenarios, problems, invalid = load_all(files, defined)
    if problems:
        which = ", ".join(invalid)
        if not (args.keep_going and scenarios):
            more = "; --keep-going runs the valid ones" if scenarios else ""
            return refuse(
                problems, f"{plural(len(invalid), 'invalid scenario file')} ({which}); nothing was sent{more}"
            )
        print("\n".join(problems), file=sys.stderr)
        print(
            f"mailrun: --keep-going: skipping {plural(len(invalid), 'invalid file')} ({which})",
            file=sys.stderr,
        )
    unused = unused_vars([name for name, _ in args.var], scenarios, matrix)
    if unused:
        return refuse(unused, "a --var that has no effect is probably a mistake; nothing was sent")

    check_outputs(args.report, args.transcript)

    chosen = select(scenarios, tags=args.tag, keyword=args.keyword)
    if not chosen:
        raise UsageError("no scenario matched the --tag/-k filters")
    if args.list:
        from runner.cli.listing import show_plan

        # (an unset environment variable is shown as $NAME: --list needs none of them)
        shown_env = {
            n: f"${n}" for n in [*matrix_env_refs(matrix), *(n for sc in chosen for n in sc.env_refs)]
        }
        keep = args.shard.keeps if args.shard else None  # (what this shard would play)
        return show_plan(
            plan(chosen, matrix, keep=keep), args, run_options(args, {**shown_env, **env}, variables)
        )

    supplied = supplied_names(variables, matrix)
    unneeded = {sc.path: unneeded_env(sc, supplied) for sc in chosen}
    matrix_env = matrix_env_refs(matrix)
    if args.sandbox:
        needed = [n for sc in chosen for n in sc.env_refs if n not in unneeded[sc.path]]
        fill_sandbox_env(env, needed + list(matrix_env))
    unset = unset_env(chosen, matrix_env, env, unneeded)
    if unset:
        return refuse(
            unset, "set the environment variables above (or use --env-file / --var); nothing was sent"
        )

    options = run_options(args, env, variables, interrupt)
    runs = plan(chosen, matrix, keep=args.shard.keeps if args.shard else None)
    if args.shard and not runs:  # an empty shard passes (and writes empty reports)
        print(f"mailrun: shard {args.shard} holds none of the chosen scenario runs", file=sys.stderr)
    for line in short_secret_warnings(runs, options):  # (a warning: the run goes on)
        print(line, file=sys.stderr)
    jobs = args.jobs or (1 if len(runs) == 1 else min(8, len(runs)))
    if args.snapshot or args.snapshot_update:
        from runner.cli.snapshots import load_snapshots

        problems = load_snapshots(runs, options, args)
        if problems:
            return refuse(problems, f"{len(problems)} damaged snapshot file(s); nothing was sent")
    sandbox = None
    try:
        if args.sandbox:
            sandbox = start_sandbox(options)
        exit_class = play(runs, options, args, jobs, list(zip(invalid, problems, strict=True)))
        if options.snapshots is not None and not options.interrupt.triggered:
            from runner.cli.snapshots import write_snapshots

            exit_class = write_snapshots(options.snapshots, exit_class)
    finally:
        if sandbox is not None:
            sandbox.stop()
    # --keep-going: the invalid files still count (2, or worse)
    return int(most_severe([exit_class, ExitClass.INVALID])) if problems else exit_class


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def refuse(lines: list[str], why: str) -> int:
    """Nothing is played: the problems, then one line saying so (exit 2)."""
    print("\n".join(lines), file=sys.stderr)
    print(f"mailrun: {why}", file=sys.stderr)
    return int(ExitClass.INVALID)


def run_options(args, env: dict[str, str], variables: dict[str, str], interrupt=None):
    """The RunOptions of every run: the variables and the connection overrides."""
    from runner.engine.run import RunOptions

    overrides = {key: getattr(args, key) for key in OVERRIDDEN if getattr(args, key) is not None}
    if args.insecure:
        overrides["tls_verify"] = False
    if args.allow_plaintext_secrets:
        overrides["allow_plaintext_secrets"] = True
    return RunOptions(
        env=env,
        variables=variables,
        overrides=overrides,
        allow_plaintext_secrets=args.allow_plaintext_secrets,
        run_id=os.urandom(6).hex(),
        interrupt=interrupt,
    )


# --- --sandbox -----------------------------------------------------------------------------
def start_sandbox(options):
    """--sandbox: starts the sandbox and points every session of the runs at it."""
    from runner.prepare import new_sandbox, pointing_at

    sb = new_sandbox()
    print(
        f"sandbox: serving on {sb.host} (ports {', '.join(f'{k} {v}' for k, v in sb.ports.items())}); "
        f"any login is accepted",
        file=sys.stderr,
    )
    options.adjust_connect = pointing_at(sb)
    return sb


# --- playing -------------------------------------------------------------------------------
class Reporters:
    """The reporters the options ask for: the console (live at -j 1, so the conversation shows
    as it happens; ordered otherwise), --report files (ordered) and --transcript (live)."""

    def __init__(self, args, jobs: int):
        from runner.reporters.console import ConsoleReporter

        self.console = ConsoleReporter(
            sys.stdout, verbose=args.verbose, show_crlf=args.show_crlf, quiet=args.quiet
        )
        self.ordered, self.live = [], []
        if jobs == 1:
            self.live.append(lambda run: self.console.handle)
        else:
            self.ordered.append(self.console)
        self.files = []
        if args.report:  # (a plain run does not import the report formats)
            from runner.reporters.formats import create

            self.files = [create(kind, path) for kind, path in args.report]
        self.ordered.extend(self.files)
        self.invalid: list = []  # results for the invalid files --keep-going skipped
        self.transcripts = None
        if args.transcript:
            from runner.reporters.transcript import TranscriptReporter

            self.transcripts = TranscriptReporter(args.transcript)
            self.live.append(self._transcript_for)

    def report_invalid(self, invalid: list[tuple[str, str]]) -> None:
        """--keep-going: each invalid file (path, problems) is reported as a scenario with an
        error (exit class 2) before the runs, so the JSON and JUnit reports name it too."""
        import time

        from runner.events import ScenarioFinished
        from runner.results import ScenarioResult

        for path, problems in invalid:
            lines = problems.splitlines() or [problems]
            more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            res = ScenarioResult(
                file=path,
                name=Path(path).stem,
                status="error",
                exit_class=ExitClass.INVALID,
                reason=f"invalid scenario file: {lines[0]}{more}",
            )
            self.invalid.append(res)
            for rep in (self.console, *self.files):
                rep.handle(ScenarioFinished(res, time.time()))

    def _transcript_for(self, run):
        return self.transcripts.for_run(str(run.scenario.path), run.scenario.name, run.provider).handle

    def close(self, runs) -> list:
        """The summary table (for a suite) and every report written; the results that exist."""
        results = self.invalid + [r.result for r in runs if r.result is not None]  # (every run has one)
        if len(results) > 1:
            self.console.summary_table(results)
        for rep in (self.console, *self.files):
            rep.close()
        if self.transcripts is not None:
            self.transcripts.close()
        return results


def play(runs, options, args, jobs: int, invalid=()) -> int:
    """Plays the runs with the reporters; SIGINT, SIGTERM and SIGHUP stop it (runner.interrupt)
    with every report and transcript written, and exit 130, 143 or 129."""
    from runner.reporters.summary import count_line, status_counts
    from runner.suite import Listener, execute

    reporters = Reporters(args, jobs)
    progress = reporters.console.progress if len(runs) > 1 else None
    unplayed = [reporters.console] if jobs == 1 else []
    listener = Listener(ordered=reporters.ordered, live=reporters.live, progress=progress, unplayed=unplayed)
    try:
        reporters.report_invalid(list(invalid))
        exit_class = execute(
            runs, options, listener, jobs=jobs, fail_fast=args.fail_fast, retries=args.retries
        )
    finally:
        options.interrupt.shielded = True  # the reports are written whole, whatever comes now
        results = reporters.close(runs)
    interrupt = options.interrupt
    if interrupt.triggered:
        from runner.interrupt import signame

        written = "; every report and transcript was written" if args.report or args.transcript else ""
        print(
            f"mailrun: interrupted by {signame(interrupt.signum)}: {count_line(results)}{written}",
            file=sys.stderr,
        )
    elif args.fail_fast and status_counts(results)["not run"]:
        n = status_counts(results)["not run"]
        print(
            f"mailrun: --fail-fast: {n} scenario run(s) not started after the first failure", file=sys.stderr
        )
    exit_class = most_severe([exit_class, interrupt.exit_class])  # (a signal while writing them)
    if args.fail_on_skip and exit_class == ExitClass.OK:
        from runner.results import skipped_by_requires

        skipped = sum(1 for r in results if skipped_by_requires(r))
        if skipped:
            print(f"mailrun: --fail-on-skip: {skipped} scenario run(s) skipped something", file=sys.stderr)
            return int(ExitClass.FAILED)
    return int(exit_class)
