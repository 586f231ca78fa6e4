"""Interrupted runs lose nothing: the real `mailrun` in a child process against a real server
that greets, answers EHLO and then never answers NOOP, stopped by real SIGINT, SIGTERM and
SIGHUP, serial and with -j 2. Every report and transcript is written, every started scenario is
listed with the steps it completed and `interrupted`, the others as `not run`; the console's
count line agrees with the reports; the exit status is 130, 143 or 129; and it stops at once,
not after the 30 s deadline of the read it was waiting in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from tests.support.servers import Server

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schemas" / "report.schema.json").read_text())
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
NAMES = ["a", "b", "c", "d"]


def _hang_after_ehlo(conn) -> None:
    conn.send(b"220 ready\r\n")
    conn.recv_line(10)
    conn.send(b"250 hello\r\n")
    conn.recv_line(10)  # NOOP: never answered
    while conn.read_some(30):  # until the client closes
        pass


def _suite(d: Path, port: int, first_step: str = "S: 220") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (d / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                name: {name}
                protocol: smtp
                connect: {{host: 127.0.0.1, port: {port}, timeout: 30}}
                steps:
                  - {first_step}
                  - C: EHLO client.example
                    S: 250
                  - C: NOOP
                    S: 250
                """
            )
        )
    return d


def _spawn(*args) -> subprocess.Popen:
    # the signals back to their defaults, whatever the shell running the tests ignores
    def prepare():
        for sig in EXIT:
            signal.signal(sig, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=prepare,
    )


def _stop(proc, sig, ready, settle: float = 0.3) -> tuple[str, str, float]:
    """Once ready() returned (and `settle` seconds more), the signal; (stdout, stderr, seconds
    from the signal to the process's end)."""
    try:
        ready()
        time.sleep(settle)
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        return out, err, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _interrupt(proc, srv, conns: int, sig) -> tuple[str, str, float]:
    def ready():
        for i in range(conns):
            srv.wait_connection(i, timeout=20).wait_received(b"NOOP\r\n", 20)

    return _stop(proc, sig, ready)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_writes_every_report_and_lists_every_scenario(tmp_path, sig, jobs):
    with Server(_hang_after_ehlo) as srv:
        suite = _suite(tmp_path / "s", srv.port)
        rj, rx, tr = tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "tr"
        proc = _spawn(
            suite, "-j", jobs, "--report", f"json={rj}", "--report", f"junit={rx}", "--transcript", tr
        )
        out, err, took = _interrupt(proc, srv, jobs, sig)
        for i in range(jobs):  # the client closed its connections
            srv.wait_connection(i).wait_closed(5)
    assert proc.returncode == EXIT[sig], out + err
    assert took < 5, f"took {took:.1f} s to stop"
    assert "Traceback" not in err
    started, never = NAMES[:jobs], NAMES[jobs:]

    doc = json.loads(rj.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["exit_class"] == EXIT[sig]
    by_name = {s["name"]: s for s in doc["scenarios"]}
    assert list(by_name) == NAMES, out + err  # every scenario, in order
    for name in started:
        s = by_name[name]
        assert (s["status"], s["exit_class"]) == ("interrupted", EXIT[sig])
        assert [(st["sent"], st["status"]) for st in s["steps"]] == [
            (None, "passed"),
            ("EHLO client.example", "passed"),
            ("NOOP", "interrupted"),
        ]
        assert s["steps"][2]["reason"] == f"interrupted by {sig.name}"
        assert (s["steps_passed"], s["steps_total"]) == (2, 3)
    for name in never:
        assert (by_name[name]["status"], by_name[name]["steps"]) == ("not run", [])
        assert by_name[name]["reason"] == f"interrupted by {sig.name}"
        assert by_name[name]["exit_class"] == EXIT[sig]  # what it adds up to: mailrun's own
    summary = doc["summary"]
    assert (summary["scenarios"], summary["interrupted"], summary["not_run"]) == (4, jobs, 4 - jobs)
    assert summary["steps_interrupted"] == jobs

    root = ET.fromstring(rx.read_bytes())
    suites = root.findall("testsuite")
    assert [x.find("properties/property[@name='scenario']").get("value") for x in suites] == NAMES
    assert root.get("errors") == str(jobs)  # each interrupted NOOP is an <error>
    assert root.get("skipped") == str(4 - jobs)  # each scenario never started is <skipped>
    errors = root.findall(".//testcase/error")
    assert {e.get("type") for e in errors} == {_class(sig)}
    assert [e.get("message") for e in root.findall(".//testcase/skipped")] == [
        f"not run: interrupted by {sig.name}"
    ] * (4 - jobs)

    # the console: the same counts in its last line and in the interruption message
    counted = f"4 scenarios: 0 passed, 0 failed, 0 errors, {jobs} interrupted, {4 - jobs} not run"
    assert counted in out, out
    assert f"mailrun: interrupted by {sig.name}: {counted}" in err
    for name in started:
        assert f"INTERRUPTED {name} " in out and "2/3 steps" in out
    for name in never:
        assert f"NOT RUN {name} " in out

    logs = sorted(p.name for p in tr.glob("*.log"))
    assert logs == [f"{n}-1.log" for n in started]
    for n in started:
        text = (tr / f"{n}-1.log").read_text()
        assert "C: NOOP" in text and "interrupted" in text


def _class(sig) -> str:
    return {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hangup"}[sig]


def test_a_signal_between_steps_of_a_sleep_stops_at_once(tmp_path):
    """`sleep:` steps and session retry waits end on a signal too (not only network reads)."""
    with Server(_hang_after_ehlo) as srv:
        path = tmp_path / "sleepy.yaml"
        path.write_text(
            textwrap.dedent(
                f"""\
                name: sleepy
                protocol: smtp
                connect: {{host: 127.0.0.1, port: {srv.port}, timeout: 30}}
                steps:
                  - S: 220
                  - sleep: 25
                """
            )
        )
        rj = tmp_path / "r.json"
        proc = _spawn(path, "-j", 1, "--report", f"json={rj}")
        out, err, took = _stop(proc, signal.SIGTERM, lambda: srv.wait_connection(0, timeout=20), 0.8)
    assert proc.returncode == 143, out + err
    assert took < 5
    steps = json.loads(rj.read_text())["scenarios"][0]["steps"]
    assert [(s["action"], s["status"]) for s in steps] == [("read", "passed"), ("sleep", "interrupted")]


def test_fail_fast_says_how_many_it_did_not_start_and_reports_them(tmp_path):
    with Server(_hang_after_ehlo) as srv:
        suite = _suite(tmp_path / "s", srv.port, first_step="S: 554")  # the greeting is 220: a fails
        rj = tmp_path / "r.json"
        res = subprocess.run(
            [sys.executable, "-m", "runner", suite, "--fail-fast", "-j", "1", "--report", f"json={rj}"],
            cwd=REPO,
            env={**os.environ, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "mailrun: --fail-fast: 3 scenario run(s) not started after the first failure" in res.stderr
    doc = json.loads(rj.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert [(s["name"], s["status"]) for s in doc["scenarios"]] == [
        ("a", "failed"),
        ("b", "not run"),
        ("c", "not run"),
        ("d", "not run"),
    ]
    assert doc["scenarios"][1]["reason"] == "--fail-fast: an earlier run failed"
    assert "4 scenarios: 0 passed, 1 failed, 0 errors, 3 not run" in res.stdout


@pytest.mark.parametrize("transport", ["socket", "telnet"])
def test_parallel_runs_stop_at_once_while_connecting_or_in_a_spawned_program(tmp_path, transport):
    """-j 2: the worker threads are not where the signal lands; their transports are aborted
    (a connect that would hang until its deadline fails at once; telnet is killed)."""
    from tests.support.servers import full_backlog_port

    if transport == "telnet":
        import shutil

        if shutil.which("telnet") is None:
            pytest.skip("telnet not installed")
    listener, fillers = full_backlog_port()
    srv = Server(_hang_after_ehlo).__enter__()
    try:
        d = tmp_path / "s"
        d.mkdir()
        port = listener.getsockname()[1] if transport == "socket" else srv.port
        for name in NAMES[:3]:
            (d / f"{name}.yaml").write_text(
                f"name: {name}\nprotocol: smtp\n"
                f"connect: {{host: 127.0.0.1, port: {port}, timeout: 30, connect_timeout: 30, transport: {transport}}}\n"
                "steps:\n  - S: 220\n  - C: EHLO x\n    S: 250\n  - C: NOOP\n    S: 250\n"
            )
        rj, tr = tmp_path / "r.json", tmp_path / "tr"
        proc = _spawn(d, "-j", 2, "--report", f"json={rj}", "--transcript", tr)

        def ready():
            if transport == "telnet":
                for i in range(2):
                    srv.wait_connection(i, timeout=20).wait_received(b"NOOP", 20)
            end = time.monotonic() + 20
            while len(list(tr.glob("*.log"))) < 2 and time.monotonic() < end:  # both runs began
                time.sleep(0.05)

        out, err, took = _stop(proc, signal.SIGTERM, ready, 0.5)
    finally:
        srv.__exit__(None, None, None)
        listener.close()
        for s in fillers:
            s.close()
    assert proc.returncode == 143, out + err
    assert took < 5, f"{took:.1f} s"
    doc = json.loads(rj.read_text())
    assert [s["status"] for s in doc["scenarios"]] == ["interrupted", "interrupted", "not run"]
    if transport == "telnet":
        assert [st["status"] for st in doc["scenarios"][0]["steps"]] == ["passed", "passed", "interrupted"]


@pytest.mark.parametrize("tls", ["none", "implicit"])
def test_abort_from_another_thread_ends_a_blocked_read_at_once(tmp_path, tls):
    """Transport.abort through the run's Interrupt: a recv waiting on a silent server with a
    30 s deadline returns within a second of trigger() on another thread (what -j N needs)."""
    import threading

    from runner import transports
    from runner.interrupt import Interrupt
    from runner.model.config import ConnectConfig
    from tests.support.servers import PKI, silent

    pki = PKI(tmp_path / "pki", names=("127.0.0.1",))
    ctx = pki.server_context() if tls == "implicit" else None
    with Server(silent(hold=30), tls=ctx) as srv:
        config = ConnectConfig(host="127.0.0.1", port=srv.port, tls=tls, ca=pki.ca_file if ctx else None)
        t = transports.create(config)
        t.connect()
        interrupt = Interrupt()
        interrupt.watch(t)
        timer = threading.Timer(0.3, interrupt.trigger)
        timer.start()
        started = time.monotonic()
        try:
            data = t.recv(time.monotonic() + 30)
        except Exception as exc:  # noqa: BLE001 - either way it must end now
            data = exc
        took = time.monotonic() - started
        t.close()
        timer.join()
    assert took < 2, f"{took:.1f} s ({data!r})"
    assert interrupt.triggered and not interrupt.trigger()  # the first trigger only


def test_a_second_signal_while_the_reports_are_written_is_said_and_ignored():
    code = textwrap.dedent(
        """
        import os, signal, time
        from runner.interrupt import Interrupt, Interrupted
        interrupt = Interrupt()
        with interrupt.handlers():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
            except Interrupted as exc:
                os.kill(os.getpid(), signal.SIGTERM)  # while "writing the reports": ignored
                time.sleep(0.3)
                print("finished", int(exc.exit_class), interrupt.signum == signal.SIGTERM)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["finished", "143", "True"]
    assert "mailrun: SIGTERM again: finishing the reports first" in r.stderr


def test_an_ignored_signal_stays_ignored_nohup():
    code = textwrap.dedent(
        """
        import os, signal, time
        from runner.interrupt import Interrupt
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with Interrupt().handlers() as interrupt:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.3)
            print("still here", interrupt.triggered)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["still", "here", "False"]


def test_a_signal_while_waiting_to_retry_reports_the_failed_attempt(tmp_path, free_port):
    port = free_port()  # refused: --retries waits 1 s before the next attempt
    path = tmp_path / "down.yaml"
    path.write_text(
        f"name: down\nprotocol: smtp\nconnect: {{host: 127.0.0.1, port: {port}}}\nsteps:\n  - S: 220\n"
    )
    rj = tmp_path / "r.json"
    proc = _spawn(path, "--retries", "3", "--report", f"json={rj}")

    def ready():
        while "retrying scenario down" not in proc.stdout.readline():
            pass

    out, err, took = _stop(proc, signal.SIGINT, ready, 0.05)
    assert proc.returncode == 130, out + err
    assert took < 1, took  # not the rest of the wait, nor two more attempts
    (s,) = json.loads(rj.read_text())["scenarios"]
    assert (s["status"], s["exit_class"], s["retries"]) == ("error", 3, 0)
    assert "refused" in s["reason"]
