"""`mailrun` (the console script) and `python -m runner`: picks the command from COMMANDS and
turns errors into one line and an exit status.

runner.cli.commands.COMMANDS is the one table of subcommands: this dispatch, `mailrun --help`,
`mailrun help`, the shell completions and the man page all read it. A subcommand is one line
there: its module, its main (`argv -> exit status`) and its argparse builder (for --help,
completion and the man page).
Nothing is imported before the command is known, so `mailrun FILE...` stays fast.
"""

from __future__ import annotations

import sys

from runner.cli.commands import COMMANDS, entry
from runner.errors import ExitClass, MailrunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            cmd, rest = argv[0], argv[1:]
        else:
            cmd, rest = "run", argv
        return command_main(cmd)(rest)
    except MailrunError as exc:
        print(f"mailrun: {exc}", file=sys.stderr)
        return int(exc.exit_class)
    except KeyboardInterrupt as exc:  # (a signal before the run's own handling began)
        from runner.interrupt import exit_class_of

        print("mailrun: interrupted", file=sys.stderr)
        return int(exit_class_of(exc))
    except BrokenPipeError:
        return int(ExitClass.FAILED)


def command_main(cmd: str):
    return entry(cmd, 1)


def build_parser(cmd: str = "run"):
    """The argparse parser of a command (the run command's is mailrun's own)."""
    return entry(cmd, 2)()


def build_help_parser():
    from runner.cli.args import new_parser

    p = new_parser(prog="mailrun help", description="Show the help of mailrun or of one command.")
    p.add_argument("command", nargs="?", choices=list(COMMANDS), help="the command")
    return p


def help_main(rest: list[str]) -> int:
    """`mailrun help [COMMAND]`: the same text as `mailrun [COMMAND] --help`."""
    args = build_help_parser().parse_args(rest)
    build_parser(args.command or "run").print_help()
    return 0
