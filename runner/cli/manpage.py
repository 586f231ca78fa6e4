"""`mailrun man`: the man page, in roff, generated from the argparse parsers of every command
in runner.cli.main.COMMANDS and the exit statuses of runner.errors.EXIT_STATUS (one source, so
the page cannot drift from --help).

    .venv/bin/mailrun man > mailrun.1 && man -l mailrun.1
"""

from __future__ import annotations

import sys

from runner import __version__

#: the environment variables mailrun reads (beyond a scenario's own env.NAME)
ENVIRONMENT = {
    "NO_COLOR": "set to a non-empty value: no colour, even on a terminal (https://no-color.org)",
    "FORCE_COLOR": "set to a non-empty value: colour even when the output is not a terminal (NO_COLOR wins)",
    "MAILRUN_CACHE_DIR": "where validated scenario models are cached "
    "(default $XDG_CACHE_HOME/mailrun, else ~/.cache/mailrun)",
    "MAILRUN_NO_CACHE": "set to a non-empty value: never read or write the scenario cache",
    "MAILRUN_DEBUG": "set to a non-empty value: print the traceback of an internal error",
    "COLUMNS": "the width of --help",
}


def build_parser():
    from runner.cli.args import new_parser

    return new_parser(
        prog="mailrun man",
        description="Print mailrun's man page (roff), generated from its options.",
        epilog="  mailrun man > mailrun.1 && man -l mailrun.1",
    )


def main(rest: list[str]) -> int:
    build_parser().parse_args(rest)
    sys.stdout.write(page())
    return 0


def _esc(text: str) -> str:
    """Text safe in roff: backslashes doubled, a leading dot or quote escaped, dashes literal."""
    text = str(text).replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _option_lines(action) -> list[str]:
    flags = ", ".join(f"\\fB{_esc(f)}\\fR" for f in action.option_strings)
    if action.nargs != 0:
        if action.choices:
            value = "{" + ",".join(str(c) for c in action.choices) + "}"
        else:
            value = str(action.metavar or action.dest.upper())
        flags += " \\fI" + _esc(value) + "\\fR"
    text = (action.help or "").replace("%(default)s", str(action.default))
    return [".TP", flags, _esc(text) if text else ""]


def _command_section(name: str, summary: str, parser) -> list[str]:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    out = [".SS " + _esc(f"mailrun {name}" if name != "run" else "mailrun [run]"), _esc(summary) + "."]
    out += [".PP", ".nf", *(_esc(" ".join(line.split())) for line in usage.splitlines()), ".fi"]
    if parser.description:
        out += [".PP", _esc(parser.description)]
    for action in parser._actions:
        if action.option_strings and "--help" not in action.option_strings:
            out += _option_lines(action)
    return out


def page() -> str:
    from runner.cli.commands import COMMANDS
    from runner.cli.commands import summary as command_summary
    from runner.cli.main import build_parser as parser_of
    from runner.errors import EXIT_STATUS

    out = [
        f'.TH MAILRUN 1 "" "mailrun {_esc(__version__)}" "User Commands"',
        ".SH NAME",
        "mailrun \\- play SMTP, POP3 and IMAP conversations written as YAML scenarios",
        ".SH SYNOPSIS",
        ".B mailrun",
        "[\\fBrun\\fR] \\fIFILE\\fR|\\fIDIR\\fR|\\fIGLOB\\fR... [\\fIoptions\\fR]",
        ".br",
        ".B mailrun",
        "\\fICOMMAND\\fR [\\fIoptions\\fR]",
        ".SH DESCRIPTION",
        "mailrun plays scenarios of client lines (\\fBC:\\fR) and reply patterns (\\fBS:\\fR) over "
        "sockets, TLS, STARTTLS or the real telnet and openssl s_client programs, and gives a "
        "verdict per step. Every scenario is validated before a byte is sent.",
        ".SH COMMANDS",
    ]
    for name in COMMANDS:
        out += _command_section(name, command_summary(name), parser_of(name))
    out += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS.items():
        out += [".TP", f"\\fB{int(code)}\\fR", _esc(meaning)]
    out += [".SH ENVIRONMENT"]
    for name, meaning in ENVIRONMENT.items():
        out += [".TP", f"\\fB{name}\\fR", _esc(meaning)]
    out += [
        ".SH SEE ALSO",
        "\\fBmailrun completion\\fR bash|zsh|fish; the README of the project.",
    ]
    return "\n".join(line for line in out if line != "") + "\n"
