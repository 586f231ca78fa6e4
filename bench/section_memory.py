"""Section 5 of bench/benchmark.py: the memory a big reply takes. A `python -m runner` child
plays a RETR (POP3) and a FETCH (IMAP) against a loopback server of its own here that sends a
body of tiny lines (4-byte lines for RETR, a literal of 3-byte lines for FETCH: the worst case
for anything that keeps a str per line); its peak RSS (ru_maxrss from os.wait4) is reported
as a ratio to the body size, against the goal of at most 2x the body plus 100 MiB.

(Linux carries a parent's RSS at the fork over into the child's ru_maxrss; the benchmark
process is far smaller than the child's peak here, so the figure is the child's. The fault
tests, run from a big pytest process, read the child's VmHWM instead.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from common import HOST, BenchError, Mode, Report

ROOT = Path(__file__).resolve().parent.parent
FIXED_MIB = 100  # the goal: peak <= 2 x body + FIXED_MIB


def _serve(listener: socket.socket, protocol: str, size: int) -> None:
    """One connection: the greeting, then the body for RETR / FETCH, then the rest."""
    conn, _ = listener.accept()
    conn.settimeout(120)
    with conn:
        f = conn.makefile("rb")
        if protocol == "pop3":
            conn.sendall(b"+OK bench\r\n")
            f.readline()  # RETR 1
            conn.sendall(b"+OK body follows\r\n")
            _stream(conn, b"abcd\r\n", size)
            conn.sendall(b".\r\n")
            f.readline()  # QUIT
            conn.sendall(b"+OK bye\r\n")
        else:
            conn.sendall(b"* OK bench\r\n")
            tag = f.readline().split(b" ", 1)[0]
            n = size // 5 * 5
            conn.sendall(b"* 1 FETCH (BODY[] {%d}\r\n" % n)
            _stream(conn, b"abc\r\n", n)
            conn.sendall(b")\r\n" + tag + b" OK done\r\n")
            tag = f.readline().split(b" ", 1)[0]  # LOGOUT
            conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")


def _stream(conn: socket.socket, unit: bytes, size: int) -> None:
    chunk = unit * ((1 << 20) // len(unit))
    left = size // len(unit)
    per = len(chunk) // len(unit)
    while left >= per:
        conn.sendall(chunk)
        left -= per
    conn.sendall(unit * left)


STEPS = {
    "pop3": "  - S: +OK\n  - C: RETR 1\n    S: +OK\n  - C: QUIT\n    S: +OK\n",
    "imap": "  - S: OK\n  - C: FETCH 1 BODY[]\n    S: OK\n  - C: LOGOUT\n    S: OK\n",
}


def peak_mib(tmp: Path, protocol: str, size: int) -> float:
    """The peak RSS in MiB of one `python -m runner FILE` receiving a `size`-byte body."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(120)
    port = listener.getsockname()[1]
    server = threading.Thread(target=_serve, args=(listener, protocol, size), daemon=True)
    server.start()
    scenario = tmp / f"memory_{protocol}.yaml"
    scenario.write_text(
        f"name: memory {protocol}\nprotocol: {protocol}\n"
        f"connect: {{host: {HOST}, port: {port}, timeout: 300}}\nsteps:\n{STEPS[protocol]}"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAILRUN_NO_CACHE="1")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", str(scenario)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # (not proc.wait(): it would reap it first)
    finally:
        listener.close()
        server.join(5)
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"the {protocol} memory run failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_maxrss / 1024


def bench_memory(report: Report, mode: Mode, tmp: Path) -> None:
    sec = "5. memory: peak RSS of a mailrun child receiving a big body of tiny lines"
    size = mode.memory_bytes
    body_mib = size / 2**20
    for protocol, what in (("pop3", "RETR"), ("imap", "FETCH")):
        peak = peak_mib(tmp, protocol, size)
        label = f"{what} of {size / 1e6:.0f} MB"
        report.add(f"memory.{protocol}_peak_mib", sec, f"{label}: peak RSS", round(peak, 1), " MiB")
        goal = "met" if peak <= 2 * body_mib + FIXED_MIB else "NOT met"
        report.add(
            f"memory.{protocol}_ratio",
            sec,
            f"{label}: peak RSS / body size",
            peak / body_mib,
            "x",
            note=f"goal: peak <= 2 x body + {FIXED_MIB} MiB, {goal}",
        )
