"""The JSON report: one document for the whole run, documented by schemas/report.schema.json
(a copy ships as runner/data/report.schema.json)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import runner
from runner import events as E
from runner import results as R
from runner.errors import most_severe
from runner.reporters.base import RedactorLike, Reporter, write_atomic
from runner.reporters.event_json import EventRecorder
from runner.reporters.summary import last_attempts, slowest_steps, status_counts, step_counts
from runner.reporters.text import iso, redact

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = 1
MAX_REPLY_LINES = 1000  # lines of one reply kept in the report; the rest counted in lines_omitted


def _tls(info) -> dict | None:
    return None if info is None else info.facts()


def _reply(reply) -> dict | None:
    if reply is None:
        return None
    lines = reply.lines  # a tuple, or Lines: only the kept ones are read
    # a reply read back from a report (runner.reporters.replay) says what the report left out
    omitted = max(0, len(lines) - MAX_REPLY_LINES) + getattr(reply, "lines_omitted", 0)
    out: dict[str, Any] = {
        "code": reply.code,
        "lines": list(lines[:MAX_REPLY_LINES]),
        "enhanced": reply.enhanced,
        "note": reply.note,
        "bytes": getattr(reply, "size", len(reply.raw)),
    }
    if omitted:
        out["lines_omitted"] = omitted
    return out


def step_dict(st: R.StepResult, session: R.SessionResult) -> dict:
    out = {
        "index": st.index,
        "section": st.section,
        "session": session.name,
        "attempt": session.attempt,
        "name": st.name,
        "location": st.location,
        "via": st.via,
        "action": st.action,
        "status": st.status,
        "exit_class": int(st.exit_class),
        "sent": st.sent,
        "expected": st.expected,
        "reply": _reply(st.reply),
        "reason": st.reason,
        "elapsed": st.elapsed,  # (exact: a merged report shows the same times)
        "captures": dict(st.captures),
        "condition": st.condition,
        "time_limit": st.time_limit,
        "performed_by": st.performed_by,
    }
    if st.tls is not None:  # the TLS step (tls_expect): the facts it checked
        out["tls"] = _tls(st.tls)
    if st.snapshot is not None:  # --snapshot: its verdict on the reply, and the diff
        out["snapshot"] = {"status": st.snapshot, "diff": st.snapshot_diff}
    return out


def scenario_dict(r: R.ScenarioResult, events: list[dict] | None = None, omitted: int = 0) -> dict:
    """A scenario run's entry; `events` (runner.reporters.event_json) when they were recorded."""
    passed, total = step_counts(r)
    out = {
        "file": r.file,
        "name": r.name,
        "display_name": r.display_name,
        "provider": r.provider,
        "status": r.status,
        "exit_class": int(r.exit_class),
        "started": iso(r.started_at) if r.started_at else None,
        "duration": r.duration,
        "reason": r.reason,
        "retries": r.retries,
        "steps_passed": passed,
        "steps_total": total,
        "steps_performed": R.performed_total(r),  # skipped: the transport's program did them
        "sessions": [
            {
                "name": s.name,
                "protocol": s.protocol,
                "attempt": s.attempt,
                "attempts": s.attempts,
                "status": s.status,
                "exit_class": int(s.exit_class),
                "reason": s.reason,
                "peer": s.peer,
                "transport": s.transport,
                "tls": _tls(s.tls),
                "duration": s.duration,
                "condition": s.condition,
                "capabilities": s.capabilities,
            }
            for s in r.sessions
        ],
        "steps": [step_dict(st, s) for s in r.sessions for st in s.steps],
    }
    if events is not None:
        out["events"] = events
    if omitted:
        out["events_omitted"] = omitted
    return out


def summary(results: list[R.ScenarioResult]) -> dict:
    """The report's counts (also shown at the top of the HTML report): scenario runs by status,
    and the steps of each session's last attempt by status."""
    steps = [st for r in results for st in (st for s in last_attempts(r) for st in s.steps)]
    counts = status_counts(results)  # (what the console's count line counts)
    return {
        "scenarios": len(results),
        "passed": counts["passed"],
        "failed": counts["failed"],
        "error": counts["error"],
        "skipped": counts["skipped"],
        "interrupted": counts["interrupted"],
        "not_run": counts["not run"],
        "unchecked": counts["unchecked"],
        "steps": len(steps),
        "steps_passed": sum(1 for s in steps if s.status == "passed"),
        "steps_failed": sum(1 for s in steps if s.status == "failed"),
        "steps_error": sum(1 for s in steps if s.status == "error"),
        "steps_skipped": sum(1 for s in steps if s.status == "skipped"),
        "steps_not_needed": sum(1 for s in steps if s.status == "not needed"),
        "steps_interrupted": sum(1 for s in steps if s.status == "interrupted"),
        "steps_performed": sum(R.performed_total(r) for r in results),
        "slowest_steps": [
            {
                "file": r.file,
                "scenario": r.display_name,
                "location": st.location,
                "elapsed": round(st.elapsed, 6),
            }
            for r, st in slowest_steps(results)
        ],
    }


def _redact_tree(obj, redactor):
    if redactor is None:
        return obj
    if isinstance(obj, str):
        return redact(redactor, obj)
    if isinstance(obj, list):
        return [_redact_tree(v, redactor) for v in obj]
    if isinstance(obj, dict):
        return {k: _redact_tree(v, redactor) for k, v in obj.items()}
    return obj


class JsonReporter(Reporter):
    """Collects every ScenarioFinished; close() writes the document (atomically: a temporary
    file in the same directory, then renamed)."""

    def __init__(self, path: str | os.PathLike, redactor: RedactorLike | None = None):
        self.path = Path(path)
        self.redactor = redactor
        self.results: list[R.ScenarioResult] = []
        self.events: list[tuple[list[dict] | None, int]] = []  # per result: (events, how many left out)
        self._recorder: EventRecorder | None = None
        self.last_end: float | None = None
        self.created = time.time()
        self.first_start: float | None = None
        self._closed = False

    def handle(self, event) -> None:
        if isinstance(event, E.ScenarioStarted):
            if self.first_start is None or event.at < self.first_start:
                self.first_start = event.at
            self._recorder = EventRecorder()
        if self._recorder is not None:
            self._recorder.handle(event)
        if isinstance(event, E.ScenarioFinished):
            self.results.append(event.result)
            self.events.append(self._recorder.take(event.result) if self._recorder else (None, 0))
            self._recorder = None
            self.last_end = max(self.last_end or event.at, event.at)

    def document(self) -> dict:
        started = self.first_start if self.first_start is not None else self.created
        end = self.last_end if self.last_end is not None else time.time()
        doc = {
            "tool": "mailrun",
            "version": runner.__version__,
            "schema_version": SCHEMA_VERSION,
            "started": iso(started),
            "duration": round(max(0.0, end - started), 6),
            "exit_class": int(most_severe(r.exit_class for r in self.results)),
            "summary": summary(self.results),
            "scenarios": [scenario_dict(r, *ev) for r, ev in zip(self.results, self.events, strict=True)],
        }
        return _redact_tree(doc, self.redactor)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        text = json.dumps(self.document(), indent=2, ensure_ascii=False) + "\n"
        write_atomic(self.path, text.encode("utf-8"), "JSON report")
