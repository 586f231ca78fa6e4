"""Sections 3 and 4 of bench/benchmark.py: telnet vs socket through the engine, and suite
throughput.
"""

from __future__ import annotations

import os
import shutil
import time

from common import BenchError, EngineProbe, Mode, Report, interleave, median, ms


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
