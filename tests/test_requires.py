"""The `requires:` / `when:` expression language (runner.lang.requires) and its load checks
(runner.load.caps_check): parsing with the item's place, evaluation against capability lists as
runner.protocols.caps reads them from real replies, and the file:line:col errors of the loader."""

from __future__ import annotations

import textwrap

import pytest

from runner.errors import ScenarioError
from runner.lang.requires import check, parse
from runner.load.api import load_scenario
from runner.protocols import create
from runner.protocols.caps import capabilities

EHLO = (
    b"250-mail.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n"
    b"250-AUTH=PLAIN LOGIN\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
)


def smtp_caps(data: bytes = EHLO) -> dict[str, str]:
    proto = create("smtp")
    proto.receive_data(b"220 hi\r\n")
    proto.next_reply()
    proto.command("EHLO client.example")
    proto.receive_data(data)
    caps = capabilities("smtp", "EHLO client.example", proto.next_reply())
    assert caps is not None
    return caps


def imap_caps(line: bytes) -> dict[str, str]:
    proto = create("imap")
    proto.receive_data(line)
    caps = capabilities("imap", None, proto.next_reply())
    assert caps is not None
    return caps


# --------------------------------------------------------------------------- evaluation


def test_smtp_auth_mechanisms_match_auth_equals_forms():
    caps = smtp_caps()
    assert caps["SIZE"] == "10240000" and caps["AUTH"] == "PLAIN LOGIN"  # AUTH= adds nothing new
    for ok in ("STARTTLS", "AUTH=PLAIN", "auth=login", "SIZE>=10000000", "SIZE<20000000", "not SMTPUTF8"):
        assert check([ok], caps) is None, ok
    assert check(["AUTH=CRAM-MD5"], caps) == (
        "AUTH=CRAM-MD5",
        "server does not offer AUTH=CRAM-MD5 (offers PLAIN LOGIN)",
    )


def test_the_issue_example_reason_word_for_word():
    caps = smtp_caps(b"250-mx\r\n250-SIZE 10240000\r\n250 AUTH PLAIN LOGIN\r\n")
    assert check(["AUTH=CRAM-MD5"], caps)[1] == "server does not offer AUTH=CRAM-MD5 (offers PLAIN LOGIN)"
    assert check([{"any": ["AUTH=CRAM-MD5", "AUTH=SCRAM-SHA-256"]}], caps) == (
        "any: [AUTH=CRAM-MD5, AUTH=SCRAM-SHA-256]",
        "server offers none of AUTH=CRAM-MD5, AUTH=SCRAM-SHA-256 (offers PLAIN LOGIN)",
    )
    assert check([{"any": ["AUTH=CRAM-MD5", "AUTH=LOGIN"]}], caps) is None


def test_numeric_comparisons_and_their_reasons():
    caps = smtp_caps(b"250-mx\r\n250-SIZE 10240000\r\n250 SIZEX\r\n")
    assert check(["SIZE>=10240000"], caps) is None
    assert check(["SIZE>10240000"], caps) == ("SIZE>10240000", "server offers SIZE 10240000, not > 10240000")
    assert check(["SIZE<=1"], caps)[1] == "server offers SIZE 10240000, not <= 1"
    bare = smtp_caps(b"250-mx\r\n250 SIZE\r\n")  # SIZE without a number: no comparison holds
    assert check(["SIZE>=1"], bare)[1] == "server offers SIZE without a number, not >= 1"
    assert check(["SMTPUTF8"], bare) == ("SMTPUTF8", "server does not offer SMTPUTF8")


def test_not_and_the_first_item_that_fails():
    caps = smtp_caps()
    assert check(["STARTTLS", "not 8BITMIME", "SMTPUTF8"], caps) == ("not 8BITMIME", "server offers 8BITMIME")
    assert check(["not AUTH=PLAIN"], caps)[1].startswith("server offers AUTH=PLAIN (AUTH PLAIN LOGIN")


def test_imap_atoms_from_greeting_and_response_codes():
    greeting = imap_caps(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN AUTH=LOGIN] ready\r\n")
    assert greeting["AUTH"] == "PLAIN LOGIN" and "LITERAL+" in greeting
    assert check(["IMAP4rev1", "LITERAL+", "AUTH=PLAIN", "not IDLE"], greeting) is None
    assert check(["IDLE"], greeting) == ("IDLE", "server does not offer IDLE")
    proto = create("imap")
    proto.command("LOGIN a b")
    proto.receive_data(b"a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n")
    after = capabilities("imap", "LOGIN a b", proto.next_reply())
    assert after == {"IMAP4REV1": "", "IDLE": "", "MOVE": ""}
    assert check(["AUTH=PLAIN"], after)[1] == "server does not offer AUTH=PLAIN (offers no AUTH)"


def test_pop3_capa_sasl_counts_as_auth():
    proto = create("pop3")
    proto.receive_data(b"+OK ready\r\n")
    proto.next_reply()
    proto.command("CAPA")
    proto.receive_data(b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n")
    caps = capabilities("pop3", "CAPA", proto.next_reply())
    assert caps["SASL"] == caps["AUTH"] == "PLAIN LOGIN"
    assert check(["STLS", "AUTH=LOGIN", "SASL=PLAIN", "UIDL"], caps) is None


def test_replies_that_carry_no_list():
    proto = create("smtp")
    proto.receive_data(b"220 mx ESMTP\r\n")
    assert capabilities("smtp", None, proto.next_reply()) is None  # the greeting
    proto.command("HELO x")
    proto.receive_data(b"250 mx\r\n")
    assert capabilities("smtp", "HELO x", proto.next_reply()) is None
    proto.command("EHLO x")
    proto.receive_data(b"502 5.5.2 no EHLO\r\n")
    assert capabilities("smtp", "EHLO x", proto.next_reply()) is None
    imap = create("imap")
    imap.receive_data(b"* OK ready\r\n")
    assert capabilities("imap", None, imap.next_reply()) is None


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("source", "where", "message"),
    [
        (["AUTH PLAIN"], (0,), "not a capability expression"),
        (["SIZE>=ten"], (0,), "is not a whole number"),
        ([{"any": []}], (0,), "any: [ITEM, ...]"),
        ([{"all": ["X"]}], (0,), "any: [ITEM, ...]"),
        (["STARTTLS", {"any": ["IDLE", "=x"]}], (1, "any", 1), "not a capability expression"),
        ([], (), "empty list"),
        ([3], (0,), "got int"),
    ],
)
def test_parse_problems_name_the_item(source, where, message):
    req, problems = parse(source)
    assert req is None
    assert [p[0] for p in problems] == [where] and message in problems[0][1]


def test_parse_accepts_one_string_and_spaces_around_operators():
    req, problems = parse("SIZE >= 100")
    assert problems == [] and req.text == "SIZE>=100"
    req, _ = parse(["not smtputf8", {"any": ["auth=plain", "AUTH=LOGIN"]}])
    assert req.text == "not SMTPUTF8, any: [AUTH=PLAIN, AUTH=LOGIN]"


# --------------------------------------------------------------------------- the loader


def write(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path) -> str:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path, use_cache=False)
    return str(exc.value)


def test_a_bad_expression_is_reported_at_its_item(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        connect: {host: 127.0.0.1, port: 25}
        steps:
          - C: EHLO x
            S: 250
          - C: NOOP
            S: 250
            requires: [STARTTLS, "SIZE>=big"]
        """,
    )
    assert (
        "s.yaml:8:26: steps[1].requires[1]: >= compares numbers: 'big' is not a whole number"
        in problems_of(path)
    )


def test_requires_before_any_capability_list_is_a_load_error(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        connect: {host: 127.0.0.1, port: 25, tls: starttls}
        steps:
          - S: 220
            when: STARTTLS
          - C: EHLO x
            S: 250
          - C: STARTTLS
            S: 220
            starttls: true
            when: STARTTLS
          - C: NOOP
            S: 250
            requires: SIZE>=1
        """,
    )
    text = problems_of(path)
    assert "s.yaml:5:5: steps[0].when: 'when' is evaluated before any capability list" in text
    assert "send EHLO (or LHLO) first" in text
    assert "steps[2]" not in text  # after EHLO: known
    assert "s.yaml:14:5: steps[3].requires: 'requires' is evaluated before any capability list" in text
    assert "dropped by STARTTLS" in text


def test_session_requires_needs_a_step_that_reads_a_list(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        protocol: pop3
        connect: {host: 127.0.0.1, port: 110}
        requires: [STLS]
        steps:
          - S: +OK
          - C: QUIT
            S: +OK
        """,
    )
    assert (
        "s.yaml:4:1: requires: 'requires' needs a capability list, but no step can read one: send CAPA first"
        in problems_of(path)
    )


def test_imap_may_have_a_list_after_the_greeting(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        protocol: imap
        connect: {host: 127.0.0.1, port: 143}
        requires: [IMAP4rev1]
        max_time: 2
        steps:
          - S: OK
          - C: NOOP
            S: OK
            when: IDLE
            min_time: 0.5
        """,
    )
    scenario = load_scenario(path, use_cache=False)
    (session,) = scenario.sessions
    assert session.requires == ("IMAP4rev1",) and session.max_time == 2.0
    assert session.steps[1].when == ["IDLE"] and session.steps[1].min_time == 0.5


def test_scenario_requires_and_limits_reach_every_session(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        requires: STARTTLS
        max_time: 3
        min_time: 0.1
        sessions:
          - name: a
            protocol: smtp
            connect: {host: 127.0.0.1, port: 25}
            requires: [SIZE>=1]
            max_time: 1
            steps:
              - C: EHLO x
                S: 250
          - name: b
            protocol: smtp
            connect: {host: 127.0.0.1, port: 25}
            steps:
              - C: EHLO x
                S: 250
        """,
    )
    a, b = load_scenario(path, use_cache=False).sessions
    assert a.requires == ("STARTTLS", "SIZE>=1") and (a.max_time, a.min_time) == (1.0, 0.1)
    assert b.requires == ("STARTTLS",) and (b.max_time, b.min_time) == (3.0, 0.1)


def test_min_time_above_max_time_and_the_line_protocol(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        protocol: line
        connect: {host: 127.0.0.1, port: 7}
        requires: X
        steps:
          - C: hello
            S: hello
            max_time: 1
            min_time: 2
            requires: X
          - C: hello
            max_time: 1
        """,
    )
    text = problems_of(path)
    assert "s.yaml:12:5: steps[1].max_time: max_time needs an S: pattern (it times the reply)" in text
    assert "s.yaml:4:1: requires: the line protocol has no capability list" in text
    assert "s.yaml:9:5: steps[0].min_time: min_time is above max_time" in text
    assert "s.yaml:10:5: steps[0].requires: the line protocol has no capability list" in text


def test_caps_in_templates_is_accepted_and_other_namespaces_are_not(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        connect: {host: 127.0.0.1, port: 25}
        steps:
          - C: EHLO x
            S: 250
          - C: "MAIL FROM:<a@b> SIZE={{ caps.SIZE }}"
            S: 250
          - C: "NOOP {{ other.X }}"
            S: 250
        """,
    )
    text = problems_of(path)
    assert "caps.SIZE" not in text
    assert "attribute access 'other.X' is not supported (only env.NAME, caps.NAME)" in text


def test_caps_where_nothing_is_connected_yet_is_a_load_error(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        connect: {host: 127.0.0.1, port: 25, timeout: "{{ caps.SIZE }}"}
        vars:
          size: "{{ caps.SIZE | default('1') }}"
        steps:
          - C: EHLO x
            S: 250
        """,
    )
    text = problems_of(path)
    assert "s.yaml:2:47: connect.timeout: 'caps.SIZE' cannot be used in connect" in text
    assert "s.yaml:4:9: vars.size: 'caps.SIZE' cannot be used in vars" in text
