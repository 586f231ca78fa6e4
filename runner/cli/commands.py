"""The one table of `mailrun` subcommands (runner.cli.main dispatches on it; --help, `mailrun
help`, the completions and the man page read it). Adding a subcommand is one line in COMMANDS:
its module, the function that runs it (`argv -> exit status`) and the one that builds its
argparse parser."""

from __future__ import annotations

#: name -> (module, its main(argv) -> int, its argparse builder, one line for --help and the man page)
COMMANDS = {
    "run": (
        "runner.cli.run",
        "main",
        "build_parser",
        "play scenarios (the default command: `mailrun FILE...`)",
    ),
    "validate": ("runner.cli.validate", "main", "build_parser", "check scenarios without connecting"),
    "schema": ("runner.cli.schema", "main", "build_parser", "print the scenario JSON Schema"),
    "sandbox": (
        "runner.sandbox.server",
        "main",
        "build_parser",
        "run the built-in local mail service on loopback",
    ),
    "record": (
        "runner.cli.record",
        "cmd_record",
        "build_record_parser",
        "talk to a server (or play a script of client lines) and write it as a scenario",
    ),
    "import": (
        "runner.cli.record",
        "cmd_import",
        "build_import_parser",
        "turn a pasted conversation or transcript into a scenario",
    ),
    "report": (
        "runner.cli.report",
        "main",
        "build_parser",
        "report merge: rebuild every report format from JSON reports (of shards)",
    ),
    "completion": (
        "runner.cli.completion",
        "main",
        "build_parser",
        "print a shell completion script (bash, zsh, fish)",
    ),
    "man": (
        "runner.cli.manpage",
        "main",
        "build_parser",
        "print the man page (roff: mailrun man > mailrun.1)",
    ),
    "help": (
        "runner.cli.main",
        "help_main",
        "build_help_parser",
        "show the help of mailrun or of one command",
    ),
}


def summary(name: str) -> str:
    return COMMANDS[name][3]


def entry(name: str, which: int):
    """The command's main (which=1) or parser builder (which=2), imported only now."""
    import importlib

    module, *functions, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), functions[which - 1])


def commands_text() -> str:
    """The commands and exit statuses, as `mailrun --help` ends."""
    from runner.errors import EXIT_STATUS

    width = max(map(len, COMMANDS))
    lines = ["commands:"]
    lines += [f"  {name:<{width}}  {summary(name)}" for name in COMMANDS]
    lines += ["", "  mailrun COMMAND --help (or mailrun help COMMAND) shows a command's options.", ""]
    lines += ["exit status:"]
    lines += [f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_STATUS.items()]
    return "\n".join(lines)
