"""The `--report FORMAT=PATH` formats: the one table that names them.

A new report format is a module in runner/reporters/ with a Reporter class taking
`(path, redactor=None)` (see runner.reporters.base), and one line in FORMATS below. Each module
is imported only when its format is asked for, so a plain console run does not pay for the XML
and JSON machinery.
"""

from __future__ import annotations

from runner.reporters.base import RedactorLike, Reporter, ReportError

# format -> (module, class); the class is called with (path, redactor=...)
FORMATS: dict[str, tuple[str, str]] = {
    "junit": ("runner.reporters.junit", "JUnitReporter"),
    "json": ("runner.reporters.json_report", "JsonReporter"),
    "html": ("runner.reporters.html", "HtmlReporter"),
}


def parse_spec(spec: str) -> tuple[str, str]:
    """`junit=out.xml` -> ('junit', 'out.xml'); the format is matched case-insensitively.
    Raises ReportError naming the spec for a malformed one or an unknown format."""
    fmt, sep, path = spec.partition("=")
    fmt = fmt.strip().lower()
    if not sep or not path.strip():
        raise ReportError(f"--report {spec!r}: expected FORMAT=PATH, FORMAT one of {', '.join(FORMATS)}")
    if fmt not in FORMATS:
        raise ReportError(f"--report {spec!r}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    return fmt, path


def create(fmt: str, path: str, redactor: RedactorLike | None = None) -> Reporter:
    """The reporter of a format named in FORMATS, writing to `path`."""
    import importlib

    module, cls = FORMATS[fmt]
    return getattr(importlib.import_module(module), cls)(path, redactor=redactor)


def reporter_from_spec(spec: str, redactor: RedactorLike | None = None) -> Reporter:
    """A reporter for a `--report FORMAT=PATH` value: `junit=out.xml`, `json=out.json`."""
    fmt, path = parse_spec(spec)
    return create(fmt, path, redactor)
