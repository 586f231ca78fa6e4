"""Runs the real command (`python -m runner -v`) on a scenario written from a template, with a
transcript, a JSON and a JUnit report, and returns every output: for the tests that look for a
secret or a forged line in all of them (test_secret_leaks, test_output_escaping,
test_starttls_injection).

    out = run_reported(tmp_path, SCENARIO, "--var", "x=1", port=srv.port)
    out["rc"], out["stdout"], out["stderr"], out["transcript"], out["json"], out["junit"]

The scenario is dedented and filled with str.format(**subs) (so YAML braces are doubled).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def run_reported(tmp_path: Path, scenario: str, *args: str, **subs) -> dict:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(scenario).format(**subs))
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "runner", "-v", str(path), "--transcript", str(out / "tr")]
        + ["--report", f"json={out / 'r.json'}", "--report", f"junit={out / 'r.xml'}", *args],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    (transcript,) = (out / "tr").glob("*.log")
    return {
        "rc": r.returncode,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "transcript": transcript.read_text(),
        "json": (out / "r.json").read_text(),
        "junit": (out / "r.xml").read_text(),
    }
