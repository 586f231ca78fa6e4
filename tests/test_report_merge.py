"""`mailrun report merge` (runner/cli/report.py, runner/reporters/replay.py, event_json.py): JSON
reports played back into the reporters a run uses. A merged report must be the report one run of
every scenario would have written: the same JSON, the same JUnit, the same HTML and transcripts.

Every run is the real `mailrun` command against real servers (the built-in sandbox, the
Postfix/Dovecot test bed, or loopback helper servers)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from runner import events as E
from runner.reporters.event_json import MAX_EVENTS, MAX_WIRE_CHARS, EventRecorder
from runner.results import ScenarioResult, SessionResult
from tests.support.servers import Server, scripted
from tests.test_suite import (
    _normal,
    _strip_timings,
    junit_suites,
    mailrun,
    report,
    smtp_scenario,
    write_bed_suite,
)

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
# (in file order: the order a merge lists runs in)
SANDBOX_FILES = ["scenarios/sandbox_receive.yaml", "scenarios/sandbox_send.yaml", "scenarios/smtp_probe.yaml"]


def _html_stable(text: str) -> str:
    return re.sub(r" · written [^<]*", "", text)


def _junit_stable(text: str) -> str:
    return re.sub(r' timestamp="[^"]*"', "", text)


def test_merging_one_report_rebuilds_every_report_byte_for_byte(tmp_path):
    """One code path: the reports rebuilt from the JSON are the ones the run wrote (only the
    JUnit root's and the HTML page's time of writing differ)."""
    live = ["--report", f"json={tmp_path / 'a.json'}", "--report", f"junit={tmp_path / 'a.xml'}"]
    live += ["--report", f"html={tmp_path / 'a.html'}", "--transcript", tmp_path / "ta"]
    res = mailrun("--sandbox", *SANDBOX_FILES, *live)
    assert res.returncode == 0, res.stdout + res.stderr
    merged = ["--report", f"json={tmp_path / 'm.json'}", "--report", f"junit={tmp_path / 'm.xml'}"]
    merged += ["--report", f"html={tmp_path / 'm.html'}", "--transcript", tmp_path / "tm"]
    res = mailrun("report", "merge", tmp_path / "a.json", *merged)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "merged 3 scenario run(s) from 1 report(s): 3 passed" in res.stderr

    assert report(tmp_path / "m.json") == report(tmp_path / "a.json")
    assert _junit_stable((tmp_path / "m.xml").read_text()) == _junit_stable((tmp_path / "a.xml").read_text())
    junit_suites(tmp_path / "m.xml")  # valid against the JUnit schema
    assert _html_stable((tmp_path / "m.html").read_text()) == _html_stable((tmp_path / "a.html").read_text())
    logs = sorted(p.name for p in (tmp_path / "ta").iterdir())
    assert logs == sorted(p.name for p in (tmp_path / "tm").iterdir()) and len(logs) == 3
    for name in logs:
        assert (tmp_path / "tm" / name).read_text() == (tmp_path / "ta" / name).read_text()
    # the transcript in the JUnit report came back from the recorded events
    assert "S: 334 VXNlcm5hbWU6\\r\\n" in (tmp_path / "m.xml").read_text()


@pytest.mark.timeout(110)
def test_four_shards_merged_give_the_results_of_one_run(testbed, tmp_path, free_port):
    """The suite of test_suite (12 scenarios against real Postfix/Dovecot: passing, failing,
    erroring, TLS, AUTH) once whole, and as four disjoint shards merged."""
    d = tmp_path / "bed"
    write_bed_suite(d, testbed, free_port())
    files = sorted(str(p) for p in d.glob("*.yaml"))
    assert len(files) == 12

    def outputs(stem: str) -> list:
        return [
            *("--report", f"json={tmp_path / (stem + '.json')}"),
            *("--report", f"junit={tmp_path / (stem + '.xml')}"),
            *("--report", f"html={tmp_path / (stem + '.html')}"),
            *("--transcript", tmp_path / f"t-{stem}"),
        ]

    whole = mailrun(*files, "-j", "4", *outputs("one"))
    assert whole.returncode == 3, whole.stdout + whole.stderr
    shards = []
    for i in range(1, 5):  # --shard: the four shards together play every run exactly once
        out = tmp_path / f"shard-{i}.json"
        res = mailrun(*files, "--shard", f"{i}/4", "--report", f"json={out}")
        assert res.returncode in (0, 1, 3), res.stdout + res.stderr
        shards.append(out)
    res = mailrun("report", "merge", *reversed(shards), *outputs("all"))  # any order of shards
    assert res.returncode == 0, res.stdout + res.stderr
    assert "merged 12 scenario run(s) from 4 report(s): 8 passed, 3 failed, 1 error" in res.stderr

    one, merged = report(tmp_path / "one.json"), report(tmp_path / "all.json")

    def counts(doc: dict) -> dict:  # (which steps are slowest is timing, not a result)
        return {k: v for k, v in doc["summary"].items() if k != "slowest_steps"}

    assert counts(merged) == counts(one) and merged["exit_class"] == one["exit_class"] == 3
    assert [s["file"] for s in merged["scenarios"]] == files  # file order, as the one run has it
    assert _normal_doc(merged) == _normal_doc(one)

    suites_one, suites_all = junit_suites(tmp_path / "one.xml"), junit_suites(tmp_path / "all.xml")
    assert [s.get("name") for s in suites_all] == [s.get("name") for s in suites_one]
    for a, b in zip(suites_one, suites_all, strict=True):
        for attr in ("tests", "failures", "errors", "skipped"):
            assert a.get(attr) == b.get(attr)
        assert [c.get("name") for c in a.iter("testcase")] == [c.get("name") for c in b.iter("testcase")]
        assert _normal(_clock_free(a.findtext("system-out") or "")) == _normal(
            _clock_free(b.findtext("system-out") or "")
        )
    html_one, html_all = (tmp_path / "one.html").read_text(), (tmp_path / "all.html").read_text()
    assert (
        _counts(html_all)
        == _counts(html_one)
        == {k: str(v) for k, v in one["summary"].items() if isinstance(v, int)}
    )
    assert _statuses(html_all) == _statuses(html_one)
    logs = sorted(p.name for p in (tmp_path / "t-one").iterdir())
    assert logs == sorted(p.name for p in (tmp_path / "t-all").iterdir()) and len(logs) == 12


def _clock_free(text: str) -> str:
    """A transcript without its clock (the times of day and offsets at the start of each line),
    and a wire line that two reads split into two transcript lines joined again."""
    text = re.sub(r"^\d\d:\d\d:\d\d\.\d{3} +\+[\d.]+ms ", "", text, flags=re.M)
    while True:
        joined = re.sub(r"^([CS]): (.*)(?<!\\n)\n\1: ", r"\1: \2", text, flags=re.M)
        if joined == text:
            return re.sub(r"# started: .*", "", text)
        text = joined


def _normal_doc(doc: dict) -> list:
    """The scenario entries without times and queue ids, the events without their times and
    with the bytes of consecutive reads (or writes) together: how the bytes were split into reads
    differs from run to run."""
    scenarios = _strip_timings(doc["scenarios"])
    for sc in scenarios:
        for st in sc["steps"]:
            if "queue_id" in st["captures"]:
                st["captures"]["queue_id"] = "Q"
        events: list[dict] = []
        for ev in sc["events"]:
            ev.pop("at")
            if events and ev["type"] in ("Sent", "Received") and events[-1]["type"] == ev["type"]:
                events[-1]["text"] += ev["text"]
            else:
                events.append(ev)
        sc["events"] = events
    return json.loads(_normal(json.dumps(scenarios)))


def _counts(page: str) -> dict:
    return dict(re.findall(r'<div data-count="(\w+)"><dt>[^<]*</dt><dd>(\d+)</dd>', page))


def _statuses(page: str) -> list:
    return re.findall(r'<section class="scenario [^"]*" data-status="(\w+)"', page)


def test_a_run_with_retries_and_a_connection_error_is_rebuilt_the_same(tmp_path, free_port):
    """Suite retries (Retrying events before the final attempt) and a session that never
    connected come back as they were: the same JUnit, the final attempt's transcript."""
    scen = smtp_scenario(tmp_path / "down.yaml", "down", free_port())
    live = ["--report", f"json={tmp_path / 'a.json'}", "--report", f"junit={tmp_path / 'a.xml'}"]
    res = mailrun(scen, "--retries", "1", *live, "--transcript", tmp_path / "ta")
    assert res.returncode == 3, res.stdout + res.stderr
    merged = ["--report", f"junit={tmp_path / 'm.xml'}", "--report", f"html={tmp_path / 'm.html'}"]
    res = mailrun("report", "merge", tmp_path / "a.json", *merged, "--transcript", tmp_path / "tm")
    assert res.returncode == 0 and "1 error" in res.stderr, res.stderr
    xml = (tmp_path / "m.xml").read_text()
    assert _junit_stable(xml) == _junit_stable((tmp_path / "a.xml").read_text())
    assert "retrying scenario down (retry 1 of 1" in xml
    # a live --transcript also has the attempts a retry replaced; the rebuilt one, as every
    # ordered report, the final attempt after the Retrying lines
    rebuilt, live_log = (
        (tmp_path / "tm" / "down-1.log").read_text(),
        (tmp_path / "ta" / "down-1.log").read_text(),
    )
    assert rebuilt.count("# mailrun transcript") == 1 and live_log.count("# mailrun transcript") == 2
    assert rebuilt.splitlines()[-3:] == live_log.splitlines()[-3:]
    page = (tmp_path / "m.html").read_text()
    assert '<li class="sys warning">retrying scenario down (retry 1 of 1' in page
    assert "(after 1 connection retry)" in page and 'data-group="failed"' in page


def test_steps_a_program_performed_keep_performed_by(tmp_path):
    """openssl s_client -starttls plays the STARTTLS exchange itself: the JSON says which program
    performed those steps, and the reports rebuilt from it say so as the run's did."""
    live = ["--report", f"json={tmp_path / 'a.json'}", "--report", f"junit={tmp_path / 'a.xml'}"]
    res = mailrun("--sandbox", "scenarios/sandbox_send.yaml", "--transport", "openssl", *live)
    assert res.returncode == 0, res.stdout + res.stderr
    steps = report(tmp_path / "a.json")["scenarios"][0]["steps"]
    assert [st["performed_by"] for st in steps[:4]] == ["openssl s_client -starttls smtp"] * 3 + [None]
    merged = ["--report", f"junit={tmp_path / 'm.xml'}", "--report", f"html={tmp_path / 'm.html'}"]
    merged.append(f"--report=json={tmp_path / 'm.json'}")
    assert mailrun("report", "merge", tmp_path / "a.json", *merged).returncode == 0
    assert _junit_stable((tmp_path / "m.xml").read_text()) == _junit_stable((tmp_path / "a.xml").read_text())
    again = report(tmp_path / "m.json")  # the counts of what the program performed, carried through
    assert again["scenarios"][0]["steps_performed"] == 3 and again["summary"]["steps_performed"] == 3
    chat = '<div class="sys">performed by openssl s_client -starttls smtp</div>'
    page = (tmp_path / "m.html").read_text()
    assert page.count(chat) == 3
    # what openssl printed comes in blocks of lines, not a line each, the first before the
    # connection's line (how its output is split into reads varies)
    chatter = re.findall(r'<li class="sys chatter"><pre>([^<]*)</pre></li>', page)
    assert chatter and chatter[0].startswith("CONNECTION ESTABLISHED\n")
    assert "Verification: OK" in "\n".join(chatter)
    assert page.index('<li class="sys chatter">') < page.index("connected to 127.0.0.1")


def test_merge_refuses_unusable_inputs_and_writes_nothing(tmp_path):
    good = tmp_path / "good.json"
    res = mailrun("--sandbox", "scenarios/smtp_probe.yaml", "--report", f"json={good}")
    assert res.returncode == 0, res.stderr
    bad = json.loads(good.read_text())
    bad["scenarios"][0]["steps"][0]["status"] = "bogus"
    broken = json.loads(good.read_text())
    next(e for e in broken["scenarios"][0]["events"] if e["type"] == "StepFinished")["step"] = 99
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    res = mailrun("report", "merge", tmp_path / "broken.json", "--report", f"html={tmp_path / 'b.html'}")
    assert res.returncode == 2 and not (tmp_path / "b.html").exists(), res.stderr
    assert f"{tmp_path / 'broken.json'}: scenarios/0: cannot be read back: IndexError" in res.stderr
    inputs = {
        "missing.json": None,
        "text.json": "not json {",
        "other.json": json.dumps({"tool": "something else"}),
        "invalid.json": json.dumps(bad),
    }
    for name, text in inputs.items():
        if text is not None:
            (tmp_path / name).write_text(text)
    out = tmp_path / "out.xml"
    res = mailrun("report", "merge", good, *(tmp_path / n for n in inputs), "--report", f"junit={out}")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"{tmp_path / 'missing.json'}: cannot read: No such file or directory" in res.stderr
    assert f"{tmp_path / 'text.json'}: not a JSON document" in res.stderr
    assert f"{tmp_path / 'other.json'}: not a mailrun JSON report" in res.stderr
    assert f"{tmp_path / 'invalid.json'}: not a valid mailrun JSON report: scenarios/0/steps/0/status:" in (
        res.stderr
    )
    assert "4 unusable report(s); nothing was written" in res.stderr
    assert not out.exists()
    # no --report: a usage error, exit 2
    res = mailrun("report", "merge", good)
    assert res.returncode == 2 and "--report" in res.stderr
    res = mailrun("report", "merge", good, "--report", "pdf=x.pdf")
    assert res.returncode == 2 and "html=PATH" in res.stderr


def test_merged_runs_come_in_the_order_a_run_of_the_directory_has(tmp_path):
    """'a/b.yaml' before 'a-c.yaml', as discovery sorts paths (by their parts, not as text)."""
    with Server(scripted(b"220 hi\r\n", {b"QUIT": b"221 bye\r\n"})) as srv:
        for name in ("a/b.yaml", "a-c.yaml", "a/a.yaml", "0.yaml"):
            smtp_scenario(tmp_path / "d" / name, name, srv.port)
        whole = mailrun(tmp_path / "d", "--report", f"json={tmp_path / 'one.json'}")
        assert whole.returncode == 0, whole.stdout + whole.stderr
        files = [s["file"] for s in report(tmp_path / "one.json")["scenarios"]]
        for i, f in enumerate(files):  # one shard per file, in reverse
            assert mailrun(f, "--report", f"json={tmp_path / f'{i}.json'}").returncode == 0
    shards = [tmp_path / f"{i}.json" for i in reversed(range(len(files)))]
    assert mailrun("report", "merge", *shards, "--report", f"json={tmp_path / 'all.json'}").returncode == 0
    assert [s["file"] for s in report(tmp_path / "all.json")["scenarios"]] == files
    assert [Path(f).relative_to(tmp_path / "d").as_posix() for f in files] == [
        "0.yaml",
        "a/a.yaml",
        "a/b.yaml",
        "a-c.yaml",
    ]


def test_merge_warns_about_a_run_in_two_reports(tmp_path):
    a = tmp_path / "a.json"
    assert mailrun("--sandbox", "scenarios/smtp_probe.yaml", "--report", f"json={a}").returncode == 0
    res = mailrun("report", "merge", a, a, "--report", f"json={tmp_path / 'm.json'}")
    assert res.returncode == 0, res.stderr
    assert "warning: scenarios/smtp_probe.yaml is in" in res.stderr
    assert report(tmp_path / "m.json")["summary"]["scenarios"] == 2


def test_a_report_without_events_still_merges(tmp_path):
    """A report that has no `events` (an older mailrun) gives every result; the JUnit report then
    has its test cases, and a transcript of verdicts without wire lines."""
    a = tmp_path / "a.json"
    with Server(scripted(b"220 hi\r\n", {b"NOOP": b"550 no <way>\r\n", b"QUIT": b"221 bye\r\n"})) as srv:
        scen = smtp_scenario(tmp_path / "noop.yaml", "noop refused", srv.port)
        assert mailrun(scen, "--report", f"json={a}").returncode == 1
    doc = json.loads(a.read_text())
    assert doc["scenarios"][0]["events"][0]["type"] == "ScenarioStarted"
    del doc["scenarios"][0]["events"]
    a.write_text(json.dumps(doc))
    out = tmp_path / "m.xml"
    res = mailrun("report", "merge", a, "--report", f"junit={out}", "--report", f"json={tmp_path / 'm.json'}")
    assert res.returncode == 0, res.stderr
    (suite,) = junit_suites(out)
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.get("message") == "expected 250, got 550 no <way>"
    transcript = suite.findtext("system-out") or ""
    assert "step 2 FAILED" in transcript  # the verdicts, but no wire lines: no events, no bytes
    assert "C: NOOP" not in transcript and "S: 220" not in transcript
    merged = report(tmp_path / "m.json")
    assert _strip_timings(merged["scenarios"][0]["steps"]) == _strip_timings(doc["scenarios"][0]["steps"])
    res = mailrun("report", "merge", a, "--report", f"html={tmp_path / 'm.html'}")
    page = (tmp_path / "m.html").read_text()  # the chat from the steps alone, in its session
    assert res.returncode == 0 and '<div class="session"><h3>session noop refused ' in page
    assert '<span class="who">C:</span><pre>NOOP</pre>' in page and "<pre>550 no &lt;way&gt;</pre>" in page


def test_recorded_wire_bytes_are_bounded_and_counted():
    """A run that moved more than MAX_WIRE_CHARS keeps the first ones and counts what it left."""
    rec = EventRecorder()
    rec.handle(E.ScenarioStarted("f.yaml", "big", None, 1.0))
    chunk = b"x" * (MAX_WIRE_CHARS // 4)
    for i in range(6):
        rec.handle(E.Received(chunk, 2.0 + i))
    rec.handle(E.Received(b"\xff\xfe not UTF-8", 9.0))
    result = ScenarioResult("f.yaml", "big", sessions=[SessionResult("s", "smtp", 1, 1)])
    rec.handle(E.ScenarioFinished(result, 10.0))
    events, omitted = rec.take(result)
    assert [e["type"] for e in events] == ["ScenarioStarted", *["Received"] * 4, "ScenarioFinished"]
    assert omitted == 3
    rec = EventRecorder()  # past MAX_EVENTS notes, the structure is still recorded
    for i in range(MAX_EVENTS + 5):
        rec.handle(E.Note("chatter", "x", float(i)))
    rec.handle(E.SessionFinished(result.sessions[0], 1e6))
    rec.handle(E.ScenarioFinished(result, 1e6))
    events, omitted = rec.take(result)
    assert omitted == 5 and len(events) == MAX_EVENTS + 2
    assert events[-2:] == [
        {"type": "SessionFinished", "at": 1e6, "session": 0},
        {"type": "ScenarioFinished", "at": 1e6},
    ]
    rec = EventRecorder()
    rec.handle(E.Received(b"\xff\xfe", 1.0))
    assert rec.take(result)[0] == [{"type": "Received", "at": 1.0, "base64": "//4="}]


def _readme_section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def test_readme_shows_a_github_matrix_and_an_indexed_job_that_shard_and_merge():
    section = _readme_section("Shards and merged reports")
    docs = [yaml.safe_load(b) for b in re.findall(r"^```yml\n(.*?)^```", section, flags=re.S | re.M)]
    workflow = next(d for d in docs if "jobs" in d)
    job = next(j for j in workflow["jobs"].values() if "strategy" in j)
    assert job["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    steps = json.dumps(workflow)
    assert "--shard ${{ matrix.shard }}/4" in steps and "mailrun report merge" in steps
    k8s = next(d for d in docs if d.get("kind") == "Job")
    spec = k8s["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    container = json.dumps(spec["template"]["spec"]["containers"])
    assert "JOB_COMPLETION_INDEX" in container and "--shard" in container
    # the merge command shown is one this mailrun accepts
    from runner.cli.report import build_parser

    commands = re.findall(r"mailrun report merge [^\n\"'`]*", steps + section.replace("\\\n", " "))
    assert len(commands) >= 3  # the plain one, the workflow's, the Job's
    for line in commands:
        args = build_parser().parse_args(line.split()[2:])
        assert args.action == "merge" and args.report


def test_tls_facts_come_back_from_a_merged_report(tmp_path):
    """A session's TLS facts (certificate names, dates, days left, SNI) survive the JSON report
    and its merge: the merged JSON has them as the live one does, and so does the HTML page."""
    from runner.sandbox.server import Sandbox

    with Sandbox() as sb:
        path = tmp_path / "tls.yaml"
        path.write_text(
            f"""\
name: tls facts
protocol: smtp
connect: {{host: 127.0.0.1, port: {sb.ports["smtps"]}, tls: implicit, ca: "{sb.ca_path}"}}
steps:
  - S: 220
  - C: QUIT
    S: 221
"""
        )
        live = tmp_path / "live.json"
        r = mailrun(path, "--report", f"json={live}")
        assert r.returncode == 0, r.stdout + r.stderr
    merged, page = tmp_path / "merged.json", tmp_path / "merged.html"
    r = mailrun("report", "merge", live, "--report", f"json={merged}", "--report", f"html={page}")
    assert r.returncode == 0, r.stdout + r.stderr
    facts = report(live)["scenarios"][0]["sessions"][0]["tls"]
    assert facts["not_after"] and facts["days_left"] > 0 and facts["sans"]
    assert report(merged)["scenarios"][0]["sessions"][0]["tls"] == facts
    assert facts["not_after"] in page.read_text()
