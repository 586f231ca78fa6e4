"""The README cannot lie: every command it shows in a ```sh block is run here, and the scenario
in its walk-through is a valid scenario."""

from __future__ import annotations

import os
import re
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


MAILRUN = ".venv/bin/mailrun "  # what the install makes; every README command names it
MAILRUN_COMMANDS = [c for c in sh_commands() if c.startswith(MAILRUN)]
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
    """As written, by a shell in the checkout, with no virtualenv activated (.venv/bin/mailrun
    is the one the install made; scripts/test makes the same one)."""
    if not (ROOT / MAILRUN.strip()).exists():
        pytest.skip(f"{MAILRUN.strip()} is not installed in this checkout")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PATH": path, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout


def _commands_shown(text: str) -> list[str]:
    """Every command a reader may copy: the lines of code blocks (indented ones too) and the
    inline code spans."""
    shown = [
        line.strip()
        for b in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
        for line in b.splitlines()
    ]
    shown += [line.strip() for line in text.splitlines() if line.startswith("    ")]
    shown += re.findall(r"`([^`\n]+)`", text)
    return [c for c in shown if c]


@pytest.mark.parametrize("doc", ["README.md", "providers/README.md", "scenarios/README.md"])
def test_no_command_uses_a_bare_mailrun_that_exists_only_in_an_activated_venv(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    bare = [c for c in _commands_shown(text) if re.match(r"^(\w+=\S+ )*mailrun ", c)]
    assert bare == [], bare


def test_readme_exit_status_table_is_runner_errors_table():
    from runner.errors import EXIT_STATUS

    section = README.split("### Exit status")[1].split("\n#")[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.*?) \|$", section, flags=re.M))
    assert sorted(int(k) for k in rows) == sorted(int(c) for c in EXIT_STATUS)


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
