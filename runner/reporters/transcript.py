"""Wire transcripts: one file per scenario run, written and flushed event by event.

    rep = TranscriptReporter("out/transcripts")
    writer = rep.for_run("scenarios/send.yaml", "Send mail", "gmx")   # any thread
    writer.handle(event) ...; writer.close()

File names never collide: `<stem>[-provider]-<n>.log`, n counting from 1 and created with
O_EXCL (a file left by an earlier run is never overwritten; the next free n is taken).

Format (the style of the reference transcripts): every line starts with the UTC time of day
with milliseconds and the milliseconds since the scenario started, then `C: ` / `S: ` and the
bytes exactly as they crossed the wire with CR, LF and TAB shown as `\\r`, `\\n`, `\\t` (one
transcript line per wire line), or `--- ... ---` for connect, TLS, notes, close and verdicts.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

from runner import events as E
from runner.reporters.base import RedactorLike, Reporter, ReportError
from runner.reporters.summary import summary_text
from runner.reporters.text import (
    captures_text,
    iso,
    redact,
    retry_text,
    safe_text,
    split_lines,
    step_label,
    visible,
    where,
    with_note,
)

LEGEND = (
    "# legend: 'C:' bytes the client sent, 'S:' bytes the server sent, exactly as on the wire\n"
    "#   (secrets masked as ****); \\r \\n \\t are the CR, LF and TAB bytes, \\xNN other control\n"
    "#   bytes; '--- ... ---' lines are notes (connect, TLS, close, verdicts), not protocol bytes.\n"
    "#   Each line starts with the UTC time of day and the milliseconds since the scenario started.\n"
)


class TranscriptFormatter:
    """Turns events into transcript text, one event at a time. It remembers only the scenario's
    start time (for the relative times) and the current session's TLS mode (a handshake is
    labelled 'TLS (implicit)' or 'TLS started'). Also used by the JUnit reporter for
    <system-out>."""

    def __init__(self, *, timestamps: bool = True, redactor: RedactorLike | None = None):
        self.timestamps = timestamps
        self.redactor = redactor
        self.t0: float | None = None
        self._open: list[str] = []  # sessions started, not finished (one inside another: idle's during)
        self._tls_mode = "none"

    def _prefix(self, at: float) -> str:
        if not self.timestamps:
            return ""
        if self.t0 is None:
            self.t0 = at
        clock = datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]
        return f"{clock} {f'+{(at - self.t0) * 1000:.1f}ms':>11} "

    def _note(self, at: float, text: str) -> str:
        """One `--- ... ---` line, whatever the text holds (safe_text: a CR or LF in a host, a
        reason or a captured value cannot start a line of its own)."""
        return f"{self._prefix(at)}--- {safe_text(text)} ---\n"

    def format(self, ev) -> str:
        """The transcript text for an event ('' for none)."""
        if isinstance(ev, E.ScenarioStarted):
            self.t0 = ev.at
            self._open = []
            name = f"{ev.name}[{ev.provider}]" if ev.provider else ev.name
            head = (
                "# mailrun transcript\n"
                f"# scenario: {safe_text(name)}\n"
                f"# file:     {safe_text(ev.file)}\n"
                f"# started:  {iso(ev.at)}\n"
            )
            return (head + LEGEND) if self.timestamps else head
        if isinstance(ev, E.Sent | E.Received):
            p = self._prefix(ev.at)
            d = "C: " if isinstance(ev, E.Sent) else "S: "
            # Redact the decoded text before escaping, so escaping cannot split a secret.
            text = redact(self.redactor, ev.data.decode("utf-8", errors="backslashreplace"))
            return "".join(f"{p}{d}{visible(line)}\n" for line in split_lines(text))
        if isinstance(ev, E.SessionStarted):
            self._tls_mode = ev.tls_mode
            inside = f", inside session {self._open[-1]}" if self._open else ""
            self._open.append(ev.name)
            return self._note(
                ev.at,
                f"session {ev.name} ({ev.protocol}), attempt {ev.attempt}/{ev.attempts}: "
                f"{ev.host}:{ev.port} via {ev.transport}, tls {ev.tls_mode}{inside}",
            )
        if isinstance(ev, E.Connected):
            s = f"connected to {ev.info.peer} via {ev.info.transport}"
            if ev.info.note:
                s += f" ({ev.info.note})"
            return self._note(ev.at, s)  # (TLS, even implicit, is TLSStarted's)
        if isinstance(ev, E.TLSStarted):
            what = "TLS (implicit)" if self._tls_mode == "implicit" else "TLS started"
            out = self._note(ev.at, f"{what}: {ev.info.describe()}")
            if not ev.info.verified:
                out += self._note(ev.at, "WARNING: certificate NOT verified (tls_verify is off)")
            return out
        if isinstance(ev, E.Note):
            return self._note(ev.at, f"{ev.kind}: {ev.text}")
        if isinstance(ev, E.Retrying):
            return self._note(ev.at, retry_text(ev))
        if isinstance(ev, E.Closed):
            return self._note(ev.at, f"connection closed by {ev.by}")
        if isinstance(ev, E.StepFinished):
            return self._note(ev.at, _step_text(ev.result))
        if isinstance(ev, E.SessionFinished):
            r = ev.result
            s = f"session {r.name} {r.status.upper()} in {r.duration:.3f} s"
            if r.reason:
                s += f": {r.reason}"
            if self._open:
                self._open.pop()
            if self._open:  # back in the session whose step played this one
                return self._note(ev.at, s) + self._note(ev.at, f"session {self._open[-1]} continues")
            return self._note(ev.at, s)
        if isinstance(ev, E.ScenarioFinished):
            return f"{self._prefix(ev.at)}=== {safe_text(summary_text(ev.result))} ===\n"
        return ""


def _step_text(st) -> str:
    """'step 3 FAILED in 2 ms (lib/rcpt.yaml:3); expected 250: reply code 550 does not match 250'"""
    # a step the transport's program played (openssl -starttls) is not a plain skip: not checked
    status = "NOT CHECKED" if st.performed_by else st.status.upper()
    s = f"{step_label(st.index, st.section)} {status} in {st.elapsed * 1000:.0f} ms"
    s += f" ({where(st.location, st.via)})"
    if st.reply is not None and st.reply.note:  # the decoded 334 challenge
        s += f"; {with_note(st.reply.lines[-1] if st.reply.lines else '', st.reply.note)}"
    if st.captures:
        s += f"; captured {captures_text(st.captures)}"
    if (
        st.status in ("failed", "error")
        and st.expected is not None
        and not (st.reason or "").startswith("expected")  # the reason says it already
    ):
        s += f"; expected {st.expected}"
    if st.reason:
        s += f": {st.reason}"
    return s


_UNSAFE = re.compile(r"[^A-Za-z0-9._+@=-]+")


def _safe_name(s: str) -> str:
    return _UNSAFE.sub("_", s).strip("._") or "run"


class TranscriptReporter:
    """Makes one transcript writer per scenario run, all in `directory` (created if missing)."""

    def __init__(self, directory: str | os.PathLike, redactor: RedactorLike | None = None):
        self.directory = Path(directory)
        self.redactor = redactor
        self._lock = threading.Lock()
        self.paths: list[Path] = []  # every file created, in creation order
        self._writers: list[TranscriptWriter] = []

    def for_run(self, file: str, name: str, provider: str | None = None) -> TranscriptWriter:
        writer = TranscriptWriter(self, file, name, provider)
        with self._lock:
            self._writers.append(writer)
        return writer

    def _create(self, file: str, provider: str | None):
        stem = _safe_name(Path(file).stem)
        if provider:
            stem += "-" + _safe_name(provider)
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ReportError(
                    f"cannot create transcript directory {self.directory}: {e.strerror}"
                ) from None
            n = 1
            while True:
                path = self.directory / f"{stem}-{n}.log"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    n += 1
                    continue
                except OSError as e:
                    raise ReportError(f"cannot write transcript {path}: {e.strerror}") from None
                self.paths.append(path)
                return path, open(fd, "w", encoding="utf-8", newline="\n")  # noqa: SIM115

    def close(self) -> None:
        """Close every writer's file that is still open (an interrupted run)."""
        with self._lock:
            writers, self._writers = self._writers, []
        for w in writers:
            w.close()


class TranscriptWriter(Reporter):
    """Writes one scenario run's transcript; the file is created at the first event
    (ScenarioStarted) and every event is flushed as it is written. The file is closed at
    ScenarioFinished (so a long suite does not hold a descriptor per run) and reopened for
    appending if more events come (a suite retry plays the scenario again into the same
    writer)."""

    def __init__(self, parent: TranscriptReporter, file: str, name: str, provider: str | None):
        self.parent = parent
        self.file = file
        self.name = name
        self.provider = provider
        self.path: Path | None = None
        self._fh = None
        self._closed = False
        self._fmt = TranscriptFormatter(redactor=parent.redactor)

    def handle(self, event) -> None:
        if self._closed:
            return
        if self._fh is None:
            if self.path is None:
                self.path, self._fh = self.parent._create(self.file, self.provider)
            else:
                try:
                    self._fh = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
                except OSError as e:
                    raise ReportError(f"cannot write transcript {self.path}: {e.strerror}") from None
        text = self._fmt.format(event)
        if text:
            self._fh.write(redact(self.parent.redactor, text))
            self._fh.flush()
        if isinstance(event, E.ScenarioFinished):
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        self._closed = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None
