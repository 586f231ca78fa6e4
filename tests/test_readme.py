"""The README cannot lie: every command it shows in a ```sh block is run here, and the scenario
in its walk-through is a valid scenario."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def sh_commands() -> list[str]:
    return [line.strip() for b in blocks("sh") for line in b.splitlines() if line.strip()]


MAILRUN_COMMANDS = [c for c in sh_commands() if c.startswith("mailrun ")]
INSTALL_COMMANDS = [c for c in sh_commands() if c.startswith("apt-get ")]


def test_readme_shows_the_two_commands_and_ci_runs_the_test_one():
    commands = sh_commands()
    assert "scripts/test" in commands
    assert len(INSTALL_COMMANDS) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*(exec\s+)?(bash\s+)?\.?/?scripts/test\b", ci, flags=re.M), ci
    # every sh command is one this file knows how to run
    assert set(commands) == {"scripts/test", *INSTALL_COMMANDS, *MAILRUN_COMMANDS}


@pytest.mark.parametrize("command", MAILRUN_COMMANDS)
def test_readme_mailrun_command_runs(command):
    args = shlex.split(command)[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout


def test_readme_walkthrough_scenario_is_valid(tmp_path):
    from runner.load.api import validate_paths

    yamls = [b for b in blocks("yaml") if "steps:" in b]
    assert yamls, "the walk-through scenario is missing"
    for i, text in enumerate(yamls):
        f = tmp_path / "scenarios" / f"readme_{i}.yaml"
        f.parent.mkdir(exist_ok=True)
        f.write_text(text)
        report = validate_paths([str(f)], env={"MAIL_USER": "u", "MAIL_PASSWORD": "p"}, strict=True)
        assert report.errors == [] and report.warnings == [], report


def test_readme_walkthrough_passes_against_the_sandbox(tmp_path):
    """The walk-through scenario itself plays against the sandbox (host/port redirected)."""
    text = next(b for b in blocks("yaml") if "steps:" in b)
    f = tmp_path / "walkthrough.yaml"
    f.write_text(text)
    env = {**os.environ, "NO_COLOR": "1", "MAIL_USER": "alice@mailrun.test", "MAIL_PASSWORD": "wonderland"}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "--sandbox", str(f)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wonderland" not in proc.stdout + proc.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("apt-get"), reason="the install command needs root and apt"
)
def test_readme_install_command_runs_on_a_copy(tmp_path):
    """The first command, exactly as written, in a copy of the checkout (its own .venv)."""
    if not os.environ.get("CI") and not os.environ.get("MAILRUN_TEST_INSTALL"):
        pytest.skip("runs in CI (CI=true) or with MAILRUN_TEST_INSTALL=1: it installs from the package index")
    copy = tmp_path / "mailrun"
    shutil.copytree(
        ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build")
    )
    (command,) = INSTALL_COMMANDS
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1", "DEBIAN_FRONTEND": "noninteractive"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS" in proc.stdout
