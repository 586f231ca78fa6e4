"""JSON reports back into results and events: what `mailrun report merge` plays into the
reporters, so every format is rebuilt by the same reporter a live run uses (one JUnit writer,
one HTML writer, one JSON writer).

    docs = [read_report(p) for p in paths]       # ReportError naming the file and the problem
    for result, events in scenario_runs(docs):   # ScenarioResult, its event stream
        for ev in events: reporter.handle(ev)

The results are rebuilt field by field from what runner.reporters.json_report wrote (a field the
record has and the report carries comes back as it was), the events from each scenario's
`events` (runner.reporters.event_json). A report without `events` (an older mailrun) still
gives every result, in a stream of only the step, session and scenario events.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from runner import events as E
from runner import results as R
from runner.errors import ExitClass
from runner.protocols.base import Reply
from runner.reporters.base import ReportError
from runner.reporters.event_json import decode, field_names, tls_info
from runner.reporters.text import safe_text

MAX_PROBLEMS = 5  # schema problems named per file


class ReplayedReply(Reply):
    """A reply read back from a report: its lines as the report kept them, with what the report
    says of the wire (`size`, the reply's bytes; `lines_omitted`, lines it left out). `raw` is
    the kept lines joined with CRLF."""

    __slots__ = ("size", "lines_omitted")


#: the largest JSON report `report merge` reads (a report keeps at most 1 MiB of wire bytes a
#: run: this is hundreds of runs' worth)
MAX_REPORT_BYTES = 256 << 20


def _read_bytes(path: str | Path, shown: str) -> bytes:
    """A regular file's bytes, at most MAX_REPORT_BYTES (a device, FIFO or socket is refused
    without waiting on it)."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReportError(f"{shown}: not a regular file")
        if st.st_size > MAX_REPORT_BYTES:
            raise ReportError(f"{shown}: larger than {MAX_REPORT_BYTES >> 20} MiB; not a mailrun report")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"{shown}: larger than {MAX_REPORT_BYTES >> 20} MiB; not a mailrun report")
    return data


def read_report(path: str | Path) -> dict:
    """A JSON report, checked against the report schema (runner/data/report.schema.json)."""
    shown = safe_text(str(path))  # how a message names it (a line break escaped)
    try:
        doc = json.loads(_read_bytes(path, shown).decode("utf-8"))
    except OSError as e:
        raise ReportError(f"{shown}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else e
        raise ReportError(f"{shown}: not a JSON document: {why}") from None
    if not isinstance(doc, dict) or doc.get("tool") != "mailrun":
        raise ReportError(f"{shown}: not a mailrun JSON report (written by `--report json=PATH`)")
    import jsonschema

    schema = json.loads((Path(__file__).parent.parent / "data" / "report.schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message[:200]}" for e in errors]
        more = f" (and {len(lines) - MAX_PROBLEMS} more)" if len(lines) > MAX_PROBLEMS else ""
        raise ReportError(
            f"{shown}: not a valid mailrun JSON report: {'; '.join(lines[:MAX_PROBLEMS])}{more}"
        )
    return doc


def _pick(cls, d: dict, **made) -> dict:
    """The keyword arguments of record class `cls` that `d` carries, with `made` (the fields
    rebuilt from their JSON form) taking precedence."""
    out = {k: d[k] for k in field_names(cls) if k in d}
    out.update(made)
    return out


def reply(d: dict | None) -> ReplayedReply | None:
    if d is None:
        return None
    lines = tuple(d.get("lines", ()))
    raw = "".join(line + "\r\n" for line in lines).encode("utf-8", errors="surrogateescape")
    rep = ReplayedReply(raw, lines, code=d.get("code"), enhanced=d.get("enhanced"), note=d.get("note"))
    rep.size = d.get("bytes", len(raw))
    rep.lines_omitted = d.get("lines_omitted", 0)
    return rep


def step(d: dict) -> R.StepResult:
    made = {
        "exit_class": ExitClass(d.get("exit_class", 0)),
        "reply": reply(d.get("reply")),
        "captures": dict(d.get("captures") or {}),
        "tls": tls_info(d.get("tls")),  # the TLS step's facts
    }
    snap = d.get("snapshot")  # --snapshot: {"status", "diff"} for the fields snapshot, snapshot_diff
    if isinstance(snap, dict):
        made.update(snapshot=snap.get("status"), snapshot_diff=snap.get("diff"))
    return R.StepResult(**_pick(R.StepResult, d, **made))


def scenario(d: dict) -> R.ScenarioResult:
    """A ScenarioResult from its report entry (its sessions and steps included)."""
    steps = list(d["steps"])
    sessions = []
    for s in d["sessions"]:
        mine = []
        while (
            steps
            and steps[0]["session"] == s["name"]
            and steps[0].get("attempt", s["attempt"]) == s["attempt"]
        ):
            mine.append(step(steps.pop(0)))
        made = {"exit_class": ExitClass(s["exit_class"]), "tls": tls_info(s.get("tls")), "steps": mine}
        sessions.append(R.SessionResult(**_pick(R.SessionResult, s, **made)))
    started = d.get("started")
    made = {
        "exit_class": ExitClass(d["exit_class"]),
        "sessions": sessions,
        "started_at": datetime.fromisoformat(started).timestamp() if started else 0.0,
    }
    return R.ScenarioResult(**_pick(R.ScenarioResult, d, **made))


def events(d: dict, result: R.ScenarioResult) -> list:
    """The scenario run's event stream; a made-up minimal one when the report has no events."""
    if "events" not in d:
        at = result.started_at
        out: list = [E.ScenarioStarted(result.file, result.name, result.provider, at)]
        for sess in result.sessions:
            out += [E.StepFinished(st, at) for st in sess.steps]
            out.append(E.SessionFinished(sess, at))
        return [*out, E.ScenarioFinished(result, at + result.duration)]
    out = []
    for ev in d["events"]:
        if ev["type"] == "ScenarioStarted":  # file, name and provider are the scenario's
            out.append(E.ScenarioStarted(result.file, result.name, result.provider, ev["at"]))
        elif (e := decode(ev, result)) is not None:
            out.append(e)
    if not out or not isinstance(out[0], E.ScenarioStarted):  # (a report edited by hand)
        out.insert(0, E.ScenarioStarted(result.file, result.name, result.provider, result.started_at))
    if not isinstance(out[-1], E.ScenarioFinished):
        out.append(E.ScenarioFinished(result, out[-1].at))
    return out


def scenario_runs(docs: list[tuple[str, dict]]):
    """(ScenarioResult, events) for every scenario run of the (path, document) pairs, in file
    order (as one run of them all would list them; runs of one file keep the order given).
    Raises ReportError for an entry that does not hold together (an event that refers to a
    step the entry does not have)."""
    entries = [(path, i, sc) for path, doc in docs for i, sc in enumerate(doc["scenarios"])]
    entries.sort(key=lambda e: Path(e[2]["file"]))  # (by parts, as discovery sorts a directory)
    for path, i, sc in entries:
        try:
            result = scenario(sc)
            stream = events(sc, result)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ReportError(
                f"{path}: scenarios/{i}: cannot be read back: {type(e).__name__}: {e}"
            ) from None
        yield result, stream


def duplicates(docs: list[tuple[str, dict]]) -> list[str]:
    """'send.yaml[gmx] is in a.json and b.json' for each scenario run found in more than one
    report (shards that overlap, or one report given twice)."""
    seen: dict[tuple[str, str | None], list[str]] = {}
    for path, doc in docs:
        for sc in doc["scenarios"]:
            seen.setdefault((sc["file"], sc["provider"]), []).append(str(path))
    return [
        f"{file}{f'[{prov}]' if prov else ''} is in {' and '.join(paths)}"
        for (file, prov), paths in seen.items()
        if len(paths) > 1
    ]
