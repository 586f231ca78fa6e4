"""`mailrun schema`: print the scenario JSON Schema (for editors and yaml-language-server)."""

from __future__ import annotations

import sys

from runner.cli.args import build_schema_parser as build_parser


def main(rest: list[str]) -> int:
    build_parser().parse_args(rest)  # (--help; anything else is an error, exit 2)
    from runner.load.schema import schema_text

    sys.stdout.write(schema_text())
    return 0
