"""The `mailrun` command line as a user runs it (`python -m runner` in a subprocess): option
placement, variable precedence, `validate`, `schema`, the console output (-v, --show-crlf, colour
and NO_COLOR on a real pty), includes in the report, and secrets kept out of every output."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from string import Template

import pexpect
import pytest

from tests.support.servers import Server, record, scripted

REPO = Path(__file__).resolve().parent.parent
T = 30


def write(tmp_path: Path, text: str, name: str = "s.yaml", **subs) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Template(textwrap.dedent(text)).safe_substitute(**{k: str(v) for k, v in subs.items()}))
    return path


def mailrun(*args, env: dict | None = None, drop_env: tuple = ()) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in drop_env}
    full_env.update({"NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=T,
    )


# --------------------------------------------------------------------------- variables and options

VARS = """\
    name: variables
    protocol: smtp
    connect: {host: 127.0.0.1, port: $port, timeout: 5}
    vars:
      a: from-scenario
      b: from-scenario
      c: from-scenario
      d: from-scenario
      e: "{{ env.MAILRUN_T_E }}"
      f: "{{ env.MAILRUN_T_F }}"
    steps:
      - S: 220
      - C: "X a={{ a }} b={{ b }} c={{ c }} d={{ d }} e={{ e }} f={{ f }}"
    """


def test_variable_precedence_and_options_on_both_sides_of_the_file(tmp_path):
    f1 = write(tmp_path, "b: from-file1\nc: from-file1\nd: from-file1\n", name="v1.yaml")
    f2 = write(tmp_path, "c: from-file2\n", name="v2.yaml")
    envf = write(tmp_path, "MAILRUN_T_E=from-env-file\n", name=".env")
    with Server(record(b"220 rec\r\n")) as srv:
        path = write(tmp_path, VARS, port=srv.port)
        r = mailrun(
            "--vars-file", f1, "--var", "d=from-var", path, "--vars-file", f2,
            "--env-file", envf, "--timeout", "5",
            env={"MAILRUN_T_E": "from-process", "MAILRUN_T_F": "from-process"},
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        got = srv.wait_connection().wait_received(b"\r\n", 5)
    assert got == b"X a=from-scenario b=from-file1 c=from-file2 d=from-var e=from-env-file f=from-process\r\n"


def test_run_subcommand_several_files_options_between_them(tmp_path):
    handler = scripted(b"220 hi\r\n", {b"NOOP": b"250 2.0.0 ok\r\n", b"QUIT": b"221 bye\r\n"})
    with Server(handler) as srv:
        text = """\
            name: $title
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port}
            steps:
              - S: 220
              - C: NOOP
                S: 250 2.0.0
            finally:
              - C: QUIT
                S: 221
            """
        one = write(tmp_path, text, name="one.yaml", port=srv.port, title="first")
        two = write(tmp_path, text, name="two.yaml", port=srv.port, title="second")
        r = mailrun("run", one, "-j", "1", two, "--timeout", "5")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.index("PASS first") < r.stdout.index("PASS second")
        # an override given after the files applies to both: --port to a closed port
        srv_port = srv.port
    r = mailrun(one, two, "--port", str(srv_port))
    assert r.returncode == 3
    assert r.stdout.count("refused") >= 2


# --------------------------------------------------------------------------- validate and schema


def test_validate_exit_codes_and_messages(tmp_path):
    good = write(
        tmp_path,
        """\
        name: good
        protocol: smtp
        connect: {host: 127.0.0.1, port: 25}
        vars: {user: "{{ env.MAILRUN_T_USER }}"}
        steps:
          - S: 220
          - C: "VRFY {{ user }}"
            S: 250
        """,
        name="ok/good.yaml",
    )
    write(
        tmp_path, "steps:\n  - C: NOOP\n    S: 250\n", name="ok/lib/frag.yaml"
    )  # a fragment: not a scenario
    r = mailrun("validate", good.parent, env={"MAILRUN_T_USER": "u"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stderr
    # unset env var: a warning (exit 0), an error with --strict (exit 2)
    r = mailrun("validate", good, drop_env=("MAILRUN_T_USER",))
    assert r.returncode == 0 and "MAILRUN_T_USER" in r.stdout
    r = mailrun("validate", "--strict", good, drop_env=("MAILRUN_T_USER",))
    assert r.returncode == 2 and "MAILRUN_T_USER" in r.stdout

    bad = write(
        tmp_path,
        """\
        name: bad
        protocol: smtp
        connect: {host: 127.0.0.1, port: 25}
        steps:
          - S: 25
          - C: NOOP
            S: 250
            bogus: 1
        """,
        name="bad.yaml",
    )
    r = mailrun("validate", bad, good, env={"MAILRUN_T_USER": "u"})
    assert r.returncode == 2
    lines = [x for x in r.stdout.splitlines() if x.startswith(str(bad))]
    assert len(lines) == 2, r.stdout  # every error, one line each
    assert any(f"{bad}:5:" in x and "steps[0].S" in x for x in lines)
    assert any(f"{bad}:8:" in x and "bogus" in x for x in lines)
    assert "Traceback" not in r.stderr
    assert mailrun("validate", tmp_path / "missing.yaml").returncode == 2
    assert mailrun("validate").returncode == 2


def test_schema_prints_valid_json():
    r = mailrun("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert json.loads((REPO / "schemas" / "scenario.schema.json").read_text()) == schema


# --------------------------------------------------------------------------- console


def test_verbose_shows_the_whole_conversation_and_show_crlf(testbed, tmp_path):
    path = write(
        tmp_path,
        """\
        name: verbose
        protocol: smtp
        connect: {host: $host, port: $port}
        steps:
          - S: 220
          - C: EHLO client.example
            S: 250
        finally:
          - C: QUIT
            S: 221
        """,
        host=testbed.host,
        port=testbed.ports["smtp"],
    )
    quiet = mailrun(path)
    assert quiet.returncode == 0
    assert "250-PIPELINING" not in quiet.stdout and "(+" in quiet.stdout  # first line only
    r = mailrun("-v", path)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("C: EHLO client.example", "S: 250-PIPELINING", "S: 250-ENHANCEDSTATUSCODES", "C: QUIT",
                 "S: 221 2.0.0 Bye"):  # fmt: skip
        assert line in r.stdout, line
    assert "\\r\\n" not in r.stdout
    r = mailrun(path, "-v", "--show-crlf")
    assert "C: EHLO client.example\\r\\n" in r.stdout
    assert "S: 250-PIPELINING\\r\\n" in r.stdout
    assert "\x1b[" not in r.stdout  # a pipe: no colour


def _on_pty(args, env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(env_extra)
    child = pexpect.spawn(
        sys.executable, ["-m", "runner", *map(str, args)], cwd=str(REPO), env=env, timeout=T, encoding="utf-8"
    )
    out = child.read()
    child.close()
    assert child.exitstatus == 1, out
    return out


def test_colour_on_a_tty_and_none_with_no_color(tmp_path):
    with Server(scripted(b"220 hi\r\n", {})) as srv:
        path = write(
            tmp_path,
            """\
            name: colours
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port}
            steps:
              - S: 220
              - C: NOOP
                S: 550
            """,
            port=srv.port,
        )
        coloured = _on_pty([path], {})
        assert "\x1b[" in coloured and "expected: 550" in coloured
        plain = _on_pty([path], {"NO_COLOR": "1"})
        assert "\x1b[" not in plain and "expected: 550" in plain


def test_included_step_failure_names_fragment_line_and_including_step(testbed, tmp_path):
    frag = write(
        tmp_path,
        """\
        steps:
          - C: EHLO client.example
            S: 250
          - C: NOOP
            S: 354
        """,
        name="lib/greet.yaml",
    )
    path = write(
        tmp_path,
        """\
        name: included failure
        protocol: smtp
        connect: {host: $host, port: $port}
        steps:
          - S: 220
          - include: lib/greet.yaml
        finally:
          - C: QUIT
            S: 221
        """,
        host=testbed.host,
        port=testbed.ports["smtp"],
    )
    r = mailrun(path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{frag}:4" in r.stdout  # the fragment's file:line
    assert f"{path}:6" in r.stdout  # the including step
    assert "expected: 354" in r.stdout and "received: 250" in r.stdout


# --------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_any_output(testbed, tmp_path):
    user, password = "alice@example.test", "wonderland"
    path = write(
        tmp_path,
        """\
        name: secrets
        protocol: smtp
        connect: {host: $host, port: $port}
        vars:
          user: $user
          password: "{{ env.MAILRUN_T_PASSWORD }}"
        secrets: [password]
        steps:
          - S: 220
          - C: EHLO client.example
            S: 250
          - C: AUTH LOGIN
            S: 334
          - C: "{{ user | b64 }}"
            S: 334
          - C: "{{ password | b64 }}"
            S: 235
          - C: RSET
            S: 250
          - C: "AUTH PLAIN {{ auth_plain(user, password) }}"
            S: 503
          - C: "NOOP {{ password }}"
            S: 250
          - C: "VRFY {{ password }}"
            S: 235
        finally:
          - C: QUIT
            S: 221
        """,
        host=testbed.host,
        port=testbed.ports["smtp"],
        user=user,
    )
    reports = tmp_path / "out"
    reports.mkdir()
    r = mailrun(
        path, "-v", "--show-crlf", "--report", f"json={reports / 'r.json'}",
        "--report", f"junit={reports / 'r.xml'}", "--transcript", reports / "transcripts",
        env={"MAILRUN_T_PASSWORD": password},
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # VRFY answers 252, not 235: a failure that shows the reply
    outputs = {"stdout": r.stdout, "stderr": r.stderr}
    files = sorted(p for p in reports.rglob("*") if p.is_file())
    assert len(files) >= 3, files
    for p in files:
        outputs[str(p)] = p.read_text(errors="backslashreplace")
    forbidden = {
        "password": password,
        "b64(password)": base64.b64encode(password.encode()).decode(),
        "auth_plain": base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
    }
    for where, text in outputs.items():
        for what, value in forbidden.items():
            assert value not in text, f"{what} appears in {where}"
    assert "****" in r.stdout
    assert "235 2.7.0" in r.stdout  # the conversation itself is shown
    assert "<****>" in r.stdout  # Postfix echoes the VRFY argument: masked too
    json.loads((reports / "r.json").read_text())


def test_unique_run_id_per_invocation(tmp_path):
    with Server(record(b"220 rec\r\n")) as srv:
        path = write(
            tmp_path,
            """\
            name: run id
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port}
            steps:
              - S: 220
              - C: "X {{ run_id }}"
            """,
            port=srv.port,
        )
        assert mailrun(path).returncode == 0
        assert mailrun(path).returncode == 0
        first = srv.wait_connection(0).wait_received(b"\r\n", 5)
        second = srv.wait_connection(1).wait_received(b"\r\n", 5)
    assert first != second and first.startswith(b"X ") and len(first) > 8
    assert uuid  # the ids are opaque; only their uniqueness is promised


@pytest.mark.parametrize("option", ["--host", "--port", "--timeout", "--var"])
def test_option_missing_its_value_is_exit_2(tmp_path, option):
    path = write(tmp_path, "name: x\n", name="x.yaml")
    r = mailrun(path, option)
    assert r.returncode == 2
    assert "expected one argument" in r.stderr and "Traceback" not in r.stderr


def test_console_script_and_python_m_runner_name_the_same_main():
    """pyproject's `mailrun` entry point and `python -m runner` both call runner.cli.main.main."""
    import importlib
    import tomllib

    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["mailrun"]
    module, _, name = target.partition(":")
    from runner.cli.main import main

    assert getattr(importlib.import_module(module), name) is main
    assert "from runner.cli.main import main" in (REPO / "runner" / "__main__.py").read_text()
    res = mailrun("--version")
    assert res.returncode == 0 and res.stdout.startswith("mailrun ")
