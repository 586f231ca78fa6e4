"""Reporters: listeners on the engine's event stream (runner.results).

Every reporter has `handle(event)` (called in order with the events of one scenario run at a
time) and `close()` (write files, final summary). Formats, one module each:

    ConsoleReporter     runner.reporters.console      live text on a terminal or a pipe
    JsonReporter        runner.reporters.json_report  one JSON document (schemas/report.schema.json)
    JUnitReporter       runner.reporters.junit        JUnit XML for CI test reporters
    TranscriptReporter  runner.reporters.transcript   one wire transcript file per scenario run

Events already carry masked text; every reporter still passes each string it outputs through an
optional redactor (anything with `.redact(str) -> str`, e.g. runner.lang.secrets.Redactor).

The classes are imported lazily (`from runner.reporters import JUnitReporter` works) so a plain
console run does not pay for the XML and JSON machinery; likewise what only the file-writing
reports use (tempfile, datetime, pathlib) is imported by the helper that needs it.
"""

from __future__ import annotations

import os
import re

from runner.errors import ExitClass, MailrunError

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ConsoleReporter",
    "JUnitReporter",
    "JsonReporter",
    "Reporter",
    "ReportError",
    "Tee",
    "TranscriptReporter",
    "reporter_from_spec",
    "visible",
]

CONNECTED_NOTE = "connected to "  # the transports' info notes that Connected / TLSStarted repeat
TLS_NOTE = "TLS established: "


class RedactorLike:
    """What reporters need of a redactor (e.g. runner.lang.secrets.Redactor): any object with this
    method will do; it need not derive from this class."""

    def redact(self, text: str) -> str:
        raise NotImplementedError


class ReportError(MailrunError):
    """A report could not be written (bad path, permissions, disk full) or a `--report`
    specification is malformed. The message names the path or the spec."""

    exit_class = ExitClass.INVALID


class Reporter:
    """Base class: ignores every event. Subclasses override what they need."""

    def handle(self, event) -> None:  # noqa: B027 - deliberately a no-op default
        pass

    def close(self) -> None:  # noqa: B027
        pass


class Tee(Reporter):
    """Hands every event to several reporters, in order; close() closes them all (and raises
    the first error after trying every one)."""

    def __init__(self, reporters: list[Reporter]):
        self.reporters = list(reporters)

    def handle(self, event) -> None:
        for r in self.reporters:
            r.handle(event)

    def close(self) -> None:
        first: BaseException | None = None
        for r in self.reporters:
            try:
                r.close()
            except Exception as e:  # keep closing the others
                first = first or e
        if first is not None:
            raise first


def reporter_from_spec(spec: str, redactor: RedactorLike | None = None) -> Reporter:
    """A reporter for a `--report FORMAT=PATH` value: `junit=out.xml`, `json=out.json`."""
    fmt, sep, path = spec.partition("=")
    fmt = fmt.strip().lower()
    if not sep or not path.strip():
        raise ReportError(
            f"--report {spec!r}: expected FORMAT=PATH, e.g. junit=report.xml or json=report.json"
        )
    if fmt == "junit":
        from runner.reporters.junit import JUnitReporter

        return JUnitReporter(path, redactor=redactor)
    if fmt == "json":
        from runner.reporters.json_report import JsonReporter

        return JsonReporter(path, redactor=redactor)
    raise ReportError(f"--report {spec!r}: unknown format {fmt!r} (known: junit, json)")


# ------------------------------------------------------------------ shared helpers
def write_atomic(path: str | os.PathLike, data: bytes, what: str) -> None:
    """Write a report file whole or not at all: a temporary file beside it, then renamed.
    Raises ReportError naming `what` and the path."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mailrun-", suffix=".tmp", dir=path.parent)
        try:
            with open(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise ReportError(f"cannot write {what} {path}: {e.strerror or e}") from None


def redact(redactor: RedactorLike | None, text: str) -> str:
    return redactor.redact(text) if redactor is not None and text else text


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]")
_CRLF_TAB = re.compile(r"[\r\n\t]")
_ESC = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _esc_control(m: re.Match) -> str:
    return f"\\x{ord(m.group()):02x}"


def safe_text(text: str) -> str:
    """Text safe for a terminal or an XML file: control characters other than CR, LF and TAB
    (a server could send ANSI escapes) shown as `\\xNN`."""
    return _CONTROL.sub(_esc_control, text)


def visible(data: bytes | str, *, crlf: bool = True) -> str:
    """Wire bytes as one display string: UTF-8 with invalid bytes as `\\xNN`; control
    characters as `\\xNN`; with crlf=True also CR, LF and TAB as `\\r`, `\\n`, `\\t` (the
    reference transcript style)."""
    text = data.decode("utf-8", errors="backslashreplace") if isinstance(data, bytes) else data
    text = safe_text(text)
    if crlf:
        text = _CRLF_TAB.sub(lambda m: _ESC[m.group()], text)
    return text


_LINE = re.compile(r"[^\n]*\n|[^\n]+")


def split_lines(text: str) -> list[str]:
    """Split at LF only (a bare CR stays inside its line), keeping line ends; the last piece
    may lack one."""
    return _LINE.findall(text)


def iso(ts: float, *, timespec: str = "milliseconds") -> str:
    """time.time() as ISO 8601 UTC: '2026-11-28T14:57:09.123+00:00'."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec)


def step_label(index: int, section: str) -> str:
    return f"step {index}" if section == "steps" else f"finally step {index}"


def where(location: str, via: str | None) -> str:
    """'lib/auth.yaml:4 (included from x.yaml:12)'"""
    return f"{location} (included from {via})" if via else location


def first_problem(result) -> tuple[Any, str] | None:
    """The first thing that went wrong in a ScenarioResult: (StepResult | SessionResult |
    ScenarioResult, one-line description), or None when it passed (a session attempt that
    failed before a retry passed does not count)."""
    if result.status in ("passed", "skipped") and not result.reason:
        return None
    for sess in last_attempts(result):
        for st in sess.steps:
            if st.status in ("failed", "error"):
                desc = f"{step_label(st.index, st.section)} ({where(st.location, st.via)})"
                if len(result.sessions) > 1:
                    desc = f"session {sess.name}: {desc}"
                return st, f"{desc}: {st.reason or st.status}"
        if sess.status in ("failed", "error"):
            return sess, f"session {sess.name}: {sess.reason or sess.status}"
    if result.status in ("failed", "error") or result.reason:
        return result, result.reason or result.status
    return None


def last_attempts(result) -> list:
    """The sessions of a ScenarioResult that count: each session's last attempt (earlier
    attempts that a session `retry` replaced are left out), in order."""
    last: dict[str, Any] = {}
    for sess in result.sessions:
        last[sess.name] = sess
    return list(last.values())


def step_counts(result) -> tuple[int, int]:
    """(passed, total) steps of a ScenarioResult's sessions that count (last_attempts)."""
    steps = [st for sess in last_attempts(result) for st in sess.steps]
    return sum(1 for st in steps if st.status == "passed"), len(steps)


VERDICT = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}


def summary_text(result, *, dash: str = "\u2014") -> str:
    """'PASS name[provider] — 12/12 steps, 0.35 s' / 'FAIL ... — first failure: step 5 (...): why'"""
    passed, total = step_counts(result)
    s = f"{VERDICT.get(result.status, result.status.upper())} {result.display_name} {dash} "
    s += f"{passed}/{total} steps, {result.duration:.2f} s"
    if result.retries:
        s += f" (after {result.retries} connection retr{'y' if result.retries == 1 else 'ies'})"
    problem = first_problem(result)
    if problem is not None:
        s += f" {dash} " + ("first failure: " if total else "could not run: ") + problem[1]
    return s


def plural(n: int, word: str) -> str:
    """'1 line', '3 lines'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def with_note(text: str, note: str | None) -> str:
    """A reply line with the protocol's display aid (the decoded 334 challenge) after it:
    '334 VXNlcm5hbWU6 (Username:)'."""
    return f"{text} ({note})" if note else text


def captures_text(captures: dict[str, str]) -> str:
    """'queue_id=4F2B3C, uid=7' (values as the step recorded them: already masked)."""
    return ", ".join(f"{k}={v}" for k, v in captures.items())


def expects_eof(expected: str | None) -> bool:
    return expected == "EOF"


class NoteDedup:
    """The socket and openssl transports announce the connection and the TLS handshake with info
    notes ('connected to 127.0.0.1:2525', 'TLS established: TLSv1.3 ...'); the engine emits
    Connected / TLSStarted right after, saying the same. A reporter showing both would say it
    twice. `feed(event)` holds such a note back until the next event and returns the events to
    show, in order, without the notes that event repeats (a note whose event never comes, e.g.
    a failed handshake after the TCP connect, is still shown). `flush()` returns what is held."""

    def __init__(self) -> None:
        self.held: list = []

    def feed(self, event) -> list:
        from runner.events import Connected, Note, TLSStarted

        if (
            isinstance(event, Note)
            and event.kind == "info"
            and event.text.startswith((CONNECTED_NOTE, TLS_NOTE))
        ):
            self.held.append(event)
            return []
        if not self.held:
            return [event]
        held, self.held = self.held, []
        said: set[str] = set()
        if isinstance(event, Connected):
            said.add(CONNECTED_NOTE + event.info.peer)
            if event.info.tls is not None:
                said.add(TLS_NOTE + event.info.tls.describe())
        elif isinstance(event, TLSStarted):
            said.add(TLS_NOTE + event.info.describe())
        keep = [n for n in held if n.text not in said]
        # the connection comes before what happened on it (openssl's handshake at connect)
        return [event, *keep] if isinstance(event, Connected) else [*keep, event]

    def flush(self) -> list:
        held, self.held = self.held, []
        return held


_LAZY = {
    "ConsoleReporter": "runner.reporters.console",
    "JsonReporter": "runner.reporters.json_report",
    "JUnitReporter": "runner.reporters.junit",
    "TranscriptReporter": "runner.reporters.transcript",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
