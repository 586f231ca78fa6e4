"""The console's table for a suite (one row per scenario run: name, provider, steps passed of
total and those the transport's program performed, time, verdict, first failure) and the
slowest steps above it, as lines of text."""

from __future__ import annotations

from runner import results as R
from runner.reporters.summary import VERDICT, first_problem, slowest_steps, step_counts
from runner.reporters.text import fmt_ms, safe_text, step_label, where

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

HEAD = ["scenario", "provider", "steps", "time", "verdict", "first failure"]
_ALIGN = ["<", "<", ">", ">", "<"]


def table_lines(
    results: list[R.ScenarioResult], short: Callable[[str, int], str], colour: Callable[[str, str], str]
) -> list[str]:
    """The header, a rule and one row per run; `short` cuts the failure text, `colour(text,
    status)` colours a verdict."""
    rows = []
    files_of: dict[str, set[str]] = {}
    for r in results:  # a name shared by several files is shown with its file
        files_of.setdefault(r.name, set()).add(r.file)
    for r in results:
        passed, total = step_counts(r)
        problem = first_problem(r)
        rows.append(
            [
                safe_text(f"{r.name} ({r.file})" if len(files_of[r.name]) > 1 else r.name),
                safe_text(r.provider or ""),
                f"{passed}/{total}" + (f" ({n} performed)" if (n := R.performed_total(r)) else ""),
                f"{r.duration:.2f} s",
                VERDICT.get(r.status, r.status.upper()),
                short(safe_text(problem[1]), 70) if problem else "",
                r.status,
            ]
        )
    widths = [max(len(HEAD[i]), *(len(row[i]) for row in rows)) for i in range(5)]

    def fmt(cells, status=None):
        out = []
        for i, cell in enumerate(cells[:5]):
            text = f"{cell:{_ALIGN[i]}{widths[i]}}"
            out.append(colour(text, status) if status and i == 4 else text)
        return ("  ".join(out) + "  " + cells[5]).rstrip()

    return [fmt(HEAD), fmt(["-" * w for w in widths] + ["-" * len(HEAD[5])])] + [
        fmt(row, row[6]) for row in rows
    ]


def slowest_lines(results: list[R.ScenarioResult]) -> list[str]:
    """The suite's slowest steps (reporters.summary.slowest_steps), a line each, after a blank
    line and a heading; nothing when no step was played."""
    slow = slowest_steps(results)
    if not slow:
        return []
    lines = ["", "slowest steps:"]
    for r, st in slow:
        label = step_label(st.index, st.section)
        lines.append(
            f"  {fmt_ms(st.elapsed):>8}  {safe_text(r.display_name)} {label} ({safe_text(where(st.location, st.via))})"
        )
    return lines
