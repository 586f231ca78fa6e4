"""The one table of `mailrun` subcommands (runner.cli.main dispatches on it; --help, `mailrun
help`, the completions and the man page read it). Adding a subcommand is one line in COMMANDS:
its module has `main(argv) -> int` and `build_parser()`."""

from __future__ import annotations

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
