"""The console report: one line per step as it finishes, details for failures, a summary line
per scenario; `verbose` adds the whole conversation as it happens. Plus a live progress line
and a summary table for suites."""

from __future__ import annotations

import os
import sys
from _thread import RLock  # threading.RLock is this one; importing threading costs ~1 ms a start

from runner import events as E
from runner import results as R
from runner.reporters.base import RedactorLike, Reporter
from runner.reporters.marks import ASCII_MARKS, MARKS
from runner.reporters.marks import STATUS_COLOR as _STATUS_COLOR
from runner.reporters.suite_table import slowest_lines, table_lines
from runner.reporters.summary import (
    VERDICT,
    count_line,
    summary_text,
)
from runner.reporters.text import (
    captures_text,
    expects_eof,
    fmt_ms,
    plural,
    redact,
    retry_text,
    safe_text,
    split_lines,
    tls_fact_lines,
    visible,
    where,
    with_note,
)

MAX_REPLY_LINES = 20  # reply lines shown under a failure before "... N more lines"
MAX_FIELD = 100  # characters of `C:`/`S:` text on a step line
WIRE_INDENT = " " * 8  # verbose conversation lines sit deeper than the step lines
DETAIL_INDENT = " " * 8  # failure details and captures, under their step line

_CODES = {
    "green": "32",
    "red": "31",
    "yellow": "33",
    "bold": "1",
    "dim": "2",
    "cyan": "36",
    "boldred": "1;31",
}
_NOT_PLAYED = ("skipped", "not needed")  # a step's statuses that say why it was not played


def _color_default(tty: bool) -> bool:
    """Colour on a terminal; NO_COLOR (https://no-color.org) set to a non-empty value means
    none, FORCE_COLOR set to a non-empty value means colour even into a pipe (NO_COLOR wins)."""
    if os.environ.get("NO_COLOR"):
        return False
    return tty or bool(os.environ.get("FORCE_COLOR"))


class ConsoleReporter(Reporter):
    def __init__(
        self,
        stream=None,
        *,
        verbose: bool = False,
        show_crlf: bool = False,
        color: bool | None = None,
        redactor: RedactorLike | None = None,
        quiet: bool = False,
    ):
        self.stream = stream if stream is not None else sys.stdout
        self._closed_by_reader = False  # set when writing fails (the pipe's reader is gone)
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.color = _color_default(self.tty) if color is None else bool(color)
        self.quiet = quiet  # -q: only each scenario's verdict line (and warnings), no steps
        self.verbose = verbose
        self.show_crlf = show_crlf
        self.redactor = redactor
        enc = getattr(self.stream, "encoding", None) or "utf-8"
        self._encoding = enc
        try:
            "✓✗—…".encode(enc)
            self.unicode = True
        except (UnicodeEncodeError, LookupError):
            self.unicode = False
        self.marks = MARKS if self.unicode else ASCII_MARKS
        self.dash = "—" if self.unicode else "-"
        self.ellipsis = "…" if self.unicode else "..."
        self._lock = RLock()
        self._pending: dict[str, str] = {"C": "", "S": ""}
        self._progress = ""  # the live progress line currently drawn (TTY only)
        self._progress_len = 0  # its width on screen
        self._skips: list[R.StepResult] = []  # consecutive steps a program performed (openssl)
        self.results: list[R.ScenarioResult] = []  # every ScenarioFinished, in order
        self._open: list[str] = []  # sessions started, not finished (one inside another: idle's during)

    # ------------------------------------------------------------ output
    def _c(self, text: str, color: str) -> str:
        return f"\x1b[{_CODES[color]}m{text}\x1b[0m" if self.color and text else text

    def _raw(self, text: str) -> None:
        if self._encoding.lower().replace("-", "") not in ("utf8", "utf_8"):
            try:
                text = text.encode(self._encoding, "backslashreplace").decode(self._encoding)
            except LookupError:
                pass
        if self._closed_by_reader:
            return
        try:
            self.stream.write(text)
        except (BrokenPipeError, ValueError, OSError):
            # the reader went away (`mailrun -v | head`): stop writing, but let the run and the
            # other reporters (transcripts, JSON, JUnit) carry on undisturbed
            self._closed_by_reader = True

    def _flush_stream(self) -> None:
        if self._closed_by_reader:
            return
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._closed_by_reader = True

    def _emit(self, line: str) -> None:
        """Write one line (redacted), keeping a live progress line below it."""
        with self._lock:
            line = redact(self.redactor, line)
            if self._progress:
                self._raw("\r" + " " * self._progress_len + "\r")
            self._raw(line + "\n")
            if self._progress:
                self._raw(self._progress)
            self._flush_stream()

    def _short(self, text: str, limit: int = MAX_FIELD) -> str:
        return text if len(text) <= limit else text[: limit - len(self.ellipsis)] + self.ellipsis

    # ------------------------------------------------------------ events
    def handle(self, event) -> None:
        with self._lock:
            if isinstance(event, E.StepFinished) and event.result.performed_by:
                if not self.quiet:  # (-q: the verdict line counts them)
                    self._performed(event.result)
                return
            self._flush_skips()
            if isinstance(event, E.Sent | E.Received):
                if self.verbose:
                    self._wire("C" if isinstance(event, E.Sent) else "S", event.data)
                return
            self._flush_wire()
            if self.quiet and not isinstance(event, E.ScenarioFinished | E.Note):
                return
            method = getattr(self, "_on_" + type(event).__name__, None)
            if method is not None:
                method(event)

    # ------------------------------------------------------------ steps a program performed
    def _performed(self, st: R.StepResult) -> None:
        """A step the spawned program performed itself: held, to be shown with the next ones
        of one group (the same section, the next index, the same program)."""
        if self._skips:
            last = self._skips[-1]
            if (last.section, last.index + 1, last.performed_by) != (st.section, st.index, st.performed_by):
                self._flush_skips()
        self._skips.append(st)

    def _flush_skips(self) -> None:
        """Steps openssl s_client performed itself (-starttls): one line naming the program, e.g.
        '  1-3 -  skipped: performed by openssl s_client -starttls smtp' (a single one is shown
        as any skipped step)."""
        skips, self._skips = self._skips, []
        if len(skips) == 1:
            self._step_line(skips[0])
        elif skips:
            first, last = skips[0], skips[-1]
            prefix = "" if first.section == "steps" else "F"
            label = f"{prefix}{first.index}-{prefix}{last.index}"
            mark = self._c(self.marks["skipped"], _STATUS_COLOR["skipped"])
            text = f"skipped: performed by {safe_text(first.performed_by or '')}"
            self._emit(f"  {label:>3} {mark}  " + self._c(text, "dim"))

    def _on_ScenarioStarted(self, ev: E.ScenarioStarted) -> None:
        name = f"{ev.name}[{ev.provider}]" if ev.provider else ev.name
        self._emit(self._c(safe_text(name), "bold") + f" ({safe_text(ev.file)})")
        self._open = []

    def _on_SessionStarted(self, ev: E.SessionStarted) -> None:
        tls = "no TLS" if ev.tls_mode == "none" else f"TLS {ev.tls_mode}"
        s = f"  session {safe_text(ev.name)} ({ev.protocol}): {safe_text(ev.host)}:{ev.port} via {ev.transport}, {tls}"
        if ev.attempts > 1:
            s += f" [attempt {ev.attempt}/{ev.attempts}]"
        if self._open:  # played by a step of the session still open (an idle step's during)
            s += f" [inside session {safe_text(self._open[-1])}]"
        self._open.append(ev.name)
        self._emit(self._c(s, "cyan"))

    def _on_Connected(self, ev: E.Connected) -> None:  # (TLS, even implicit, is TLSStarted's)
        if self.verbose:
            s = f"  connected to {safe_text(ev.info.peer)} via {ev.info.transport}"
            if ev.info.note:
                s += f" ({safe_text(ev.info.note)})"
            self._emit(self._c(s, "dim"))

    def _on_TLSStarted(self, ev: E.TLSStarted) -> None:
        info = ev.info
        self._emit(f"  TLS: {safe_text(info.describe())}")
        if self.verbose:
            for line in tls_fact_lines(info):
                self._emit(self._c(f"{DETAIL_INDENT}{safe_text(line)}", "dim"))
        if not info.verified:
            self._emit(
                self._c(
                    "  WARNING: TLS certificate NOT VERIFIED (tls_verify: false / --insecure): "
                    "the server's identity is unchecked",
                    "boldred",
                )
            )

    def _on_Note(self, ev: E.Note) -> None:
        if ev.kind == "warning":
            for line in ev.text.splitlines() or [""]:
                self._emit(self._c(f"  warning: {safe_text(line)}", "yellow"))
        elif self.verbose:
            # chatter: what telnet / openssl printed in the terminal, as it printed it
            mark = "|" if ev.kind == "chatter" else "#"
            for line in ev.text.splitlines() or [""]:
                self._emit(self._c(f"{WIRE_INDENT}{mark} {safe_text(line)}".rstrip(), "dim"))

    def _on_Closed(self, ev: E.Closed) -> None:
        if self.verbose:
            self._emit(self._c(f"  connection closed by {ev.by}", "dim"))

    def _on_StepFinished(self, ev: E.StepFinished) -> None:
        self._step_line(ev.result)

    def _tls_step_line(self, st: R.StepResult) -> None:
        """The TLS step (tls_expect): '  TLS  version >= TLSv1.2, days_left >= 21  ✓', and
        for a failure why (every failed check) and where."""
        mark = self._c(self.marks.get(st.status, "?"), _STATUS_COLOR.get(st.status, "bold"))
        self._emit(f"  TLS  {self._short(safe_text(st.expected or 'tls_expect'))}  {mark}")
        if st.status in ("failed", "error"):
            if st.reason:
                self._emit(self._c(f"{DETAIL_INDENT}reason:   {safe_text(st.reason)}", "red"))
            self._emit(f"{DETAIL_INDENT}at:       {safe_text(where(st.location, st.via))}")

    def _step_line(self, st: R.StepResult) -> None:
        if st.action == "tls":
            self._tls_step_line(st)
            return
        label = str(st.index) if st.section == "steps" else f"F{st.index}"
        parts = [f"  {label:>3}" + (f" [{safe_text(st.name)}]" if st.name else "")]
        if st.sent is not None:
            parts.append("C: " + self._short(visible(st.sent)))
        elif not (st.action == "read" or (st.action == "send" and st.status in _NOT_PLAYED)):
            parts.append(f"({st.action})")
        eof = expects_eof(st.expected)
        if st.reply is not None:
            s = "S: " + with_note(self._short(visible(st.reply.first_line)), safe_text(st.reply.note or ""))
            if len(st.reply.lines) > 1 and not self.verbose:
                s += f" (+{plural(len(st.reply.lines) - 1, 'line')})"
            if eof and st.status in ("failed", "error"):
                s += " (server did not close)"
            parts.append(s)
        elif st.status == "passed" and st.expected is not None and st.action != "sleep":
            parts.append("S: EOF (server closed)")  # the only way a step with `S:` passes unanswered
        elif st.status in ("failed", "error") and st.expected is not None:
            parts.append("S: (nothing; server did not close)" if eof else "S: (no reply)")
        mark = self._c(self.marks.get(st.status, "?"), _STATUS_COLOR.get(st.status, "bold"))
        parts.append(mark)
        parts.append(fmt_ms(st.elapsed) if st.status not in _NOT_PLAYED else "")
        line = parts[0] + " " + "  ".join(p for p in parts[1:] if p)
        if st.status in _NOT_PLAYED and st.reason:
            line += "  " + self._c(f"{st.status}: {safe_text(st.reason)}", "dim")
        elif st.status == "interrupted":
            line += "  " + self._c(safe_text(st.reason or "interrupted"), "yellow")
        self._emit(line.rstrip())
        if st.captures:
            self._emit(f"{DETAIL_INDENT}captured {safe_text(captures_text(st.captures))}")
        if st.snapshot in ("new", "updated"):  # --snapshot: each change, as it is recorded
            self._emit(self._c(f"{DETAIL_INDENT}snapshot: {st.snapshot}", "cyan"))
            self._snapshot_diff(st)
        if st.status in ("failed", "error"):
            self._failure(st)

    def _snapshot_diff(self, st: R.StepResult) -> None:
        """The unified diff of a reply against its snapshot, - red, + green."""
        for line in (st.snapshot_diff or "").splitlines():
            color = {"-": "red", "+": "green", "@": "cyan"}.get(line[:1], "")
            text = f"{DETAIL_INDENT}  {safe_text(line)}"
            self._emit(self._c(text, color) if color else text)

    def _failure(self, st: R.StepResult) -> None:
        pad = DETAIL_INDENT
        if st.expected is not None:
            self._emit(f"{pad}expected: {visible(st.expected)}")
        if st.snapshot_diff is not None:  # the diff names the lines that changed
            self._emit(f"{pad}snapshot: {st.snapshot}")
            self._snapshot_diff(st)
        elif st.reply is not None:
            lines = st.reply.lines or ("",)  # a tuple, or Lines: only the shown ones are read
            shown = [visible(text) for text in lines[:MAX_REPLY_LINES]]
            if len(shown) == len(lines):  # the decoded challenge belongs to the last line
                shown[-1] = with_note(shown[-1], safe_text(st.reply.note or ""))
            for i, text in enumerate(shown):
                self._emit(f"{pad}{'received: ' if i == 0 else ' ' * 10}{text}")
            if len(lines) > len(shown):
                self._emit(f"{pad}{' ' * 10}... {plural(len(lines) - len(shown), 'more line')}")
        elif st.expected is not None:
            self._emit(f"{pad}received: (nothing)")
        if st.reason:
            self._emit(self._c(f"{pad}reason:   {safe_text(st.reason)}", "red"))
        self._emit(f"{pad}at:       {safe_text(where(st.location, st.via))}")

    def _on_SessionFinished(self, ev: E.SessionFinished) -> None:
        r = ev.result
        if self._open:
            self._open.pop()
        if r.status in ("failed", "error") and not any(s.status in ("failed", "error") for s in r.steps):
            mark = self._c(self.marks[r.status], "red")
            self._emit(f"  {mark} session {safe_text(r.name)}: {safe_text(r.reason or r.status)}")
        elif r.status == "skipped":  # its (or the scenario's) requires did not hold
            mark = self._c(self.marks["skipped"], _STATUS_COLOR["skipped"])
            self._emit(f"  {mark} session {safe_text(r.name)} skipped: {safe_text(r.reason or '')}")
        if self._open:  # back in the session whose step played this one
            self._emit(self._c(f"  session {safe_text(self._open[-1])} continues", "cyan"))

    def _on_Retrying(self, ev: E.Retrying) -> None:
        self._emit(self._c(f"  {safe_text(retry_text(ev))}", "yellow"))

    def _on_ScenarioFinished(self, ev: E.ScenarioFinished) -> None:
        r = ev.result
        self.results.append(r)
        text = safe_text(summary_text(r, dash=self.dash, sessions_shown=not self.quiet))
        verdict = VERDICT.get(r.status, r.status.upper())
        if text.startswith(verdict):
            text = self._c(verdict, _STATUS_COLOR.get(r.status, "bold")) + text[len(verdict) :]
        self._emit(text)

    # ------------------------------------------------------------ verbose wire
    def _wire(self, direction: str, data: bytes) -> None:
        other = "S" if direction == "C" else "C"
        if self._pending[other]:
            self._flush_wire()
        text = self._pending[direction] + data.decode("utf-8", errors="backslashreplace")
        self._pending[direction] = ""
        for line in split_lines(text):
            if line.endswith("\n"):
                self._wire_line(direction, line)
            else:
                self._pending[direction] = line

    def _flush_wire(self) -> None:
        for d in ("C", "S"):
            if self._pending[d]:
                line, self._pending[d] = self._pending[d], ""
                self._wire_line(d, line)

    def _wire_line(self, direction: str, line: str) -> None:
        line = redact(self.redactor, line)
        if self.show_crlf:
            shown = visible(line)
        else:
            body = line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line
            shown = safe_text(body)
        self._emit(f"{WIRE_INDENT}{self._c(direction + ':', 'bold' if direction == 'C' else 'dim')} {shown}")

    # ------------------------------------------------------------ suites
    def progress(self, done: int, total: int, passed: int, failed: int, elapsed: float) -> None:
        """Draw a live one-line status on a TTY (overwritten in place); nothing otherwise.
        The line is ended when done reaches total."""
        if not self.tty:
            return
        with self._lock:
            text = f"[{done}/{total}] {passed} passed, {failed} failed, {elapsed:.1f} s"
            if self.color:
                text = f"[{done}/{total}] " + self._c(f"{passed} passed", "green") + ", "
                text += self._c(f"{failed} failed", "red" if failed else "dim") + f", {elapsed:.1f} s"
            plain = f"[{done}/{total}] {passed} passed, {failed} failed, {elapsed:.1f} s"
            self._raw("\r" + text + " " * max(0, self._progress_len - len(plain)))
            if done >= total:
                self._raw("\n")
                self._progress, self._progress_len = "", 0
            else:  # redrawn below lines emitted meanwhile
                self._progress, self._progress_len = text, len(plain)
            self._flush_stream()

    def summary_table(self, results: list[R.ScenarioResult] | None = None) -> None:
        """A final table for suites of more than one scenario: scenario, provider, steps
        passed/total, time, verdict, the first failure's reason. Prints nothing for one."""
        results = self.results if results is None else results
        if len(results) <= 1:
            return
        if self.quiet:  # -q: the count line alone
            self._count_line(results)
            return
        lines = table_lines(
            results, self._short, lambda text, status: self._c(text, _STATUS_COLOR.get(status, "bold"))
        )
        for line in slowest_lines(results):  # above the table: its last line stays the counts
            self._emit(line)
        self._emit("")
        self._emit(self._c(lines[0], "bold"))
        for line in lines[1:]:
            self._emit(line)
        self._count_line(results)

    def _count_line(self, results: list[R.ScenarioResult]) -> None:
        total_time = sum(r.duration for r in results)
        self._emit(f"{count_line(results)} ({total_time:.2f} s of conversations)")

    def close(self) -> None:
        with self._lock:
            self._flush_skips()
            self._flush_wire()
            if self._progress:
                self._raw("\n")
                self._progress, self._progress_len = "", 0
            self._flush_stream()
