"""runner.load (yaml_doc, schema, checker, steps, includes, build, api): YAML reading, error messages, semantic checks, includes, cache,
resolve_connect, vars/env files, discovery and validate_paths."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import ScenarioError
from runner.lang.render import Context
from runner.load import api as A
from runner.load import varfiles as V
from runner.model.config import ConnectConfig, resolve_connect
from runner.model.scenario import ConnectSpec, Location, Session, env_warnings

FIX = Path(__file__).resolve().parent / "fixtures"
INVALID = sorted((FIX / "invalid").glob("*.yaml"))
VALID = sorted((FIX / "valid").glob("*.yaml"))
HEAD = "name: t\nconnect: {host: localhost, port: 25}\n"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILRUN_CACHE_DIR", str(tmp_path / "cache"))


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def problems(path, **kw) -> list[str]:
    with pytest.raises(ScenarioError) as ei:
        A.load_scenario(path, **kw)
    return ei.value.problems


def one(path, **kw) -> str:
    ps = problems(path, **kw)
    assert len(ps) == 1, ps
    return ps[0]


# ------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_fixture_reports_expected_messages(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    expected = re.findall(r"^# expect: (.*)$", path.read_bytes().decode("utf-8", "replace"), re.M)
    assert expected, f"{path.name} has no '# expect:' line"
    got = problems(path.name)
    for e in expected:
        assert any(e in g for g in got), f"{e!r} not in {got}"
    for g in got:
        assert re.match(r"^[^:]+(:\d+:\d+)?: ", g), g  # file:line:col: ...
        assert "Traceback" not in g


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_loads(path):
    sc = A.load_scenario(path)
    assert sc.sessions and all(s.steps for s in sc.sessions)
    for s in sc.sessions:
        for step in (*s.steps, *s.finally_steps):
            assert step.location.line >= 1


def test_full_example_model():
    sc = A.load_scenario(FIX / "valid" / "full_smtp.yaml")
    assert sc.name == "Send through GMX with AUTH LOGIN"
    assert sc.tags == ("gmx", "send")
    assert sc.secrets == frozenset({"password"})
    assert list(sc.vars) == ["user", "password", "to"]
    (s,) = sc.sessions
    assert s.protocol == "smtp" and s.name == sc.name
    assert s.connect.values["port"] == 587 and s.connect.values["tls"] == "starttls"
    assert s.connect.values["connect_timeout"] == 1.5
    assert s.connect.key_locations["tls"].line == 9
    actions = [st.action for st in s.steps]
    assert actions[:3] == ["read", "send", "send"]
    assert "body" in actions and "body_file" in actions and "sleep" in actions
    starttls = [st for st in s.steps if st.starttls]
    assert len(starttls) == 1 and starttls[0].text == "STARTTLS"
    assert s.steps[1].name == "greet"
    body = next(st for st in s.steps if st.action == "body")
    assert body.capture == {"queue_id": r"queued as (\w+)"} and body.timeout == 30.0
    assert body.text.startswith("Subject: mailrun {{ run_id }}\n")
    bf = next(st for st in s.steps if st.action == "body_file")
    assert bf.path.is_file() and bf.path.name == "big.eml"
    raws = [st for st in s.steps if st.action == "raw"]
    assert raws[0].text == "NOOP\r\n" and raws[1].data == b"NOOP\r\n"
    sleep = next(st for st in s.steps if st.action == "sleep")
    assert sleep.seconds == 0.5
    # the included fragment's step: fragment location, via the include step, bindings overlaid
    inc = next(st for st in s.steps if st.location.file.endswith("smtp_auth_plain.yaml"))
    assert inc.location.line == 7
    assert inc.location.via[0].file.endswith("full_smtp.yaml") and inc.location.via[0].line == 54
    assert inc.bindings == ({"mech": "PLAIN", "user": "{{ user }}", "password": "{{ password }}"},)
    assert "included from" in inc.location.describe()
    assert [st.action for st in s.finally_steps] == ["send", "read"]
    assert s.finally_steps[1].expect.is_eof


def test_sessions_file():
    sc = A.load_scenario(FIX / "valid" / "two_sessions.yaml")
    assert [s.name for s in sc.sessions] == ["send", "fetch"]
    assert [s.protocol for s in sc.sessions] == ["smtp", "imap"]
    assert sc.sessions[1].retry.attempts == 3 and sc.sessions[1].retry.interval == 0.5
    assert sc.sessions[0].retry is None
    assert sc.sessions[1].steps[2].tag is False
    assert sc.vars == {"token": "abc"}


def test_paths_in_messages_stay_as_given(tmp_path, monkeypatch):
    write(tmp_path, HEAD + "steps:\n  - S: '25'\n", "sub/x.yaml")
    monkeypatch.chdir(tmp_path)
    assert one("sub/x.yaml").startswith("sub/x.yaml:4:")
    sc_path = write(tmp_path, HEAD + "steps:\n  - S: 220\n", "sub/ok.yaml")
    assert A.load_scenario("sub/ok.yaml").sessions[0].steps[0].location.file == "sub/ok.yaml"
    assert sc_path.exists()


# ------------------------------------------------------------------ YAML reading


def test_yaml_1_1_booleans_and_numbers_are_text(tmp_path):
    p = write(
        tmp_path,
        """\
        name: t
        protocol: imap
        tags: [yes, no, on, off, y, NO, 010, 0o10, 0x1f, "1:30", 1:30, .inf, 2024-01-01, True]
        connect: {host: localhost, port: 143}
        steps:
          - S: NO
        """,
    )
    sc = A.load_scenario(p)
    assert sc.tags == (
        "yes",
        "no",
        "on",
        "off",
        "y",
        "NO",
        "010",
        "0o10",
        "0x1f",
        "1:30",
        "1:30",
        ".inf",
        "2024-01-01",
        "True",
    )
    assert sc.sessions[0].steps[0].expect.describe() == "NO"


def test_non_decimal_numbers_fail_where_a_number_is_needed(tmp_path):
    for bad in ("010", "0x19", "1:30", ".inf", ".nan"):
        p = write(tmp_path, f"{HEAD}steps:\n  - S: 220\n    timeout: {bad}\n")
        msg = one(p)
        assert "steps[0].timeout: expected a number" in msg and f"'{bad}'" in msg, msg


def test_decimal_numbers(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - S: 220\n    timeout: 1.5\n  - sleep: 2\n  - sleep: 1e-1\n")
    steps = A.load_scenario(p).sessions[0].steps
    assert (steps[0].timeout, steps[1].seconds, steps[2].seconds) == (1.5, 2.0, 0.1)


def test_tls_off_is_an_error_not_false(tmp_path):
    p = write(tmp_path, "name: t\nconnect: {host: h, tls: off}\nsteps: [{S: 220}]\n")
    assert one(p).endswith("connect.tls: 'tls' must be one of none, implicit, starttls (got 'off')")


def test_duplicate_key(tmp_path):
    p = write(tmp_path, HEAD + "name: again\nsteps: [{S: 220}]\n")
    assert one(p) == f"{p}:3:1: name: duplicate key 'name' (first given at line 1)"


def test_anchors_aliases_and_merge_keys(tmp_path):
    sc = A.load_scenario(FIX / "valid" / "line_anchors.yaml")
    s = sc.sessions[0]
    assert s.connect.values == {"host": "127.0.0.1", "port": 7000, "timeout": 10.0}
    assert [st.text for st in s.steps[:2]] == ["hello", "hello"]


def test_alias_bomb_does_not_hang(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    p = write(tmp_path, "\n".join(lines) + "\n")
    t = time.monotonic()
    msg = one(p)
    assert time.monotonic() - t < 5
    assert "more than 100000 values (keys, items and scalars, aliases expanded)" in msg


def test_recursive_alias(tmp_path):
    p = write(tmp_path, "name: &a [*a]\n")
    assert "recursive alias" in one(p)


@pytest.mark.parametrize(
    "raw, want",
    [
        (b"", ":1:1: the file is empty"),
        (b"# only a comment\n", ":1:1: the file is empty"),
        (b"- a\n- b\n", ":1:1: the file must be a mapping (name:, connect:, steps: ...), not a list"),
        (b"just text\n", "not a string"),
        (b"name: t\nconnect:\n\thost: a\n", ":3:1: YAML syntax error"),
        (b"name: [a\n", "YAML syntax error"),
        (b"name: t\n---\nname: u\n", ":2:1: the file holds more than one YAML document (---)"),
        (b"name: caf\xe9\n", ":1:10: the file is not UTF-8 (byte 0xe9)"),
        (b"name: a\x07b\n", ":1:8: the file holds a control character"),
        (b"name: !!python/object:os.system x\n", "unsupported YAML tag"),
        (b"name: !custom x\n", "unsupported YAML tag '!custom'"),
        (
            b"name: t\nconnect: {host: a}\nsteps:\n  - raw: !!binary '@@'\n",
            "!!binary value is not valid base64",
        ),
        (b"? [a]\n: b\n", "a key must be a plain text"),
    ],
)
def test_bad_files_give_clean_errors(tmp_path, raw, want):
    p = tmp_path / "bad.yaml"
    p.write_bytes(raw)
    ps = problems(p)
    assert any(want in m for m in ps), ps
    assert all(m.startswith(str(p)) for m in ps)


def test_tab_hint(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_bytes(b"name: t\nconnect:\n\thost: a\n")
    assert "use spaces" in one(p)


def test_bom_is_fine(tmp_path):
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + (HEAD + "steps: [{S: 220}]\n").encode())
    assert A.load_scenario(p).name == "t"


def test_missing_file_and_directory(tmp_path):
    assert one(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: file not found"
    assert "is a directory" in one(tmp_path)


def test_all_problems_are_listed(tmp_path):
    p = write(
        tmp_path,
        """\
        name: many
        conect: {}
        connect: {host: h, port: 25, tls: off}
        steps:
          - S: '25'
          - C: "{{ nope }}"
          - C: A
            body: B
          - sleep: -1
        """,
    )
    ps = problems(p)
    assert len(ps) == 6, ps
    assert [int(m.split(":")[1]) for m in ps] == sorted(int(m.split(":")[1]) for m in ps)
    joined = "\n".join(ps)
    for want in (
        "unknown key 'conect' (did you mean 'connect'?)",
        "'tls' must be one of",
        "'25' is not a reply-code pattern",
        "undefined variable 'nope'",
        "exactly one of",
        "steps[3].sleep: must be at least 0 (got -1)",
    ):
        assert want in joined
    assert "missing required key 'connect'" not in joined


def test_typo_does_not_also_report_missing_key(tmp_path):
    p = write(tmp_path, "name: t\nconect: {host: h}\nsteps: [{S: 220}]\n")
    assert one(p) == f"{p}:2:1: conect: unknown key 'conect' (did you mean 'connect'?)"


def test_quote_hint_for_misread_mapping(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - S:\n      250 2.1.0: ok\n  - C:\n      MAIL FROM: <a@b>\n")
    ps = problems(p)
    assert any(
        "steps[1].C: expected a string, got a mapping — YAML read 'MAIL FROM: <a@b>' as key: value; "
        "quote the whole line" in m
        for m in ps
    ), ps
    assert any(
        m.startswith(
            f"{p}:5:7: steps[0].S: expected a reply pattern, got a mapping — YAML read "
            "'250 2.1.0: ok' as key: value"
        )
        for m in ps
    ), ps


def test_quote_hint_for_syntax_error(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - C: MAIL FROM: <a@b>\n")
    msg = one(p)
    assert msg.startswith(f"{p}:4:17: YAML syntax error: mapping values are not allowed here")
    assert 'quote the whole value: C: "MAIL FROM: <a@b>"' in msg


def test_unknown_key_lists_allowed_keys(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - C: NOOP\n    frobnicate: 1\n")
    assert "unknown key 'frobnicate' (allowed: C, S, append, auth, bdat, body," in one(p)


def test_unknown_key_case_hint(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - c: NOOP\n")
    assert one(p).endswith("steps[0].c: unknown key 'c' (did you mean 'C'?)")


def test_var_values_are_never_quoted_in_messages(tmp_path):
    p = write(tmp_path, HEAD + "vars:\n  password: {hunter2: x}\nsteps: [{S: 220}]\n")
    msg = one(p)
    assert "vars.password: expected a string" in msg and "hunter2" not in msg


# ------------------------------------------------------------------ semantic checks


def test_step_action_rules(tmp_path):
    cases = {
        "- {C: A, raw: B}": "this one has C and raw",
        "- {body: A, body_file: x.eml}": "this one has body and body_file",
        "- {name: lonely}": "a step needs one of C, S, body, body_file, raw, bdat, auth, append, idle, sleep or include",
        "- {sleep: 1, S: 220}": "'S' cannot go with sleep",
        "- {include: f.yaml, S: 220}": "'S' cannot go with include (only vars can)",
        "- {C: A, capture: {x: y}}": "capture needs an S: pattern",
        "- {C: A, vars: {a: b}, S: 250}": "'vars' in a step goes only with include",
    }
    for step, want in cases.items():
        p = write(tmp_path, HEAD + "steps:\n  " + step + "\n")
        assert want in "\n".join(problems(p)), step


def test_allowed_combinations(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - S: 220\n  - {C: A, S: 250}\n  - {body: x, S: 250}\n  - C: B\n")
    assert [s.action for s in A.load_scenario(p).sessions[0].steps] == ["read", "send", "body", "send"]


def test_defined_from_outside(tmp_path):
    p = write(tmp_path, HEAD + 'secrets: [pw]\nsteps:\n  - C: "AUTH {{ user }} {{ pw }}"\n    S: 235\n')
    ps = problems(p)
    assert len(ps) == 3  # undefined user, undefined pw, secret pw not defined
    sc = A.load_scenario(p, defined=["user", "pw"])
    assert sc.secrets == {"pw"}


def test_defined_names_env_builtins_default(tmp_path):
    p = write(
        tmp_path,
        HEAD + "steps:\n  - C: \"X {{ env.HOME_X }} {{ run_id }} {{ now }} {{ later | default('z') }}\"\n",
    )
    assert A.load_scenario(p).sessions[0].steps[0].action == "send"


def test_captures_define_names_for_later_steps_sessions_and_finally(tmp_path):
    p = write(
        tmp_path,
        """\
        name: caps
        sessions:
          - name: a
            protocol: smtp
            connect: {host: h, port: 25}
            steps:
              - S: 220
                capture: {greeting: '(.*)'}
              - C: "HELO {{ greeting }}"
              - C: "X {{ late }}"
              - S: 250
                capture: {late: '(\\d+)'}
            finally:
              - C: "QUIT {{ late }}"
          - name: b
            protocol: pop3
            connect: {host: h, port: 110}
            steps:
              - C: "USER {{ late }}"
                S: +OK
        """,
    )
    ps = problems(p)
    assert len(ps) == 1 and "steps[2].C: undefined variable 'late'" in ps[0]


def test_vars_see_only_earlier_vars(tmp_path):
    p = write(tmp_path, HEAD + 'vars:\n  a: "{{ b }}"\n  b: x\n  c: "{{ a }}{{ b }}"\nsteps: [{S: 220}]\n')
    assert "vars.a: undefined variable 'b'" in one(p)


def test_template_syntax_error(tmp_path):
    p = write(tmp_path, HEAD + 'steps:\n  - C: "{{ x | b65 }}"\n')
    assert "steps[0].C: template error:" in one(p) and "b65" in one(p)


def test_pattern_problem_subpaths(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - S: [250, '2x']\n  - S: {code: 250, not: {re: '('}}\n")
    ps = problems(p)
    assert any(":4:14: steps[0].S[1]: " in m for m in ps), ps
    assert any("steps[1].S.not.re: " in m and "invalid regular expression" in m for m in ps), ps


def test_pattern_checked_for_the_sessions_protocol(tmp_path):
    p = write(tmp_path, "name: p\nprotocol: pop3\nconnect: {host: h}\nsteps:\n  - S: 250\n  - S: +OK\n")
    assert "steps[0].S" in one(p)


def test_starttls_rules(tmp_path):
    ok = write(
        tmp_path,
        "name: t\nconnect: {host: h, tls: starttls}\nsteps:\n  - {C: STARTTLS, S: 220, starttls: true}\n",
    )
    assert A.load_scenario(ok).sessions[0].steps[0].starttls
    implicit = write(
        tmp_path,
        "name: t\nconnect: {host: h, tls: implicit}\nsteps:\n  - {C: STARTTLS, S: 220, starttls: true}\n",
    )
    assert "starttls: true needs connect.tls: starttls (it is implicit)" in one(implicit)
    no_s = write(
        tmp_path, "name: t\nconnect: {host: h, tls: starttls}\nsteps:\n  - {C: STARTTLS, starttls: true}\n"
    )
    assert "starttls: true needs an S: pattern" in one(no_s)
    templated = write(
        tmp_path, "name: t\nconnect: {host: h, tls: '{{ mode }}'}\nvars: {mode: none}\nsteps: [{S: 220}]\n"
    )
    assert A.load_scenario(templated)  # checked later by resolve_connect


def test_telnet_tls(tmp_path):
    p = write(
        tmp_path,
        "name: t\nconnect: {host: h, transport: telnet, tls: starttls}\nsteps:\n"
        "  - {C: STARTTLS, S: 220, starttls: true}\n",
    )
    msg = one(p)
    assert "telnet" in msg and "socket" in msg and "openssl" in msg


def test_crlf_injection(tmp_path):
    p = write(
        tmp_path,
        HEAD + 'vars:\n  a: "x\\ny"\n  b: "pre {{ a }}"\n  c: "{{ a | b64 }}"\nsteps:\n'
        '  - C: "{{ b }}"\n  - C: "{{ c }}"\n  - C: "{{ a | upper }}"\n  - C: "{{ auth_plain(a, a) }}"\n'
        '  - raw: "{{ a }}"\n  - body: "{{ a }}"\n',
    )
    ps = problems(p)
    assert len(ps) == 2, ps
    assert "steps[0].C: variable 'b' holds a line break" in ps[0]
    assert "steps[2].C: variable 'a' holds a line break" in ps[1]
    assert "x\ny" not in "".join(ps)


def test_crlf_via_include_binding(tmp_path):
    write(tmp_path, "steps:\n  - C: 'HELO {{ who }}'\n", "frag.yaml")
    p = write(tmp_path, HEAD + 'steps:\n  - include: frag.yaml\n    vars: {who: "a\\r\\nRSET"}\n')
    msg = one(p)
    assert msg.startswith(f"{tmp_path}/frag.yaml:2:") and "variable 'who' holds a line break" in msg


def test_protocol_specific_keys(tmp_path):
    p = write(
        tmp_path,
        "name: t\nprotocol: pop3\nconnect: {host: h}\nsteps:\n  - {C: LIST, S: +OK, multiline: true, tag: false}\n",
    )
    assert "'tag' is for imap only (this session is pop3)" in one(p)


def test_connect_file_checks(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    ok = write(tmp_path, "name: t\nconnect: {host: h, tls: implicit, ca: ca.pem}\nsteps: [{S: 220}]\n")
    assert A.load_scenario(ok).sessions[0].connect.base_dir == tmp_path
    bad = write(tmp_path, "name: t\nconnect: {host: h, tls: implicit, ca: nope.pem}\nsteps: [{S: 220}]\n")
    assert "connect.ca: ca file 'nope.pem' not found" in one(bad)


def test_line_protocol_needs_a_port(tmp_path):
    p = write(tmp_path, "name: t\nprotocol: line\nconnect: {host: h}\nsteps: [{S: x}]\n")
    assert "missing required key 'port'" in one(p)


def test_sessions_rules(tmp_path):
    p = write(tmp_path, "sessions:\n  - name: a\n    connect: {host: h}\n    steps: [{S: 220}]\n")
    ps = problems(p)
    assert any("missing required key 'name'" in m for m in ps)
    assert any("sessions[0]: missing required key 'protocol'" in m for m in ps)


def test_fragment_is_not_runnable(tmp_path):
    p = write(tmp_path, "steps:\n  - C: NOOP\n")
    assert "this is a fragment" in one(p)
    assert A.is_fragment(p)
    assert not A.is_fragment(write(tmp_path, HEAD + "steps: [{S: 220}]\n", "x.yaml"))
    assert not A.is_fragment(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ includes


def test_nested_includes_bindings_and_captures(tmp_path):
    write(
        tmp_path,
        "vars: {who: default}\nsteps:\n  - include: inner.yaml\n    vars: {x: '{{ who }}'}\n",
        "lib/outer.yaml",
    )
    write(
        tmp_path, "steps:\n  - C: 'HELO {{ x }}'\n    S: 250\n    capture: {got: '(.*)'}\n", "lib/inner.yaml"
    )
    p = write(
        tmp_path, HEAD + "steps:\n  - include: lib/outer.yaml\n    vars: {who: me}\n  - C: '{{ got }}'\n"
    )
    s = A.load_scenario(p).sessions[0]
    inner = s.steps[0]
    assert inner.location.file == f"{tmp_path}/lib/inner.yaml" and inner.location.line == 2
    assert [v.line for v in inner.location.via] == [4, 3]
    assert inner.bindings == ({"who": "me"}, {"x": "{{ who }}"})
    assert s.steps[1].text == "{{ got }}"


def test_include_vars_checked_in_including_scope(tmp_path):
    write(tmp_path, "steps:\n  - C: 'HELO {{ x }}'\n", "f.yaml")
    p = write(
        tmp_path, HEAD + "steps:\n  - include: f.yaml\n    vars: {x: '{{ nope }}'}\n  - include: f.yaml\n"
    )
    ps = problems(p)
    assert any("steps[0].vars.x: undefined variable 'nope'" in m for m in ps), ps
    assert any(m.startswith(f"{tmp_path}/f.yaml:2:") and "undefined variable 'x'" in m for m in ps), ps


def test_include_cycle_self(tmp_path):
    p = write(tmp_path, "steps:\n  - include: a.yaml\n", "a.yaml")
    main = write(tmp_path, HEAD + "steps:\n  - include: a.yaml\n", "main.yaml")
    msg = one(main)
    assert msg.endswith(f"{main}:4 -> {tmp_path}/a.yaml:2 -> {tmp_path}/a.yaml: include cycle"), msg
    assert p.exists()


def test_include_of_a_scenario_is_an_error(tmp_path):
    write(tmp_path, HEAD + "steps: [{S: 220}]\n", "other.yaml")
    p = write(tmp_path, HEAD + "steps:\n  - include: other.yaml\n")
    assert "not a fragment" in one(p)


def test_include_of_a_broken_fragment(tmp_path):
    write(tmp_path, "steps:\n  - C: [a\n", "broken.yaml")
    p = write(tmp_path, HEAD + "steps:\n  - include: broken.yaml\n")
    assert "YAML syntax error" in one(p)


def test_fragment_schema_errors_and_secrets(tmp_path):
    write(
        tmp_path,
        "secrets: [pw, nope]\nvars: {pw: x}\nsteps:\n  - C: 'PASS {{ pw }}'\n    expect: 1\n",
        "f.yaml",
    )
    p = write(tmp_path, HEAD + "steps:\n  - include: f.yaml\n")
    ps = problems(p)
    assert any("f.yaml:1:" in m and "secret 'nope' is not a defined variable" in m for m in ps), ps
    assert any("f.yaml:5:5: steps[0].expect: unknown key 'expect'" in m for m in ps), ps
    write(tmp_path, "secrets: [pw]\nvars: {pw: x}\nsteps:\n  - C: 'PASS {{ pw }}'\n", "g.yaml")
    q = write(tmp_path, HEAD + "steps:\n  - include: g.yaml\n", "q.yaml")
    assert A.load_scenario(q).secrets == {"pw"}


def test_fragment_checked_against_protocol_of_each_including_session(tmp_path):
    write(tmp_path, "steps:\n  - S: +OK\n", "f.yaml")
    pop = write(
        tmp_path, "name: t\nprotocol: pop3\nconnect: {host: h}\nsteps:\n  - include: f.yaml\n", "pop.yaml"
    )
    assert A.load_scenario(pop).sessions[0].steps[0].expect.describe() == "+OK"
    smtp = write(tmp_path, HEAD + "steps:\n  - include: f.yaml\n", "smtp.yaml")
    assert one(smtp).startswith(f"{tmp_path}/f.yaml:2:")


# ------------------------------------------------------------------ env refs


def test_env_refs_and_warnings(tmp_path):
    p = write(
        tmp_path,
        HEAD + "vars:\n  user: '{{ env.U }}'\n  pw: \"{{ env.P | default('x') }}\"\nsteps:\n"
        "  - C: 'X {{ env.U }} {{ env.Q }}'\n",
    )
    sc = A.load_scenario(p)
    assert set(sc.env_refs) == {"U", "Q"}
    w = env_warnings(sc, {})
    assert w == [
        f"{p}:4: vars.user needs environment variable U, which is not set",
        f"{p}:7: steps[0].C needs environment variable U, which is not set",
        f"{p}:7: steps[0].C needs environment variable Q, which is not set",
    ]
    assert env_warnings(sc, {"U": "a", "Q": "b"}) == []


# ------------------------------------------------------------------ resolve_connect


def _session(tmp_path, connect: str, steps: str = "steps: [{S: 220}]", protocol: str = "smtp", defined=()):
    p = write(tmp_path, f"name: t\nprotocol: {protocol}\nconnect: {connect}\n{steps}\n", "rc.yaml")
    return A.load_scenario(p, defined=defined).sessions[0], p


def test_resolve_connect_types_and_defaults(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    s, _ = _session(
        tmp_path,
        "{host: '{{ h }}', port: '{{ port }}', timeout: '{{ t }}', tls_verify: '{{ v }}', ca: ca.pem, tls: implicit}",
        defined=["h", "port", "t", "v"],
    )
    ctx = Context(env={})
    for k, v in {"h": "127.0.0.1", "port": "2525", "t": "1.5", "v": "false"}.items():
        ctx.set(k, v)
    cfg = resolve_connect(s, ctx)
    assert isinstance(cfg, ConnectConfig)
    assert (cfg.host, cfg.port, cfg.timeout, cfg.tls_verify, cfg.tls) == (
        "127.0.0.1",
        2525,
        1.5,
        False,
        "implicit",
    )
    assert cfg.ca == tmp_path / "ca.pem" and cfg.protocol == "smtp"
    cfg2 = resolve_connect(s, ctx, {"port": 465, "tls_verify": True, "host": "::1", "ca": None})
    assert (cfg2.port, cfg2.tls_verify, cfg2.host) == (465, True, "::1")


@pytest.mark.parametrize(
    "proto, tls, port",
    [("smtp", "none", 25), ("smtp", "implicit", 465), ("pop3", "implicit", 995), ("imap", "none", 143)],
)
def test_resolve_connect_default_ports(tmp_path, proto, tls, port):
    s, _ = _session(tmp_path, f"{{host: h, tls: {tls}}}", steps="steps: [{S: EOF}]", protocol=proto)
    assert resolve_connect(s, Context(env={})).port == port


def test_resolve_connect_errors_name_file_and_line(tmp_path):
    s, p = _session(
        tmp_path,
        "{host: h, port: '{{ port }}', tls: '{{ mode }}', transport: '{{ tr }}'}",
        defined=["port", "mode", "tr"],
    )
    ctx = Context(env={})
    for k, v in {"port": "99999", "mode": "off", "tr": "socket"}.items():
        ctx.set(k, v)
    with pytest.raises(ScenarioError) as ei:
        resolve_connect(s, ctx)
    text = str(ei.value)
    assert f"{p}:3:" in text and "connect.port: must be a port number 1..65535 (got '99999')" in text
    assert "'tls' must be one of none, implicit, starttls (got 'off')" in text
    ctx.set("port", "abc")
    ctx.set("mode", "starttls")
    ctx.set("tr", "telnet")
    with pytest.raises(ScenarioError) as ei:
        resolve_connect(s, ctx)
    text = str(ei.value)
    assert "'port' must be an integer" in text
    assert "telnet transport cannot speak TLS" in text and "socket" in text and "openssl" in text
    assert "tls is starttls but no step has starttls: true" in text


def test_resolve_connect_masks_secret_values(tmp_path):
    s, _ = _session(tmp_path, "{host: h, port: '{{ pw }}'}", defined=["pw"])
    ctx = Context(env={}, secrets=["pw"])
    ctx.set("pw", "hunter2")
    with pytest.raises(ScenarioError) as ei:
        resolve_connect(s, ctx)
    assert "hunter2" not in str(ei.value) and "****" in str(ei.value)


def test_resolve_connect_missing_ca(tmp_path):
    s, _ = _session(tmp_path, "{host: h, tls: implicit, ca: '{{ ca }}'}", defined=["ca"])
    ctx = Context(env={})
    ctx.set("ca", "missing.pem")
    with pytest.raises(ScenarioError, match="ca file 'missing.pem' not found"):
        resolve_connect(s, ctx)


def test_resolve_connect_starttls_step_without_tls(tmp_path):
    s, _ = _session(
        tmp_path,
        "{host: h, tls: '{{ m }}'}",
        steps="steps: [{C: STARTTLS, S: 220, starttls: true}]",
        defined=["m"],
    )
    ctx = Context(env={})
    ctx.set("m", "none")
    with pytest.raises(ScenarioError, match="starttls: true needs connect.tls: starttls"):
        resolve_connect(s, ctx)
    ctx.set("m", "starttls")
    assert resolve_connect(s, ctx).tls == "starttls"


# ------------------------------------------------------------------ vars and env files


def test_load_vars_file(tmp_path):
    p = write(tmp_path, "user: bob\nport: 2525\nflag: true\nratio: 1.5\nmode: off\n", "v.yaml")
    assert V.load_vars_file(p) == {
        "user": "bob",
        "port": "2525",
        "flag": "true",
        "ratio": "1.5",
        "mode": "off",
    }
    bad = write(tmp_path, "user: [a]\n'bad name': x\n", "b.yaml")
    with pytest.raises(ScenarioError) as ei:
        V.load_vars_file(bad)
    assert (
        len(ei.value.problems) == 2
        and "user: expected a string or number, got a list" in ei.value.problems[0]
    )
    with pytest.raises(ScenarioError, match="must be a mapping"):
        V.load_vars_file(write(tmp_path, "- a\n", "l.yaml"))


def test_load_env_file(tmp_path):
    p = tmp_path / ".env"
    p.write_text(
        '# comment\n\nA=1\nexport B = two words\nC=\'single # not a comment\'\nD="dq \\"x\\" \\n"\n'
        "E=val # trailing comment\nF=\n"
    )
    assert V.load_env_file(p) == {
        "A": "1",
        "B": "two words",
        "C": "single # not a comment",
        "D": 'dq "x" \n',
        "E": "val",
        "F": "",
    }
    bad = tmp_path / "bad.env"
    bad.write_text("OK=1\nnot a line secretvalue\nQ='unterminated\n")
    with pytest.raises(ScenarioError) as ei:
        V.load_env_file(bad)
    assert ei.value.problems == [f"{bad}:2: expected KEY=VALUE", f"{bad}:3: Q: unterminated quote"]
    assert "secretvalue" not in str(ei.value)
    with pytest.raises(ScenarioError, match="file not found"):
        V.load_env_file(tmp_path / "none.env")


# ------------------------------------------------------------------ discovery and validate


def test_discover(tmp_path, monkeypatch):
    write(tmp_path, HEAD + "steps: [{S: 220}]\n", "d/b.yaml")
    write(tmp_path, HEAD + "steps: [{S: 220}]\n", "d/a.yml")
    write(tmp_path, HEAD + "steps: [{S: 220}]\n", "d/sub/c.yaml")
    write(tmp_path, "steps: [{S: 220}]\n", "d/lib/frag.yaml")
    (tmp_path / "d" / "notes.txt").write_text("x")
    found = A.discover([str(tmp_path / "d")])
    assert [p.relative_to(tmp_path / "d").as_posix() for p in found] == ["a.yml", "b.yaml", "sub/c.yaml"]
    monkeypatch.chdir(tmp_path)
    assert [str(p) for p in A.discover(["d/*.yaml"])] == ["d/b.yaml"]
    assert [str(p) for p in A.discover(["d/lib/frag.yaml"])] == ["d/lib/frag.yaml"]  # as given


def test_validate_paths(tmp_path):
    write(tmp_path, HEAD + "vars: {pw: '{{ env.PW }}'}\nsteps:\n  - include: lib/f.yaml\n", "d/good.yaml")
    write(tmp_path, "steps:\n  - C: 'PASS {{ pw }}'\n    S: 235\n", "d/lib/f.yaml")
    write(tmp_path, HEAD + "steps:\n  - S: '25'\n", "d/bad.yaml")
    write(tmp_path, "steps:\n  - S: 'xyz'\n  - S: +OK\n", "d/lib/badfrag.yaml")
    r = A.validate_paths([str(tmp_path / "d")], env={})
    assert r.files == 4
    assert sorted(Path(f).name for f in r.fragments) == ["badfrag.yaml", "f.yaml"]
    assert len(r.errors) == 2, r.errors
    assert "bad.yaml:4:8: steps[0].S: " in r.errors[0] and "'25' is not a reply-code pattern" in r.errors[0]
    assert "badfrag.yaml:2:" in r.errors[1]
    assert r.warnings == [
        f"{tmp_path}/d/good.yaml:3: vars.pw needs environment variable PW, which is not set"
    ]
    r2 = A.validate_paths([str(tmp_path / "d" / "good.yaml")], env={"PW": "x"})
    assert (r2.files, r2.errors, r2.warnings) == (1, [], [])


def test_validate_paths_never_writes_the_cache(tmp_path):
    write(tmp_path, HEAD + "steps: [{S: 220}]\n", "ok.yaml")
    A.validate_paths([str(tmp_path / "ok.yaml")], env={})
    assert not (tmp_path / "cache").exists()


def test_validate_cli(tmp_path):
    ok = write(tmp_path, HEAD + "steps: [{S: 220}]\n", "ok.yaml")
    bad = write(tmp_path, HEAD + "steps: [{S: '25'}]\n", "bad.yaml")
    env = {**os.environ, "MAILRUN_CACHE_DIR": str(tmp_path / "c")}
    r = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(ok)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(ok), str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2 and "'25' is not a reply-code pattern" in r.stdout
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------ cache

_PROBE = """
import sys
from runner.load.api import load_scenario
load_scenario(sys.argv[1])
print("jsonschema" in sys.modules)
"""


def _probe(path: Path, cache: Path) -> str:
    env = {**os.environ, "MAILRUN_CACHE_DIR": str(cache)}
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_cache_skips_jsonschema_on_second_load(tmp_path):
    write(tmp_path, "steps:\n  - C: NOOP\n", "lib/f.yaml")
    p = write(tmp_path, HEAD + "steps:\n  - include: lib/f.yaml\n")
    cache = tmp_path / "c"
    assert _probe(p, cache) == "True"
    assert _probe(p, cache) == "False"
    # changing an included fragment invalidates the entry
    write(tmp_path, "steps:\n  - C: RSET\n", "lib/f.yaml")
    assert _probe(p, cache) == "True"
    assert _probe(p, cache) == "False"


def test_semantic_checks_run_even_when_cached(tmp_path, monkeypatch):
    p = write(tmp_path, HEAD + "steps:\n  - C: '{{ x }}'\n")
    assert A.load_scenario(p, defined=["x"])
    assert any((tmp_path / "cache" / "validated").iterdir())
    assert "undefined variable 'x'" in one(p)


def test_invalid_files_are_not_cached(tmp_path):
    p = write(tmp_path, HEAD + "steps:\n  - C: NOOP\n    bogus: 1\n")
    problems(p)
    problems(p)
    assert not (tmp_path / "cache" / "validated").exists() or not any(
        (tmp_path / "cache" / "validated").iterdir()
    )


def test_unwritable_cache_dir_is_silently_no_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MAILRUN_CACHE_DIR", str(blocker / "sub"))
    p = write(tmp_path, HEAD + "steps: [{S: 220}]\n")
    assert A.load_scenario(p).name == "t"
    assert A.load_scenario(p).name == "t"


def test_cache_dir_from_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILRUN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    p = write(tmp_path, HEAD + "steps: [{S: 220}]\n")
    A.load_scenario(p)
    assert any((tmp_path / "xdg" / "mailrun" / "validated").iterdir())


# ------------------------------------------------------------------ property tests

_FUZZ = settings(
    max_examples=int(os.environ.get("MAILRUN_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_FUZZ
@given(text=st.text(max_size=300))
def test_any_text_raises_only_scenario_error(tmp_path, text):
    p = tmp_path / "fuzz.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        A.load_scenario(p, use_cache=False)
    except ScenarioError as e:
        assert e.problems


@_FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_raise_only_scenario_error(tmp_path, raw):
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(raw)
    try:
        A.load_scenario(p, use_cache=False)
    except ScenarioError:
        pass


_KEYS = st.sampled_from(
    [
        "name",
        "connect",
        "steps",
        "sessions",
        "protocol",
        "vars",
        "secrets",
        "finally",
        "host",
        "port",
        "tls",
        "C",
        "S",
        "body",
        "raw",
        "sleep",
        "include",
        "capture",
        "starttls",
        "code",
        "text",
        "re",
        "lines",
        "not",
        "retry",
        "attempts",
        "transport",
        "timeout",
        "multiline",
        "tag",
        "x",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        ["smtp", "pop3", "imap", "line", "starttls", "250", "+OK", "EOF", "{{ x }}", "{{", "(", "\r\n"]
    ),
)
_TREES = st.recursive(
    _SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(_KEYS, kids, max_size=5)),
    max_leaves=25,
)


@_FUZZ
@given(tree=st.dictionaries(_KEYS, _TREES, max_size=6))
def test_any_yaml_structure_raises_only_scenario_error(tmp_path, tree):
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    try:
        A.load_scenario(p, use_cache=False)
        A.validate_paths([p], env={})
    except ScenarioError as e:
        assert all(isinstance(m, str) and m for m in e.problems)


@_FUZZ
@given(
    steps=st.lists(st.dictionaries(_KEYS, _TREES, max_size=3), max_size=4),
    connect=st.dictionaries(_KEYS, _SCALARS, max_size=4),
    protocol=st.sampled_from(["smtp", "pop3", "imap", "line", "bogus"]),
)
def test_scenario_shaped_structures_raise_only_scenario_error(tmp_path, steps, connect, protocol):
    doc = {"name": "n", "protocol": protocol, "connect": {"host": "h", **connect}, "steps": steps}
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    try:
        sc = A.load_scenario(p, use_cache=False)
    except ScenarioError:
        return
    for s in sc.sessions:
        try:
            resolve_connect(s, Context(env={}))
        except ScenarioError:
            pass
        except Exception as e:  # the templates module may refuse an undefined name
            assert type(e).__name__ == "TemplateError", e


def test_env_secret_names(tmp_path):
    p = write(tmp_path, HEAD + "secrets: [env.TOKEN]\nsteps:\n  - C: 'AUTH {{ env.TOKEN }}'\n")
    assert A.load_scenario(p).secrets == {"env.TOKEN"}
    bad = write(tmp_path, HEAD + "secrets: ['not a name']\nsteps: [{S: 220}]\n", "bad.yaml")
    assert one(bad).endswith("secrets[0]: expected a variable name (or env.NAME), got 'not a name'")


def _tree(node):
    """A node tree as plain data: tags, values, styles that matter, and positions."""
    from yaml.nodes import MappingNode, ScalarNode

    pos = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, ScalarNode):
        return ("scalar", node.tag, node.value, bool(node.style), pos)
    if isinstance(node, MappingNode):
        return ("map", node.tag, pos, [(_tree(k), _tree(v)) for k, v in node.value])
    return ("seq", node.tag, pos, [_tree(v) for v in node.value])


def test_libyaml_and_pure_python_parsers_agree():
    """Files are composed by libyaml when PyYAML has it; the pure-Python loader is the reference
    (and reports the errors). Every file the project has must give the same tree from both."""
    import yaml.reader

    from runner.load import yaml_doc as L

    if L._FastLoader is None:
        pytest.skip("PyYAML was built without libyaml: only the pure-Python parser runs")
    root = Path(__file__).resolve().parent.parent
    files = sorted(
        [
            *root.glob("scenarios/**/*.yaml"),
            *root.glob("providers/*.yaml"),
            *root.glob("tests/fixtures/**/*.yaml"),
        ]
    )
    assert len(files) > 40
    compared = 0
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        if yaml.reader.Reader.NON_PRINTABLE.search(text):
            continue
        try:
            slow = L._Loader(text).get_single_node()
        except yaml.YAMLError:
            continue  # the fast path falls back to the slow one for these
        fast = L._FastLoader(text).get_single_node()
        if slow is None:
            assert fast is None, f
            continue
        assert _tree(fast) == _tree(slow), f
        compared += 1
    assert compared > 40


_yamlish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(_yamlish, st.sampled_from([None, True, False]))
def test_property_parsers_agree_on_generated_documents(data, flow):
    from runner.load import yaml_doc as L

    if L._FastLoader is None:
        return
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    if yaml.reader.Reader.NON_PRINTABLE.search(text):
        return
    slow = L._Loader(text).get_single_node()
    fast = L._FastLoader(text).get_single_node()
    assert (slow is None) == (fast is None)
    if slow is not None:
        assert _tree(fast) == _tree(slow)


# ------------------------------------------------------------------ schema first, one rule each


def test_a_value_the_schema_rejects_gets_the_schema_message_only(tmp_path):
    """The schema runs before the semantic checks, which skip what it rejected: no second,
    guessing message about the same value (main said 'multiline' is for pop3 only about a
    value that is not even a boolean, and checked S: against smtp for an unknown protocol)."""
    p = write(tmp_path, HEAD + "steps:\n  - {C: NOOP, S: 250, multiline: 'yes'}\n")
    assert "steps[0].multiline: expected a boolean" in one(p)
    q = write(
        tmp_path, "name: t\nprotocol: lines\nconnect: {host: h, port: 7}\nsteps:\n  - S: '^OK'\n", "q.yaml"
    )
    assert (
        "'protocol' must be one of smtp, lmtp, pop3, imap, line (got 'lines'; did you mean 'line'?)" in one(q)
    )


def test_problems_outside_a_rejected_step_are_still_reported(tmp_path):
    p = write(
        tmp_path,
        HEAD + "steps:\n  - {C: NOOP, S: 250, timeout: 0, capture: {x: '(.*)'}}\n"
        "  - C: 'HELO {{ x }} {{ nope }}'\n",
    )
    ps = problems(p)
    assert len(ps) == 2, ps  # the capture of the rejected step stays defined
    assert "steps[0].timeout: must be greater than 0 (got 0)" in ps[0]
    assert "steps[1].C: undefined variable 'nope'" in ps[1]


def test_c_line_taint_is_read_with_the_template_parser(tmp_path):
    """b64 makes a value safe for a C line, unless b64decode undoes it (main's regex saw 'b64'
    anywhere in the expression and let it through)."""
    p = write(
        tmp_path,
        HEAD
        + 'vars:\n  a: "x\\ny"\nsteps:\n  - C: "HELO {{ a | b64 | b64decode }}"\n  - C: "X {{ a | b64 }}"\n',
    )
    assert "steps[0].C: variable 'a' holds a line break" in one(p)


def test_connect_rules_say_the_same_at_load_and_at_run(tmp_path):
    """One function (runner.model.config.check_connect) holds each connect rule: a literal
    value at load and a rendered one at run time get the same words."""
    at_load = one(
        write(tmp_path, "name: t\nconnect: {host: h, tls: implicit, ca: nope.pem}\nsteps: [{S: 220}]\n")
    )
    s, p = _session(tmp_path, "{host: h, tls: implicit, ca: '{{ ca }}'}", defined=["ca"])
    ctx = Context(env={})
    ctx.set("ca", "nope.pem")
    with pytest.raises(ScenarioError) as ei:
        resolve_connect(s, ctx)
    rule = "ca file 'nope.pem' not found (relative to "
    assert rule in at_load and rule in ei.value.problems[0]
    line = write(tmp_path, "name: t\nprotocol: line\nconnect: {host: h}\nsteps: [{S: x}]\n", "line.yaml")
    spec = ConnectSpec(values={"host": "h"}, base_dir=tmp_path, location=Location("line.yaml", 3, 10))
    with pytest.raises(ScenarioError) as ei:
        resolve_connect(Session("s", "line", spec, ()), Context(env={}))
    rule = "missing required key 'port' (protocol line has no usual port)"
    assert rule in one(line) and rule in ei.value.problems[0]


def test_the_other_keys_of_a_step_the_schema_partly_rejected_are_still_checked(tmp_path):
    """The schema's rejection of one key leaves the step's other keys checked: an undefined
    variable in its C line, a second starttls step, an include's fragment."""
    p = write(tmp_path, HEAD + "steps:\n  - {C: 'EHLO {{ nme }}', S: 250, timeout: -1}\n")
    ps = problems(p)
    assert len(ps) == 2, ps
    assert "steps[0].C: undefined variable 'nme'" in ps[0] and "steps[0].timeout: must be greater" in ps[1]
    p = write(
        tmp_path,
        "name: t\nconnect: {host: localhost, port: 25, tls: starttls}\nsteps:\n"
        "  - {C: STARTTLS, S: 220, starttls: true, timeout: '5'}\n"
        "  - {C: STARTTLS, S: 220, starttls: true}\n",
    )
    ps = problems(p)
    assert len(ps) == 2, ps
    assert "steps[0].timeout: expected a number" in ps[0]
    assert "steps[1].starttls: only one step per session may have starttls: true" in ps[1]
    write(tmp_path, "steps:\n  - C: 'NOOP {{ a }} {{ b }}'\n", "lib/f.yaml")
    p = write(tmp_path, HEAD + "steps:\n  - include: lib/f.yaml\n    vars: {a: [1]}\n")
    ps = problems(p)
    assert len(ps) == 2, ps  # 'a' is given (badly), 'b' is not given at all
    assert "steps[0].vars.a: expected a string" in ps[0]
    assert "lib/f.yaml:2:" in ps[1] and "undefined variable 'b'" in ps[1]


def test_a_variable_the_schema_rejected_is_not_also_undefined(tmp_path):
    p = write(
        tmp_path,
        HEAD + "vars:\n  b: [1, 2]\nsteps:\n  - {C: 'NOOP {{ b }}', S: 250, capture: {q: 5}}\n"
        "  - {C: 'NOOP {{ q }}', S: 250}\n",
    )
    ps = problems(p)
    assert len(ps) == 2, ps  # one message per rejected value; neither name is called undefined
    assert "vars.b: expected a string" in ps[0] and "steps[0].capture.q: expected a string" in ps[1]
