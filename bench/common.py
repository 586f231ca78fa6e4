"""What every section of bench/benchmark.py shares: the scenario, modes, figures and the report,
the smtp-sink server, interleaved timing.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"
USER = "bench@mailrun.test"
RCPT = "rcpt@mailrun.test"
PASSWORD_ENV = "MAILRUN_BENCH_PASSWORD"  # the scenario's env var (a random value unless set)
STEPS = 10

SCENARIO = """\
name: bench send
description: the 10-step send of bench/benchmark.py (greeting, EHLO, AUTH PLAIN, MAIL, RCPT, DATA, body, RSET, NOOP, QUIT)
protocol: smtp
connect:
  host: {host}
  port: {port}
  transport: socket
  timeout: 10
  connect_timeout: 10
vars:
  user: {user}
  password: "{{{{ env.{env} }}}}"
secrets: [password]
steps:
  - S: 220
  - C: EHLO bench.mailrun.test
    S: 250
  - C: "AUTH PLAIN {{{{ auth_plain(user, password) }}}}"
    S: [235, 250]
  - C: "MAIL FROM:<{{{{ user }}}}>"
    S: 250
  - C: "RCPT TO:<{rcpt}>"
    S: 250
  - C: DATA
    S: 354
  - body: |
      Subject: mailrun benchmark

      hello
    S: 250
  - C: RSET
    S: 250
  - C: NOOP
    S: 250
finally:
  - C: QUIT
    S: 221
"""
BODY = b"Subject: mailrun benchmark\r\n\r\nhello\r\n.\r\n"


@dataclass(frozen=True)
class Mode:
    engine_warmup: int
    engine_rounds: int
    process_runs: int
    telnet_rounds: int
    suite_runs: int
    suite_jobs: tuple[int, ...] = (1, 8, 32)
    memory_bytes: int = 100_000_000  # the body of the memory section's RETR and FETCH


FULL = Mode(engine_warmup=20, engine_rounds=300, process_runs=21, telnet_rounds=30, suite_runs=200)
QUICK = Mode(
    engine_warmup=2, engine_rounds=10, process_runs=2, telnet_rounds=2, suite_runs=16, memory_bytes=10_000_000
)


class BenchError(Exception):
    """A measurement could not be made (setup failed, a conversation failed)."""


# ----------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    key: str
    section: str
    label: str
    value: float | None
    unit: str  # 'ms', 'x', 'conv/s', ''
    target: str = ""  # e.g. '<= 1.2x'
    met: bool | None = None  # None: no target, or not measured
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "ms":
            return f"{self.value:.2f} ms" if self.value < 100 else f"{self.value:.0f} ms"
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "conv/s":
            return f"{self.value:.0f} conv/s"
        return f"{self.value:g}{self.unit}"


@dataclass
class Report:
    mode: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    imports: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, *args, **kwargs) -> Figure:
        fig = Figure(*args, **kwargs)
        self.figures.append(fig)
        return fig


def at_most(
    report: Report, key: str, section: str, label: str, value: float | None, bound: float, target: str
):
    met = None if value is None else value <= bound
    return report.add(key, section, label, value, "x", target, met)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ------------------------------------------------------------------------------- redaction
class Redact:
    """The benchmark's password and everything derived from it never reach the output."""

    def __init__(self, password: str):
        forms = {
            password,
            base64.b64encode(password.encode()).decode(),
            base64.b64encode(f"\0{USER}\0{password}".encode()).decode(),
            base64.b64encode(f"{USER}\0{USER}\0{password}".encode()).decode(),
        }
        self.forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for f in self.forms:
            text = text.replace(f, "****")
        return text


# ------------------------------------------------------------------------------- smtp-sink
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class SmtpSink:
    """Postfix's smtp-sink on a free 127.0.0.1 port, in its own process."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> SmtpSink:
        exe = shutil.which("smtp-sink") or (
            "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None
        )
        if exe is None:
            raise BenchError("smtp-sink not found: install the Debian package 'postfix'")
        last = ""
        for _ in range(3):  # the port may be taken between probing and binding
            self.port = free_port()
            argv = [exe]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]  # required when run as root
            argv += ["-t", "30", f"{HOST}:{self.port}", "256"]
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._greets():
                    return self
                time.sleep(0.02)
            last = self._stop_and_read()
        raise BenchError(f"smtp-sink did not start on {HOST}: {last or 'no greeting within 5 s'}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                s.settimeout(1.0)
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def _stop_and_read(self) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.terminate()
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
        lines = (err or b"").decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def stop(self) -> None:
        self._stop_and_read()


# ------------------------------------------------------------------------------- engine
class EngineProbe:
    """Plays the scenario through runner.engine.run.Engine and records event timestamps."""

    def __init__(self, scenario, env: dict[str, str], overrides: dict | None = None):
        from runner.engine.run import Engine, RunOptions
        from runner.events import Closed, Connected, SessionStarted, StepFinished

        self.scenario = scenario
        self.Engine = Engine
        self.options = RunOptions(env=env, overrides=dict(overrides or {}), run_id="bench")
        self._kinds = {
            SessionStarted: "session",
            Connected: "connected",
            Closed: "closed",
            StepFinished: "step",
        }

    def conversation(self) -> None:
        result = self.Engine(self.options, _noop).run(self.scenario)
        _check(result)

    def timed_conversation(self):
        marks: dict[str, float] = {}
        kinds = self._kinds
        clock = time.perf_counter

        def emit(ev) -> None:
            kind = kinds.get(type(ev))
            if kind is not None:
                marks[kind] = clock()  # 'step' ends up as the last step's time

        result = self.Engine(self.options, emit).run(self.scenario)
        _check(result)
        steps = result.steps
        per_step = sum(s.elapsed for s in steps) / len(steps)
        middle = steps[1:-1]  # without the greeting read and the QUIT
        per_middle_step = sum(s.elapsed for s in middle) / len(middle)
        connect = marks["connected"] - marks["session"]
        close = marks["closed"] - marks["step"]
        return per_step, connect, close, per_middle_step


def _noop(_event) -> None:
    pass


def _check(result) -> None:
    if result.status != "passed" or len(result.steps) != STEPS:
        failed = next((s for s in result.steps if s.status != "passed"), None)
        where = f"step {failed.index} ({failed.location}): {failed.reason}" if failed else result.reason
        raise BenchError(f"engine conversation {result.status}: {where}")


def interleave(runners: Sequence[Callable[[], object]], rounds: int, warmup: int) -> list[list[object]]:
    """Runs A, B, ... round after round (the order rotating each round) and returns each runner's
    results. The first `warmup` rounds are discarded."""
    out: list[list[object]] = [[] for _ in runners]
    n = len(runners)
    for r in range(warmup + rounds):
        for k in range(n):
            i = (r + k) % n
            value = runners[i]()
            if r >= warmup:
                out[i].append(value)
    return out


def timed(fn: Callable[[], None]) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0

    return run
