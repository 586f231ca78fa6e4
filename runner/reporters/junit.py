"""JUnit XML (the Ant/Jenkins format that Jenkins, GitLab and GitHub test reporters read).

    <testsuites name="mailrun" tests failures errors skipped time timestamp>
      <testsuite name="FILE: DISPLAY NAME" tests failures errors skipped time timestamp hostname>
        <properties> file, scenario, provider, exit_class </properties>
        <testcase classname="DISPLAY NAME" name="step N: C: ..." time file line>
          <failure message="expected 250, got 550 ..." type="expectation">details</failure>
          | <error message="..." type="network">details</error> | <skipped message="..."/>
          | <skipped message="performed by openssl s_client -starttls smtp, not checked"/>
          | <system-out>not needed: why</system-out>   (a step whose `when` did not hold)
          <system-out>transcript</system-out>          (first failing case only)
        </testcase>
        <system-out>the scenario's masked transcript</system-out>
      </testsuite>
    </testsuites>

One testsuite per scenario run (a matrix run of one file gives one per provider), one testcase
per step. A session that failed before any step (connect, TLS) and a scenario that could not run
at all become a testcase with <error>; a scenario none of whose checks was played (every one
performed by the transport's program, status `unchecked`) a testcase with
<failure type="unchecked">, and the suite's property steps_performed counts those steps.
"""

from __future__ import annotations

import os
import re
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from runner import events as E
from runner import results as R
from runner.errors import ExitClass
from runner.reporters.base import RedactorLike, Reporter, write_atomic
from runner.reporters.text import iso, plural, redact, safe_text, step_label, where, with_note
from runner.reporters.transcript import TranscriptFormatter
from runner.results import PROBLEMS

MAX_TRANSCRIPT = 1 << 20  # characters of transcript per <system-out>; the middle is cut beyond
MAX_DETAIL_LINES = 200  # reply lines in a failure's body
MAX_NAME_SENT = 100

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _fit_transcript(text: str) -> str:
    if len(text) <= MAX_TRANSCRIPT:
        return text
    head, tail = MAX_TRANSCRIPT // 4, MAX_TRANSCRIPT - MAX_TRANSCRIPT // 4
    cut = len(text) - head - tail
    return text[:head] + f"\n... {cut} characters of transcript omitted ...\n" + text[-tail:]


class JUnitReporter(Reporter):
    def __init__(self, path: str | os.PathLike, redactor: RedactorLike | None = None):
        self.path = Path(path)
        self.redactor = redactor
        self.suites: list[ET.Element] = []
        self._fmt: TranscriptFormatter | None = None
        self._transcript: list[str] = []
        self._size = 0
        self._closed = False
        self.created = time.time()

    # ------------------------------------------------------------ text hygiene
    def _x(self, text) -> str:
        """One line of text (a name, a message), masked and escaped (safe_text: no CR, LF or
        other control character of its own), XML-safe."""
        return self._block(safe_text(redact(self.redactor, "" if text is None else str(text))))

    def _block(self, text) -> str:
        """Lines we made (a failure's details, the transcript: each already escaped), masked
        and XML-safe (characters XML 1.0 cannot hold shown as \\xNN)."""
        text = redact(self.redactor, "" if text is None else str(text))
        return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)

    # ------------------------------------------------------------ events
    def handle(self, event) -> None:
        if isinstance(event, E.ScenarioStarted):
            self._fmt = TranscriptFormatter(redactor=self.redactor)
            self._transcript, self._size = [], 0
        if self._fmt is not None and self._size <= 2 * MAX_TRANSCRIPT:
            text = self._fmt.format(event)
            self._transcript.append(text)
            self._size += len(text)
        if isinstance(event, E.ScenarioFinished):
            transcript = _fit_transcript("".join(self._transcript))
            if self._size > 2 * MAX_TRANSCRIPT:
                transcript += "\n... transcript truncated ...\n"
            self.suites.append(self._suite(event.result, transcript))
            self._fmt, self._transcript, self._size = None, [], 0

    # ------------------------------------------------------------ building
    def _suite(self, r: R.ScenarioResult, transcript: str) -> ET.Element:
        x = self._x
        suite = ET.Element("testsuite")
        suite.set("name", x(f"{r.file}: {r.display_name}"))
        props = ET.SubElement(suite, "properties")
        for k, v in (
            ("file", r.file),
            ("scenario", r.name),
            ("provider", r.provider),
            ("status", r.status),
            ("exit_class", int(r.exit_class)),
            ("retries", r.retries or None),
            ("steps_performed", R.performed_total(r) or None),  # (not checked)
        ):
            if v is not None:
                ET.SubElement(props, "property", name=k, value=x(v))
        self._tls_properties(props, r)
        cases = self._cases(r)
        for case in cases:
            suite.append(case)
        first_bad = next((c for c in cases if _bad(c)), None)
        if first_bad is not None and transcript:
            ET.SubElement(first_bad, "system-out").text = self._block(transcript)
        ET.SubElement(suite, "system-out").text = self._block(transcript)
        count = {k: sum(1 for c in cases if c.find(k) is not None) for k in ("failure", "error", "skipped")}
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(count["failure"]))
        suite.set("errors", str(count["error"]))
        suite.set("skipped", str(count["skipped"]))
        suite.set("time", f"{r.duration:.3f}")
        suite.set("timestamp", iso(r.started_at or self.created, timespec="seconds"))
        suite.set("hostname", x(socket.gethostname() or "localhost"))
        # Attribute order as in the Ant format: name first is enough for every reader.
        return suite

    def _tls_properties(self, props: ET.Element, r: R.ScenarioResult) -> None:
        """Each session's TLS facts: 'tls.version', 'tls.days_left', ... ('SESSION: tls.version'
        when the scenario has several sessions; a retried session's last attempt)."""
        sessions = {s.name: s for s in r.sessions}  # the last attempt of each
        for name, sess in sessions.items():
            if sess.tls is None:
                continue
            prefix = f"{name}: " if len(sessions) > 1 else ""
            for k, v in sess.tls.facts().items():
                if v is None:
                    continue
                text = ", ".join(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v
                ET.SubElement(props, "property", name=self._x(f"{prefix}tls.{k}"), value=self._x(text))

    def _cases(self, r: R.ScenarioResult) -> list[ET.Element]:
        """One testcase per step; one for a session that failed before any step did, and one
        for a scenario that failed with no failing case (it could not run)."""
        cases: list[ET.Element] = []
        names: set[str] = set()
        multi = len({s.name for s in r.sessions}) > 1

        def unique(name: str) -> str:
            base, n = name, 2
            while name in names:
                name, n = f"{base} #{n}", n + 1
            names.add(name)
            return name

        for sess in r.sessions:
            prefix = f"session {sess.name}: " if multi else ""
            suffix = f" (attempt {sess.attempt}/{sess.attempts})" if sess.attempts > 1 else ""
            for st in sess.steps:
                cases.append(self._step_case(r, st, unique(prefix + self._step_name(st) + suffix)))
            if sess.status in PROBLEMS and not any(s.status in PROBLEMS for s in sess.steps):
                case = self._case(r, unique(f"session {sess.name}{suffix}"), sess.duration)
                self._problem(case, "error", sess.reason or f"session {sess.status}", sess.exit_class, "")
                cases.append(case)
            elif sess.status == "skipped" and not any(
                st.status == "skipped" and st.condition == sess.condition for st in sess.steps
            ):  # its requires did not hold after its last step: the session is the skipped case
                case = self._case(r, unique(f"session {sess.name}{suffix}"), sess.duration)
                ET.SubElement(case, "skipped", message=self._x(sess.reason or "skipped"))
                cases.append(case)
        if r.status == "not run":  # (a run a signal or --fail-fast kept from starting)
            case = self._case(r, unique(f"{r.display_name}: not run"), 0.0)
            ET.SubElement(case, "skipped", message=self._x(f"not run: {r.reason}" if r.reason else "not run"))
            cases.append(case)
        if r.status == "unchecked":  # no check was played: a failure, whatever the cases say
            case = self._case(r, unique(f"{r.display_name}: unchecked"), 0.0)
            why = self._x(r.reason or "no check was played")
            ET.SubElement(case, "failure", message=why, type="unchecked").text = why
            cases.append(case)
        if r.status in PROBLEMS and not any(_bad(c) for c in cases):
            case = self._case(
                r, unique(f"{r.display_name}: could not run" if not cases else r.display_name), 0.0
            )
            kind = "failure" if r.status == "failed" else "error"
            self._problem(case, kind, r.reason or f"scenario {r.status}", r.exit_class, "")
            cases.append(case)
        return cases

    def _step_name(self, st: R.StepResult) -> str:
        name = step_label(st.index, st.section) + ": "
        if st.action == "tls":
            return name + (st.expected or "tls_expect")
        if st.sent is not None:
            sent = st.sent if len(st.sent) <= MAX_NAME_SENT else st.sent[: MAX_NAME_SENT - 3] + "..."
            name += "C: " + sent
        elif st.action == "read":
            name += "S: " + (st.expected or "(read)")
        else:
            name += f"({st.action})"
        if st.name:
            name += f" [{st.name}]"
        return name

    def _case(
        self, r: R.ScenarioResult, name: str, seconds: float, location: str | None = None
    ) -> ET.Element:
        case = ET.Element(
            "testcase", classname=self._x(r.display_name), name=self._x(name), time=f"{seconds:.3f}"
        )
        file, line = r.file, None
        if location:
            f, _, ln = location.rpartition(":")
            if f and ln.isdigit():
                file, line = f, ln
        case.set("file", self._x(file))
        if line:
            case.set("line", line)
        return case

    def _step_case(self, r: R.ScenarioResult, st: R.StepResult, name: str) -> ET.Element:
        case = self._case(r, name, st.elapsed, st.location)
        if st.performed_by:  # the transport's program played it: not a plain skip
            ET.SubElement(case, "skipped", message=self._x(f"performed by {st.performed_by}, not checked"))
        elif st.status == "skipped":
            el = ET.SubElement(case, "skipped")
            if st.reason:
                el.set("message", self._x(st.reason))
        elif st.status == "not needed":  # its `when` did not hold: not a skip, a passing case
            ET.SubElement(case, "system-out").text = self._x(f"not needed: {st.reason or ''}")
        elif st.status in PROBLEMS:
            if (
                st.status == "failed"
                and st.action != "tls"  # its reason names every failed check
                and st.expected is not None
                and st.time_limit is None  # the reply matched: it came too late or too soon
                and not (st.reason or "").startswith("expected")
            ):
                got = with_note(st.reply.first_line, st.reply.note) if st.reply is not None else "nothing"
                message = f"expected {st.expected}, got {got}"
                if st.reason:
                    message += f": {st.reason}"
            else:
                message = st.reason or st.status
            self._problem(
                case, "failure" if st.status == "failed" else "error", message, st.exit_class, _details(st)
            )
        return case

    def _problem(self, case: ET.Element, kind: str, message: str, exit_class, body: str) -> None:
        """`body`: lines made by _details ('': the message is the body too)."""
        if kind == "failure":
            typ = "expectation" if exit_class in (ExitClass.FAILED, ExitClass.OK) else _class_name(exit_class)
        else:
            typ = _class_name(exit_class)
        el = ET.SubElement(case, kind, message=self._x(message), type=typ)
        el.text = self._block(body) if body else self._x(message)

    # ------------------------------------------------------------ output
    def document(self) -> ET.Element:
        root = ET.Element("testsuites", name="mailrun")
        total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        seconds = 0.0
        for s in self.suites:
            for k in total:
                total[k] += int(s.get(k, "0"))
            seconds += float(s.get("time", "0"))
            root.append(s)
        for k, v in total.items():
            root.set(k, str(v))
        root.set("time", f"{seconds:.3f}")
        root.set("timestamp", iso(self.created, timespec="seconds"))
        return root

    def to_bytes(self) -> bytes:
        root = self.document()
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        write_atomic(self.path, self.to_bytes(), "JUnit report")


def _bad(case: ET.Element) -> bool:
    return case.find("failure") is not None or case.find("error") is not None


def _class_name(exit_class) -> str:
    try:
        return ExitClass(exit_class).name.lower()
    except ValueError:
        return "error"


def _details(st: R.StepResult) -> str:
    """A failure's body: one line per field, each value escaped (safe_text)."""
    out = []
    if st.sent is not None:
        out.append(f"sent:     {safe_text(st.sent)}")
    if st.expected is not None:
        out.append(f"expected: {safe_text(st.expected)}")
    if st.reply is not None:
        lines = st.reply.lines or ("",)  # a tuple, or Lines: only the shown ones are read
        shown = [safe_text(text) for text in lines[:MAX_DETAIL_LINES]]
        if len(shown) == len(lines):  # the decoded challenge belongs to the last line
            shown[-1] = with_note(shown[-1], safe_text(st.reply.note or ""))
        for i, text in enumerate(shown):
            out.append(("received: " if i == 0 else " " * 10) + text)
        if len(lines) > MAX_DETAIL_LINES:
            out.append(" " * 10 + f"... {plural(len(lines) - MAX_DETAIL_LINES, 'more line')}")
    elif st.expected is not None:
        out.append("received: (nothing)")
    if st.reason:
        out.append(f"reason:   {safe_text(st.reason)}")
    if st.snapshot_diff is not None:  # --snapshot: the diff names the lines that changed
        out.append(f"snapshot: {st.snapshot}")
        out.extend(safe_text(line) for line in st.snapshot_diff.split("\n"))
    out.append(f"at:       {safe_text(where(st.location, st.via))}")
    return "\n".join(out) + "\n"
