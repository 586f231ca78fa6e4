"""`mailrun [run] FILE|DIR|GLOB... [options]`: load every scenario, check everything that can
be checked before a byte is sent (invalid files, output paths, filters, unset environment
variables), then play the runs with the reporters the options ask for (and --sandbox)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runner.cli.variables import matrix_env_refs, read_variables
from runner.errors import ExitClass, MailrunError, UsageError

#: what `--sandbox` puts in an environment variable the scenario needs but nobody set
SANDBOX_USER = "alice@mailrun.test"
SANDBOX_PASSWORD = "wonderland"
#: the connect keys that a command-line option of the same name overrides
OVERRIDDEN = ("host", "port", "tls", "transport", "timeout", "ca", "family")


def cmd_run(args) -> int:
    # a warm run takes every model from the cache: the full load (runner.load.build: PyYAML, jsonschema)
    # is imported only for a file the cache does not hold
    from runner.load.api import discover
    from runner.suite import load_matrix, plan, select

    env, variables = read_variables(args)
    files = discover(args.paths)
    if not files:
        raise UsageError(f"no scenario files found in {' '.join(args.paths)}")
    # provider vars (--matrix) define names the scenarios may use
    matrix = load_matrix(args.matrix) if args.matrix else []
    defined = set(variables) | {name for _, values in matrix for name in values}
    scenarios, problems = load_all(files, defined)
    if problems:
        return refuse(problems, f"{len(problems)} invalid scenario file(s); nothing was sent")

    check_outputs(args)

    chosen = select(scenarios, tags=args.tag, keyword=args.keyword)
    if not chosen:
        raise UsageError("no scenario matched the --tag/-k filters")

    matrix_env = matrix_env_refs(matrix)
    if args.sandbox:
        fill_sandbox_env(env, [name for sc in chosen for name in sc.env_refs] + list(matrix_env))
    unset = unset_env(chosen, matrix_env, env)
    if unset:
        return refuse(
            unset, "set the environment variables above (or use --env-file / --var); nothing was sent"
        )

    options = run_options(args, env, variables)
    runs = plan(chosen, matrix)
    jobs = args.jobs or (1 if len(runs) == 1 else min(8, len(runs)))
    sandbox = None
    try:
        if args.sandbox:
            sandbox = start_sandbox(options)
        return play(runs, options, args, jobs)
    finally:
        if sandbox is not None:
            sandbox.stop()


def load_all(files, defined: set[str]) -> tuple[list, list[str]]:
    """(scenarios, problems): every file is loaded, so that one run names every invalid one."""
    from runner.load.api import load_scenario

    scenarios, problems = [], []
    for f in files:
        try:
            scenarios.append(load_scenario(f, defined=defined))
        except MailrunError as exc:
            problems.append(str(exc))
    return scenarios, problems


def refuse(lines: list[str], why: str) -> int:
    """Nothing is played: the problems, then one line saying so (exit 2)."""
    print("\n".join(lines), file=sys.stderr)
    print(f"mailrun: {why}", file=sys.stderr)
    return int(ExitClass.INVALID)


def check_outputs(args) -> None:
    """--report and --transcript destinations are checked before anything is sent, so a run is
    never lost to a path that cannot be written (UsageError, exit 2)."""
    for kind, path in args.report:
        p = Path(path)
        if p.is_dir():
            raise UsageError(f"--report {kind}={path}: is a directory; name a file")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"--report {kind}={path}: cannot create {p.parent}: {exc.strerror or exc}"
            ) from None
        if not os.access(p.parent, os.W_OK):
            raise UsageError(f"--report {kind}={path}: {p.parent} is not writable")
    if args.transcript:
        d = Path(args.transcript)
        if d.exists() and not d.is_dir():
            raise UsageError(f"--transcript {args.transcript}: exists and is not a directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"--transcript {args.transcript}: cannot create it: {exc.strerror or exc}"
            ) from None
        if not os.access(d, os.W_OK):
            raise UsageError(f"--transcript {args.transcript}: not writable")


def unset_env(chosen, matrix_env: dict[str, str], env: dict[str, str]) -> list[str]:
    """One line per environment variable a chosen scenario or a provider file needs and nobody set."""
    from runner.model.scenario import env_warnings

    unset = [w for sc in chosen for w in env_warnings(sc, env)]
    unset += [
        f"matrix {where} needs environment variable {name}, which is not set"
        for name, where in matrix_env.items()
        if name not in env
    ]
    return unset


def run_options(args, env: dict[str, str], variables: dict[str, str]):
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
    )


# --- --sandbox -----------------------------------------------------------------------------
def sandbox_value(name: str) -> str:
    """What `--sandbox` puts in an environment variable the scenario needs but nobody set."""
    n = name.upper()
    if any(k in n for k in ("PASS", "TOKEN", "SECRET", "KEY")):
        return SANDBOX_PASSWORD
    if any(k in n for k in ("USER", "LOGIN", "MAIL", "ADDR", "FROM", "TO")):
        return SANDBOX_USER
    return "sandbox"


def fill_sandbox_env(env: dict[str, str], needed: list[str]) -> None:
    """--sandbox: every needed environment variable nobody set gets the sandbox's value (said on
    stderr, a password masked)."""
    for name in dict.fromkeys(needed):
        if name not in env:
            env[name] = sandbox_value(name)
            shown = "****" if env[name] == SANDBOX_PASSWORD else env[name]
            print(f"sandbox: {name} is not set; using the sandbox's {shown}", file=sys.stderr)


def start_sandbox(options):
    """--sandbox: starts the sandbox and points every session of the runs at it."""
    from runner.sandbox.server import Sandbox

    sb = Sandbox(accept_any_login=True).start()
    print(
        f"sandbox: serving on {sb.host} (ports {', '.join(f'{k} {v}' for k, v in sb.ports.items())}); "
        f"any login is accepted",
        file=sys.stderr,
    )

    def adjust(config):
        return config.replace(
            host=sb.host,
            port=sb.port_for(config.protocol, config.tls, proxy=config.proxy is not None),
            unix=sb.unix_for(config.protocol, config.unix),
            ca=Path(sb.ca_path),
            tls_verify=True,
            server_name=None,
        )

    options.adjust_connect = adjust
    return sb


# --- playing -------------------------------------------------------------------------------
class Reporters:
    """The reporters the options ask for: the console (live at -j 1, so the conversation shows
    as it happens; ordered otherwise), --report files (ordered) and --transcript (live)."""

    def __init__(self, args, jobs: int):
        from runner.reporters.console import ConsoleReporter

        self.console = ConsoleReporter(sys.stdout, verbose=args.verbose, show_crlf=args.show_crlf)
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
        self.transcripts = None
        if args.transcript:
            from runner.reporters.transcript import TranscriptReporter

            self.transcripts = TranscriptReporter(args.transcript)
            self.live.append(self._transcript_for)

    def _transcript_for(self, run):
        return self.transcripts.for_run(str(run.scenario.path), run.scenario.name, run.provider).handle

    def close(self, runs) -> list:
        """The summary table (for a suite) and every report written; the results that exist."""
        results = [r.result for r in runs if r.result is not None]
        if len(runs) > 1:
            self.console.summary_table(results)
        for rep in (self.console, *self.files):
            rep.close()
        if self.transcripts is not None:
            self.transcripts.close()
        return results


def play(runs, options, args, jobs: int) -> int:
    from runner.suite import Listener, execute

    reporters = Reporters(args, jobs)
    progress = reporters.console.progress if len(runs) > 1 else None
    listener = Listener(ordered=reporters.ordered, live=reporters.live, progress=progress)
    interrupted = False
    exit_class = ExitClass.OK
    try:
        exit_class = execute(
            runs, options, listener, jobs=jobs, fail_fast=args.fail_fast, retries=args.retries
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        results = reporters.close(runs)
    if interrupted:
        print(f"mailrun: interrupted after {len(results)} of {len(runs)} scenario run(s)", file=sys.stderr)
        return int(ExitClass.INTERRUPTED)
    return int(exit_class)
