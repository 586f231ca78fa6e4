"""Section 1 of bench/benchmark.py: the engine vs a minimal socket client, on smtp-sink and on
real Postfix.
"""

from __future__ import annotations

import base64
import socket
import sys
import time
from pathlib import Path

from common import (
    BODY,
    HOST,
    RCPT,
    SCENARIO,
    STEPS,
    USER,
    BenchError,
    EngineProbe,
    Mode,
    Report,
    interleave,
    median,
    ms,
    timed,
)


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
        report.add("postfix.wall_ratio", sec, "engine / minimal, wall (no target)", None, "x", note=note)
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
