"""The `mailrun` command line.

    mailrun [run] FILE|DIR|GLOB... [options]   play scenarios (the default command)
    mailrun validate FILE|DIR... [--strict]    check scenarios without connecting
    mailrun schema                             print the scenario JSON Schema
    mailrun sandbox [options]                  run the built-in local mail service

Exit status: 0 all passed, 1 an expectation failed, 2 invalid scenario or command line (nothing
sent), 3 network failure, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runner import __version__
from runner.errors import ExitClass, MailrunError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

COMMANDS = ("run", "validate", "schema", "sandbox")

# `mailrun FILE...` without options needs no argparse (importing it, building the parser and
# the gettext/locale and shutil imports that brings cost more than playing a short scenario):
# these are the values build_run_parser() gives every option then (a test compares the two).
RUN_DEFAULTS = {
    "host": None,
    "port": None,
    "tls": None,
    "transport": None,
    "timeout": None,
    "ca": None,
    "insecure": False,
    "family": None,
    "allow_plaintext_secrets": False,
    "sandbox": False,
    "var": [],
    "vars_file": [],
    "env_file": [],
    "verbose": False,
    "show_crlf": False,
    "report": [],
    "transcript": None,
    "jobs": None,
    "tag": [],
    "keyword": None,
    "fail_fast": False,
    "matrix": [],
    "retries": 0,
}


class RunArgs:
    """What build_run_parser() would return for `mailrun FILE...` with no options."""

    def __init__(self, paths: list[str]):
        self.paths = list(paths)
        for name, value in RUN_DEFAULTS.items():
            setattr(self, name, list(value) if isinstance(value, list) else value)


def parse_run_args(rest: list[str]):
    """The run command's arguments: without options (no argument starts with '-'), no argparse."""
    if rest and not any(a.startswith("-") for a in rest):
        return RunArgs(rest)
    return build_run_parser().parse_intermixed_args(rest)


_parser_class = None


def new_parser(**kw) -> argparse.ArgumentParser:
    """An argparse parser whose errors exit 2 with one clear line (no usage dump on stdout), and
    whose help is as wide as the terminal without importing shutil."""
    global _parser_class
    if _parser_class is None:
        import argparse

        class _Formatter(argparse.HelpFormatter):
            def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
                if width is None:
                    width = _columns() - 2
                super().__init__(prog, indent_increment, max_help_position, width)

        class _Parser(argparse.ArgumentParser):
            def error(self, message):
                self.print_usage(sys.stderr)
                self.exit(ExitClass.INVALID, f"mailrun: error: {message}\n")

        _parser_class = (_Parser, _Formatter)
    parser, formatter = _parser_class
    return parser(formatter_class=formatter, **kw)


def _columns() -> int:
    """The terminal's width, as shutil.get_terminal_size() finds it (COLUMNS, then stdout)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _type_error(message: str) -> Exception:
    import argparse

    return argparse.ArgumentTypeError(message)


def _var(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise _type_error(f"--var wants name=value, got {text!r}")
    return name.strip(), value


def _report(text: str) -> tuple[str, str]:
    kind, sep, path = text.partition("=")
    if not sep or kind not in ("junit", "json") or not path:
        raise _type_error(f"--report wants junit=PATH or json=PATH, got {text!r}")
    return kind, path


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _type_error(f"not a number: {text!r}") from None
    if not v > 0:
        raise _type_error(f"must be greater than 0: {text!r}")
    return v


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _type_error(f"not a TCP port (1-65535): {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise _type_error(f"wants a whole number >= 0, got {text!r}")
    return int(text)


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise _type_error(f"-j wants a whole number >= 1, got {text!r}")
    return int(text)


def _add_variable_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--var",
        action="append",
        type=_var,
        default=[],
        metavar="NAME=VALUE",
        help="set a variable (wins over vars files and the scenario's vars)",
    )
    p.add_argument(
        "--vars-file",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML mapping of variables (repeatable; later files win)",
    )
    p.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="KEY=VALUE lines feeding env.* (wins over the process environment)",
    )


def build_run_parser() -> argparse.ArgumentParser:
    p = new_parser(prog="mailrun", description="Play SMTP/POP3/IMAP conversations written as YAML scenarios.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR|GLOB", help="scenario files, directories or globs")
    g = p.add_argument_group("connection overrides (apply to every session)")
    g.add_argument("--host")
    g.add_argument("--port", type=_port)
    g.add_argument("--tls", choices=("none", "implicit", "starttls"))
    g.add_argument("--transport", choices=("socket", "telnet", "openssl"))
    g.add_argument("--timeout", type=_positive_float, help="deadline in seconds for each reply")
    g.add_argument("--ca", metavar="FILE", help="CA bundle to verify the server's certificate")
    g.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (said loudly)")
    fam = g.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=4, help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=6, help="IPv6 only")
    g.add_argument(
        "--allow-plaintext-secrets",
        action="store_true",
        help="allow sending secrets unencrypted to hosts outside loopback",
    )
    g.add_argument(
        "--sandbox",
        action="store_true",
        help="start the built-in sandbox mail server and point every session at it",
    )
    _add_variable_options(p)
    o = p.add_argument_group("output")
    o.add_argument("-v", "--verbose", action="store_true", help="show the whole conversation as it happens")
    o.add_argument("--show-crlf", action="store_true", help="with -v: make CR and LF visible")
    o.add_argument("--report", action="append", type=_report, default=[], metavar="junit=PATH|json=PATH")
    o.add_argument("--transcript", metavar="DIR", help="write one transcript file per scenario run")
    s = p.add_argument_group("suites")
    s.add_argument("-j", "--jobs", type=_jobs, help="run N scenarios at a time")
    s.add_argument(
        "--tag", action="append", default=[], metavar="T", help="only scenarios tagged T; not:T excludes"
    )
    s.add_argument(
        "-k", dest="keyword", metavar="SUBSTRING", help="only scenarios whose name contains SUBSTRING"
    )
    s.add_argument("--fail-fast", action="store_true", help="stop starting scenarios after the first failure")
    s.add_argument(
        "--matrix",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="provider vars files: run every scenario once per file",
    )
    s.add_argument(
        "--retries",
        type=_count,
        default=0,
        metavar="N",
        help="retry a scenario whose connection failed before anything was sent",
    )
    p.add_argument("--version", action="version", version=f"mailrun {__version__}")
    return p


def build_validate_parser() -> argparse.ArgumentParser:
    p = new_parser(prog="mailrun validate", description="Check scenario files without connecting.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR")
    p.add_argument("--strict", action="store_true", help="unset environment variables are errors")
    _add_variable_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            cmd, rest = argv[0], argv[1:]
        else:
            cmd, rest = "run", argv
        if cmd == "schema":
            from runner.load.loader import schema_text

            sys.stdout.write(schema_text())
            return 0
        if cmd == "sandbox":
            from runner.sandbox import main as sandbox_main

            return sandbox_main(rest)
        if cmd == "validate":
            return cmd_validate(build_validate_parser().parse_intermixed_args(rest))
        if not rest:
            build_run_parser().error("no scenario file given (mailrun FILE..., mailrun --help for more)")
        if rest[0] in ("-h", "--help"):
            build_run_parser().parse_args(rest)
        return cmd_run(parse_run_args(rest))
    except MailrunError as exc:
        print(f"mailrun: {exc}", file=sys.stderr)
        return int(exc.exit_class)
    except KeyboardInterrupt:
        print("mailrun: interrupted", file=sys.stderr)
        return int(ExitClass.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitClass.FAILED)


def _variables(args) -> tuple[dict[str, str], dict[str, str]]:
    """(env, variables) from the process environment, --env-file, --vars-file and --var.
    The loader (and PyYAML) is imported only when a file is given."""
    env = dict(os.environ)
    if args.env_file:
        from runner.load.loader import load_env_file

        for f in args.env_file:
            env.update(load_env_file(f))
    variables: dict[str, str] = {}
    if args.vars_file:
        from runner.load.loader import load_vars_file

        for f in args.vars_file:
            variables.update(load_vars_file(f))
    for name, value in args.var:
        variables[name] = value
    return env, variables


def cmd_validate(args) -> int:
    from runner.load.api import validate_paths

    env, variables = _variables(args)
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


def _matrix_env_refs(matrix) -> dict[str, str]:
    """env.NAME references in provider vars files (their values are templates):
    NAME -> 'provider:var' (the first that needs it)."""
    from runner.lang.templates import TemplateError, parse

    refs: dict[str, str] = {}
    for label, values in matrix:
        for var, value in values.items():
            if not isinstance(value, str):
                continue
            try:
                names = parse(value).required_names()
            except TemplateError as exc:
                raise UsageError(f"matrix {label}: {var}: {exc}") from None
            for ref in sorted(names):
                if ref.startswith("env."):
                    refs.setdefault(ref[4:], f"{label}: {var}")
    return refs


SANDBOX_USER = "alice@mailrun.test"
SANDBOX_PASSWORD = "wonderland"


def sandbox_value(name: str) -> str:
    """What `--sandbox` puts in an environment variable the scenario needs but nobody set."""
    n = name.upper()
    if any(k in n for k in ("PASS", "TOKEN", "SECRET", "KEY")):
        return SANDBOX_PASSWORD
    if any(k in n for k in ("USER", "LOGIN", "MAIL", "ADDR", "FROM", "TO")):
        return SANDBOX_USER
    return "sandbox"


def cmd_run(args) -> int:
    # a warm run takes every model from the cache: runner.load.loader (PyYAML, jsonschema)
    # is imported only for a file the cache does not hold
    from runner.load.api import discover, load_scenario
    from runner.model.scenario import env_warnings
    from runner.suite import load_matrix, plan, select

    env, variables = _variables(args)
    files = discover(args.paths)
    if not files:
        raise UsageError(f"no scenario files found in {' '.join(args.paths)}")
    # provider vars (--matrix) define names the scenarios may use
    matrix = load_matrix(args.matrix) if args.matrix else []
    defined = set(variables) | {name for _, values in matrix for name in values}
    scenarios, problems = [], []
    for f in files:
        try:
            scenarios.append(load_scenario(f, defined=defined))
        except MailrunError as exc:
            problems.append(str(exc))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"mailrun: {len(problems)} invalid scenario file(s); nothing was sent", file=sys.stderr)
        return int(ExitClass.INVALID)

    check_outputs(args)

    chosen = select(scenarios, tags=args.tag, keyword=args.keyword)
    if not chosen:
        raise UsageError("no scenario matched the --tag/-k filters")

    sandbox = None
    matrix_env = _matrix_env_refs(matrix)
    if args.sandbox:
        needed = [name for sc in chosen for name in sc.env_refs] + list(matrix_env)
        for name in dict.fromkeys(needed):
            if name not in env:
                env[name] = sandbox_value(name)
                shown = "****" if env[name] == SANDBOX_PASSWORD else env[name]
                print(f"sandbox: {name} is not set; using the sandbox's {shown}", file=sys.stderr)
    warnings = [w for sc in chosen for w in env_warnings(sc, env)]
    warnings += [
        f"matrix {where} needs environment variable {name}, which is not set"
        for name, where in matrix_env.items()
        if name not in env
    ]
    if warnings:
        print("\n".join(warnings), file=sys.stderr)
        print(
            "mailrun: set the environment variables above (or use --env-file / --var); nothing was sent",
            file=sys.stderr,
        )
        return int(ExitClass.INVALID)

    overrides = {}
    for key in ("host", "port", "tls", "transport", "timeout", "ca", "family"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.insecure:
        overrides["tls_verify"] = False
    if args.allow_plaintext_secrets:
        overrides["allow_plaintext_secrets"] = True

    from runner.engine.run import RunOptions

    options = RunOptions(
        env=env,
        variables=variables,
        overrides=overrides,
        allow_plaintext_secrets=args.allow_plaintext_secrets,
        run_id=os.urandom(6).hex(),
    )
    runs = plan(chosen, matrix)
    jobs = args.jobs or (1 if len(runs) == 1 else min(8, len(runs)))
    try:
        if args.sandbox:
            sandbox = start_sandbox(options)
        return play(runs, options, args, jobs)
    finally:
        if sandbox is not None:
            sandbox.stop()


def start_sandbox(options):
    from runner.sandbox import Sandbox

    sb = Sandbox(accept_any_login=True).start()
    print(
        f"sandbox: serving on {sb.host} (ports {', '.join(f'{k} {v}' for k, v in sb.ports.items())}); "
        f"any login is accepted",
        file=sys.stderr,
    )

    def adjust(config):
        return config.replace(
            host=sb.host,
            port=sb.port_for(config.protocol, config.tls),
            ca=Path(sb.ca_path),
            tls_verify=True,
            server_name=None,
        )

    options.adjust_connect = adjust
    return sb


def play(runs, options, args, jobs: int) -> int:
    from runner.reporters.console import ConsoleReporter
    from runner.suite import Listener, execute

    console = ConsoleReporter(sys.stdout, verbose=args.verbose, show_crlf=args.show_crlf)
    ordered, live = [], []
    if jobs == 1:
        live.append(lambda run: console.handle)
    else:
        ordered.append(console)
    files = []
    for kind, path in args.report:
        if kind == "json":
            from runner.reporters.json_report import JsonReporter

            files.append(JsonReporter(path))
        else:
            from runner.reporters.junit import JUnitReporter

            files.append(JUnitReporter(path))
    ordered.extend(files)
    transcripts = None
    if args.transcript:
        from runner.reporters.transcript import TranscriptReporter

        transcripts = TranscriptReporter(args.transcript)
        live.append(
            lambda run: transcripts.for_run(str(run.scenario.path), run.scenario.name, run.provider).handle
        )
    progress = console.progress if len(runs) > 1 else None
    listener = Listener(ordered=ordered, live=live, progress=progress)
    interrupted = False
    exit_class = ExitClass.OK
    try:
        exit_class = execute(
            runs, options, listener, jobs=jobs, fail_fast=args.fail_fast, retries=args.retries
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        results = [r.result for r in runs if r.result is not None]
        if len(runs) > 1:
            console.summary_table(results)
        for rep in (console, *files):
            rep.close()
        if transcripts is not None:
            transcripts.close()
    if interrupted:
        print(f"mailrun: interrupted after {len(results)} of {len(runs)} scenario run(s)", file=sys.stderr)
        return int(ExitClass.INTERRUPTED)
    return int(exit_class)
