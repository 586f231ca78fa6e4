"""`max_time` and `min_time` (step, session, scenario) against servers that answer slowly: a small
fault server here (a greeting delay, one slow command) and Postfix's own `smtp-sink -w` (a slow
DATA reply). A reply past max_time fails the step (exit 1) and says by how much; `timeout` gives
up waiting (exit 3); the JSON carries per-step times and which limit broke; a suite's summary
lists the slowest steps."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from tests.servers.testbed import free_port
from tests.support.servers import Conn, Server
from tests.test_exit_status import mailrun, write


def slow_server(greeting_delay: float = 0.0, slow: dict[bytes, float] | None = None):
    """An SMTP-ish fault server: the greeting after greeting_delay s; each command answered
    `250 ok`, after slow[VERB] s for the verbs named there."""
    slow = slow or {}

    def handler(conn: Conn) -> None:
        time.sleep(greeting_delay)
        conn.send(b"220 slow.example ESMTP\r\n")
        while True:
            line = conn.recv_line(10)
            if line is None:
                return
            word = line.split(b" ", 1)[0].strip().upper()
            time.sleep(slow.get(word, 0.0))
            conn.send(b"221 bye\r\n" if word == b"QUIT" else b"250 ok\r\n")
            if word == b"QUIT":
                return

    return handler


SCENARIO = """\
    name: timed
    protocol: smtp
    connect: {host: 127.0.0.1, port: $port, timeout: $timeout}
    $session_limit
    steps:
      - S: 220
        $greeting_limit
      - C: EHLO client.example
        S: 250
      - C: NOOP
        S: 250
        $noop_limit
    finally:
      - C: QUIT
        S: 221
    """


def run(tmp_path, server, *extra, **subs):
    values = {"timeout": 5, "session_limit": "", "greeting_limit": "", "noop_limit": "", **subs}
    report = tmp_path / "r.json"
    with Server(server) as srv:
        path = write(tmp_path, SCENARIO, port=srv.port, **values)
        proc = mailrun(path, "--report", f"json={report}", "--report", f"junit={tmp_path / 'r.xml'}", *extra)
    return proc, json.loads(report.read_text())


def test_a_reply_after_max_time_fails_and_says_by_how_much(tmp_path):
    proc, doc = run(tmp_path, slow_server(slow={b"NOOP": 0.6}), noop_limit="max_time: 0.2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    noop = doc["scenarios"][0]["steps"][2]
    assert noop["status"] == "failed" and noop["time_limit"] == "max_time" and noop["exit_class"] == 1
    m = re.fullmatch(r"reply took (\d\.\d{3}) s, (\d\.\d{3}) s over max_time 0.2 s", noop["reason"])
    assert m is not None, noop["reason"]
    took, over = float(m.group(1)), float(m.group(2))
    assert took >= 0.6 and abs(took - 0.2 - over) < 0.002
    assert noop["elapsed"] >= 0.6 and noop["reply"]["code"] == "250"  # the reply came: it was late
    assert "over max_time 0.2 s" in proc.stdout
    failure = ET.parse(tmp_path / "r.xml").getroot().find(".//testcase[@name='step 3: C: NOOP']/failure")
    assert failure.get("message") == noop["reason"] and failure.get("type") == "expectation"
    assert doc["scenarios"][0]["steps"][3]["status"] == "passed"  # finally still runs


def test_max_time_is_not_timeout(tmp_path):
    # the same slow reply with a timeout shorter than it: gives up waiting, a network failure
    proc, doc = run(tmp_path, slow_server(slow={b"NOOP": 1.0}), noop_limit="max_time: 0.2\n    timeout: 0.3")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    noop = doc["scenarios"][0]["steps"][2]
    assert noop["status"] == "error" and noop["time_limit"] is None and "within 0.3 s" in noop["reason"]


def test_a_fast_enough_reply_passes_and_its_time_is_in_the_json(tmp_path):
    proc, doc = run(tmp_path, slow_server(slow={b"NOOP": 0.3}), noop_limit="max_time: 3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = doc["scenarios"][0]["steps"]
    assert [s["status"] for s in steps] == ["passed"] * 4
    assert steps[2]["elapsed"] >= 0.3 and all(s["time_limit"] is None for s in steps)


def test_min_time_detects_a_greeting_delay(tmp_path):
    # a greeting delay the test expects (a tarpit): met when there, a failure when missing
    proc, doc = run(tmp_path, slow_server(greeting_delay=0.5), greeting_limit="min_time: 0.4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doc["scenarios"][0]["steps"][0]["status"] == "passed"
    proc, doc = run(tmp_path, slow_server(), greeting_limit="min_time: 0.4")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    greeting = doc["scenarios"][0]["steps"][0]
    assert greeting["time_limit"] == "min_time"
    assert re.fullmatch(
        r"reply came after \d\.\d{3} s, \d\.\d{3} s before min_time 0.4 s", greeting["reason"]
    )


def test_a_session_limit_is_every_steps_default_and_a_step_may_override_it(tmp_path):
    proc, doc = run(
        tmp_path,
        slow_server(slow={b"EHLO": 0.4, b"NOOP": 0.4}),
        session_limit="max_time: 0.2",
        noop_limit="max_time: 2",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = doc["scenarios"][0]["steps"]
    assert steps[1]["time_limit"] == "max_time" and "over max_time 0.2 s" in steps[1]["reason"]
    assert steps[2]["status"] == "skipped"  # after the failure


@pytest.mark.skipif(shutil.which("smtp-sink") is None, reason="Postfix's smtp-sink is not installed")
def test_smtp_sink_slow_data_reply(tmp_path):
    port = free_port()
    sink = subprocess.Popen(
        ["smtp-sink", "-u", "nobody", "-w", "1", f"127.0.0.1:{port}", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or sink.poll() is not None:
                    raise
                time.sleep(0.05)
        path = write(
            tmp_path,
            """\
            name: slow data
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port, timeout: 5}
            max_time: 0.5
            steps:
              - S: 220
              - C: EHLO client.example
                S: 250
              - C: "MAIL FROM:<a@example.test>"
                S: 250
              - C: "RCPT TO:<b@example.test>"
                S: 250
              - C: DATA
                S: 354
            finally:
              - C: QUIT
                S: 221
            """,
            port=port,
        )
        proc = mailrun(path, "--report", f"json={tmp_path / 'r.json'}")
    finally:
        sink.terminate()
        sink.wait(10)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]["steps"][4]
    assert data["time_limit"] == "max_time" and data["elapsed"] >= 1.0
    assert re.search(r"reply took 1\.\d{3} s, 0\.\d{3} s over max_time 0.5 s", data["reason"])


def test_the_suite_summary_lists_the_slowest_steps(tmp_path):
    report = tmp_path / "r.json"
    with Server(slow_server(slow={b"NOOP": 0.3})) as srv:
        paths = [
            write(
                tmp_path,
                SCENARIO.replace("name: timed", f"name: timed {i}"),
                f"s{i}.yaml",
                port=srv.port,
                timeout=5,
                session_limit="",
                greeting_limit="",
                noop_limit="",
            )
            for i in (1, 2)
        ]
        proc = mailrun(*paths, "--report", f"json={report}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    at = lines.index("slowest steps:")
    assert re.match(r"\s+3\d\d ms  timed [12] step 3 \(.*s[12]\.yaml:10\)$", lines[at + 1]), lines[at + 1]
    assert lines[-1].startswith("2 scenarios: 2 passed")
    slowest = json.loads(report.read_text())["summary"]["slowest_steps"]
    assert [s["location"].rsplit("/", 1)[-1] for s in slowest[:2]] in (
        ["s1.yaml:10", "s2.yaml:10"],
        ["s2.yaml:10", "s1.yaml:10"],
    )
