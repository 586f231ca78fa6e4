"""`mailrun --snapshot` end to end, against real loopback servers (tests/support/servers.py) and
the built-in sandbox: the first run writes the snapshot, the next compares; a changed reply
fails its step with a unified diff in the console, JSON and JUnit; --snapshot-update rewrites
and reports each change; --ci / CI=true fail on a missing snapshot; a damaged snapshot or an
unknown rule is exit 2 before any byte is sent; `snapshot: false`, `ignore`, rules off,
--matrix (one file per provider); secrets never reach a snapshot."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jsonschema
import pytest

from runner.cli import main as cli
from tests.support.servers import Server, record, scripted

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "wonderland"
SECRET_FORMS = (
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode(),
)

EHLO = b"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-DSN\r\n250 8BITMIME\r\n"
REPLIES = {
    b"EHLO": EHLO,
    b"MAIL": b"250 2.1.0 Ok\r\n",
    b"QUIT": b"221 2.0.0 Bye\r\n",
    b"NOOP": b"250 2.0.0 Ok at Mon, 07 Dec 2026 01:02:32 +0000 from [127.0.0.1]:50123\r\n",
}

SCENARIO = """\
name: probe
protocol: smtp
connect: {host: 127.0.0.1, port: "{{ port }}"}
vars: {port: 25}
steps:
  - S: 220
    name: greeting
  - C: EHLO client.example.test
    S: 250
  - C: NOOP
    S: 250
  - C: "MAIL FROM:<a@example.test>"
    S: 250
finally:
  - C: QUIT
    S: 221
"""


class Run:
    def __init__(self, rc: int, out: str, err: str, report: dict | None, junit: str | None):
        self.rc, self.out, self.err, self.report, self.junit = rc, out, err, report, junit

    @property
    def steps(self) -> list[dict]:
        return [st for sc in self.report["scenarios"] for st in sc["steps"]]

    def __repr__(self) -> str:
        return f"Run(rc={self.rc})\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@pytest.fixture
def mailrun(tmp_path, capsys, monkeypatch):
    """`mailrun(scenario, *args)`: the command line in this process, with JSON and JUnit reports."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("MAILRUN_CACHE_DIR", str(tmp_path / "cache"))
    count = iter(range(1, 1000))

    def run(scenario: Path, *args: str) -> Run:
        n = next(count)
        report, junit = tmp_path / f"r{n}.json", tmp_path / f"r{n}.xml"
        capsys.readouterr()
        rc = cli.main([str(scenario), *args, "--report", f"json={report}", "--report", f"junit={junit}"])
        out, err = capsys.readouterr()
        data = json.loads(report.read_text()) if report.exists() else None
        return Run(rc, out, err, data, junit.read_text() if junit.exists() else None)

    return run


@pytest.fixture
def server():
    with Server(scripted(b"220 mx.example.test ESMTP Postfix\r\n", REPLIES)) as srv:
        yield srv


def probe(tmp_path: Path, text: str = SCENARIO, name: str = "probe.yaml") -> Path:
    path = tmp_path / "suite" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def snap_of(path: Path, provider: str | None = None) -> Path:
    label = path.stem + (f"[{provider}]" if provider else "")
    return path.parent / "__snapshots__" / f"{label}.snap.yaml"


def report_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "schemas" / "report.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


# --------------------------------------------------------------------------- the cycle


def test_the_first_run_writes_the_snapshot_and_the_next_compares(tmp_path, mailrun, server):
    path = probe(tmp_path)
    first = mailrun(path, "--snapshot", "--var", f"port={server.port}")
    assert first.rc == 0, first
    assert [st["snapshot"]["status"] for st in first.steps] == ["new"] * 5, first
    assert "snapshot: new" in first.out
    assert f"snapshot: wrote {snap_of(path)} (5 new)" in first.err
    text = snap_of(path).read_text()
    # readable YAML: one entry per step, keyed by section and index, the C: line as written, a
    # block scalar for a reply of several lines, the volatile parts masked
    assert text.startswith("# mailrun snapshot: every server reply of probe.yaml")
    keys = re.findall(r"^  (\S.*):$", text, re.M)
    assert keys == ["steps 1", "steps 2", "steps 3", "steps 4", "finally 1"]
    assert (
        "    C: EHLO client.example.test\n    S: |-\n      250-mx.example.test\n      250-PIPELINING\n"
        in text
    )
    assert "250 2.0.0 Ok at <date> from [<ip>]:<port>" in text
    assert "    name: greeting\n    S: 220 mx.example.test ESMTP Postfix\n" in text
    assert oct(snap_of(path).stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in snap_of(path).parent.iterdir()] == ["probe.snap.yaml"]  # no temp file left

    again = mailrun(path, "--snapshot", "--var", f"port={server.port}")
    assert again.rc == 0, again
    assert [st["snapshot"]["status"] for st in again.steps] == ["match"] * 5
    assert "snapshot: wrote" not in again.err
    assert snap_of(path).read_text() == text

    plain = mailrun(path, "--var", f"port={server.port}")  # without --snapshot: no verdict, no field
    assert plain.rc == 0 and all("snapshot" not in st for st in plain.steps)


def test_a_changed_reply_fails_its_step_with_a_diff_in_console_json_and_junit(tmp_path, mailrun, server):
    path = probe(tmp_path)
    assert mailrun(path, "--snapshot", "--var", f"port={server.port}").rc == 0
    stored = snap_of(path)
    stored.write_text(
        stored.read_text().replace("      250-DSN\n", "").replace("SIZE 10240000", "SIZE 20480000")
    )

    run = mailrun(path, "--snapshot", "--var", f"port={server.port}")
    assert run.rc == 1, run
    ehlo = run.steps[1]
    assert ehlo["status"] == "failed" and ehlo["snapshot"]["status"] == "differs"
    assert "the reply differs from its snapshot (steps 2 in" in ehlo["reason"]
    diff = ehlo["snapshot"]["diff"]
    assert "-250-SIZE 20480000\n+250-SIZE 10240000\n" in diff
    assert "+250-DSN\n" in diff
    assert diff.startswith(f"--- {stored} (steps 2)\n+++ reply now\n@@ -1,4 +1,5 @@")
    # the other steps still ran (their replies passed their S:), and matched
    assert [st["status"] for st in run.steps] == ["passed", "failed", "passed", "passed", "passed"]
    # console: the diff under the failed step; JUnit: the same diff in the failure
    for line in ("-250-SIZE 20480000", "+250-SIZE 10240000", "+250-DSN", "snapshot: differs"):
        assert line in run.out and line in run.junit, line
    report_validator().validate(run.report)
    assert "SIZE 20480000" in stored.read_text()  # a plain --snapshot never rewrites a snapshot


def test_snapshot_update_rewrites_and_reports_each_change(tmp_path, mailrun, server):
    path = probe(tmp_path)
    assert mailrun(path, "--snapshot", "--var", f"port={server.port}").rc == 0
    stored = snap_of(path)
    original = stored.read_text()
    stale = original.replace("SIZE 10240000", "SIZE 1") + "  steps 9:\n    C: RSET\n    S: 250 gone\n"
    stored.write_text(stale)

    run = mailrun(path, "--snapshot-update", "--var", f"port={server.port}")
    assert run.rc == 0, run
    assert [st["snapshot"]["status"] for st in run.steps] == ["match", "updated", "match", "match", "match"]
    assert "snapshot: updated" in run.out and "-250-SIZE 1\n" in run.steps[1]["snapshot"]["diff"]
    assert f"snapshot: wrote {stored} (1 updated, 1 removed: steps 9)" in run.err
    assert stored.read_text() == original  # the step the scenario no longer has is gone

    quiet = mailrun(path, "--snapshot-update", "--var", f"port={server.port}")
    assert quiet.rc == 0 and "snapshot: wrote" not in quiet.err  # nothing changed: not rewritten


@pytest.mark.parametrize("how", ["--ci", "CI=true"])
def test_a_missing_snapshot_fails_under_ci(tmp_path, mailrun, server, monkeypatch, how):
    path = probe(tmp_path)
    args = ["--snapshot", "--var", f"port={server.port}"]
    if how == "--ci":
        args.append("--ci")
    else:
        monkeypatch.setenv("CI", "true")
    run = mailrun(path, *args)
    assert run.rc == 1, run
    assert [st["snapshot"]["status"] for st in run.steps] == ["missing"] * 5
    assert "no snapshot of this reply (steps 1)" in run.steps[0]["reason"]
    assert "--ci: run --snapshot-update and commit it" in run.out
    assert not snap_of(path).exists()
    # an explicit --snapshot-update writes it, CI or not
    assert mailrun(path, *args, "--snapshot-update").rc == 0
    assert snap_of(path).exists()
    assert mailrun(path, *args).rc == 0


# --------------------------------------------------------------------------- refused before sending


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("replies:\n  steps 1: [unclosed\n", ":3:1: damaged snapshot:"),
        ("replies: 5\n", "damaged snapshot: expected a mapping with 'replies:'"),
        ("replies:\n  steps 1:\n    C: x\n", "entry 'steps 1' has no S:"),
        ("replies:\n  steps 1:\n    S: x\n    Q: y\n", "entry 'steps 1' has unknown key 'Q'"),
    ],
)
def test_a_damaged_snapshot_is_exit_2_before_any_byte_is_sent(tmp_path, mailrun, content, message):
    with Server(record(b"220 nobody should connect\r\n")) as srv:
        path = probe(tmp_path)
        snap_of(path).parent.mkdir()
        snap_of(path).write_text(content)
        run = mailrun(path, "--snapshot", "--var", f"port={srv.port}")
        assert run.rc == 2, run
        assert str(snap_of(path)) in run.err and message in run.err, run
        assert "damaged snapshot file(s); nothing was sent" in run.err
        assert "Traceback" not in run.err
        assert srv.conns == []


def test_an_unknown_rule_name_is_exit_2_with_a_did_you_mean(tmp_path, mailrun):
    with Server(record(b"220 nobody should connect\r\n")) as srv:
        path = probe(
            tmp_path, SCENARIO.replace("steps:\n", "snapshot: {rules: {queue_id: off}}\nsteps:\n", 1)
        )
        run = mailrun(path, "--snapshot", "--var", f"port={srv.port}")
        assert run.rc == 2, run
        assert f"{path}:5:" in run.err
        assert (
            "snapshot.rules.queue_id: unknown snapshot rule 'queue_id'; did you mean 'queue-id'?" in run.err
        )
        assert srv.conns == []
    bad = probe(
        tmp_path, SCENARIO.replace("steps:\n", "snapshot: {rules: {date: maybe}}\nsteps:\n", 1), "b.yaml"
    )
    assert mailrun(bad).rc == 2


# --------------------------------------------------------------------------- what a scenario says


def test_opt_out_ignore_and_rules_off(tmp_path, mailrun, server):
    text = SCENARIO.replace(
        "steps:\n",
        "snapshot:\n  ignore: ['mx\\.(example)\\.test']\n  rules: {date: off, ip-address: on}\nsteps:\n",
        1,
    ).replace("  - C: NOOP\n    S: 250\n", "  - C: NOOP\n    S: 250\n    snapshot: false\n")
    path = probe(tmp_path, text)
    run = mailrun(path, "--snapshot", "--var", f"port={server.port}")
    assert run.rc == 0, run
    stored = snap_of(path).read_text()
    assert "steps 3" not in stored and "NOOP" not in stored  # opted out: not stored, not compared
    assert "snapshot" not in run.steps[2]
    assert "S: 220 mx.<ignored>.test ESMTP Postfix" in stored
    # date off: a changing date in a reply now fails; ip-address stays on
    replies = {**REPLIES, b"MAIL": b"250 2.1.0 Ok Mon, 07 Dec 2026 01:02:33 +0000 [192.0.2.9]\r\n"}
    with Server(scripted(b"220 mx.example.test ESMTP Postfix\r\n", replies)) as other:
        first = mailrun(path, "--snapshot-update", "--var", f"port={other.port}")
        assert first.rc == 0
        assert "S: 250 2.1.0 Ok Mon, 07 Dec 2026 01:02:33 +0000 [<ip>]" in snap_of(path).read_text()
    later = {**replies, b"MAIL": b"250 2.1.0 Ok Mon, 07 Dec 2026 01:02:34 +0000 [192.0.2.10]\r\n"}
    with Server(scripted(b"220 mx.example.test ESMTP Postfix\r\n", later)) as other:
        run = mailrun(path, "--snapshot", "--var", f"port={other.port}")
    assert run.rc == 1
    assert "-250 2.1.0 Ok Mon, 07 Dec 2026 01:02:33 +0000 [<ip>]" in run.steps[3]["snapshot"]["diff"]


def test_a_failed_or_skipped_step_is_not_compared_and_keeps_its_entry(tmp_path, mailrun, server):
    path = probe(tmp_path)
    assert mailrun(path, "--snapshot", "--var", f"port={server.port}").rc == 0
    before = snap_of(path).read_text()
    broken = probe(tmp_path, SCENARIO.replace("  - C: NOOP\n    S: 250\n", "  - C: NOOP\n    S: 550\n"))
    run = mailrun(broken, "--snapshot-update", "--var", f"port={server.port}")
    assert run.rc == 1, run
    assert [st["status"] for st in run.steps] == ["passed", "passed", "failed", "skipped", "passed"]
    assert [st.get("snapshot", {}).get("status") for st in run.steps] == [
        "match",
        "match",
        None,
        None,
        "match",
    ]
    assert snap_of(path).read_text() == before  # nothing changed: the failed and skipped keep theirs


def test_a_session_failed_only_by_its_snapshot_is_not_retried(tmp_path, mailrun, server):
    text = """\
name: retried
sessions:
  - name: smtp
    protocol: smtp
    retry: {attempts: 3, interval: 0.1}
    connect: {host: 127.0.0.1, port: "{{ port }}"}
    steps:
      - S: 220
      - C: EHLO x
        S: 250
  - name: again
    protocol: smtp
    connect: {host: 127.0.0.1, port: "{{ port }}"}
    steps:
      - S: 220
vars: {port: 25}
"""
    path = probe(tmp_path, text, "retried.yaml")
    assert mailrun(path, "--snapshot", "--var", f"port={server.port}").rc == 0
    assert "  smtp / steps 2:\n" in snap_of(path).read_text()  # a file of sessions: keyed by session
    snap_of(path).write_text(snap_of(path).read_text().replace("250-DSN", "250-XDSN"))
    run = mailrun(path, "--snapshot", "--var", f"port={server.port}")
    assert run.rc == 1
    assert run.report["scenarios"][0]["sessions"][0]["attempt"] == 1
    assert len(server.conns) == 3  # the first run's two sessions, then one attempt (no retry)


def test_matrix_keeps_one_snapshot_per_provider(tmp_path, mailrun, server):
    matrix = tmp_path / "providers"
    matrix.mkdir()
    (matrix / "alpha.yaml").write_text(f"port: {server.port}\nhelo: alpha.example\n")
    (matrix / "beta.yaml").write_text(f"port: {server.port}\nhelo: beta.example\n")
    path = probe(tmp_path, SCENARIO.replace("vars: {port: 25}", "vars: {port: 25, helo: x}"))
    run = mailrun(path, "--snapshot", "--matrix", str(matrix))
    assert run.rc == 0, run
    for provider in ("alpha", "beta"):
        text = snap_of(path, provider).read_text()
        assert f"scenario: probe\nprovider: {provider}\n" in text
    assert not snap_of(path).exists()
    assert mailrun(path, "--snapshot", "--matrix", str(matrix)).rc == 0


def test_a_suite_directory_never_takes_a_snapshot_for_a_scenario(tmp_path, mailrun, server):
    path = probe(tmp_path)
    assert mailrun(path.parent, "--snapshot", "--var", f"port={server.port}").rc == 0
    assert snap_of(path).exists()
    run = mailrun(path.parent, "--snapshot", "--var", f"port={server.port}")
    assert run.rc == 0, run
    assert len(run.report["scenarios"]) == 1
    assert cli.main(["validate", str(path.parent)]) == 0


# --------------------------------------------------------------------------- secrets


def test_secrets_never_reach_the_snapshot_nor_any_output(tmp_path, mailrun, monkeypatch):
    b64 = SECRET_FORMS[1].encode()
    echo = (
        b"535-5.7.8 Error: password " + PASSWORD.encode() + b" refused\r\n535 5.7.8 " + b64 + b" was it\r\n"
    )
    replies = {**REPLIES, b"AUTH": echo}
    text = """\
name: auth echo
protocol: smtp
connect: {host: 127.0.0.1, port: "{{ port }}"}
vars: {port: 25, user: alice, password: "{{ env.SNAP_PASSWORD }}"}
secrets: [password]
steps:
  - S: 220
  - C: "AUTH PLAIN {{ auth_plain(user, password) }}"
    S: 535
finally:
  - C: QUIT
    S: 221
"""
    path = probe(tmp_path, text, "auth.yaml")
    monkeypatch.setenv("SNAP_PASSWORD", PASSWORD)
    with Server(scripted(b"220 mx.example.test ESMTP\r\n", replies)) as srv:
        run = mailrun(path, "--snapshot", "--var", f"port={srv.port}", "--transcript", str(tmp_path / "t"))
        sent = srv.wait_connection().wait_closed(5)
    assert run.rc == 0, run
    assert SECRET_FORMS[2].encode() in sent  # the password really went out, and came back
    stored = snap_of(path).read_text()
    assert "C: AUTH PLAIN {{ auth_plain(user, password) }}" in stored
    assert "535-5.7.8 Error: password **** refused" in stored
    outputs = [stored, run.out, run.err, json.dumps(run.report), run.junit]
    outputs += [p.read_text() for p in (tmp_path / "t").iterdir()]
    for text in outputs:
        for form in SECRET_FORMS:
            assert form not in text


# --------------------------------------------------------------------------- the scenario library

PROVIDERS = ("gmx", "gmail", "outlook", "yahoo", "icloud", "fastmail")


def test_each_provider_has_a_snapshot_scenario_that_records_and_matches(tmp_path, mailrun):
    """Greeting, EHLO before and after STARTTLS, QUIT; played against the sandbox only (a copy
    in tmp_path, so no snapshot lands in the repository), never against the provider."""
    from runner.load.api import load_scenario

    suite = tmp_path / "library"
    suite.mkdir()
    for provider in PROVIDERS:
        source = REPO / "scenarios" / f"{provider}_snapshot.yaml"
        sc = load_scenario(source)
        steps = sc.sessions[0].steps
        assert [s.text for s in steps] == [None, "EHLO mailrun.invalid", "STARTTLS", "EHLO mailrun.invalid"]
        assert steps[2].starttls and sc.sessions[0].finally_steps[0].text == "QUIT"
        assert "snapshot" in sc.tags and provider in sc.tags
        assert f"mailrun --snapshot scenarios/{provider}_snapshot.yaml" in source.read_text()
        (suite / source.name).write_text(source.read_text())
    first = mailrun(suite, "--sandbox", "--snapshot")
    assert first.rc == 0, first
    assert sorted(p.name for p in (suite / "__snapshots__").iterdir()) == sorted(
        f"{p}_snapshot.snap.yaml" for p in PROVIDERS
    )
    stored = (suite / "__snapshots__" / "gmail_snapshot.snap.yaml").read_text()
    assert "  steps 4:\n    name: ehlo after STARTTLS\n    C: EHLO mailrun.invalid\n    S: |-\n" in stored
    assert "  finally 2:\n    name: server closes\n    S: <EOF>\n" in stored  # closed, as `S: EOF` expects
    again = mailrun(suite, "--sandbox", "--snapshot")
    assert again.rc == 0, again
    assert {st["snapshot"]["status"] for st in again.steps} == {"match"}


def test_a_plain_snapshot_adds_a_new_step_and_changes_no_stored_entry(tmp_path, mailrun, server):
    path = probe(tmp_path)
    assert mailrun(path, "--snapshot", "--var", f"port={server.port}").rc == 0
    changed = SCENARIO.replace("    name: greeting\n", "    name: banner\n").replace(
        "finally:\n", "  - C: RSET\n    S: 250\nfinally:\n"
    )
    path.write_text(changed)
    run = mailrun(path, "--snapshot", "--var", f"port={server.port}")
    assert run.rc == 0, run
    assert [st["snapshot"]["status"] for st in run.steps] == [
        "match",
        "match",
        "match",
        "match",
        "new",
        "match",
    ]
    assert f"snapshot: wrote {snap_of(path)} (1 new)" in run.err
    text = snap_of(path).read_text()
    assert "name: greeting" in text and "name: banner" not in text  # the stored entry is as it was
    assert "  steps 5:\n    C: RSET\n    S: 250 ok\n" in text
    update = mailrun(path, "--snapshot-update", "--var", f"port={server.port}")
    assert f"snapshot: wrote {snap_of(path)} (1 updated)" in update.err  # the name, reviewed now
    assert "name: banner" in snap_of(path).read_text()
