"""How the console shows each status (runner.results.STATUSES): its mark, in Unicode and in
ASCII, and its colour."""

from __future__ import annotations

MARKS = {
    "passed": "✓",
    "failed": "✗",
    "error": "✗",
    "skipped": "-",
    "not needed": "·",
    "interrupted": "!",
    "not run": "○",
    "unchecked": "?",
}
ASCII_MARKS = {
    "passed": "ok",
    "failed": "FAIL",
    "error": "ERR",
    "skipped": "-",
    "not needed": ".",
    "interrupted": "INT",
    "not run": "NR",
    "unchecked": "?",
}
STATUS_COLOR = {
    "passed": "green",
    "failed": "red",
    "error": "red",
    "skipped": "yellow",
    "not needed": "cyan",
    "interrupted": "yellow",
    "not run": "dim",
    "unchecked": "red",  # a scenario run that checked nothing (the transport performed it all)
}
