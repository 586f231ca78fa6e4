"""IMAP IDLE: the `idle:` step (IDLE, the `during` session, the untagged response `until`
matches, DONE) and an `S:`-only step that waits for an untagged response while IDLE runs.

Against the built-in sandbox (which reports SMTP deliveries to an idling client as
`* N EXISTS`) and against Dovecot, woken by a delivery through Postfix (the test bed). The
framer's side (one untagged response at a time, any split) is in tests/test_protocol_splits.py.
"""

from __future__ import annotations

import json
import re
import smtplib
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from runner.engine.run import Engine, RunOptions
from runner.errors import ScenarioError
from runner.events import SessionStarted
from runner.load.api import load_scenario
from runner.protocols import create
from runner.sandbox.server import Sandbox
from tests.test_scenarios import SCENARIOS, mailrun, pass_line, show

USER, PASSWORD = "alice@mailrun.test", "wonderland"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(accept_any_login=True) as sb:
        yield sb


def write(tmp_path: Path, text: str, **subs) -> Path:
    path = tmp_path / f"s{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(text).format(**subs))
    return path


def play(path: Path):
    events: list = []
    result = Engine(RunOptions(run_id=uuid.uuid4().hex[:12]), events.append).run(load_scenario(path))
    return result, events


def steps_of(result, session: str) -> list:
    return next(s for s in result.sessions if s.name == session).steps


IMAP_HEAD = """\
    steps:
      - S: OK
      - C: 'LOGIN "{user}" "{password}"'
        S: OK
      - C: SELECT INBOX
        S: OK
"""

DELIVER = """\
  - name: deliver
    protocol: smtp
    connect: {{host: 127.0.0.1, port: {smtp}}}
    steps:
      - S: 220
      - C: EHLO me
        S: 250
      - C: "MAIL FROM:<{user}>"
        S: 250
      - C: "RCPT TO:<{user}>"
        S: {rcpt}
      - C: DATA
        S: 354
      - body: "Subject: idle {{{{ run_id }}}}\\n\\nhello\\n"
        S: 250
    finally:
      - C: QUIT
        S: 221
"""


def idle_file(tmp_path, sb, idle: str, rcpt: str = "250") -> Path:
    return write(
        tmp_path,
        "name: idle\nsessions:\n  - name: watch\n    protocol: imap\n"
        "    connect: {{host: 127.0.0.1, port: {imap}}}\n"
        + IMAP_HEAD
        + "      - {idle}\n"
        + "      - C: NOOP\n        S: OK\n"
        + "    finally:\n      - C: LOGOUT\n        S: OK\n"
        + DELIVER,
        imap=sb.ports["imap"],
        smtp=sb.ports["smtp"],
        user=USER,
        password=PASSWORD,
        rcpt=rcpt,
        idle=idle,
    )


# --------------------------------------------------------------------------- the idle: step


def test_idle_step_plays_during_session_inside_and_wakes_on_exists(sandbox, tmp_path):
    path = idle_file(
        tmp_path, sandbox, "idle: {until: {re: '^\\* \\d+ EXISTS$'}, during: deliver, timeout: 10}"
    )
    result, events = play(path)
    assert result.status == "passed", result.reason
    # played once, inside the idle step, and reported after the session it ran in
    assert [e.name for e in events if isinstance(e, SessionStarted)] == ["watch", "deliver"]
    assert [s.name for s in result.sessions] == ["watch", "deliver"]
    idle = steps_of(result, "watch")[3]
    assert idle.action == "idle" and idle.status == "passed"
    assert idle.sent.startswith("IDLE; session deliver passed; * ") and idle.sent.endswith(" EXISTS; DONE")
    assert idle.reply.code == "OK" and idle.reply.lines[-1].endswith("OK Idle completed.")
    assert [st.status for st in steps_of(result, "deliver")] == ["passed"] * 7


def test_a_failing_during_session_fails_the_idle_step_and_done_still_goes_out(sandbox, tmp_path):
    path = idle_file(
        tmp_path, sandbox, "idle: {until: {text: EXISTS}, during: deliver, timeout: 10}", rcpt="599"
    )
    result, _ = play(path)
    assert result.status == "failed"
    watch = steps_of(result, "watch")
    assert watch[3].status == "failed"
    assert "IDLE: session 'deliver' failed" in watch[3].reason
    logout = watch[-1]
    assert logout.section == "finally" and logout.status == "passed"  # a command again, not IDLE data
    assert logout.reply.code == "OK"


def test_until_that_never_matches_fails_at_the_deadline_and_logout_still_works(sandbox, tmp_path):
    path = idle_file(tmp_path, sandbox, "idle: {until: {text: NEVER-SEEN}, during: deliver, timeout: 2}")
    result, _ = play(path)
    watch = steps_of(result, "watch")
    assert watch[3].status == "error"  # a deadline, as for any step's reply
    assert "no untagged response matched" in watch[3].reason and "within 2 s" in watch[3].reason
    seen = re.search(r"\((\d+) received\)", watch[3].reason)
    assert seen and int(seen.group(1)) >= 1, watch[3].reason  # the delivery's EXISTS did not match
    assert watch[-1].section == "finally" and watch[-1].status == "passed"
    assert watch[-1].reply.code == "OK"


def test_reports_show_the_during_session_where_it_ran(tmp_path):
    html, js, tr = tmp_path / "r.html", tmp_path / "r.json", tmp_path / "tr"
    proc = mailrun(
        "--sandbox",
        "scenarios/sandbox_idle_delivery.yaml",
        "--report",
        f"html={html}",
        "--report",
        f"json={js}",
        "--transcript",
        str(tr),
    )
    assert proc.returncode == 0, show(proc)
    out = proc.stdout
    inner = out.index("session deliver a message (smtp)")
    assert "[inside session watch the inbox]" in out[inner : out.index("\n", inner)]
    assert inner < out.index("session watch the inbox continues") < out.index("EXISTS; DONE")
    (transcript,) = tr.iterdir()
    text = transcript.read_text()
    assert "tls none, inside session watch the inbox ---" in text
    assert text.index("session deliver a message PASSED") < text.index(
        "--- session watch the inbox continues ---"
    )
    titles = re.findall(r"<h3>session ([^<]*?) <span", html.read_text())
    assert titles == ["watch the inbox", "deliver a message", "watch the inbox"]
    sessions = json.loads(js.read_text())["scenarios"][0]["sessions"]
    assert [s["name"] for s in sessions] == ["watch the inbox", "deliver a message"]


# ------------------------------------------------- S: alone waits for an untagged response


def deliver_later(host: str, port: int, rcpt: str, delay: float = 0.5) -> threading.Thread:
    def go():
        time.sleep(delay)
        with smtplib.SMTP(host, port, timeout=10) as s:
            s.sendmail(rcpt, [rcpt], f"From: <{rcpt}>\r\nSubject: idle\r\n\r\nhi\r\n")

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def s_only_file(tmp_path, port: int, user: str, password: str) -> Path:
    return write(
        tmp_path,
        "name: S alone during IDLE\nprotocol: imap\nconnect: {{host: 127.0.0.1, port: {port}}}\n"
        + IMAP_HEAD.replace("\n    ", "\n").removeprefix("    ")
        + textwrap.dedent(
            """\
              - C: IDLE
                S: +
              - S: {{re: '^\\* \\d+ EXISTS$'}}
                timeout: 20
              - C: DONE
                tag: false
                S: OK
            finally:
              - C: LOGOUT
                S: OK
            """
        ),
        port=port,
        user=user,
        password=password,
    )


def test_s_alone_during_idle_waits_for_the_untagged_response(sandbox, tmp_path):
    path = s_only_file(tmp_path, sandbox.ports["imap"], USER, PASSWORD)
    t = deliver_later("127.0.0.1", sandbox.ports["smtp"], USER)
    result, _ = play(path)
    t.join(10)
    assert result.status == "passed", result.reason
    steps = result.sessions[0].steps
    assert steps[4].reply.raw.startswith(b"* ") and steps[4].reply.raw.endswith(b" EXISTS\r\n")
    assert steps[5].reply.code == "OK" and steps[5].reply.tag == "a3"


def test_next_untagged_after_a_partial_next_reply_gives_one_response():
    p = create("imap")
    p.command("IDLE")
    p.receive_data(b"+ idling\r\n")
    assert p.next_reply().code == "+" and p.in_continuation
    p.receive_data(b"* 2 EXISTS\r\n* 1 RECENT\r\n* 3 FETCH (BODY[] {2}\r\n")
    assert p.next_reply() is None  # IDLE is outstanding: no tagged line yet
    assert p.next_untagged().raw == b"* 2 EXISTS\r\n"
    assert p.next_untagged().raw == b"* 1 RECENT\r\n"
    assert p.next_untagged() is None  # the literal is still to come
    p.receive_data(b"hi)\r\n")
    r = p.next_untagged()
    assert r.raw == b"* 3 FETCH (BODY[] {2}\r\nhi)\r\n" and r.lines == ("* 3 FETCH (BODY[] {2}", "hi", ")")


# --------------------------------------------------------------------------- load checks


@pytest.mark.parametrize(
    ("idle", "message"),
    [
        (
            "{until: {text: EXISTS}, during: nobody}",
            "during: no session 'nobody' in this file (other sessions: 'deliver')",
        ),
        ("{until: {text: EXISTS}, during: watch}", "during names the session this idle step is in ('watch')"),
        ("{until: EXISTS}", "'EXISTS' is not an imap status"),
        ("{during: deliver}", "until"),
    ],
)
def test_idle_load_errors_name_the_place(tmp_path, idle, message):
    path = write(
        tmp_path,
        "name: bad\nsessions:\n  - name: watch\n    protocol: imap\n    connect: {{host: 127.0.0.1, port: 143}}\n"
        "    steps:\n      - idle: {idle}\n"
        "  - name: deliver\n    protocol: smtp\n    connect: {{host: 127.0.0.1, port: 25}}\n    steps:\n      - S: 220\n",
        idle=idle,
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert f"{path.name}:7:" in text and message in text, text


def test_a_session_played_during_an_idle_step_plays_none_itself(tmp_path):
    session = "  - name: {0}\n    protocol: imap\n    connect: {{host: 127.0.0.1, port: 143}}\n"
    session += "    steps:\n      - idle: {{until: {{text: EXISTS}}, during: {1}}}\n"
    path = tmp_path / "cycle.yaml"
    path.write_text("name: cycle\nsessions:\n" + session.format("a", "b") + session.format("b", "a"))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert "cycle.yaml:7:" in text and "session 'a' is played during another's idle step" in text, text
    assert "cycle.yaml:12:" in text and "session 'b' is played during another's idle step" in text, text


@pytest.mark.parametrize(
    ("protocol", "step", "message"),
    [
        ("smtp", "- idle: {until: {text: EXISTS}}", r":5:\d+: .*idle is IMAP's \(this session is smtp\)"),
        (
            "imap",
            "- idle: {until: {text: EXISTS}, timeout: 3}\n    timeout: 4",
            r":6:\d+: .*give the timeout once",
        ),
    ],
)
def test_idle_is_imaps_only_and_takes_one_timeout(tmp_path, protocol, step, message):
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"name: bad\nprotocol: {protocol}\nconnect: {{host: 127.0.0.1, port: 1}}\nsteps:\n  {step}\n"
    )
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


def test_idle_step_round_trips_through_the_cache(tmp_path, sandbox):
    from runner.cache.codec import decode, encode
    from runner.lang.pattern_parse import parse_pattern

    path = idle_file(tmp_path, sandbox, "idle: {until: {text: EXISTS}, during: deliver, timeout: 7}")
    sc = load_scenario(path)
    back = decode(encode(sc), parse_pattern)
    step = back.sessions[0].steps[3]
    assert (step.action, step.during, step.timeout, step.until_source) == (
        "idle",
        "deliver",
        7.0,
        {"text": "EXISTS"},
    )
    assert step.until.describe() == sc.sessions[0].steps[3].until.describe()


# --------------------------------------------------------------------------- Dovecot + Postfix


@pytest.mark.testbed
def test_idle_scenario_against_dovecot_woken_by_a_postfix_delivery(testbed):
    testbed.clear_mailbox("alice")
    proc = mailrun(
        "scenarios/sandbox_idle_delivery.yaml",
        "-v",
        "--var",
        f"smtp_port={testbed.ports['smtp']}",
        "--var",
        f"imap_port={testbed.ports['imap']}",
        "--var",
        "user=alice@example.test",
        "--var",
        f"password={testbed.users['alice']}",
    )
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / "sandbox_idle_delivery.yaml").name), show(proc)
    assert (
        "[inside session watch the inbox]" in proc.stdout
        and "session watch the inbox continues" in proc.stdout
    )
    assert "EXISTS; DONE" in proc.stdout


@pytest.mark.testbed
def test_s_alone_during_idle_against_dovecot(testbed, tmp_path):
    testbed.clear_mailbox("alice")
    path = s_only_file(tmp_path, testbed.ports["imap"], "alice", testbed.users["alice"])
    t = deliver_later("127.0.0.1", testbed.ports["smtp"], testbed.address("alice"))
    result, _ = play(path)
    t.join(10)
    assert result.status == "passed", result.reason
    steps = result.sessions[0].steps
    assert steps[4].reply.raw.endswith(b" EXISTS\r\n")
    assert steps[5].reply.code == "OK"
