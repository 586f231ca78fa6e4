"""`--shard I/N` (runner/shard.py): N shards started with the same arguments play every run
(scenario file x matrix provider) exactly once between them. Played for real: `mailrun
--sandbox --matrix providers/ scenarios/matrix/ --shard I/N` for every I of N = 1..5, with the
JSON report of each shard read back; the pytest plugin's --mailrun-shard the same way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import runner.load.build  # noqa: F401 (before pytester's inline runs: see tests/test_pytest_plugin.py)
from runner.errors import UsageError
from runner.shard import Shard, parse_shard, run_key, shard_of
from runner.suite import load_matrix, plan

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
T = 90  # seconds: deadline of every subprocess here


def mailrun(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=T,
    )


def every_run() -> list[tuple[str, str]]:
    """(file, provider) of every run of `--matrix providers/ scenarios/matrix/`."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "scenarios/matrix").glob("*.yaml"))
    providers = sorted(p.stem for p in (REPO / "providers").glob("*.yaml"))
    assert len(files) >= 2 and len(providers) >= 3  # a real matrix
    return [(f, p) for f in files for p in providers]


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5])
def test_the_shards_of_a_matrix_suite_play_every_run_exactly_once(total, tmp_path):
    played: list[tuple[str, str]] = []
    for index in range(1, total + 1):
        report = tmp_path / f"shard{index}.json"
        proc = mailrun(
            "--sandbox",
            "--matrix",
            "providers/",
            "scenarios/matrix/",
            "--shard",
            f"{index}/{total}",
            "--report",
            f"json={report}",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        scenarios = json.loads(report.read_text())["scenarios"]
        assert all(s["status"] == "passed" for s in scenarios)
        played += [(s["file"], s["provider"]) for s in scenarios]
        if not scenarios:
            assert f"shard {index}/{total} holds none of the chosen scenario runs" in proc.stderr
    assert Counter(played) == Counter(every_run())  # each once, none missing, none twice


def test_an_empty_shard_passes_and_writes_an_empty_report(tmp_path):
    holder = shard_of("scenarios/sandbox_send.yaml", None, 5)
    other = holder % 5 + 1
    report = tmp_path / "empty.json"
    proc = mailrun("scenarios/sandbox_send.yaml", "--shard", f"{other}/5", "--report", f"json={report}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"shard {other}/5 holds none of the chosen scenario runs" in proc.stderr
    assert json.loads(report.read_text())["scenarios"] == []


def test_a_shard_is_the_same_from_another_checkout(tmp_path, monkeypatch):
    # the key is the path below the current directory, so two CI checkouts agree
    for name in ("a", "b"):
        shutil.copytree(REPO / "scenarios", tmp_path / name / "scenarios")
    keys = {}
    for name in ("a", "b"):
        monkeypatch.chdir(tmp_path / name)
        files = sorted(Path("scenarios").rglob("*.yaml"))
        keys[name] = [(str(f), shard_of(f, "gmx", 7), shard_of(f.resolve(), "gmx", 7)) for f in files]
    assert keys["a"] == keys["b"]
    assert run_key(Path("scenarios/x.yaml").resolve(), None) == "scenarios/x.yaml\0"
    assert run_key("scenarios/x.yaml", "gmx") == "scenarios/x.yaml\0gmx"


def test_a_shard_holds_a_run_whatever_else_is_in_the_suite(tmp_path, monkeypatch):
    from runner.load.api import load_scenario

    monkeypatch.chdir(REPO)
    scenarios = [load_scenario(p) for p in sorted(Path("scenarios/matrix").glob("*.yaml"))]
    matrix = load_matrix(["providers/"])
    whole = {
        (str(r.scenario.path), r.provider): i
        for i in (1, 2, 3)
        for r in plan(scenarios, matrix, Shard(i, 3).keeps)
    }
    fewer = {
        (str(r.scenario.path), r.provider): i
        for i in (1, 2, 3)
        for r in plan(scenarios[:1], matrix[:2], Shard(i, 3).keeps)
    }
    assert fewer and all(whole[k] == i for k, i in fewer.items())
    # the planned runs of a shard are numbered 0.. (the suite delivers them in that order)
    runs = plan(scenarios, matrix, Shard(2, 3).keeps)
    assert [r.index for r in runs] == list(range(len(runs)))


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", ""])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(UsageError, match="wants I/N with 1 <= I <= N"):
        parse_shard(text)


def test_a_bad_shard_on_the_command_line_exits_2_before_anything(tmp_path):
    proc = mailrun("--shard", "4/3", "scenarios/matrix/")
    assert proc.returncode == 2
    assert "--shard: wants I/N with 1 <= I <= N (e.g. 2/5), got '4/3'" in proc.stderr
    assert parse_shard(" 2/5 ") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"


def test_the_plugin_shards_scenario_items_and_leaves_other_tests_alone(pytester):
    for i in range(8):
        pytester.makefile(
            ".mailrun.yaml",
            **{f"s{i}": f"name: s{i}\nprotocol: smtp\nconnect: {{host: 127.0.0.1}}\nsteps:\n  - S: 220\n"},
        )
    pytester.makefile(".yaml", **{"providers/p1": "x: 1\n", "providers/p2": "x: 2\n"})
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    ids: list[str] = []
    for index in (1, 2, 3):
        result = pytester.runpytest(
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "--mailrun-matrix",
            "providers",
            "--mailrun-shard",
            f"{index}/3",
        )
        lines = [ln for ln in result.stdout.lines if "::" in ln]
        assert "test_plain.py::test_plain" in lines  # in every shard: not a scenario item
        ids += [ln for ln in lines if ln.endswith("]")]
    expected = [f"s{i}.mailrun.yaml::s{i}[{p}]" for i in range(8) for p in ("p1", "p2")]
    assert Counter(ids) == Counter(expected)
    bad = pytester.runpytest("-p", "no:cacheprovider", "--mailrun-shard", "9/3")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mailrun-shard wants I/N" in bad.stderr.str()
