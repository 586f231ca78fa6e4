"""The scenario library (scenarios/) and the provider matrix (providers/), run for real.

Every scenario file validates; fragments are recognised and never run; every scenario passes
against the built-in sandbox, each file alone (`mailrun --sandbox FILE`, in parallel
subprocesses) and the whole library as one suite (`mailrun --sandbox scenarios/`, default -j):
the Outlook files through XOAUTH2, gmx_receive through the welcome message; the sandbox/probe/IMAP files pass against the real Postfix/Dovecot test bed with
--host/--port/--ca/--var overrides; the provider matrix passes and reports `name[provider]`;
smtp_probe fails (exit 1, naming the step) where AUTH is not advertised before STARTTLS.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runner.load.api import discover, is_fragment, load_scenario
from runner.suite import load_matrix

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"
PROVIDERS = REPO / "providers"
MODELINE = "# yaml-language-server: $schema="
FRAGMENTS = {"lib/smtp_auth_login.yaml"}
# Outlook accepts only OAuth: these log in with XOAUTH2 (the token is a secret).
OAUTH_ONLY = {"outlook_send.yaml", "outlook_receive.yaml", "outlook_roundtrip.yaml"}
PROVIDER_NAMES = ("gmx", "gmail", "outlook", "yahoo", "icloud", "fastmail")
RUN_TIMEOUT = 60


def rel(path: Path) -> str:
    return path.relative_to(SCENARIOS).as_posix()


ALL_YAML = sorted(p for p in SCENARIOS.rglob("*.yaml"))
RUNNABLE = [p for p in ALL_YAML if rel(p) not in FRAGMENTS]
# The sandbox's credentials as --sandbox fills them in, and what may never show.
SANDBOX_USER, SANDBOX_PASSWORD = "alice@mailrun.test", "wonderland"
SECRETS = (
    SANDBOX_PASSWORD,
    base64.b64encode(SANDBOX_PASSWORD.encode()).decode(),
    base64.b64encode(f"user={SANDBOX_USER}\x01auth=Bearer {SANDBOX_PASSWORD}\x01\x01".encode()).decode(),
)


def clean_env() -> dict[str, str]:
    """The environment without any credential the scenarios read, so --sandbox fills them in
    (and no real account of whoever runs the tests is ever used)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not re.match(r"(GMX|GMAIL|OUTLOOK|YAHOO|ICLOUD|FASTMAIL|MAILRUN)_(USER|PASSWORD|TOKEN)$", k)
    }
    env["NO_COLOR"] = "1"
    env.pop("CI_FORCE_COLOR", None)
    return env


def mailrun(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# `mailrun ARGS` once per job, each in a process of its own: one helper imports runner.cli, then
# forks a child per job (at most `workers` at a time), which runs `runner.cli.main(ARGS)` exactly
# as `python -m runner ARGS` does, its stdout/stderr going to files of its own. The same as
# separate `mailrun` processes (a fresh process, a fresh --sandbox each), without paying the
# interpreter start and imports every time. Children past the deadline are killed.
_FORK_RUNNER = r"""
import importlib, json, os, signal, sys, tempfile, time
from runner.cli.main import main

# What a --sandbox run imports lazily, imported once here (a warm-up only: a name that is gone is
# simply imported by the child when it needs it).
for name in ("runner.engine.run", "runner.load.build", "runner.suite", "runner.reporters.console",
             "runner.sandbox.server", "runner.sandbox.smtp", "runner.sandbox.pop3", "runner.sandbox.imap",
             "runner.transports.socket", "runner.protocols.smtp", "runner.protocols.pop3",
             "runner.protocols.imap", "trustme", "mailbox"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass

jobs, workers, timeout = json.load(sys.stdin)
pending, running, results = list(jobs.items()), {}, {}
while pending or running:
    while pending and len(running) < workers:
        key, args = pending.pop(0)
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                rc = main(args)
            except BaseException:
                import traceback
                traceback.print_exc()
                rc = 70
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc if isinstance(rc, int) else 1)
        running[pid] = (key, out, err, time.monotonic() + timeout)
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid == 0:
        for child, (key, *_, deadline) in running.items():
            if time.monotonic() > deadline:
                os.kill(child, signal.SIGKILL)
        time.sleep(0.01)
        continue
    key, out, err, _ = running.pop(pid)
    out.seek(0)
    err.seek(0)
    text = lambda f: f.read().decode("utf-8", "replace")
    results[key] = [os.waitstatus_to_exitcode(status), text(out), text(err)]
json.dump(results, sys.stdout)
"""


def mailrun_each(
    jobs: dict[str, tuple[str, ...]], workers: int = 4
) -> dict[str, subprocess.CompletedProcess]:
    """`mailrun *args` for every job, each in a fresh process of its own (see _FORK_RUNNER)."""
    payload = json.dumps([{k: list(map(str, a)) for k, a in jobs.items()}, workers, RUN_TIMEOUT])
    helper = subprocess.run(
        [sys.executable, "-c", _FORK_RUNNER],
        cwd=REPO,
        env=clean_env(),
        input=payload,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT * 2,
    )
    assert helper.returncode == 0, helper.stderr
    found = json.loads(helper.stdout)
    assert set(found) == set(jobs)
    return {k: subprocess.CompletedProcess(["mailrun", *jobs[k]], *found[k]) for k in jobs}


def show(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def pass_line(proc: subprocess.CompletedProcess, name: str, provider: str | None = None) -> bool:
    label = name + (f"[{provider}]" if provider else "")
    return any(line.startswith(f"PASS {label} ") for line in proc.stdout.splitlines())


# --------------------------------------------------------------------------- validity


def test_every_scenario_file_validates_and_the_fragment_is_not_a_scenario():
    proc = mailrun("validate", "scenarios/")
    assert proc.returncode == 0, show(proc)
    assert f"{len(ALL_YAML)} file(s) valid" in proc.stderr, show(proc)

    assert {rel(p) for p in ALL_YAML if is_fragment(p)} == FRAGMENTS
    found = {rel(p.resolve()) for p in discover([str(SCENARIOS)])}
    assert found == {rel(p) for p in RUNNABLE}  # suites never run the fragment
    # the fragment is really used, by several files
    users = [p for p in RUNNABLE if "include: lib/smtp_auth_login.yaml" in p.read_text()]
    assert len(users) >= 3, users


def test_validate_strict_names_each_missing_provider_variable():
    proc = mailrun("validate", "--strict", "scenarios/gmx_send.yaml")
    assert proc.returncode == 2, show(proc)
    assert "needs environment variable GMX_USER" in proc.stdout
    assert "needs environment variable GMX_PASSWORD" in proc.stdout


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_each_file_starts_with_the_modeline_and_says_how_to_run_it(path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith(MODELINE), first
    schema = (path.parent / first[len(MODELINE) :]).resolve()
    assert schema == (REPO / "schemas" / "scenario.schema.json").resolve()
    head = text.split("\n\n", 1)[0] if rel(path) in FRAGMENTS else text[: text.index("\nname:")]
    if rel(path) not in FRAGMENTS:
        assert "# Run:" in head, f"{rel(path)}: the comment block says how to run it"
        assert "Environment variables:" in head, f"{rel(path)}: the comment block lists env vars"
    for name in load_scenario(path).env_refs if rel(path) not in FRAGMENTS else ():
        assert name in head, f"{rel(path)}: env var {name} is not listed in the comment block"


def test_provider_files_carry_useful_tags():
    for path in RUNNABLE:
        sc = load_scenario(path)
        tags = set(sc.tags)
        provider = rel(path).split("_", 1)[0]
        if provider in PROVIDER_NAMES:
            assert provider in tags, (rel(path), tags)
        assert tags & {"send", "receive", "roundtrip", "probe"}, (rel(path), tags)
        assert tags & {"smtp", "pop3", "imap"}, (rel(path), tags)
        protocols = {s.protocol for s in sc.sessions}
        assert protocols <= tags, (rel(path), protocols, tags)
    for provider in PROVIDER_NAMES:
        kinds = {rel(p).split("_", 1)[1] for p in RUNNABLE if rel(p).startswith(provider + "_")}
        assert kinds == {"send.yaml", "receive.yaml", "roundtrip.yaml", "snapshot.yaml", "check.yaml"}, (
            provider,
            kinds,
        )


def test_tag_filter_selects_the_provider_roundtrips():
    proc = mailrun("--sandbox", "-j", "8", "--tag", "roundtrip", "--tag", "not:oauth", "scenarios/")
    assert proc.returncode == 0, show(proc)
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASS ")]
    names = {load_scenario(p).name for p in RUNNABLE if "roundtrip" in load_scenario(p).tags}
    names -= {load_scenario(SCENARIOS / f).name for f in OAUTH_ONLY}  # not:oauth
    assert len(passed) == len(names) == 6, passed
    for name in names:
        assert pass_line(proc, name), name


# --------------------------------------------------------------------------- sandbox


# Each file alone, each with its own fresh sandbox (as a user would first try it); a few with -v
# so that the tests below can look at the conversation.
VERBOSE = {"gmx_receive.yaml", "outlook_send.yaml", "outlook_roundtrip.yaml"}


@pytest.fixture(scope="module")
def sandbox_runs():
    """--sandbox runs: key = a file's path (alone, each in a process of its own), 'suite' (the
    whole library, default -j, as a `python -m runner` subprocess) or 'gmx_pair'."""
    jobs = {rel(p): ("--sandbox", *(["-v"] if rel(p) in VERBOSE else []), str(p)) for p in RUNNABLE}
    jobs["gmx_pair"] = ("--sandbox", "-v", "-j", "1", "scenarios/gmx_send.yaml", "scenarios/gmx_receive.yaml")
    jobs["refused"] = ("scenarios/smtp_probe.yaml", "--port", "1")  # no sandbox: nothing listens
    with ThreadPoolExecutor(max_workers=2) as pool:
        suite = pool.submit(mailrun, "--sandbox", "scenarios/")
        runs = pool.submit(mailrun_each, jobs)
        return {**runs.result(), "suite": suite.result()}


@pytest.mark.parametrize("path", RUNNABLE, ids=rel)
def test_each_scenario_passes_alone_against_a_fresh_sandbox(sandbox_runs, path):
    proc = sandbox_runs[rel(path)]
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(path).name), show(proc)
    assert not any(line.startswith(("FAIL ", "ERROR ")) for line in proc.stdout.splitlines()), show(proc)


def test_the_per_file_runner_reports_what_mailrun_says(sandbox_runs):
    # The runs above are forked from one helper: its failures come through as mailrun's own.
    proc = sandbox_runs["refused"]
    assert proc.returncode == 3, show(proc)
    assert "ERROR SMTP probe" in proc.stdout and "127.0.0.1:1 refused" in proc.stdout, show(proc)
    for key, run in sandbox_runs.items():
        assert "Traceback" not in run.stderr, (key, run.stderr)


def test_the_whole_library_passes_as_one_parallel_suite(sandbox_runs):
    proc = sandbox_runs["suite"]
    assert proc.returncode == 0, show(proc)
    n = len(RUNNABLE)
    assert f"{n} scenarios: {n} passed, 0 failed, 0 errors" in proc.stdout, show(proc)
    for path in RUNNABLE:
        assert pass_line(proc, load_scenario(path).name), f"{rel(path)}\n{show(proc)}"


def test_sandbox_run_says_which_credentials_it_filled_in_and_masks_the_secrets(sandbox_runs):
    proc = sandbox_runs["suite"]
    assert f"GMX_USER is not set; using the sandbox's {SANDBOX_USER}" in proc.stderr, show(proc)
    assert "GMX_PASSWORD is not set; using the sandbox's ****" in proc.stderr
    assert "OUTLOOK_TOKEN is not set; using the sandbox's ****" in proc.stderr
    for key, run in sandbox_runs.items():
        everything = run.stdout + run.stderr
        for secret in SECRETS:
            assert secret not in everything, (key, secret)


def test_outlook_files_log_in_with_xoauth2(sandbox_runs):
    send = sandbox_runs["outlook_send.yaml"].stdout
    assert re.search(r"^\s*S: 250[- ]AUTH PLAIN LOGIN( \S+)* XOAUTH2( \S+)*$", send, re.M), send
    assert re.search(r"\[auth xoauth2\] C: AUTH XOAUTH2  S: 334 ", send), send
    assert re.search(r"\[oauth token accepted\] C: \*\*\*\*  S: 235 2\.7\.0 ", send), send
    trip = sandbox_runs["outlook_roundtrip.yaml"].stdout
    assert "C: a1 AUTHENTICATE XOAUTH2" in trip and re.search(r"^\s*S: \+ ?$", trip, re.M), trip
    assert re.search(r"\[oauth token accepted\] C: \*\*\*\*  S: a1 OK ", trip), trip
    assert re.search(r"C: a3 UID SEARCH SUBJECT \"mailrun outlook roundtrip \w+\"  S: \* SEARCH \d+", trip), (
        trip
    )
    receive = sandbox_runs["outlook_receive.yaml"]
    assert pass_line(receive, load_scenario(SCENARIOS / "outlook_receive.yaml").name), show(receive)


def test_gmx_receive_reads_the_welcome_message_alone_and_the_sent_one_after_gmx_send(sandbox_runs):
    alone = sandbox_runs["gmx_receive.yaml"].stdout
    # A fresh sandbox: alice's mailbox holds just the welcome message, byte-stuffed on the wire.
    assert "captured count=1" in alone, alone
    assert "S: Subject: Welcome to the mailrun sandbox" in alone
    assert "S: From: mailrun sandbox <postmaster@mailrun.test>" in alone
    assert "S: ..this line starts with a dot" in alone and re.search(r"^\s*S: \.\.$", alone, re.M), alone

    pair = sandbox_runs["gmx_pair"]
    assert pair.returncode == 0, show(pair)
    for f in ("gmx_send.yaml", "gmx_receive.yaml"):
        assert pass_line(pair, load_scenario(SCENARIOS / f).name), show(pair)
    # The newest is what gmx_send sent in this run (the welcome is message 1).
    run_id = re.search(r"C: Subject: mailrun gmx_send (\w+)", pair.stdout)[1]
    retr = pair.stdout[pair.stdout.index("C: RETR 2") :]
    assert f"S: Subject: mailrun gmx_send {run_id}" in retr, show(pair)


def test_sandbox_send_shows_the_dot_line_stuffed_on_the_wire_and_captures_the_queue_id():
    proc = mailrun("--sandbox", "-v", "--show-crlf", "scenarios/sandbox_send.yaml")
    assert proc.returncode == 0, show(proc)
    assert "C: ..this line starts with a dot" in proc.stdout, show(proc)
    assert re.search(r"queued as [A-Za-z0-9]+", proc.stdout)
    assert "334 VXNlcm5hbWU6" in proc.stdout and "334 UGFzc3dvcmQ6" in proc.stdout
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr


def test_provider_matrix_passes_against_the_sandbox_and_names_each_provider():
    matrix = load_matrix([str(PROVIDERS)])
    stems = sorted(p.stem for p in PROVIDERS.glob("*.yaml"))
    assert [label for label, _ in matrix] == stems
    assert "sandbox" in stems and {"gmail", "gmx", "yahoo", "icloud", "fastmail"} <= set(stems)
    for label, values in matrix:
        assert values["provider"] == label
        assert {"smtp_host", "smtp_port", "imap_host", "imap_port", "imap_tls"} <= set(values), label
        assert not any("pass" in k.lower() or "token" in k.lower() for k in values), label

    proc = mailrun("--sandbox", "-j", "8", "--matrix", "providers/", "scenarios/matrix/")
    assert proc.returncode == 0, show(proc)
    neutral = sorted(SCENARIOS.glob("matrix/*.yaml"))
    assert len(neutral) == 2
    for path in neutral:
        name = load_scenario(path).name
        for label in stems:
            assert pass_line(proc, name, label), f"{name}[{label}]\n{show(proc)}"
    assert f"{len(neutral) * len(stems)} scenarios: {len(neutral) * len(stems)} passed" in proc.stdout


def test_matrix_scenarios_against_the_test_bed_with_a_matrix_file(testbed, tmp_path):
    # A matrix file shaped like providers/*.yaml (same keys) pointing at Postfix/Dovecot: its
    # values win over the scenarios' defaults (which point at 2525/1143, where nothing listens).
    keys = set(load_matrix([str(PROVIDERS / "gmail.yaml")])[0][1])
    bed = tmp_path / "matrix" / "testbed.yaml"
    bed.parent.mkdir()
    values = {
        "provider": "testbed",
        "smtp_host": testbed.host,
        "smtp_port": testbed.ports["submission"],
        "imap_host": testbed.host,
        "imap_port": testbed.ports["imaps"],
        "imap_tls": "implicit",
    }
    assert set(values) == keys
    bed.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    envfile = tmp_path / "testbed.env"
    envfile.write_text("MAILRUN_USER=alice@example.test\nMAILRUN_PASSWORD=wonderland\n")
    proc = mailrun(
        "--matrix", str(bed.parent), "--env-file", str(envfile), *bed_args(testbed), "scenarios/matrix/"
    )
    assert proc.returncode == 0, show(proc)
    for path in sorted(SCENARIOS.glob("matrix/*.yaml")):
        assert pass_line(proc, load_scenario(path).name, "testbed"), show(proc)
    assert f":{testbed.ports['submission']} via socket" in proc.stdout
    testbed.wait_for_message("alice", lambda d: b"mailrun matrix send via testbed" in d, timeout=10)


# --------------------------------------------------------------------------- the real test bed


def bed_args(testbed) -> list[str]:
    return ["--ca", str(testbed.ca_path)]


@pytest.mark.parametrize("login", ["alice@example.test", "alice"])
def test_sandbox_send_against_postfix_submission_delivers_the_dot_line_intact(testbed, login):
    run_id = f"h8send{login.count('@')}"
    proc = mailrun(
        "scenarios/sandbox_send.yaml",
        "--host",
        testbed.host,
        "--port",
        testbed.ports["submission"],
        *bed_args(testbed),
        "--var",
        f"user={login}",
        "--var",
        "password=wonderland",
        "--var",
        "to=bob@example.test",
        "--var",
        f"run_id={run_id}",
    )
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / "sandbox_send.yaml").name)
    data = testbed.wait_for_message("bob", lambda d: f"sandbox_send {run_id}".encode() in d, timeout=10)
    assert b"\n.this line starts with a dot" in data
    assert b"\n..this" not in data
    assert b"\n.\n" in data.replace(b"\r\n", b"\n")  # the lone '.' line survived


def test_sandbox_receive_against_dovecot_pop3(testbed):
    proc = mailrun(
        "scenarios/sandbox_receive.yaml",
        "--port",
        testbed.ports["pop3"],
        "--var",
        "user=alice@example.test",
        "--var",
        "password=wonderland",
    )
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / "sandbox_receive.yaml").name)


def test_sandbox_receive_with_a_wrong_password_fails_at_pass(testbed):
    proc = mailrun(
        "scenarios/sandbox_receive.yaml",
        "--port",
        testbed.ports["pop3"],
        "--var",
        "user=alice@example.test",
        "--var",
        "password=not-the-password",
    )
    assert proc.returncode == 1, show(proc)
    assert "[logged in]" in proc.stdout and "-ERR" in proc.stdout
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_sandbox_roundtrip_against_postfix_and_dovecot(testbed):
    proc = mailrun(
        "scenarios/sandbox_roundtrip.yaml",
        *bed_args(testbed),
        "--var",
        f"smtp_port={testbed.ports['submission']}",
        "--var",
        f"pop3_port={testbed.ports['pop3']}",
        "--var",
        "user=alice@example.test",
        "--var",
        "password=wonderland",
        "--var",
        "to=bob@example.test",
        "--var",
        "to_password=builder",
    )
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / "sandbox_roundtrip.yaml").name)
    assert "session receive" in proc.stdout


def test_smtp_probe_passes_on_the_plain_smtp_port(testbed):
    proc = mailrun("scenarios/smtp_probe.yaml", "--host", testbed.host, "--port", testbed.ports["smtp"])
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / "smtp_probe.yaml").name)


def test_smtp_probe_fails_where_auth_is_not_advertised_before_starttls(testbed):
    # The submission port has smtpd_tls_auth_only=yes: EHLO offers STARTTLS but no AUTH.
    proc = mailrun("scenarios/smtp_probe.yaml", "--var", f"port={testbed.ports['submission']}")
    assert proc.returncode == 1, show(proc)
    fail = next(line for line in proc.stdout.splitlines() if line.startswith("FAIL "))
    assert "step 2 (scenarios/smtp_probe.yaml:" in fail, fail
    assert "AUTH" in fail, fail
    assert "[ehlo advertises STARTTLS and AUTH]" in proc.stdout
    assert "250-STARTTLS" in proc.stdout  # it did see STARTTLS: only AUTH was missing


def test_imap_fetch_against_postfix_and_dovecot_imaps(testbed):
    proc = mailrun(
        "scenarios/imap_fetch.yaml",
        *bed_args(testbed),
        "--var",
        f"smtp_port={testbed.ports['smtp']}",
        "--var",
        f"imap_port={testbed.ports['imaps']}",
        "--var",
        "imap_tls=implicit",
        "--var",
        "user=alice@example.test",
        "--var",
        "password=wonderland",
    )
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / "imap_fetch.yaml").name)
    assert re.search(r"BODY\[\] \{\d+\}", proc.stdout), show(proc)


def test_imap_starttls_against_dovecot(testbed):
    proc = mailrun(
        "scenarios/imap_starttls.yaml",
        *bed_args(testbed),
        "--var",
        f"port={testbed.ports['imap']}",
        "--var",
        "user=alice",
        "--var",
        "password=wonderland",
    )
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / "imap_starttls.yaml").name)


# The sandbox examples of issue 16 that real servers can play too: Postfix CHUNKING and its
# PROXY-protocol port, Dovecot's LMTP (with a real second mailbox instead of the sandbox's full@).
BED_EXAMPLES = {
    "sandbox_bdat.yaml": lambda bed: [f"smtp_port={bed.ports['smtp']}", "to=bob@example.test"],
    "sandbox_proxy.yaml": lambda bed: [f"proxy_port={bed.ports['smtp_proxy']}", "to=bob@example.test"],
    "sandbox_lmtp.yaml": lambda bed: [
        f"lmtp_port={bed.ports['lmtp']}",
        "to=bob@example.test",
        "second=alice@example.test",
        "second_reply=250 2.0.0",
    ],
}


@pytest.mark.parametrize("name", sorted(BED_EXAMPLES))
def test_sandbox_examples_against_postfix_and_dovecot(testbed, name):
    values = [f"pop3_port={testbed.ports['pop3']}", "to_password=builder", *BED_EXAMPLES[name](testbed)]
    if "user" in load_scenario(SCENARIOS / name).vars:  # (a --var no scenario uses is an error)
        values += ["user=alice@example.test", "password=wonderland"]
    proc = mailrun(f"scenarios/{name}", *bed_args(testbed), *(a for v in values for a in ("--var", v)))
    assert proc.returncode == 0, show(proc)
    assert pass_line(proc, load_scenario(SCENARIOS / name).name)
