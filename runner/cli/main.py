"""`mailrun` (the console script) and `python -m runner`: picks the command and turns errors
into one line and an exit status (runner/cli/__init__.py lists the commands)."""

from __future__ import annotations

import sys

from runner.errors import ExitClass, MailrunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

COMMANDS = ("run", "validate", "schema", "sandbox", "record", "import", "report")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            cmd, rest = argv[0], argv[1:]
        else:
            cmd, rest = "run", argv
        return _command(cmd, rest)
    except MailrunError as exc:
        print(f"mailrun: {exc}", file=sys.stderr)
        return int(exc.exit_class)
    except KeyboardInterrupt:
        print("mailrun: interrupted", file=sys.stderr)
        return int(ExitClass.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitClass.FAILED)


def _command(cmd: str, rest: list[str]) -> int:
    if cmd == "schema":
        from runner.load.schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    if cmd == "sandbox":
        from runner.sandbox.server import main as sandbox_main

        return sandbox_main(rest)
    if cmd in ("record", "import"):
        from runner.cli.record import cmd_import, cmd_record

        return cmd_record(rest) if cmd == "record" else cmd_import(rest)
    if cmd == "report":  # mailrun report merge ...
        from runner.cli.report import main as report_main

        return report_main(rest)
    from runner.cli.args import build_run_parser, parse_run_args

    if cmd == "validate":
        from runner.cli.args import build_validate_parser
        from runner.cli.validate import cmd_validate

        return cmd_validate(build_validate_parser().parse_intermixed_args(rest))
    if not rest:
        build_run_parser().error("no scenario file given (mailrun FILE..., mailrun --help for more)")
    if rest[0] in ("-h", "--help"):
        build_run_parser().parse_args(rest)
    from runner.cli.run import cmd_run

    return cmd_run(parse_run_args(rest))
