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
from runner.reporters.summary import last_attempts, step_counts
from runner.reporters.text import iso, redact

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = 1
MAX_REPLY_LINES = 1000  # lines of one reply kept in the report; the rest counted in lines_omitted


def _tls(info) -> dict | None:
    if info is None:
        return None
    return {
        "version": info.version,
        "cipher": info.cipher,
        "peer_subject": info.peer_subject,
        "peer_issuer": info.peer_issuer,
        "verified": info.verified,
    }


def _reply(reply) -> dict | None:
    if reply is None:
        return None
    lines = reply.lines  # a tuple, or Lines: only the kept ones are read
    out: dict[str, Any] = {
        "code": reply.code,
        "lines": list(lines[:MAX_REPLY_LINES]),
        "enhanced": reply.enhanced,
        "note": reply.note,
        "bytes": len(reply.raw),
    }
    if len(lines) > MAX_REPLY_LINES:
        out["lines_omitted"] = len(lines) - MAX_REPLY_LINES
    return out


def step_dict(st: R.StepResult, session: R.SessionResult) -> dict:
    return {
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
        "elapsed": round(st.elapsed, 6),
        "captures": dict(st.captures),
    }


def scenario_dict(r: R.ScenarioResult) -> dict:
    passed, total = step_counts(r)
    return {
        "file": r.file,
        "name": r.name,
        "display_name": r.display_name,
        "provider": r.provider,
        "status": r.status,
        "exit_class": int(r.exit_class),
        "started": iso(r.started_at) if r.started_at else None,
        "duration": round(r.duration, 6),
        "reason": r.reason,
        "retries": r.retries,
        "steps_passed": passed,
        "steps_total": total,
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
                "duration": round(s.duration, 6),
            }
            for s in r.sessions
        ],
        "steps": [step_dict(st, s) for s in r.sessions for st in s.steps],
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
        self.created = time.time()
        self.first_start: float | None = None
        self._closed = False

    def handle(self, event) -> None:
        if isinstance(event, E.ScenarioStarted):
            if self.first_start is None or event.at < self.first_start:
                self.first_start = event.at
        elif isinstance(event, E.ScenarioFinished):
            self.results.append(event.result)

    def document(self) -> dict:
        started = self.first_start if self.first_start is not None else self.created
        steps = [st for r in self.results for st in (st for s in last_attempts(r) for st in s.steps)]
        statuses = [r.status for r in self.results]
        doc = {
            "tool": "mailrun",
            "version": runner.__version__,
            "schema_version": SCHEMA_VERSION,
            "started": iso(started),
            "duration": round(max(0.0, time.time() - started), 6),
            "exit_class": int(most_severe(r.exit_class for r in self.results)),
            "summary": {
                "scenarios": len(self.results),
                "passed": statuses.count("passed"),
                "failed": statuses.count("failed"),
                "error": statuses.count("error"),
                "skipped": statuses.count("skipped"),
                "steps": len(steps),
                "steps_passed": sum(1 for s in steps if s.status == "passed"),
                "steps_failed": sum(1 for s in steps if s.status == "failed"),
                "steps_error": sum(1 for s in steps if s.status == "error"),
                "steps_skipped": sum(1 for s in steps if s.status == "skipped"),
            },
            "scenarios": [scenario_dict(r) for r in self.results],
        }
        return _redact_tree(doc, self.redactor)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        text = json.dumps(self.document(), indent=2, ensure_ascii=False) + "\n"
        write_atomic(self.path, text.encode("utf-8"), "JSON report")
