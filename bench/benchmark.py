#!/usr/bin/env python3
"""mailrun benchmark: speed measured as ratios against baselines run in the same invocation.

    python3 bench/benchmark.py            full mode (about a minute and a half)
    python3 bench/benchmark.py --quick    smoke mode: every figure, few iterations
    python3 bench/benchmark.py --json     machine output on stdout instead of the table
    python3 bench/benchmark.py --json out.json   the table on stdout and the JSON in out.json

It starts its own Postfix `smtp-sink` on a free 127.0.0.1 port, writes a 10-step send scenario
to a temporary directory, and measures:

1. engine    the engine (runner.engine.run.Engine) vs a minimal hand-written socket client playing
             the same SMTP conversation, interleaved rounds; medians of wall and CPU time per
             conversation and their ratios (reported, no target: the old 1.2x target is retired).
2. process   whole processes: `mailrun FILE` (warm and cold validation cache), `python -m runner
             FILE`, `python -c pass` and `swaks` doing the same send (target: mailrun no slower
             than swaks), plus the import costs of the run path (python -X importtime).
3. telnet    the same conversation over `transport: telnet` vs the socket transport: per-step
             time ratio (reported, no target), spawn/connect and close costs reported separately.
4. suite     200 scenario runs through runner.suite.execute at -j 1, -j 8, -j 32: conversations
             per second and CPU per conversation (no target).

Nothing here is a test assertion: targets are reported as met / not met. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


FULL = Mode(engine_warmup=20, engine_rounds=300, process_runs=21, telnet_rounds=30, suite_runs=200)
QUICK = Mode(engine_warmup=2, engine_rounds=10, process_runs=2, telnet_rounds=2, suite_runs=16)


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


# ------------------------------------------------------------------------ minimal client
class Minimal:
    """A minimal hand-written SMTP client: the floor the engine is measured against. It does
    what a careful script would: TCP_NODELAY, a deadline per reply, multi-line replies framed
    by the 4th character, the reply code checked."""

    def __init__(self, port: int, password: str, timeout: float = 10.0, user: str = USER, rcpt: str = RCPT):
        self.port = port
        self.timeout = timeout
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.script: list[tuple[bytes | None, tuple[bytes, ...]]] = [
            (None, (b"220",)),
            (b"EHLO bench.mailrun.test\r\n", (b"250",)),
            (f"AUTH PLAIN {blob}\r\n".encode(), (b"235", b"250")),
            (f"MAIL FROM:<{user}>\r\n".encode(), (b"250",)),
            (f"RCPT TO:<{rcpt}>\r\n".encode(), (b"250",)),
            (b"DATA\r\n", (b"354",)),
            (BODY, (b"250",)),
            (b"RSET\r\n", (b"250",)),
            (b"NOOP\r\n", (b"250",)),
            (b"QUIT\r\n", (b"221",)),
        ]

    def conversation(self) -> None:
        sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            for i, (data, codes) in enumerate(self.script, 1):
                if data is not None:
                    sock.sendall(data)
                deadline = time.monotonic() + self.timeout
                while True:
                    reply, buf = _frame(buf)
                    if reply is not None:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BenchError(f"minimal client: step {i}: no reply within {self.timeout:g} s")
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise BenchError(f"minimal client: step {i}: the server closed the connection")
                    buf += chunk
                if not reply.startswith(codes):
                    raise BenchError(f"minimal client: step {i}: unexpected reply {reply[:40]!r}")
        finally:
            sock.close()


def _frame(buf: bytes) -> tuple[bytes | None, bytes]:
    """One complete SMTP reply from the front of buf (a line whose 4th byte is not '-')."""
    start = 0
    while True:
        nl = buf.find(b"\n", start)
        if nl < 0:
            return None, buf
        line = buf[start:nl]
        start = nl + 1
        if line[3:4] != b"-":
            return buf[:start], buf[start:]


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


def bench_engine(report: Report, mode: Mode, scenario, env: dict[str, str], port: int, password: str) -> None:
    sec = "1. engine vs minimal socket client (same 10-step conversation, in-process)"
    minimal = Minimal(port, password)
    engine = EngineProbe(scenario, env)
    res = interleave(
        [timed(minimal.conversation), timed(engine.conversation)], mode.engine_rounds, mode.engine_warmup
    )
    mw, mc = median([r[0] for r in res[0]]), median([r[1] for r in res[0]])
    ew, ec = median([r[0] for r in res[1]]), median([r[1] for r in res[1]])
    report.add("engine.minimal_wall_ms", sec, "minimal client: wall / conversation", ms(mw), "ms")
    report.add("engine.engine_wall_ms", sec, "engine: wall / conversation", ms(ew), "ms")
    report.add("engine.wall_ratio", sec, "engine / minimal, wall (no target)", ew / mw, "x")
    report.add("engine.minimal_cpu_ms", sec, "minimal client: CPU / conversation", ms(mc), "ms")
    report.add("engine.engine_cpu_ms", sec, "engine: CPU / conversation", ms(ec), "ms")
    report.add("engine.cpu_ratio", sec, "engine / minimal, CPU (no target)", ec / mc if mc > 0 else None, "x")
    report.add(
        "engine.cpu_overhead_per_step_ms",
        sec,
        f"engine CPU over minimal, per step ({STEPS} steps)",
        ms((ec - mc) / STEPS),
        "ms",
    )
    report.notes.append(
        f"engine: {mode.engine_rounds} interleaved rounds after {mode.engine_warmup} warm-up rounds; "
        "medians; CPU is time.process_time of this process"
    )


def bench_engine_postfix(report: Report, mode: Mode, tmp: Path) -> None:
    """Section 1 again with real Postfix (the test bed of tests/servers) as the server: replies
    take the time a real server takes (AUTH through Dovecot, queueing), not smtp-sink's
    microseconds, so the engine's overhead is seen against a realistic conversation."""
    sec = "1b. the same against real Postfix (tests/servers test bed; AUTH via Dovecot, real queueing)"
    keys = (
        ("postfix.minimal_wall_ms", "minimal client: wall / conversation", "ms"),
        ("postfix.engine_wall_ms", "engine: wall / conversation", "ms"),
        ("postfix.minimal_cpu_ms", "minimal client: CPU / conversation", "ms"),
        ("postfix.engine_cpu_ms", "engine: CPU / conversation", "ms"),
    )
    why = None
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.servers.testbed import Testbed, TestbedError, missing_requirements

        why = missing_requirements()
    except ImportError as exc:
        why = f"tests/servers is not importable ({exc})"
    if why:
        note = f"needs the postfix test bed: {why}"
        for key, label, unit in keys:
            report.add(key, sec, label, None, unit, note=note)
        report.add("postfix.wall_ratio", sec, "engine / minimal, wall", None, "x", "<= 1.2x", None, note)
        return
    from runner.load.api import load_scenario

    try:
        bed = Testbed().start()
    except TestbedError as exc:
        raise BenchError(f"the Postfix test bed did not start: {str(exc).splitlines()[0]}") from None
    try:
        user, rcpt, env_name = "alice@example.test", "bob@example.test", "MAILRUN_BENCH_POSTFIX_PASSWORD"
        path = tmp / "bench_postfix.yaml"
        path.write_text(
            SCENARIO.format(host=HOST, port=bed.ports["smtp"], user=user, rcpt=rcpt, env=env_name)
        )
        scenario = load_scenario(path, use_cache=False)
        password = bed.users["alice"]
        minimal = Minimal(bed.ports["smtp"], password, user=user, rcpt=rcpt)
        engine = EngineProbe(scenario, {env_name: password})
        rounds, warmup = max(5, mode.engine_rounds // 3), max(1, mode.engine_warmup // 2)
        res = interleave([timed(minimal.conversation), timed(engine.conversation)], rounds, warmup)
    finally:
        bed.stop()
    mw, mc = median([r[0] for r in res[0]]), median([r[1] for r in res[0]])
    ew, ec = median([r[0] for r in res[1]]), median([r[1] for r in res[1]])
    for (key, label, unit), value in zip(keys, (mw, ew, mc, ec), strict=True):
        report.add(key, sec, label, ms(value), unit)
    report.add("postfix.wall_ratio", sec, "engine / minimal, wall (no target)", ew / mw, "x")
    report.notes.append(f"postfix: {rounds} interleaved rounds after {warmup} warm-up rounds; medians")


# ------------------------------------------------------------------------------- processes
def run_timed(
    argv: list[str], env: dict[str, str], redact: Redact, timeout: float = 60.0
) -> tuple[float, float]:
    """Wall and CPU (user+sys of the child) of one process; raises BenchError unless it exits 0."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{Path(argv[0]).name} did not finish within {timeout:g} s") from None
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise BenchError(
            f"{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:3]))} ... "
            f"exited {proc.returncode}: {redact(' | '.join(tail))}"
        )
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu


def mailrun_executable() -> str | None:
    here = Path(sys.executable).parent / "mailrun"
    if here.is_file():
        return str(here)
    return shutil.which("mailrun")


def bench_process(
    report: Report, mode: Mode, tmp: Path, scenario_file: Path, port: int, password: str, redact: Redact
) -> None:
    sec = "2. whole process: a 10-step send"
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "MAILRUN_CACHE_DIR")}
    base.update({PASSWORD_ENV: password, "NO_COLOR": "1", "PYTHONPYCACHEPREFIX": str(tmp / "pyc")})
    warm_env = dict(base, MAILRUN_CACHE_DIR=str(tmp / "cache-warm"))
    nopyc_env = dict(warm_env)
    nopyc_env.pop("PYTHONPYCACHEPREFIX")
    nopyc_env["PYTHONDONTWRITEBYTECODE"] = "1"
    py = sys.executable
    mailrun = mailrun_executable()
    swaks = shutil.which("swaks")
    cold_dirs = iter(range(1_000_000))

    def cold_env() -> dict[str, str]:
        d = tmp / f"cache-cold-{next(cold_dirs)}"
        d.mkdir()
        return dict(base, MAILRUN_CACHE_DIR=str(d))

    swaks_argv = None
    if swaks:
        # smtp-sink answers AUTH with 250, not 235: swaks calls that a failed AUTH, so
        # --auth-optional lets it go on with the same send (AUTH PLAIN is still sent).
        swaks_argv = [
            swaks,
            "--server",
            f"{HOST}:{port}",
            "--helo",
            "bench.mailrun.test",
            "--auth-optional",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            password,
            "--from",
            USER,
            "--to",
            RCPT,
            "--body",
            "hello",
            "--timeout",
            "10",
        ]
    commands: dict[str, tuple[list[str], Callable[[], dict[str, str]]] | None] = {
        "python_pass": ([py, "-c", "pass"], lambda: warm_env),
        "python_nosite": ([py, "-S", "-c", "pass"], lambda: warm_env),
        "swaks": (swaks_argv, lambda: warm_env) if swaks_argv else None,
        "mailrun_warm": ([mailrun, str(scenario_file)], lambda: warm_env) if mailrun else None,
        "mailrun_cold": ([mailrun, str(scenario_file)], cold_env) if mailrun else None,
        "python_m_runner": ([py, "-m", "runner", str(scenario_file)], lambda: warm_env),
        "mailrun_nopyc": ([mailrun, str(scenario_file)], lambda: nopyc_env) if mailrun else None,
    }
    live = {k: v for k, v in commands.items() if v is not None}
    for argv, env in live.values():  # warm: bytecode, validation cache, page cache
        run_timed(argv, env(), redact)
    runners = [(lambda a=argv, e=env: run_timed(a, e(), redact)) for argv, env in live.values()]
    res = dict(zip(live, interleave(runners, mode.process_runs, 0), strict=True))
    wall = {k: median([r[0] for r in v]) for k, v in res.items()}
    cpu = {k: median([r[1] for r in v]) for k, v in res.items()}

    labels = {
        "python_pass": "python -c pass",
        "python_nosite": "python -S -c pass (no site, no .pth files)",
        "swaks": "swaks (same send)",
        "mailrun_warm": "mailrun FILE (validation cached)",
        "mailrun_cold": "mailrun FILE (cold: empty cache dir)",
        "python_m_runner": "python -m runner FILE (cached)",
        "mailrun_nopyc": "mailrun FILE, no .pyc (PYTHONDONTWRITEBYTECODE=1)",
    }
    for key, label in labels.items():
        w = wall.get(key)
        c = cpu.get(key)
        note = (
            "" if key in live else ("swaks not installed" if key == "swaks" else "mailrun script not found")
        )
        report.add(
            f"process.{key}_wall_ms", sec, f"{label}: wall", ms(w) if w is not None else None, "ms", note=note
        )
        report.add(
            f"process.{key}_cpu_ms", sec, f"{label}: CPU", ms(c) if c is not None else None, "ms", note=note
        )
    ratio = wall["mailrun_warm"] / wall["swaks"] if "mailrun_warm" in wall and "swaks" in wall else None
    fig = at_most(
        report, "process.mailrun_vs_swaks", sec, "mailrun (cached) / swaks, wall", ratio, 1.0, "<= 1.0x"
    )
    if ratio is None:
        fig.note = "swaks not installed" if "swaks" not in live else "mailrun script not found"
    over = wall["mailrun_warm"] - wall["python_pass"] if "mailrun_warm" in wall else None
    report.add(
        "process.mailrun_over_python_ms",
        sec,
        "mailrun (cached) - python -c pass, wall",
        ms(over) if over is not None else None,
        "ms",
    )
    cold_extra = wall["mailrun_cold"] - wall["mailrun_warm"] if "mailrun_cold" in wall else None
    report.add(
        "process.cold_minus_warm_ms",
        sec,
        "cold - cached (schema validation), wall",
        ms(cold_extra) if cold_extra is not None else None,
        "ms",
    )
    report.notes.append(
        f"process: median of {mode.process_runs} interleaved runs each after one warm-up run; CPU is the "
        "child's user+sys; subprocesses write bytecode to a temporary PYTHONPYCACHEPREFIX (the no-.pyc row "
        "compiles the runner package on every start, as this environment does when PYTHONDONTWRITEBYTECODE is set)"
    )
    if mailrun:
        report.imports = import_costs(py, scenario_file, warm_env, cold_env(), redact)


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def import_costs(
    py: str,
    scenario_file: Path,
    warm_env: dict[str, str],
    cold_env: dict[str, str],
    redact: Redact,
    top: int = 10,
) -> list[dict]:
    """`python -X importtime -m runner FILE`: the run path's top-level imports by cumulative cost,
    and whether jsonschema is imported on a cached and on a cold run."""
    out: list[dict] = []
    parsed = {}
    for label, env in (("cached", warm_env), ("cold", cold_env)):
        proc = subprocess.run(
            [py, "-X", "importtime", "-m", "runner", str(scenario_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        if proc.returncode != 0:
            raise BenchError(
                f"python -X importtime -m runner exited {proc.returncode}: "
                f"{redact(proc.stderr.decode('utf-8', 'replace')[-300:])}"
            )
        rows = []
        for line in proc.stderr.decode("utf-8", "replace").splitlines():
            m = _IMPORT_LINE.match(line)
            if m:
                rows.append((m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2))
        parsed[label] = rows
    cached = parsed["cached"]
    for name, self_us, cum_us, _ in sorted((r for r in cached if r[3] == 0), key=lambda r: -r[2])[:top]:
        out.append(
            {"module": name, "self_ms": self_us / 1000, "cumulative_ms": cum_us / 1000, "run": "cached"}
        )
    for label in ("cached", "cold"):
        js = [r for r in parsed[label] if r[0] == "jsonschema"]
        out.append(
            {
                "module": "jsonschema",
                "run": label,
                "imported": bool(js),
                "cumulative_ms": js[0][2] / 1000 if js else 0.0,
            }
        )
    return out


# ---------------------------------------------------------------------------------- telnet
def bench_telnet(report: Report, mode: Mode, scenario, env: dict[str, str]) -> None:
    sec = "3. telnet transport vs socket (same conversation through the engine)"
    if shutil.which("telnet") is None:
        for key, label in (
            ("telnet.socket_step_ms", "socket: per step"),
            ("telnet.telnet_step_ms", "telnet: per step"),
            ("telnet.step_ratio", "telnet / socket, per step"),
            ("telnet.socket_middle_step_ms", "socket: per step, steps 2-9"),
            ("telnet.telnet_middle_step_ms", "telnet: per step, steps 2-9"),
            ("telnet.middle_step_ratio", "telnet / socket, per step, steps 2-9"),
        ):
            report.add(
                key,
                sec,
                label,
                None,
                "x" if key.endswith("ratio") else "ms",
                "<= 2.0x" if key == "telnet.step_ratio" else "",
                note="telnet not installed",
            )
        return
    sock = EngineProbe(scenario, env)
    tel = EngineProbe(scenario, env, {"transport": "telnet"})
    res = interleave([sock.timed_conversation, tel.timed_conversation], mode.telnet_rounds, 1)
    s_step, s_conn, s_close, s_mid = (median([r[i] for r in res[0]]) for i in range(4))
    t_step, t_conn, t_close, t_mid = (median([r[i] for r in res[1]]) for i in range(4))
    report.add("telnet.socket_step_ms", sec, "socket: per step (send to reply matched)", ms(s_step), "ms")
    report.add("telnet.telnet_step_ms", sec, "telnet: per step (send to reply matched)", ms(t_step), "ms")
    report.add("telnet.step_ratio", sec, "telnet / socket, per step (no target)", t_step / s_step, "x")
    # The greeting read also waits for telnet's own start-up after
    # it connected (a local host-name lookup before it relays), and after QUIT telnet exits
    # (its teardown delays the last read); steps 2-9 are the plain relay.
    report.add("telnet.socket_middle_step_ms", sec, "socket: per step, steps 2-9", ms(s_mid), "ms")
    report.add("telnet.telnet_middle_step_ms", sec, "telnet: per step, steps 2-9", ms(t_mid), "ms")
    report.add(
        "telnet.middle_step_ratio",
        sec,
        "telnet / socket, per step, steps 2-9 (no target)",
        t_mid / s_mid,
        "x",
    )
    report.add("telnet.socket_connect_ms", sec, "socket: connect", ms(s_conn), "ms")
    report.add("telnet.telnet_connect_ms", sec, "telnet: spawn + connect", ms(t_conn), "ms")
    report.add("telnet.socket_close_ms", sec, "socket: close", ms(s_close), "ms")
    report.add("telnet.telnet_close_ms", sec, "telnet: close (telnet ended)", ms(t_close), "ms")
    report.notes.append(
        f"telnet: {mode.telnet_rounds} interleaved rounds after 1 warm-up round; per step = "
        "mean StepResult.elapsed of the 10 steps (steps 2-9: without the greeting and QUIT); "
        "medians over rounds"
    )


# ----------------------------------------------------------------------------------- suite
def bench_suite(report: Report, mode: Mode, scenario, env: dict[str, str]) -> None:
    from runner.engine.run import RunOptions
    from runner.errors import ExitClass
    from runner.suite import Listener, execute, plan

    sec = f"4. suite throughput: {mode.suite_runs} runs through runner.suite.execute"
    options = RunOptions(env=env, run_id="bench")
    warm = plan([scenario] * 4)
    execute(warm, options, Listener(), jobs=4)
    for jobs in mode.suite_jobs:
        runs = plan([scenario] * mode.suite_runs)
        w0, c0 = time.perf_counter(), time.process_time()
        exit_class = execute(runs, options, Listener(), jobs=jobs)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        bad = [r for r in runs if r.result is None or r.result.status != "passed"]
        if exit_class != ExitClass.OK or bad:
            first = bad[0].result if bad else None
            raise BenchError(
                f"suite -j {jobs}: {len(bad)} of {len(runs)} runs did not pass"
                + (f" (first: {first.reason})" if first is not None else "")
            )
        n = len(runs)
        report.add(f"suite.j{jobs}_rate", sec, f"-j {jobs}: conversations per second", n / wall, "conv/s")
        report.add(f"suite.j{jobs}_cpu_ms", sec, f"-j {jobs}: CPU per conversation", ms(cpu / n), "ms")
    report.notes.append(
        f"suite: a no-op Listener; CPU is time.process_time (all threads) / runs; {os.cpu_count()} CPUs"
    )


# ----------------------------------------------------------------------------------- output
def render_table(report: Report, header: str) -> str:
    lines = [header]
    section = None
    width = max((len(f.label) for f in report.figures), default=20)
    for f in report.figures:
        if f.section != section:
            section = f.section
            lines += ["", section]
        verdict = "" if f.met is None else ("met" if f.met else "NOT MET")
        target = f"target {f.target}" if f.target else ""
        row = f"  {f.label:<{width}}  {f.shown():>14}  {target:<16} {verdict}".rstrip()
        if f.note:
            row += f"  ({f.note})"
        lines.append(row)
    if report.imports:
        lines += [
            "",
            "run-path imports (python -X importtime -m runner FILE, cached run; top level, cumulative)",
        ]
        for row in report.imports:
            if "imported" in row:
                state = f"imported, {row['cumulative_ms']:.1f} ms" if row["imported"] else "not imported"
                lines.append(f"  jsonschema on a {row['run']} run: {state}")
            else:
                lines.append(
                    f"  {row['module']:<40} {row['cumulative_ms']:8.1f} ms  (self {row['self_ms']:.1f} ms)"
                )
    targets = [f for f in report.figures if f.target]
    met = sum(1 for f in targets if f.met)
    lines += ["", f"targets met: {met} of {len(targets)}"]
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"ERROR: {e}" for e in report.errors]
    return "\n".join(lines) + "\n"


def as_json(report: Report, machine: dict) -> dict:
    targets = [f for f in report.figures if f.target]
    return {
        "mode": report.mode,
        "machine": machine,
        "figures": {
            f.key: {
                "label": f.label,
                "section": f.section,
                "value": f.value,
                "unit": f.unit,
                "target": f.target or None,
                "met": f.met,
                "note": f.note or None,
            }
            for f in report.figures
        },
        "targets": {"total": len(targets), "met": sum(1 for f in targets if f.met)},
        "imports": report.imports,
        "notes": report.notes,
        "errors": report.errors,
    }


# ------------------------------------------------------------------------------------ main
SECTIONS = ("engine", "postfix", "process", "telnet", "suite")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="mailrun benchmark: ratios against baselines run in the same invocation"
    )
    p.add_argument("--quick", action="store_true", help="smoke mode: every figure, few iterations")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="machine output: to stdout instead of the table, or to PATH beside the table",
    )
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    args = p.parse_args(argv)
    mode = QUICK if args.quick else FULL
    only = set(args.only or SECTIONS)

    password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(12)
    redact = Redact(password)
    report = Report("quick" if args.quick else "full")
    load = os.getloadavg()
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }
    header = (
        f"mailrun benchmark ({report.mode} mode): Python {machine['python']}, {machine['cpus']} CPUs, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    env = {PASSWORD_ENV: password}
    sink = SmtpSink()
    status = 0
    with tempfile.TemporaryDirectory(prefix="mailrun-bench-") as tmpname:
        tmp = Path(tmpname)
        try:
            sink.start()
            header += f"\nserver: smtp-sink on {HOST}:{sink.port} (its own process)"
            scenario_file = tmp / "bench_send.yaml"
            scenario_file.write_text(
                SCENARIO.format(host=HOST, port=sink.port, user=USER, rcpt=RCPT, env=PASSWORD_ENV)
            )
            from runner.load.api import load_scenario

            scenario = load_scenario(scenario_file, use_cache=False)
            steps = [
                ("engine", lambda: bench_engine(report, mode, scenario, env, sink.port, password)),
                ("postfix", lambda: bench_engine_postfix(report, mode, tmp)),
                (
                    "process",
                    lambda: bench_process(report, mode, tmp, scenario_file, sink.port, password, redact),
                ),
                ("telnet", lambda: bench_telnet(report, mode, scenario, env)),
                ("suite", lambda: bench_suite(report, mode, scenario, env)),
            ]
            for name, fn in steps:
                if name not in only:
                    continue
                try:
                    fn()
                except BenchError as exc:
                    report.errors.append(f"{name}: {redact(str(exc))}")
                    status = 1
        except BenchError as exc:
            report.errors.append(redact(str(exc)))
            status = 2
        except KeyboardInterrupt:
            report.errors.append("interrupted")
            status = 130
        finally:
            sink.stop()
    data = as_json(report, machine)
    if args.json == "-":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(report, header))
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
