"""What the command line checks and says before and around a run, with the real `mailrun` in a
subprocess against real servers on loopback: output paths tried before connecting, --var typos,
missing files, --keep-going, -q, --list, `validate`'s counts, did-you-mean for a protocol,
--sandbox with a matrix that supplies the password, the --ca hint, FORCE_COLOR."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.support.servers import PKI, Server, record, scripted

REPO = Path(__file__).resolve().parent.parent


def mailrun(*args, env=None, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def smtp(path: Path, name: str, port: int, *, tags=(), extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            protocol: smtp
            tags: [{", ".join(tags)}]
            connect: {{host: 127.0.0.1, port: {port}, timeout: 5}}
            vars: {{who: postmaster}}
            steps:
              - S: 220
              - C: "HELO {{{{ who }}}}"
                S: 250
            """
        )
        + extra
    )
    return path


def greeter():
    return scripted(b"220 hi\r\n", {b"HELO": b"250 ok\r\n"})


# --------------------------------------------------------------------------- before connecting


def test_unwritable_report_paths_are_found_by_trying_before_anything_is_sent(tmp_path):
    with Server(record()) as srv:
        path = smtp(tmp_path / "s.yaml", "s", srv.port)
        # (as root, os.access says yes to everything: only trying tells)
        for target in ("/proc/mailrun-report.xml", "/sys/mailrun-report.xml"):
            r = mailrun(path, "--report", f"junit={target}")
            assert r.returncode == 2, r.stdout + r.stderr
            assert f"--report junit={target}" in r.stderr and "Traceback" not in r.stderr
        r = mailrun(path, "--transcript", "/proc/mailrun-transcripts")
        assert r.returncode == 2 and "--transcript" in r.stderr
        time.sleep(0.2)
        assert srv.conns == []  # nothing was sent


def test_a_fifo_report_is_written_in_place_not_replaced(tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with Server(greeter()) as srv:
        r = mailrun(smtp(tmp_path / "s.yaml", "s", srv.port), "--report", f"json={fifo}")
    reader.join(10)
    assert r.returncode == 0, r.stdout + r.stderr
    assert fifo.is_fifo()  # a rename would have put a regular file in its place
    assert json.loads(got[0])["summary"]["passed"] == 1


def test_a_var_that_no_scenario_uses_is_an_error_with_did_you_mean(tmp_path):
    with Server(record()) as srv:
        path = smtp(tmp_path / "s.yaml", "s", srv.port)
        r = mailrun(path, "--var", "whoo=x")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "--var whoo: no scenario uses a variable of that name (did you mean 'who'?)" in r.stderr
        time.sleep(0.2)
        assert srv.conns == []
    with Server(greeter()) as srv:  # a used one is fine
        r = mailrun(smtp(tmp_path / "s.yaml", "s", srv.port), "--var", "who=root")
        assert r.returncode == 0, r.stdout + r.stderr
        assert srv.wait_connection().wait_received(b"HELO root\r\n")


def test_a_var_overrides_a_fragment_default_but_not_an_include_argument(tmp_path):
    """A fragment's own vars are defaults, which --var overrides as it overrides the scenario's;
    a name only an include's vars bind cannot be reached, so such a --var is an error."""
    (tmp_path / "hello.yaml").write_text(
        'vars: {who: fragment-default}\nsteps:\n  - C: "HELO {{ who }}"\n    S: 250\n'
    )
    main = tmp_path / "s.yaml"

    def scenario(port: int, include_vars: str) -> Path:
        main.write_text(
            f"name: s\nprotocol: smtp\nconnect: {{host: 127.0.0.1, port: {port}, timeout: 5}}\n"
            f"steps:\n  - S: 220\n  - include: hello.yaml{include_vars}\n"
        )
        return main

    argument = "\n    vars: {who: argument}"
    for include_vars, var, sent in (
        ("", [], b"HELO fragment-default\r\n"),
        ("", ["--var", "who=from-cli"], b"HELO from-cli\r\n"),
        (argument, [], b"HELO argument\r\n"),
    ):
        with Server(greeter()) as srv:
            r = mailrun(scenario(srv.port, include_vars), *var)
            assert r.returncode == 0, r.stdout + r.stderr
            assert srv.wait_connection().wait_received(sent)
    with Server(record()) as srv:
        r = mailrun(scenario(srv.port, argument), "--var", "who=from-cli")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "--var who: the scenario uses it only inside includes whose `vars` set it" in r.stderr
        time.sleep(0.2)
        assert srv.conns == []


def test_a_provider_overrides_a_fragment_default_only_in_its_own_run(tmp_path):
    """--matrix: one provider file gives the name a fragment defaults, the other does not. The
    file is loaded once for both runs, so which value wins is the run's business: the first
    provider's run sends its value, the second's still has the fragment's default."""
    (tmp_path / "hello.yaml").write_text(
        'vars: {who: fragment-default}\nsteps:\n  - C: "HELO {{ who }}"\n    S: 250\n'
    )
    prov = tmp_path / "providers"
    prov.mkdir()
    (prov / "a.yaml").write_text("who: from-provider\n")
    (prov / "b.yaml").write_text("other: unrelated\n")
    with Server(greeter()) as srv:
        main = tmp_path / "s.yaml"
        main.write_text(
            f"name: s\nprotocol: smtp\nconnect: {{host: 127.0.0.1, port: {srv.port}, timeout: 5}}\n"
            "steps:\n  - S: 220\n  - include: hello.yaml\n"
        )
        r = mailrun(main, "--matrix", prov, "-j", "1")
        assert r.returncode == 0, r.stdout + r.stderr
        assert srv.wait_connection(0).wait_received(b"HELO from-provider\r\n")
        assert srv.wait_connection(1).wait_received(b"HELO fragment-default\r\n")


def test_an_environment_variable_only_an_overridden_fragment_default_names_is_not_needed(tmp_path):
    """A fragment's default `{{ env.X }}` that --var replaces needs no X: the run goes ahead
    (as for a scenario var --var replaces); without the --var it stops, naming X."""
    (tmp_path / "hello.yaml").write_text(
        'vars: {who: "{{ env.MAILRUN_TEST_UNSET_WHO }}"}\nsteps:\n  - C: "HELO {{ who }}"\n    S: 250\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "MAILRUN_TEST_UNSET_WHO"}

    def run(*args) -> subprocess.CompletedProcess:  # (mailrun() adds to os.environ: this takes away)
        return subprocess.run(
            [sys.executable, "-m", "runner", *map(str, args)],
            cwd=REPO,
            env={**env, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    with Server(greeter()) as srv:
        main = tmp_path / "s.yaml"
        main.write_text(
            f"name: s\nprotocol: smtp\nconnect: {{host: 127.0.0.1, port: {srv.port}, timeout: 5}}\n"
            "steps:\n  - S: 220\n  - include: hello.yaml\n"
        )
        r = run(main, "--var", "who=from-cli")
        assert r.returncode == 0, r.stdout + r.stderr
        assert srv.wait_connection().wait_received(b"HELO from-cli\r\n")
        r = run(main)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "vars.who needs environment variable MAILRUN_TEST_UNSET_WHO, which is not set" in r.stderr


def test_a_missing_file_is_named_as_missing_not_as_invalid(tmp_path):
    r = mailrun(tmp_path / "nope.yaml")
    assert r.returncode == 2
    assert "nope.yaml: file not found" in r.stderr
    assert "invalid" not in r.stderr
    v = mailrun("validate", tmp_path / "nope.yaml")
    assert v.returncode == 2
    assert "nope.yaml: file not found" in v.stdout
    assert "1 error(s) in 0 file(s); 1 path(s) not found" in v.stderr


def test_one_invalid_file_is_named_and_keep_going_runs_the_valid_ones(tmp_path):
    with Server(greeter()) as srv:
        smtp(tmp_path / "d" / "a_good.yaml", "good", srv.port)
        bad = tmp_path / "d" / "b_bad.yaml"
        bad.write_text(
            "name: bad\nprotocol: smtp\nconnect: {host: 127.0.0.1}\nsteps:\n  - C: NOOP\n    bogus: 1\n"
        )
        r = mailrun(tmp_path / "d")
        assert r.returncode == 2
        assert (
            f"1 invalid scenario file ({bad}); nothing was sent; --keep-going runs the valid ones" in r.stderr
        )
        time.sleep(0.2)
        assert srv.conns == []
        rj = tmp_path / "r.json"
        r = mailrun(tmp_path / "d", "--keep-going", "--report", f"json={rj}")
        assert r.returncode == 2, r.stdout + r.stderr  # the invalid file still counts
        assert f"--keep-going: skipping 1 invalid file ({bad})" in r.stderr
        assert "PASS good" in r.stdout
        assert len(srv.conns) == 1
    # the reports name it too: an error of exit class 2, with the first problem
    doc = json.loads(rj.read_text())
    assert [(s["name"], s["status"], s["exit_class"]) for s in doc["scenarios"]] == [
        ("b_bad", "error", 2),
        ("good", "passed", 0),
    ]
    assert "unknown key 'bogus'" in doc["scenarios"][0]["reason"] and doc["exit_class"] == 2


def test_validate_counts_what_it_prints(tmp_path):
    envy = tmp_path / "envy.yaml"
    envy.write_text(
        'name: e\nprotocol: smtp\nconnect: {host: 127.0.0.1, port: 25}\nsteps:\n  - C: "HELO {{ env.MAILRUN_T_UNSET }}"\n    S: 250\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "MAILRUN_T_UNSET"}
    r = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(envy)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "1 file(s) valid, 1 warning(s)" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "runner", "validate", "--strict", str(envy)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "needs environment variable MAILRUN_T_UNSET" in r.stdout and "warning" not in r.stdout
    assert r.stderr == "\n1 error(s) in 1 file(s)\n"  # counted as the error it is; set apart


def test_validate_takes_a_pipe_as_a_run_does_and_warns_of_a_short_secret(tmp_path):
    """`mailrun validate <(generate)` reads the pipe once, as `mailrun <(generate)` does, and
    prints the run's warning about a secret too short to mask well (without its value)."""
    text = (
        "name: p\nprotocol: smtp\nconnect: {host: 127.0.0.1, port: 25}\nvars: {pw: Qz}\n"
        "secrets: [pw]\nsteps:\n  - S: 220\n  - C: NOOP {{ pw }}\n    S: 250\n"
    )
    (tmp_path / "p.yaml").write_text(text)
    shell = f"{sys.executable} -m runner validate <(cat {tmp_path / 'p.yaml'})"
    r = subprocess.run(["bash", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 file(s) valid, 1 warning(s)" in r.stderr
    warning = "secret 'pw' is only 2 characters long (fewer than 4)"
    assert re.search(r"warning: /dev/fd/\d+: " + re.escape(warning), r.stdout), r.stdout
    assert "Qz" not in r.stdout + r.stderr
    # the same warning from the file itself; --strict leaves it a warning (it is not an unset variable)
    for extra in ([], ["--strict"]):
        r = mailrun("validate", *extra, tmp_path / "p.yaml")
        assert r.returncode == 0 and f"p.yaml: {warning}" in r.stdout, r.stdout + r.stderr
    r = mailrun("validate", "--var", "pw=long-enough", tmp_path / "p.yaml")  # the value a run would use
    assert r.returncode == 0 and "warning" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_protocol_typo_gets_did_you_mean(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("name: p\nprotocol: pop\nconnect: {host: 127.0.0.1}\nsteps:\n  - S: +OK\n")
    r = mailrun("validate", f)
    assert r.returncode == 2
    assert "(got 'pop'; did you mean 'pop3'?)" in r.stdout


# --------------------------------------------------------------------------- output


def test_quiet_prints_one_line_per_scenario_and_the_count(tmp_path):
    with Server(greeter()) as srv:
        for i in range(3):
            smtp(tmp_path / "d" / f"s{i}.yaml", f"s{i}", srv.port)
        r = mailrun(tmp_path / "d", "-q", "-j", "1")
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert [line.split(" \u2014 ")[0] for line in lines] == [
            "PASS s0",
            "PASS s1",
            "PASS s2",
            lines[3].split(" \u2014 ")[0],
        ]
        assert lines[3].startswith("3 scenarios: 3 passed, 0 failed, 0 errors")
        full = mailrun(tmp_path / "d", "-j", "1")
        assert len(full.stdout.splitlines()) > 3 * len(lines)
    assert mailrun(tmp_path / "d", "-q", "-v").returncode == 2  # one or the other


def test_list_shows_what_would_run_and_sends_nothing(tmp_path):
    with Server(record()) as srv:
        smtp(tmp_path / "d" / "a.yaml", "alpha", srv.port, tags=["smoke", "smtp"])
        smtp(tmp_path / "d" / "b.yaml", "beta", srv.port, tags=["slow"])
        prov = tmp_path / "prov"
        prov.mkdir()
        (prov / "one.yaml").write_text("who: a\n")
        (prov / "two.yaml").write_text("who: b\n")
        r = mailrun(tmp_path / "d", "--list", "--matrix", prov, "--tag", "smoke")
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert out.startswith("2 scenario run(s) would run (1 scenario(s) x 2 provider(s)); nothing was sent")
        assert "alpha[one]" in out and "alpha[two]" in out and "beta" not in out
        assert "tags: smoke, smtp" in out
        assert f"session alpha: smtp to 127.0.0.1:{srv.port} via socket, 2 step(s)" in out
        time.sleep(0.2)
        assert srv.conns == []
    # a provider's vars are rendered into the connection; unset credentials are not needed
    r = without_mailrun_env("--list", "--matrix", "providers/", "scenarios/matrix/send.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[gmail]  (scenarios/matrix/send.yaml)  tags: matrix, send, smtp" in r.stdout
    assert ": smtp to smtp.gmail.com:587 via socket, TLS starttls, " in r.stdout


def test_a_session_problem_is_said_once(tmp_path, free_port):
    port = free_port()
    r = mailrun(smtp(tmp_path / "s.yaml", "s", port))
    assert r.returncode == 3
    assert r.stdout.count("refused") == 1, r.stdout
    assert "could not run: session s: error (above)" in r.stdout


def test_force_color_colours_a_pipe_and_no_color_wins(tmp_path, free_port):
    path = smtp(tmp_path / "s.yaml", "s", free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    run = lambda extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "runner", str(path)],
        cwd=REPO,
        env={**env, **extra},
        capture_output=True,
        text=True,
    )
    assert "\x1b[" not in run({}).stdout
    assert "\x1b[" in run({"FORCE_COLOR": "1"}).stdout
    assert "\x1b[" not in run({"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout


def test_untrusted_ca_hints_at_ca_and_the_sandbox_path(tmp_path):
    pki = PKI(tmp_path / "pki", names=("127.0.0.1",))
    with Server(record(b"220 tls\r\n"), tls=pki.server_context()) as srv:
        path = tmp_path / "t.yaml"
        path.write_text(
            f"name: t\nprotocol: smtp\nconnect: {{host: 127.0.0.1, port: {srv.port}, tls: implicit, timeout: 5}}\n"
            "steps:\n  - S: 220\n"
        )
        r = mailrun(path)
    assert r.returncode == 3
    assert "give its CA certificate with --ca FILE" in r.stdout
    assert "CA certificate (trust it to verify TLS)" in r.stdout  # the line the sandbox prints


def without_mailrun_env(*args, extra=None) -> subprocess.CompletedProcess:
    """mailrun with no MAILRUN_* variable in its environment (but `extra`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILRUN_")}
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env={**env, "NO_COLOR": "1", **(extra or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.timeout(120)
def test_sandbox_with_a_matrix_that_supplies_the_password_invents_none(tmp_path):
    prov = tmp_path / "prov"
    prov.mkdir()
    (prov / "local.yaml").write_text(
        "provider: local\nsmtp_host: 127.0.0.1\nsmtp_port: 2525\nuser: alice@mailrun.test\npassword: wonderland\n"
        "imap_host: 127.0.0.1\nimap_port: 1143\nimap_tls: none\n"
    )
    r = without_mailrun_env("--sandbox", "--matrix", prov, "scenarios/matrix/send.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MAILRUN_PASSWORD is not set" not in r.stderr and "MAILRUN_USER is not set" not in r.stderr
    # without --sandbox, nothing asks for them either (the run fails to connect: exit 3, not 2)
    r = without_mailrun_env("--matrix", prov, "--port", "1", "scenarios/matrix/send.yaml")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "MAILRUN_PASSWORD" not in r.stderr


@pytest.mark.timeout(120)
def test_matrix_values_are_templates_naming_their_own_environment(tmp_path):
    """providers/README.md: a provider file may say `password: "{{ env.X }}"`; then the
    scenario's MAILRUN_PASSWORD is neither needed nor invented."""
    prov = tmp_path / "prov"
    prov.mkdir()
    (prov / "own.yaml").write_text(
        'provider: own\nuser: "{{ env.MAILRUN_T_OWN_USER }}"\npassword: "{{ env.MAILRUN_T_OWN_PW }}"\n'
    )
    own = {"MAILRUN_T_OWN_USER": "alice@mailrun.test", "MAILRUN_T_OWN_PW": "wonderland"}
    r = without_mailrun_env("--sandbox", "--matrix", prov, "scenarios/matrix/send.yaml", extra=own)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS Matrix send" in r.stdout and "[own]" in r.stdout
    assert "is not set" not in r.stderr and "wonderland" not in r.stdout + r.stderr
