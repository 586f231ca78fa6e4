"""`mailrun` (the console script) and `python -m runner`: picks the command from COMMANDS and
turns errors into one line and an exit status.

COMMANDS is the one table of subcommands: `mailrun --help`, `mailrun help`, the shell
completions and the man page all read it. A subcommand is one line here: its module has
`main(argv) -> int` and `build_parser()` (argparse, for --help, completion and the man page).
Nothing is imported before the command is known, so `mailrun FILE...` stays fast.
"""

from __future__ import annotations

import sys

from runner.errors import ExitClass, MailrunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: name -> (module with main() and build_parser(), one line for --help and the man page)
COMMANDS = {
    "run": ("runner.cli.run", "play scenarios (the default command: `mailrun FILE...`)"),
    "validate": ("runner.cli.validate", "check scenarios without connecting"),
    "schema": ("runner.cli.schema", "print the scenario JSON Schema"),
    "sandbox": ("runner.sandbox.server", "run the built-in local mail service on loopback"),
    "completion": ("runner.cli.completion", "print a shell completion script (bash, zsh, fish)"),
    "man": ("runner.cli.manpage", "print the man page (roff: mailrun man > mailrun.1)"),
    "help": ("runner.cli.main", "show the help of mailrun or of one command"),
}


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


def command_module(cmd: str):
    import importlib

    return importlib.import_module(COMMANDS[cmd][0])


def command_main(cmd: str):
    if cmd == "help":
        return help_main
    return command_module(cmd).main


def build_parser(cmd: str = "run"):
    """The argparse parser of a command (the run command's is mailrun's own)."""
    if cmd == "help":
        return build_help_parser()
    return command_module(cmd).build_parser()


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


def commands_text() -> str:
    """The commands and exit statuses, as `mailrun --help` ends."""
    from runner.errors import EXIT_STATUS

    width = max(map(len, COMMANDS))
    lines = ["commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "  mailrun COMMAND --help (or mailrun help COMMAND) shows a command's options.", ""]
    lines += ["exit status:"]
    lines += [f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_STATUS.items()]
    return "\n".join(lines)
