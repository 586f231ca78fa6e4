"""`mailrun --snapshot` against real Postfix and Dovecot (tests/servers/testbed.py).

A bed of this module's own (ChangedTestbed, never the shared session bed) serves one scenario
of three sessions: SMTP (greeting, EHLO before and after STARTTLS, AUTH PLAIN, a message with
the run id and dates in it), POP3 (CAPA, USER/PASS, STAT) and IMAP (CAPABILITY, LOGIN, SELECT,
SEARCH and FETCH of that message's headers). Recorded once, the snapshot then passes 20 runs in
a row: the masks hold across queue ids, dates, run ids, message counts, sizes, UIDs and
Dovecot's timings. Restarted with a changed configuration, the servers fail the run, and the
diff names the changed line: Postfix's smtpd_banner, smtpd_discard_ehlo_keywords = dsn, another
message_size_limit; Dovecot's imap_capability. The password never appears, plain or base64, in
the snapshot or in any output.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from runner.cli import main as cli
from tests.servers.testbed import ChangedTestbed, TestbedError

pytestmark = pytest.mark.testbed

PASSWORD = "wonderland"
USER = "alice@example.test"
SECRET_FORMS = (
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
)

SCENARIO = """\
name: test bed behaviour
vars:
  host: 127.0.0.1
  smtp_port: 25
  pop3_port: 110
  imap_port: 143
  ca: ca.pem
  user: alice@example.test
  password: "{{ env.BED_PASSWORD }}"
  subject: "snapshot {{ run_id }}"
secrets: [password]
sessions:
  - name: smtp
    protocol: smtp
    connect: {host: "{{ host }}", port: "{{ smtp_port }}", tls: starttls, ca: "{{ ca }}", server_name: localhost}
    steps:
      - S: 220
        name: greeting
      - C: EHLO client.example.test
        S: 250
      - C: STARTTLS
        S: 220
        starttls: true
      - C: EHLO client.example.test
        S: 250
      - C: "AUTH PLAIN {{ auth_plain(user, password) }}"
        S: 235
      - C: "MAIL FROM:<{{ user }}>"
        S: 250
      - C: "RCPT TO:<{{ user }}>"
        S: 250
      - C: DATA
        S: 354
      - body: |
          From: <{{ user }}>
          To: <{{ user }}>
          Subject: {{ subject }}
          Date: {{ now }}

          Sent by mailrun at {{ now }}.
        S: 250
    finally:
      - C: QUIT
        S: 221
  - name: pop3
    protocol: pop3
    connect: {host: "{{ host }}", port: "{{ pop3_port }}"}
    steps:
      - S: +OK
      - C: CAPA
        S: +OK
      - C: "USER {{ user }}"
        S: +OK
      - C: "PASS {{ password }}"
        S: +OK
      - C: STAT
        S: +OK
    finally:
      - C: QUIT
        S: +OK
  - name: imap
    protocol: imap
    retry: {attempts: 40, interval: 0.25}
    connect: {host: "{{ host }}", port: "{{ imap_port }}"}
    steps:
      - S: OK
      - C: CAPABILITY
        S: OK
      - C: 'LOGIN "{{ user }}" "{{ password }}"'
        S: OK
      - C: SELECT INBOX
        S: OK
      - C: 'UID SEARCH SUBJECT "{{ subject }}"'
        S: OK
        capture: {uid: '^\\* SEARCH (\\d+)$'}
      - C: "UID FETCH {{ uid }} (FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER])"
        S: OK
    finally:
      - C: LOGOUT
        S: OK
"""


class Bed:
    """The module's bed, the scenario written beside a temp folder, and a way to run mailrun."""

    def __init__(self, bed: ChangedTestbed, folder: Path):
        self.bed = bed
        self.folder = folder
        self.scenario = folder / "server.yaml"
        self.scenario.write_text(SCENARIO)
        self.snapshot = folder / "__snapshots__" / "server.snap.yaml"
        self.settings: tuple = ({}, {})
        self.count = 0

    def configure(self, postfix: dict | None = None, dovecot: dict | None = None) -> None:
        """Restart the servers with these settings, unless they run with them already."""
        wanted = (dict(postfix or {}), dict(dovecot or {}))
        if wanted != self.settings:
            self.bed.restart(postfix=wanted[0], dovecot=wanted[1])
            self.settings = wanted

    def run(self, capsys, *args: str) -> tuple[int, str, str, dict]:
        self.count += 1
        report = self.folder / f"report-{self.count}.json"
        ports = self.bed.ports
        capsys.readouterr()
        rc = cli.main(
            [
                str(self.scenario),
                *args,
                *("--var", f"smtp_port={ports['smtp']}", "--var", f"pop3_port={ports['pop3']}"),
                *("--var", f"imap_port={ports['imap']}", "--var", f"ca={self.bed.ca_path}"),
                *(
                    "--report",
                    f"json={report}",
                    "--report",
                    f"junit={self.folder / f'junit-{self.count}.xml'}",
                ),
                *("--transcript", str(self.folder / "transcripts")),
            ]
        )
        out, err = capsys.readouterr()
        return rc, out, err, json.loads(report.read_text())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The bed, started with its stock configuration, and the scenario's snapshot recorded."""
    bed = ChangedTestbed()
    try:
        bed.start()
    except TestbedError as exc:
        pytest.fail(f"the test bed did not start: {exc}", pytrace=False)
    try:
        yield Bed(bed, tmp_path_factory.mktemp("snapshot-bed"))
    finally:
        bed.stop()


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("BED_PASSWORD", PASSWORD)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("CI", raising=False)


def record_once(recorded: Bed, capsys) -> None:
    if not recorded.snapshot.exists():
        rc, out, err, _ = recorded.run(capsys, "--snapshot-update")
        assert rc == 0, out + err
        assert "(23 new)" in err, err


def failed_steps(report: dict) -> dict[str, str]:
    """'session / section index' -> the diff, for every step the snapshot failed."""
    out = {}
    for sc in report["scenarios"]:
        for st in sc["steps"]:
            if st["status"] != "passed":
                assert st["snapshot"]["status"] == "differs", st
                out[f"{st['session']} / {st['section']} {st['index']}"] = st["snapshot"]["diff"]
    return out


@pytest.mark.timeout(600)
def test_the_snapshot_passes_20_runs_in_a_row(recorded, env, capsys):
    recorded.configure()
    record_once(recorded, capsys)
    stored = recorded.snapshot.read_text()
    for masked in ("queued as <queue-id>", "+OK <n> <size>", "* <n> EXISTS", "[UIDVALIDITY <uidvalidity>]"):
        assert masked in stored
    assert "Subject: snapshot <run_id>" in stored and "(<timing>)" in stored
    for i in range(20):
        rc, out, err, report = recorded.run(capsys, "--snapshot")
        assert rc == 0, f"run {i + 1}:\n{out}{err}"
        statuses = {
            st["snapshot"]["status"] for sc in report["scenarios"] for st in sc["steps"] if "snapshot" in st
        }
        assert statuses == {"match"}, (i, statuses)
        assert "snapshot: wrote" not in err
    assert recorded.snapshot.read_text() == stored
    # 21 messages now, each with its own queue id, run id and dates: the masks made them one text
    assert len(recorded.bed.messages("alice")) >= 21


@pytest.mark.parametrize(
    ("postfix", "dovecot", "steps", "minus", "plus"),
    [
        (
            {"smtpd_banner": "$myhostname ESMTP upgraded"},
            {},
            {"smtp / steps 1"},
            "220 mail.example.test ESMTP Postfix",
            "220 mail.example.test ESMTP upgraded",
        ),
        ({"smtpd_discard_ehlo_keywords": "dsn"}, {}, {"smtp / steps 2", "smtp / steps 4"}, "250-DSN", None),
        (
            {"message_size_limit": "20480000"},
            {},
            {"smtp / steps 2", "smtp / steps 4"},
            "250-SIZE 10240000",
            "250-SIZE 20480000",
        ),
        (
            {},
            {"imap_capability": "+XSNAPSHOT"},
            {"imap / steps 1", "imap / steps 2", "imap / steps 3"},
            None,
            "XSNAPSHOT",
        ),
    ],
    ids=["smtpd_banner", "discard-dsn", "message_size_limit", "imap_capability"],
)
@pytest.mark.timeout(300)
def test_a_changed_server_configuration_is_caught_and_the_diff_names_the_line(
    recorded, env, capsys, postfix, dovecot, steps, minus, plus
):
    recorded.configure()
    record_once(recorded, capsys)
    stored = recorded.snapshot.read_text()
    recorded.configure(postfix, dovecot)
    rc, out, err, report = recorded.run(capsys, "--snapshot")
    assert rc == 1, out + err
    diffs = failed_steps(report)
    assert set(diffs) == steps, (sorted(diffs), out)  # every other reply still matches
    for diff in diffs.values():
        changed = [line for line in diff.splitlines()[3:] if line[:1] in "+-"]
        assert len(changed) == (1 if plus is None or minus is None and "XSNAPSHOT" not in plus else 2), diff
        removed = [line[1:] for line in changed if line[0] == "-"]
        added = [line[1:] for line in changed if line[0] == "+"]
        if minus is not None:
            assert removed == [minus], diff
            assert minus in out  # the console shows the diff too
        if plus is not None:
            assert len(added) == 1 and plus in added[0] and plus not in removed[0], diff
            assert plus in out
    assert recorded.snapshot.read_text() == stored  # a check never rewrites the snapshot


def test_the_password_never_reaches_the_snapshot_nor_any_output(recorded, env, capsys):
    recorded.configure()
    record_once(recorded, capsys)
    rc, out, err, report = recorded.run(capsys, "--snapshot")
    assert rc == 0, out + err
    stored = recorded.snapshot.read_text()
    assert 'C: LOGIN "{{ user }}" "{{ password }}"' in stored and "C: PASS {{ password }}" in stored
    texts = {"snapshot": stored, "stdout": out, "stderr": err, "json": json.dumps(report)}
    texts.update({p.name: p.read_text() for p in recorded.folder.glob("junit-*.xml")})
    texts.update({p.name: p.read_text() for p in (recorded.folder / "transcripts").iterdir()})
    for name, text in texts.items():
        for form in SECRET_FORMS:
            assert form not in text, (name, form)
