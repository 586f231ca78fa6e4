"""Section 2 of bench/benchmark.py: whole processes (mailrun warm and cold, python -c pass,
swaks) and the run path's import costs.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    HOST,
    PASSWORD_ENV,
    RCPT,
    USER,
    BenchError,
    Mode,
    Redact,
    Report,
    at_most,
    interleave,
    median,
    ms,
)


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
