"""The HTML report (`--report html=PATH`): one self-contained page for the whole run.

    header   summary counts (the JSON report's, runner.reporters.json_report.summary) and filter
             buttons: all, passed, failed (failed, error, interrupted, unchecked), skipped
             (anything else)
    section  one per scenario run (a matrix run of one file gives one per provider), folded
             open when it did not pass; inside, the verdict line every report words the same
             (runner.reporters.summary.summary_text), then one block per session attempt:
               the conversation as a chat: client lines on the right, server replies on the
               left (a decoded 334 challenge under its line), connect/TLS/notes in the middle;
               per step its status, location and a time bar (its share of the slowest step);
               a failed step expanded with expected vs received, the reason and a snapshot
               diff when the step carries one; a TLS handshake with every fact the event holds
             and the masked wire transcript, folded

Everything shown is already masked (runner.events) and is passed through the optional
redactor, then escaped: the server's text is data, never markup. The page has a
Content-Security-Policy that forbids every fetch and allows only its own script (by hash), so
it loads nothing from anywhere and a stray tag could not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import time
from pathlib import Path

import runner
from runner import events as E
from runner import results as R
from runner.reporters.base import RedactorLike, Reporter, write_atomic
from runner.reporters.event_json import info_dict
from runner.reporters.html_assets import CSS, JS
from runner.reporters.json_report import summary
from runner.reporters.summary import VERDICT, performed_text, step_counts, summary_text
from runner.reporters.text import captures_text, iso, redact, retry_text, safe_text, step_label, where
from runner.reporters.transcript import TranscriptFormatter

MAX_TRANSCRIPT = 256 * 1024  # characters of wire transcript per scenario run; the rest is cut
MAX_LINES = 200  # reply lines shown per step
MAX_TEXT = 4000  # characters of one sent line shown

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
CSP = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{_SCRIPT_HASH}'"
FILTERS = (("all", "All"), ("passed", "Passed"), ("failed", "Failed"), ("skipped", "Skipped"))
_TOKEN = re.compile(r"[^a-z0-9]+")


def group(status: str) -> str:
    """Which filter button shows a scenario run of this status."""
    if status == "passed":
        return "passed"
    return "failed" if status in R.PROBLEMS else "skipped"


def token(status: str) -> str:
    """A status as a CSS class: 'not needed' -> 'status-not-needed'."""
    return "status-" + (_TOKEN.sub("-", str(status).lower()).strip("-") or "unknown")


class HtmlReporter(Reporter):
    """Renders each scenario run's section at its ScenarioFinished; close() writes the page."""

    def __init__(self, path: str | os.PathLike, redactor: RedactorLike | None = None):
        self.path = Path(path)
        self.redactor = redactor
        self.results: list[R.ScenarioResult] = []
        self.sections: list[str] = []
        self.created = time.time()
        self.first_start: float | None = None
        self._events: list | None = None
        self._wire: TranscriptFormatter | None = None
        self._transcript: list[str] = []
        self._size = 0
        self._closed = False

    def x(self, text) -> str:
        """Masked, control characters shown as \\xNN (line ends kept: `<pre>` blocks show lines),
        and escaped for HTML text or attributes."""
        masked = redact(self.redactor, "" if text is None else str(text))
        return "\n".join(html.escape(safe_text(line)) for line in masked.split("\n"))

    def handle(self, event) -> None:
        if isinstance(event, E.ScenarioStarted):
            if self.first_start is None or event.at < self.first_start:
                self.first_start = event.at
            self._events, self._transcript, self._size = [], [], 0
            self._wire = TranscriptFormatter(redactor=self.redactor)
        if self._wire is not None and self._size <= MAX_TRANSCRIPT:
            text = self._wire.format(event)
            self._transcript.append(text)
            self._size += len(text)
        if self._events is not None and not isinstance(event, E.Sent | E.Received):
            self._events.append(event)
        if isinstance(event, E.ScenarioFinished):
            transcript = "".join(self._transcript)
            if self._size > MAX_TRANSCRIPT:
                transcript = transcript[:MAX_TRANSCRIPT] + "\n... transcript cut here ...\n"
            self.results.append(event.result)
            self.sections.append(_Scenario(self, event.result, self._events or [], transcript).render())
            self._events, self._wire = None, None

    def page(self) -> str:
        counts = summary(self.results)
        groups = [group(r.status) for r in self.results]
        shown = {"all": len(groups), **{g: groups.count(g) for g, _ in FILTERS[1:]}}
        started = self.first_start if self.first_start is not None else self.created
        title = f"mailrun report: {counts['passed']} of {counts['scenarios']} passed"
        head = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{self.x(title)}</title>\n<link rel="icon" href="data:,">\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n"
        )
        dl = "".join(  # the counts (the summary's lists, such as the slowest steps, are not counts)
            f'<div data-count="{k}"><dt>{k.replace("_", " ")}</dt><dd>{v}</dd></div>'
            for k, v in counts.items()
            if isinstance(v, int)
        )
        buttons = "".join(
            f'<button type="button" data-filter="{k}" aria-pressed="{str(k == "all").lower()}">'
            f'{label} (<span class="n">{shown[k]}</span>)</button>'
            for k, label in FILTERS
        )
        buttons += '<button type="button" id="expand">expand all</button>'
        buttons += '<button type="button" id="collapse">collapse all</button>'
        header = (
            f'<header>\n<h1>mailrun report</h1>\n<p class="meta">started {self.x(iso(started))}'
            f" · mailrun {self.x(runner.__version__)} · written {self.x(iso(time.time()))}</p>\n"
            f'<dl class="counts" id="summary">{dl}</dl>\n<nav id="filters" aria-label="filter">{buttons}</nav>\n'
            "</header>\n"
        )
        body = "<main>\n" + "".join(self.sections) + "</main>\n"
        return head + header + body + f"<script>{JS}</script>\n</body>\n</html>\n"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        write_atomic(self.path, self.page().encode("utf-8", errors="backslashreplace"), "HTML report")


class _Scenario:
    """One scenario run's section, from its result and its events (Sent/Received left out: the
    steps carry what was sent and received, the wire transcript the bytes)."""

    def __init__(self, rep: HtmlReporter, result: R.ScenarioResult, events: list, transcript: str):
        self.x = rep.x
        self.result = result
        self.events = events
        self.transcript = transcript
        self.slowest = max((st.elapsed for st in result.steps), default=0.0)
        self.tls_mode = "none"

    def render(self) -> str:
        r, x = self.result, self.x
        passed, total = step_counts(r)
        status = token(r.status)
        head = (
            f'<summary><span class="badge {status}">{x(VERDICT.get(r.status, r.status.upper()))}</span>'
            f"<h2>{x(r.display_name)}</h2> "
            f'<span class="meta">{x(r.file)} · {passed}/{total} steps{x(performed_text(r))} · {r.duration:.2f} s'
            "</span></summary>\n"
        )
        body = f'<p class="verdict {status}">{x(summary_text(r))}</p>\n'  # the line every report has
        body += "".join(self.sessions())
        if self.transcript:
            body += (
                '<details class="wire"><summary>wire transcript</summary>'
                f"<pre>{x(self.transcript)}</pre></details>\n"
            )
        is_open = " open" if group(r.status) != "passed" else ""
        return (
            f'<section class="scenario {status}" data-status="{x(r.status)}" data-group="{group(r.status)}">\n'
            f'<details class="run"{is_open}>{head}{body}</details>\n</section>\n'
        )

    def sessions(self) -> list[str]:
        """One block per session attempt; lines before the first session (a suite retry) and
        after the last one go in blocks of their own. A session played inside another (an idle
        step's during) splits that one's block: its part before, the inner block, the rest."""
        out, items, started, tls_seen = [], [], None, False
        outer: list[E.SessionStarted | None] = []  # sessions a session runs inside (idle's during)
        for ev in chat_order(self.events):
            if isinstance(ev, E.SessionStarted):
                if items:  # the part of the session this one runs inside, up to here
                    out.append(self.block(None, started, items, tls_seen))
                outer.append(started)
                items, started, tls_seen = [], ev, False
                self.tls_mode = ev.tls_mode
            elif isinstance(ev, E.SessionFinished):
                out.append(self.block(ev.result, started, items, tls_seen))
                items, started, tls_seen = [], outer.pop() if outer else None, False
            else:
                tls_seen = tls_seen or isinstance(ev, E.TLSStarted)
                if line := self.item(ev):
                    items.append(line)
        if items:
            out.append(self.block(None, started, items, tls_seen))
        return out

    def block(
        self, sess: R.SessionResult | None, started: E.SessionStarted | None, items: list[str], tls_seen: bool
    ) -> str:
        """A session attempt's block: its facts and status, then its chat."""
        x, facts = self.x, []
        if sess is not None:
            facts.append(f"{sess.protocol}")
            if sess.attempts > 1:
                facts.append(f"attempt {sess.attempt}/{sess.attempts}")
            if sess.peer:
                facts.append(f"{sess.peer} via {sess.transport}")
        if started is not None:
            if sess is None:
                facts.append(f"{started.protocol}, {started.host}:{started.port} via {started.transport}")
            facts.append(f"tls {started.tls_mode}")
        name = sess.name if sess is not None else (started.name if started is not None else "")
        title = f'<h3>{"session " + x(name) if name else ""} <span class="meta">{x(", ".join(facts))}</span>'
        if sess is not None:
            title += f' <span class="badge {token(sess.status)}">{x(sess.status)}</span>'
            title += f' <span class="meta">{sess.duration:.3f} s</span>'
            if sess.tls is not None and not tls_seen:  # (a report read back without its events)
                items = [*items, self.tls(sess.tls, "TLS")]
            if sess.reason:
                items = [*items, f'<li class="sys reason">{x(sess.reason)}</li>']
        return f'<div class="session">{title}</h3>\n<ol class="chat">\n{"".join(items)}</ol>\n</div>\n'

    def item(self, ev) -> str:
        x = self.x
        if isinstance(ev, E.StepFinished):
            return self.step(ev.result)
        if isinstance(ev, E.TLSStarted):
            return self.tls(ev.info, "TLS (implicit)" if self.tls_mode == "implicit" else "TLS started")
        if isinstance(ev, E.Connected):
            note = f" ({ev.info.note})" if ev.info.note else ""
            return (
                f'<li class="sys">connected to {x(ev.info.peer)} via {x(ev.info.transport)}{x(note)}</li>\n'
            )
        if isinstance(ev, E.Note):
            if ev.kind == "chatter":  # what a spawned program printed, lines together
                return f'<li class="sys chatter"><pre>{x(ev.text)}</pre></li>\n'
            cls = "sys warning" if ev.kind == "warning" else "sys"
            return f'<li class="{cls}">{x(ev.kind)}: {x(ev.text)}</li>\n'
        if isinstance(ev, E.Retrying):
            return f'<li class="sys warning">{x(retry_text(ev))}</li>\n'
        if isinstance(ev, E.Closed):
            return f'<li class="sys">connection closed by {x(ev.by)}</li>\n'
        return ""

    def tls(self, info, what: str) -> str:
        """Every fact of a TLSInfo (fields added to it later show up too)."""
        x = self.x
        facts = info_dict(info) or {}
        rows = "".join(f"<dt>{x(k.replace('_', ' '))}</dt><dd>{x(_fact(v))}</dd>" for k, v in facts.items())
        cls = "tls" if facts.get("verified", True) else "tls unverified"
        warn = "" if facts.get("verified", True) else " (certificate NOT verified: tls_verify is off)"
        return f'<li class="{cls}"><strong>{x(what)}{x(warn)}</strong><dl>{rows}</dl></li>\n'

    def step(self, st: R.StepResult) -> str:
        x = self.x
        elapsed = st.elapsed
        share = 100.0 * elapsed / self.slowest if self.slowest > 0 else 0.0
        name = f' <span class="name">{x(st.name)}</span>' if st.name else ""
        head = (
            f'<div class="stephead"><span class="label">{x(step_label(st.index, st.section))}</span>{name}'
            # a step the transport's program played: not a plain skip, and not checked
            f'<span class="badge {token(st.status)}">{"not checked" if st.performed_by else x(st.status)}</span>'
            f'<span class="loc">{x(where(st.location, st.via))}</span>'
            f'<span class="time"><span class="track"><span class="bar" style="width:{share:.1f}%"></span>'
            f"</span>{elapsed * 1000:.1f} ms</span></div>\n"
        )
        parts = [head]
        if st.sent is not None:
            parts.append(
                f'<div class="bubble c"><span class="who">C:</span><pre>{x(_cut(st.sent))}</pre></div>\n'
            )
        if st.reply is not None:
            parts.append(self.reply(st.reply))
        extra = []
        if st.performed_by:  # (its reason says the same, for people)
            extra.append(f"performed by {st.performed_by}")
        elif st.reason and st.status not in ("failed", "error"):
            extra.append(st.reason)
        if getattr(st, "condition", None):  # a `requires` or `when` that did not hold
            extra.append(f"condition: {st.condition}")
        if st.captures:
            extra.append(f"captured {captures_text(st.captures)}")
        if extra:
            parts.append(f'<div class="sys">{x("; ".join(extra))}</div>\n')
        if st.status in ("failed", "error") or _diff(st):
            parts.append(self.problem(st))
        return f'<li class="step {token(st.status)}" data-status="{x(st.status)}">{"".join(parts)}</li>\n'

    def reply(self, reply) -> str:
        x = self.x
        lines = reply.lines  # a tuple, or Lines: only the shown ones are decoded
        more = len(lines) - MAX_LINES + getattr(reply, "lines_omitted", 0)
        text = "\n".join(lines[:MAX_LINES]) + (f"\n... {more} more line(s)" if more > 0 else "")
        decoded = f'<div class="decoded">decoded: {x(reply.note)}</div>' if reply.note else ""
        return f'<div class="bubble s"><span class="who">S:</span><pre>{x(text)}</pre>{decoded}</div>\n'

    def problem(self, st: R.StepResult) -> str:
        x, rows = self.x, []
        if st.expected is not None:
            rows.append(("expected", f"<pre>{x(st.expected)}</pre>"))
        if st.expected is not None or st.reply is not None:
            got = "\n".join(st.reply.lines[:MAX_LINES]) if st.reply is not None else "(nothing)"
            if st.reply is not None and st.reply.note:
                got += f"  ({st.reply.note})"
            rows.append(("received", f"<pre>{x(got)}</pre>"))
        if st.reason:
            rows.append(("reason", x(st.reason)))
        diff = _diff(st)
        if diff:
            what = getattr(st, "snapshot", None)
            rows.append(
                (f"snapshot {x(what)}" if what else "snapshot", f'<pre class="diff">{self.diff(diff)}</pre>')
            )
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
        return f'<div class="problem"><dl>{dl}</dl></div>\n'

    def diff(self, diff) -> str:
        """A unified diff (text, or a list of lines), each line coloured by its first character."""
        lines = diff.splitlines() if isinstance(diff, str) else [str(v) for v in diff]
        kinds = {"+": "add", "-": "del", "@": "hunk"}
        return "\n".join(
            f'<span class="{kinds.get(line[:1], "ctx")}">{self.x(line)}</span>' for line in lines
        )


def chat_order(events: list):
    """The events in the order the chat shows them: a STARTTLS handshake (announced after the
    STARTTLS reply, before its step's StepFinished) after that step; one at connect (implicit
    TLS, a program's -starttls) where it is."""
    held, prev = None, None
    for ev in _chatter_joined(events):
        if isinstance(ev, E.TLSStarted) and not isinstance(prev, E.Connected):
            if held is not None:
                yield held
            held = ev
        elif held is not None and not isinstance(ev, E.StepFinished | E.Note):
            yield held
            held = None
            yield ev
        else:
            yield ev
            if held is not None and isinstance(ev, E.StepFinished):
                yield held
                held = None
        prev = ev
    if held is not None:
        yield held


def _chatter_joined(events: list):
    """Consecutive chatter notes (a spawned program's own output, a line each) as one note."""
    lines: list[E.Note] = []
    for ev in events:
        if isinstance(ev, E.Note) and ev.kind == "chatter":
            lines.append(ev)
            continue
        if lines:
            yield E.Note("chatter", "\n".join(n.text for n in lines), lines[0].at)
            lines = []
        yield ev
    if lines:
        yield E.Note("chatter", "\n".join(n.text for n in lines), lines[0].at)


def _diff(st: R.StepResult):
    """A step's snapshot diff, when it carries one (`snapshot_diff`, set by --snapshot)."""
    return getattr(st, "snapshot_diff", None)


def _cut(text: str) -> str:
    return (
        text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"... ({len(text) - MAX_TEXT} more characters)"
    )


def _fact(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fact(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(map(_fact, value))
    return "(none)" if value is None else str(value)
