"""The pytest plugin (runner/pytest_plugin.py), as a user's pytest runs it: `pytester` makes a
project in a temporary directory and runs pytest on it (in this process, or in a subprocess for
xdist and the import check); the scenarios are played against the real built-in sandbox."""

from __future__ import annotations

import base64
import re
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# Imported here, before any inline run: pytester takes those modules out of sys.modules again
# after each in-process run, and a second import of PyYAML's C parser breaks it (every file
# then reads as null). A user's pytest imports them once per process, as here.
import runner.load.build  # noqa: F401
import runner.pytest_plugin  # noqa: F401
import runner.sandbox.server  # noqa: F401

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent

SECRET = "Pl41n-S3cret-pw"
AUTH_B64 = base64.b64encode(f"\0alice@mailrun.test\0{SECRET}".encode()).decode()

SEND = """\
    name: {name}
    protocol: smtp
    tags: [{tags}]
    connect: {{host: 127.0.0.1, port: 2525}}
    vars:
      user: alice@mailrun.test
      password: {secret}
      code: 250
    secrets: [password]
    steps:
      - S: 220
      - C: EHLO client.test
        S: 250
      - C: "AUTH PLAIN {{{{ auth_plain(user, password) }}}}"
        S: 235
      - C: NOOP
        S: "{{{{ code }}}}"
        name: noop
      - C: QUIT
        S: 221
"""


def send(name: str = "send", tags: str = "send", **extra: str) -> str:
    return textwrap.dedent(SEND).format(name=name, tags=tags, secret=SECRET, **extra)


def failing(name: str = "bad") -> str:
    """A scenario whose step 4 (NOOP, at line 16) expects 554 and gets 250."""
    return send(name=name).replace('S: "{{ code }}"', "S: 554")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def text_of(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


def test_a_passing_scenario_is_one_passing_item(pytester):
    pytester.makefile(".mailrun.yaml", good=send(name="good send"))
    result = run(pytester, "--mailrun-sandbox", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["good.mailrun.yaml::good send PASSED*"])


def test_a_failing_scenario_shows_the_step_expected_received_and_no_secret(pytester):
    pytester.makefile(".mailrun.yaml", bad=failing("bad send"))
    result = run(pytester, "--mailrun-sandbox")
    result.assert_outcomes(failed=1)
    out = text_of(result)
    result.stdout.fnmatch_lines(
        [
            "*4 [[]noop[]] C: NOOP  S: 250 2.0.0 Ok*",
            "*expected: 554*",
            "*received: 250 2.0.0 Ok*",
            "*at:       bad.mailrun.yaml:16*",
            "FAILED bad.mailrun.yaml::bad send - FAIL bad send*",
        ]
    )
    assert "C: AUTH PLAIN ****" in out  # the conversation is there, masked
    assert "S: 220 mail.mailrun.test" in out
    assert SECRET not in out and AUTH_B64 not in out
    assert "login_data is deprecated" not in out  # aiosmtpd's notice at every AUTH is filtered


def test_an_invalid_scenario_is_a_collection_error_naming_file_line_col(pytester):
    pytester.makefile(".mailrun.yaml", broken=send().replace("S: 235", "S: nonsense-code"))
    result = run(pytester, "--mailrun-sandbox")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # collection errors stop the session
    result.stdout.fnmatch_lines(["*ERROR collecting broken.mailrun.yaml*", "*broken.mailrun.yaml:15:*"])
    assert "nothing was sent" in text_of(result)


def test_matrix_gives_one_item_per_provider_with_its_vars(pytester):
    pytester.makefile(".mailrun.yaml", m=send(name="matrix send"))
    pytester.makefile(".yaml", **{"providers/ok": "code: 250\n", "providers/wrong": "code: 554\n"})
    listed = run(pytester, "--mailrun-matrix", "providers", "--collect-only", "-q")
    listed.stdout.fnmatch_lines(
        ["m.mailrun.yaml::matrix send[[]ok[]]", "m.mailrun.yaml::matrix send[[]wrong[]]"]
    )
    result = run(pytester, "--mailrun-matrix", "providers", "--mailrun-sandbox", "-v")
    result.assert_outcomes(passed=1, failed=1)  # the provider's `code` reached the scenario
    result.stdout.fnmatch_lines(["*matrix send[[]ok[]] PASSED*", "*matrix send[[]wrong[]] FAILED*"])
    missing = run(pytester, "--mailrun-matrix", "nope")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mailrun-matrix: nope: file not found" in text_of(missing)


def test_tags_are_markers(pytester):
    pytester.makefile(
        ".mailrun.yaml",
        a=send(name="quick", tags="smoke, send"),
        b=send(name="slow", tags="nightly, smtp-auth"),
    )
    result = run(pytester, "--mailrun-sandbox", "--strict-markers", "-m", "smoke", "-v")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["a.mailrun.yaml::quick PASSED*"])
    result = run(pytester, "--mailrun-sandbox", "-m", "mailrun and not smoke", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["b.mailrun.yaml::slow", "*1/2 tests collected (1 deselected)*"])
    result = run(pytester, "--strict-markers", "-m", "smtp-auth", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["b.mailrun.yaml::slow", "*1/2 tests collected (1 deselected)*"])


def test_mailrun_var_sets_a_variable(pytester):
    pytester.makefile(".mailrun.yaml", v=send(name="var").replace("code: 250", "code: 554"))
    run(pytester, "--mailrun-sandbox").assert_outcomes(failed=1)
    run(pytester, "--mailrun-sandbox", "--mailrun-var", "code=250").assert_outcomes(passed=1)
    bad = run(pytester, "--mailrun-sandbox", "--mailrun-var", "novalue")
    assert "--mailrun-var wants NAME=VALUE, got 'novalue'" in text_of(bad)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


def test_an_unset_environment_variable_fails_the_item_naming_it(pytester, monkeypatch):
    monkeypatch.delenv("MAILRUN_PLUGIN_TEST_USER", raising=False)
    scenario = send(name="env").replace(
        "user: alice@mailrun.test", 'user: "{{ env.MAILRUN_PLUGIN_TEST_USER }}"'
    )
    pytester.makefile(".mailrun.yaml", e=scenario)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert "MAILRUN_PLUGIN_TEST_USER" in text_of(result) and "nothing was sent" in text_of(result)
    # the sandbox fills it in, as `mailrun --sandbox` does
    run(pytester, "--mailrun-sandbox").assert_outcomes(passed=1)


APP_TEST = """\
    import smtplib
    from email.message import EmailMessage
    from pathlib import Path


    def send_welcome(host, port, to, subject="Your account"):  # "the application's own code"
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "app@example.test", to, subject
        msg.set_content("Hello from the app")
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.send_message(msg)


    def test_the_app_mails_bob(mailrun_sandbox):
        assert mailrun_sandbox.host == "127.0.0.1"
        assert Path(mailrun_sandbox.ca_path).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert "bob" in mailrun_sandbox.users
        send_welcome(mailrun_sandbox.host, mailrun_sandbox.ports["smtp"], "bob@mailrun.test")
        [msg] = mailrun_sandbox.messages("bob")
        assert msg["Subject"] == "Your account"
        assert msg.get_content().strip() == "Hello from the app"


    def test_the_sandbox_is_the_sessions(mailrun_sandbox):
        # session-scoped: what the first test delivered is still there; oldest first
        send_welcome(mailrun_sandbox.host, mailrun_sandbox.ports["smtp"], "bob@mailrun.test", "Later")
        assert [m["Subject"] for m in mailrun_sandbox.messages("bob")] == ["Your account", "Later"]
        subjects = [m["Subject"] for m in mailrun_sandbox.messages("bob", welcome=True)]
        assert subjects == ["Welcome to the mailrun sandbox", "Your account", "Later"]
"""


def test_mailrun_sandbox_lets_an_app_test_send_and_assert_on_delivery(pytester):
    pytester.makepyfile(test_app=textwrap.dedent(APP_TEST))
    run(pytester).assert_outcomes(passed=2)


RUN_TEST = """\
    def test_the_scenario_passes_and_the_mail_arrives(mailrun_run, mailrun_sandbox):
        result = mailrun_run("deliver.yaml", vars={"to": "carol@mailrun.test"}, sandbox=True)
        assert result.status == "passed", mailrun_run.output
        assert result.exit_class == 0 and len(result.steps) == 8
        [msg] = mailrun_sandbox.messages("carol")
        assert msg["Subject"] == "from a scenario"


    def test_a_failing_run_is_a_result_not_an_exception(mailrun_run):
        result = mailrun_run("deliver.yaml", vars={"to": "carol@mailrun.test", "code": "554"}, sandbox=True)
        assert (result.status, result.exit_class) == ("failed", 1)
        assert "expected 554, got 250" in mailrun_run.output
        assert "SECRET_HERE" not in mailrun_run.output
"""

NOOP_STEP = """\
  - C: NOOP
    S: "{{ code }}"
    name: noop
"""
MAIL_STEPS = """\
  - C: "MAIL FROM:<{{ user }}>"
    S: 250
  - C: "RCPT TO:<{{ to }}>"
    S: "{{ code }}"
  - C: DATA
    S: 354
  - body: |
      Subject: from a scenario

      hello
    S: 250
"""


def deliver() -> str:
    """send() with MAIL, RCPT (expecting `code`), DATA and a body instead of NOOP: 8 steps."""
    text = send(name="deliver")
    assert NOOP_STEP in text
    return text.replace(NOOP_STEP, MAIL_STEPS)


def test_mailrun_run_plays_a_file_and_returns_its_result(pytester):
    pytester.makefile(".yaml", deliver=deliver())
    pytester.makepyfile(test_run=textwrap.dedent(RUN_TEST).replace("SECRET_HERE", SECRET))
    result = run(pytester)
    result.assert_outcomes(passed=2)
    # deliver.yaml is no *.mailrun.yaml and not listed: it is not an item of its own
    assert "deliver.yaml::" not in text_of(result)


def test_junitxml_has_one_testcase_per_run_with_the_verdict_as_message(pytester):
    pytester.makefile(".mailrun.yaml", good=send(name="good"), bad=failing())
    run(pytester, "--mailrun-sandbox", "--junitxml=out.xml").assert_outcomes(passed=1, failed=1)
    raw = (pytester.path / "out.xml").read_text()
    cases = {c.get("name"): c for c in ET.fromstring(raw).iter("testcase")}
    assert set(cases) == {"good", "bad"}
    assert cases["bad"].get("classname") == "bad.mailrun.yaml"
    failure = cases["bad"].find("failure")
    assert failure is not None and failure.get("message").startswith("FAIL bad")
    assert "expected: 554" in failure.text and "received: 250" in failure.text
    assert cases["good"].find("failure") is None
    assert SECRET not in raw and AUTH_B64 not in raw


def test_xdist_runs_the_items_on_two_workers(pytester):
    for i in range(4):
        pytester.makefile(".mailrun.yaml", **{f"s{i}": send(name=f"scenario {i}")})
    pytester.makefile(".mailrun.yaml", bad=failing())
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "--mailrun-sandbox", timeout=100
    )
    result.assert_outcomes(passed=4, failed=1)
    out = text_of(result)
    assert "2 workers [5 items]" in out
    assert "expected: 554" in out and SECRET not in out  # the failure text crossed from the worker


def test_mailrun_paths_collects_listed_scenarios_outside_testpaths(pytester):
    pytester.makeini("[pytest]\ntestpaths = tests\nmailrun_paths = mail\n")
    pytester.makepyfile(**{"tests/test_plain": "def test_plain():\n    pass\n"})
    pytester.makefile(".yaml", **{"mail/listed": send(name="listed"), "other/not_listed": send(name="other")})
    fragment = "steps:\n  - C: NOOP\n    S: 250\n"
    pytester.makefile(".yaml", **{"mail/lib/fragment": fragment})
    result = run(pytester, "--mailrun-sandbox", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mail/listed.yaml::listed PASSED*"])
    assert "not_listed" not in text_of(result) and "fragment" not in text_of(result)


def test_plain_yaml_is_not_collected_and_nothing_of_mailrun_is_imported(pytester):
    # what every pytest run of an environment with mailrun installed pays: the plugin module
    pytester.makefile(".yaml", plain=send(name="plain yaml is not a test"))
    pytester.makepyfile(
        test_mods="""
        import sys

        def test_mods():
            mods = sorted(m for m in sys.modules if m == "runner" or m.startswith("runner."))
            assert mods == ["runner", "runner.pytest_plugin"], mods
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1)
    assert "plain yaml" not in text_of(result)


def test_the_readme_example_passes(pytester):
    # the README's "pytest" section: its ini block and its test module, as a user copies them
    section = (REPO / "README.md").read_text().split("\n## pytest\n", 1)[1].split("\n## ", 1)[0]
    ini = re.search(r"```ini\n(.*?)```", section, re.S)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    pytester.makefile(".ini", pytest=ini)
    pytester.makepyfile(test_readme_example=code)
    shutil.copytree(REPO / "scenarios", pytester.path / "scenarios")
    pytester.makefile(".yaml", **{"mail/listed": send(name="from mail dir")})
    result = run(pytester, "--mailrun-sandbox", "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines_random(
        [
            "*scenarios/sandbox_send.yaml::Sandbox send (SMTP STARTTLS, AUTH LOGIN, DATA) PASSED*",
            "*mail/listed.yaml::from mail dir PASSED*",
        ]
    )


def test_scenario_items_and_the_fixture_share_the_sessions_sandbox(pytester):
    # a_*.mailrun.yaml is collected (and run) before test_z.py
    pytester.makefile(
        ".mailrun.yaml", a_deliver=deliver().replace("code: 250", "code: 250\n  to: dave@mailrun.test")
    )
    pytester.makepyfile(
        test_z="""
        def test_the_scenario_delivered_into_this_sandbox(mailrun_sandbox):
            assert [m["Subject"] for m in mailrun_sandbox.messages("dave")] == ["from a scenario"]
        """
    )
    run(pytester, "--mailrun-sandbox", "-v").assert_outcomes(passed=2)
