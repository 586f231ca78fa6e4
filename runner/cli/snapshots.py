"""`--snapshot`, `--snapshot-update`, `--ci`: every run's snapshot read before anything is sent
(a damaged one refuses the run, exit 2), written after the runs (runner.snapshot.check)."""

from __future__ import annotations

import os
import sys

from runner.errors import ExitClass


def in_ci(args) -> bool:
    """--ci, or CI set to true/1/yes in the environment (as CI services do)."""
    return bool(args.ci) or os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def load_snapshots(runs, options, args) -> list[str]:
    """Gives options a SnapshotBook holding every run's snapshot; -> the damaged files' problems."""
    from runner.snapshot.check import SnapshotBook

    book = SnapshotBook(update=args.snapshot_update, ci=in_ci(args))
    problems = book.load((run.scenario, run.provider) for run in runs)
    options.snapshots = book
    return problems


def write_snapshots(book, code: int) -> int:
    """Writes what changed, one line per file on stderr; a file that cannot be written makes the
    exit status at least 1."""
    lines, failed = book.finish()
    for line in lines:
        print(line, file=sys.stderr)
    return max(code, int(ExitClass.FAILED)) if failed else code
