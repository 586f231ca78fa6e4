"""The command line's parsers and option types. `mailrun FILE...` without options needs no
argparse: parse_run_args() answers it with RunArgs (argparse is imported only for a parser)."""

from __future__ import annotations

import os
import sys

from runner import __version__
from runner.errors import ExitClass, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

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
    "quiet": False,
    "list": False,
    "keep_going": False,
    "show_crlf": False,
    "report": [],
    "transcript": None,
    "jobs": None,
    "tag": [],
    "keyword": None,
    "fail_fast": False,
    "fail_on_skip": False,
    "matrix": [],
    "retries": 0,
    "shard": None,
    "snapshot": False,
    "snapshot_update": False,
    "ci": False,
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

        class _Formatter(argparse.RawDescriptionHelpFormatter):  # (an epilog keeps its lines)
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


def _report_forms(sep: str) -> str:
    """'junit=PATH|json=PATH': every format runner.reporters.formats registers."""
    from runner.reporters.formats import FORMATS

    return sep.join(f"{k}=PATH" for k in FORMATS)


def _report(text: str) -> tuple[str, str]:
    from runner.reporters.base import ReportError
    from runner.reporters.formats import parse_spec

    try:
        return parse_spec(text)
    except ReportError:
        raise _type_error(f"--report wants {_report_forms(' or ')}, got {text!r}") from None


def _seconds(text: str) -> float:
    """--timeout: a number, held to connect.timeout's rule (runner.model.config.seconds_problem)."""
    from runner.model.config import seconds_problem

    try:
        v = float(text)
    except ValueError:
        raise _type_error(f"not a number: {text!r}") from None
    problem = seconds_problem(v)
    if problem is not None:
        raise _type_error(f"{problem} (got {text})")
    return v


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _type_error(f"not a TCP port (1-65535): {text!r}")
    return int(text)


def _whole(least: int, option: str = ""):
    """The option type of a whole number >= least (`option` names it in the message)."""

    def whole(text: str) -> int:
        if not text.isdigit() or int(text) < least:
            raise _type_error(f"{option}wants a whole number >= {least}, got {text!r}")
        return int(text)

    return whole


def _shard(text: str):
    """--shard I/N (runner.shard, imported only then)."""
    from runner.shard import parse_shard

    try:
        return parse_shard(text, option="")
    except UsageError as exc:
        raise _type_error(str(exc)) from None


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
    from runner.cli.commands import commands_text

    p = new_parser(
        prog="mailrun",
        usage="mailrun [run] FILE|DIR|GLOB... [options]\n       mailrun COMMAND [options]",
        description="Play SMTP/POP3/IMAP conversations written as YAML scenarios.",
        epilog=commands_text(),
    )
    p.add_argument("paths", nargs="+", metavar="FILE|DIR|GLOB", help="scenario files, directories or globs")
    _add_connection_options(p)
    _add_variable_options(p)
    _add_output_options(p)
    _add_suite_options(p)
    _add_snapshot_options(p)
    p.add_argument("--version", action="version", version=f"mailrun {__version__}")
    return p


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection overrides (apply to every session)")
    g.add_argument("--host", help="the server to connect to")
    g.add_argument("--port", type=_port, help="the port to connect to")
    g.add_argument("--tls", choices=("none", "implicit", "starttls"), help="how TLS starts")
    g.add_argument("--transport", choices=("socket", "telnet", "openssl"), help="what carries the bytes")
    g.add_argument(
        "--timeout", type=_seconds, help="deadline in seconds for each step (its send and its reply)"
    )
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


def _add_output_options(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("output")
    quiet = o.add_mutually_exclusive_group()
    quiet.add_argument(
        "-v", "--verbose", action="store_true", help="show the whole conversation as it happens"
    )
    quiet.add_argument(
        "-q", "--quiet", action="store_true", help="one line per scenario and the count line, no steps"
    )
    o.add_argument("--show-crlf", action="store_true", help="with -v: make CR and LF visible")
    o.add_argument("--report", action="append", type=_report, default=[], metavar=_report_forms("|"))
    o.add_argument("--transcript", metavar="DIR", help="write one transcript file per scenario run")


def _add_suite_options(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("suites")
    s.add_argument("-j", "--jobs", type=_whole(1, "-j "), help="run N scenarios at a time")
    s.add_argument(
        "--tag", action="append", default=[], metavar="T", help="only scenarios tagged T; not:T excludes"
    )
    s.add_argument(
        "-k", dest="keyword", metavar="SUBSTRING", help="only scenarios whose name contains SUBSTRING"
    )
    s.add_argument("--fail-fast", action="store_true", help="stop starting scenarios after the first failure")
    s.add_argument(
        "--fail-on-skip", action="store_true", help="exit 1 when a `requires` skipped a step or session"
    )
    s.add_argument(
        "--list",
        action="store_true",
        help="show what would run (scenarios, providers, tags, sessions) and connect to nothing",
    )
    s.add_argument(
        "--keep-going",
        action="store_true",
        help="run the valid scenarios when some files are invalid (the exit status is still 2 or worse)",
    )
    s.add_argument(
        "--matrix",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="provider vars files: run every scenario once per file",
    )
    s.add_argument(
        "--retries",
        type=_whole(0),
        default=0,
        metavar="N",
        help="retry a scenario whose connection failed before anything was sent",
    )
    s.add_argument(
        "--shard", type=_shard, metavar="I/N", help="play only part I of N of the runs (stable, by a hash)"
    )


def _add_snapshot_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("snapshots (__snapshots__/<stem>.snap.yaml beside each scenario)")
    g.add_argument("--snapshot", action="store_true", help="compare every reply with its stored snapshot")
    g.add_argument(
        "--snapshot-update", action="store_true", help="rewrite the snapshots (implies --snapshot)"
    )
    g.add_argument("--ci", action="store_true", help="a missing snapshot fails (as CI=true does)")


def build_schema_parser() -> argparse.ArgumentParser:
    return new_parser(
        prog="mailrun schema",
        description="Print the JSON Schema of scenario files (for editors: yaml-language-server).",
    )


def build_validate_parser() -> argparse.ArgumentParser:
    p = new_parser(prog="mailrun validate", description="Check scenario files without connecting.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR")
    p.add_argument("--strict", action="store_true", help="unset environment variables are errors")
    _add_variable_options(p)
    return p
