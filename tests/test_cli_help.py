"""A command line that explains itself: `mailrun --help` lists every subcommand and exit status,
`mailrun help [COMMAND]` is --help, `schema --help` is help; the shell completion scripts and
the man page are generated from the same argparse parsers, and really complete in bash and
render in man."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli.commands import COMMANDS
from runner.errors import EXIT_STATUS

REPO = Path(__file__).resolve().parent.parent


def mailrun(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "100", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_command_and_every_exit_status():
    r = mailrun("--help")
    assert r.returncode == 0, r.stderr
    commands = r.stdout.split("commands:")[1]
    for name, (*_, summary) in COMMANDS.items():
        assert f"  {name}  " in commands or f"  {name} " in commands, name
        assert summary in commands
    exits = r.stdout.split("exit status:")[1]
    for code, meaning in EXIT_STATUS.items():
        assert f"{int(code):>3}  {meaning}" in exits
    assert {129, 130, 143} <= {int(c) for c in EXIT_STATUS}


def test_help_command_is_the_help_of_mailrun_and_of_each_command():
    assert mailrun("help").stdout == mailrun("--help").stdout
    for cmd in ("validate", "schema", "sandbox", "completion", "man"):
        r = mailrun("help", cmd)
        assert r.returncode == 0, (cmd, r.stderr)
        assert r.stdout == mailrun(cmd, "--help").stdout, cmd
        assert r.stdout.startswith(f"usage: mailrun {cmd}"), r.stdout[:80]
    r = mailrun("help", "nosuch")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "file not found" not in r.stderr


def test_schema_help_is_help_not_the_schema():
    r = mailrun("schema", "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: mailrun schema") and "$schema" not in r.stdout
    assert mailrun("schema").stdout.lstrip().startswith("{")
    assert mailrun("schema", "extra").returncode == 2


# --------------------------------------------------------------------------- completion


def _bash_complete(script: Path, words: list[str], cwd: Path) -> list[str]:
    """What bash's programmable completion offers for `words` (the last one being completed),
    with the generated script sourced: the function `complete` registered for mailrun runs."""
    line = " ".join(words)
    prog = f"""
source {script}
COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
fn=$(complete -p mailrun | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')
$fn mailrun "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "--norc", "-c", prog], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completion_really_completes(tmp_path):
    script = tmp_path / "mailrun.bash"
    r = mailrun("completion", "bash")
    assert r.returncode == 0, r.stderr
    script.write_text(r.stdout)
    (tmp_path / "probe.yaml").write_text("name: x\n")
    (tmp_path / "providers").mkdir()
    assert _bash_complete(script, ["mailrun", "val"], tmp_path) == ["validate"]
    assert _bash_complete(script, ["mailrun", "--fail-f"], tmp_path) == ["--fail-fast"]
    assert _bash_complete(script, ["mailrun", "x.yaml", "--tls", ""], tmp_path) == [
        "none",
        "implicit",
        "starttls",
    ]
    assert _bash_complete(script, ["mailrun", "--transport", "t"], tmp_path) == ["telnet"]
    assert _bash_complete(script, ["mailrun", "validate", "--st"], tmp_path) == ["--strict"]
    assert "--strict" not in _bash_complete(script, ["mailrun", "--st"], tmp_path)  # run has none
    assert _bash_complete(script, ["mailrun", "completion", ""], tmp_path) == ["bash", "zsh", "fish"]
    assert sorted(_bash_complete(script, ["mailrun", "pro"], tmp_path)) == ["probe.yaml", "providers"]
    assert _bash_complete(script, ["mailrun", "--matrix", "prov"], tmp_path) == ["providers"]
    assert _bash_complete(script, ["mailrun", "sandbox", "--acc"], tmp_path) == ["--accept-any-login"]
    assert set(_bash_complete(script, ["mailrun", "help", ""], tmp_path)) == set(COMMANDS)


def test_completion_scripts_name_every_option_of_every_command():
    """One source: every option of every parser is in each shell's script."""
    from runner.cli.main import build_parser

    scripts = {shell: mailrun("completion", shell).stdout for shell in ("bash", "zsh", "fish")}
    for name in COMMANDS:
        for action in build_parser(name)._actions:
            for flag in action.option_strings:
                assert flag in scripts["bash"], (name, flag)
                assert flag in scripts["zsh"], (name, flag)
                fish_flag = f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
                assert fish_flag in scripts["fish"], (name, flag)
    assert mailrun("completion", "tcsh").returncode == 2


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(shell, tmp_path):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed")
    script = tmp_path / f"mailrun.{shell}"
    script.write_text(mailrun("completion", shell).stdout)
    r = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- man page


def test_man_page_is_generated_from_the_parsers_and_renders(tmp_path):
    r = mailrun("man")
    assert r.returncode == 0, r.stderr
    roff = r.stdout
    assert roff.startswith(".TH MAILRUN 1")
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT"):
        assert f".SH {section}" in roff
    page = tmp_path / "mailrun.1"
    page.write_text(roff)
    if shutil.which("man"):
        cmd = ["man", "-l", str(page)]
    elif shutil.which("groff"):
        cmd = ["groff", "-man", "-Tutf8", str(page)]
    else:
        pytest.skip("neither man nor groff installed")
    shown = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"},
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.replace("\u2010", "-").replace("\u2212", "-")
    text = "".join(
        c for i, c in enumerate(text) if not (c == "\b" or (i + 1 < len(text) and text[i + 1] == "\b"))
    )
    for flag in ("--fail-fast", "--keep-going", "--quiet", "--list", "--strict", "--accept-any-login"):
        assert flag in text, flag
    for code in EXIT_STATUS:
        assert f"{int(code)}" in text
    assert "NO_COLOR" in text and "FORCE_COLOR" in text
    assert "warning" not in shown.stderr.lower(), shown.stderr


def test_fish_completion_really_completes(tmp_path):
    if shutil.which("fish") is None:
        pytest.skip("fish not installed")
    script = tmp_path / "mailrun.fish"
    script.write_text(mailrun("completion", "fish").stdout)
    (tmp_path / "probe.yaml").write_text("name: x\n")

    def complete(line: str) -> list[str]:
        r = subprocess.run(
            ["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        return sorted(w.split("\t")[0] for w in r.stdout.splitlines())

    assert complete("mailrun --tls ") == ["implicit", "none", "starttls"]
    assert complete("mailrun val") == ["validate"]
    assert complete("mailrun validate --st") == ["--strict"]
    assert complete("mailrun completion ") == ["bash", "fish", "zsh"]
    assert complete("mailrun pro") == ["probe.yaml"]


def test_zsh_completion_really_completes(tmp_path):
    """zsh's own completion system (compinit, in an interactive zsh driven through zpty) with
    the generated _mailrun in $fpath: TAB completes options, their choices and commands."""
    if shutil.which("zsh") is None:
        pytest.skip("zsh not installed")
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="zc", dir="/tmp"))  # (a long path wraps zle's line)
    (short / "_mailrun").write_text(mailrun("completion", "zsh").stdout)

    def complete(typed: str) -> str:
        drive = tmp_path / "drive.zsh"
        drive.write_text(
            "zmodload zsh/zpty\n"
            "zpty z zsh -f -i\n"
            f'zpty -w z \'PS1="> "; fpath=({short} $fpath); autoload -Uz compinit; compinit -u -D; '
            "function mailrun { : }'\n"
            "sleep 1\n"
            f"zpty -w z $'{typed}\\t'\n"
            "sleep 1\n"
            "zpty -w z $'\\C-a\\C-k echo END\\n'\n"
            "sleep 0.5\n"
            'out=""; while zpty -r -t z line; do out+="$line"; done\n'
            'print -r -- "$out"\n'
            "zpty -d z\n"
        )
        r = subprocess.run(
            ["zsh", "-f", str(drive)], capture_output=True, text=True, timeout=30, cwd=tmp_path
        )
        return r.stdout.replace("\x08", "")

    try:
        assert "mailrun --tls" in complete("mailrun --tl")
        assert "mailrun validate --strict" in complete("mailrun validate --st")
        assert "mailrun completion bash" in complete("mailrun completion ba")
        assert "mailrun --transport telnet" in complete("mailrun --transport te")
    finally:
        shutil.rmtree(short, ignore_errors=True)
