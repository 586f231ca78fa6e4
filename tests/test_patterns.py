import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import ExitClass
from runner.lang.pattern_parse import Problem, parse_pattern
from runner.lang.patterns import MatchResult, Pattern, PatternError, capture
from runner.lang.render import Context
from runner.lang.secrets import MASK
from runner.lang.templates import TemplateError
from runner.protocols.base import Reply

# --- hand-built replies (shapes as the protocol framers produce them) ------------------


def smtp(*lines: str) -> Reply:
    """SMTP reply from its wire lines ('250-a', '250 b')."""
    code = lines[-1][:3]
    texts = tuple(line[4:] for line in lines)
    last = texts[-1].split(" ", 1)[0]
    enhanced = last if last.count(".") == 2 and last[0].isdigit() else None
    raw = "".join(f"{line}\r\n" for line in lines).encode()
    return Reply(raw=raw, lines=tuple(lines), code=code, texts=texts, enhanced=enhanced)


def pop3(first: str, *body: str) -> Reply:
    status, _, rest = first.partition(" ")
    raw = (first + "\r\n" + "".join(f"{b}\r\n" for b in body) + (".\r\n" if body else "")).encode()
    return Reply(raw=raw, lines=(first, *body), code=status, texts=(rest, *body), multiline=bool(body))


def imap(*lines: str, tag: str = "a1") -> Reply:
    """IMAP: untagged lines then the tagged status line (or a '+' continuation / greeting)."""
    last = lines[-1]
    texts = []
    for x in lines:
        if x.startswith(("* ", "+")):
            texts.append(x[2:])
        else:
            texts.append(x.split(" ", 2)[2] if x.count(" ") >= 2 else "")
    if last.startswith("+"):
        code, rtag = "+", None
    elif last.startswith("* "):
        code, rtag = last.split(" ")[1], None
    else:
        rtag, code = last.split(" ")[:2]
    raw = "".join(f"{x}\r\n" for x in lines).encode()
    return Reply(raw=raw, lines=tuple(lines), code=code, texts=tuple(texts), tag=rtag or None)


def line(*lines: str) -> Reply:
    return Reply(raw="".join(f"{x}\n" for x in lines).encode(), lines=tuple(lines), texts=tuple(lines))


def ctx(**kw) -> Context:
    kw.setdefault("env", {})
    kw.setdefault("run_id", "r1")
    return Context(**kw)


def pat(value, protocol="smtp") -> Pattern:
    p, problems = parse_pattern(value, protocol)
    assert problems == [], problems
    assert p is not None
    return p


def problems(value, protocol="smtp") -> list[Problem]:
    p, probs = parse_pattern(value, protocol)
    assert p is None
    assert probs
    return probs


def only_problem(value, protocol="smtp") -> Problem:
    probs = problems(value, protocol)
    assert len(probs) == 1, probs
    return probs[0]


OK_MAIL = smtp("250 2.1.0 Ok")
RELAY = smtp("550 5.7.1 <x@y>: Relay access denied")
EHLO = smtp("250-mail.example.org", "250-PIPELINING", "250-STARTTLS", "250-AUTH PLAIN LOGIN", "250 CHUNKING")
QUEUED = smtp("250 2.0.0 Ok: queued as 4XyZ1k2abc")


# --- SMTP scalars ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, reply, ok",
    [
        ("250", OK_MAIL, True),
        (250, OK_MAIL, True),
        ("2xx", OK_MAIL, True),
        ("25x", OK_MAIL, True),
        ("2x0", OK_MAIL, True),
        ("xxx", RELAY, True),
        ("2XX", OK_MAIL, True),
        ("251", OK_MAIL, False),
        ("5xx", OK_MAIL, False),
        ("250 2.1.0", OK_MAIL, True),
        ("250 Ok", OK_MAIL, True),
        ("250 ok", OK_MAIL, False),  # TEXT is case-sensitive
        ("250 2.1.0 Ok", OK_MAIL, True),
        ("250 2.1.5", OK_MAIL, False),
        ("250 STARTTLS", EHLO, True),  # substring of any line's text
        ("250 AUTH PLAIN", EHLO, True),
        ("250 SMTPUTF8", EHLO, False),
        ("5xx Relay access", RELAY, True),
        (550, RELAY, True),
    ],
)
def test_smtp_scalar(value, reply, ok):
    assert pat(value).match(reply, ctx()).ok is ok


def test_smtp_failure_reasons_quote_the_reply():
    c = ctx()
    r = pat(250).match(RELAY, c)
    assert r == MatchResult(False, "expected 250, got 550 5.7.1 <x@y>: Relay access denied")
    r = pat("250 2.1.5").match(OK_MAIL, c)
    assert r.reason == "expected text '2.1.5' in the reply, got 250 2.1.0 Ok"
    r = pat("250 SMTPUTF8").match(EHLO, c)
    assert r.reason == "expected text 'SMTPUTF8' in the reply, got 250 CHUNKING (+4 more lines)"


def test_reply_without_code_does_not_match_a_code():
    assert not pat("250").match(line("250 hello"), ctx()).ok
    assert not pat("+OK", "pop3").match(Reply(raw=b"", lines=()), ctx()).ok
    r = pat("250").match(Reply(raw=b"", lines=()), ctx())
    assert r.reason == "expected 250, got an empty reply"


def test_long_reply_lines_are_shortened_in_reasons():
    r = pat("550").match(smtp("250 " + "x" * 500), ctx())
    assert len(r.reason) < 260 and r.reason.endswith("...")


# --- POP3 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, reply, ok",
    [
        ("+OK", pop3("+OK Logged in."), True),
        ("+OK Logged in", pop3("+OK Logged in."), True),
        ("+OK logged", pop3("+OK Logged in."), False),
        ("-ERR", pop3("-ERR [AUTH] Authentication failed."), True),
        ("-ERR [AUTH]", pop3("-ERR [AUTH] Authentication failed."), True),
        ("+OK", pop3("-ERR nope"), False),
        ("+", pop3("+ VXNlcm5hbWU6"), True),
        ("+", pop3("+OK"), False),
        ("+ok", pop3("+OK"), True),  # status words are case-insensitive in the pattern
        ("+OK 2 messages", pop3("+OK 2 messages:", "1 458", "2 548"), True),
        ("+OK 2 548", pop3("+OK 2 messages:", "1 458", "2 548"), True),  # body lines count too
    ],
)
def test_pop3_scalar(value, reply, ok):
    assert pat(value, "pop3").match(reply, ctx()).ok is ok


def test_pop3_reason_shows_the_status_line():
    r = pat("+OK", "pop3").match(pop3("-ERR Unknown command", "x"), ctx())
    assert r.reason == "expected +OK, got -ERR Unknown command (+1 more line)"


# --- IMAP ------------------------------------------------------------------------------

LOGIN_OK = imap("a1 OK [CAPABILITY IMAP4rev1 SASL-IR IDLE] Logged in")
SELECT = imap(
    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
    "* 2 EXISTS",
    "* OK [UIDVALIDITY 1795877602] UIDs valid",
    "a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).",
    tag="a2",
)
LOGIN_NO = imap("a1 NO [AUTHENTICATIONFAILED] Authentication failed.")


@pytest.mark.parametrize(
    "value, reply, ok",
    [
        ("OK", LOGIN_OK, True),
        ("ok", LOGIN_OK, True),
        ("OK Logged in", LOGIN_OK, True),
        ("OK [CAPABILITY", LOGIN_OK, True),
        ("NO", LOGIN_OK, False),
        ("NO [AUTHENTICATIONFAILED]", LOGIN_NO, True),
        ("BAD", imap("a1 BAD Error in IMAP command"), True),
        ("OK 2 EXISTS", SELECT, True),
        ("OK [READ-WRITE]", SELECT, True),
        ("PREAUTH", imap("* PREAUTH ready"), True),
        ("BYE", imap("* BYE Logging out"), True),
        ("OK Dovecot", imap("* OK [CAPABILITY IMAP4rev1] Dovecot (Debian) ready."), True),
        ("+", imap("+ "), True),
        ("+", LOGIN_OK, False),
    ],
)
def test_imap_scalar(value, reply, ok):
    assert pat(value, "imap").match(reply, ctx()).ok is ok


def test_imap_reason_shows_the_tagged_line():
    r = pat("OK", "imap").match(LOGIN_NO, ctx())
    assert r.reason == "expected OK, got a1 NO [AUTHENTICATIONFAILED] Authentication failed."


# --- line protocol ---------------------------------------------------------------------


def test_line_scalar_is_a_regex_searched_per_line():
    r = line("Trying 127.0.0.1...", "Connected to localhost.", "220 mx ESMTP")
    assert pat(r"^220 ", "line").match(r, ctx()).ok
    assert pat("Connected to", "line").match(r, ctx()).ok
    assert not pat(r"^Connected to localhost\.$\n^220", "line").match(r, ctx()).ok  # one line at a time
    assert pat(42, "line").match(line("answer 42"), ctx()).ok
    res = pat("^250", "line").match(r, ctx())
    assert res.reason == "expected a line matching '^250', got Trying 127.0.0.1... (+2 more lines)"


def test_line_protocol_mapping():
    r = line("alpha", "beta 7")
    assert pat({"re": r"alpha\nbeta \d"}, "line").match(r, ctx()).ok
    assert pat({"text": "beta"}, "line").match(r, ctx()).ok
    assert pat({"lines": ["^al", r"\d$"]}, "line").match(r, ctx()).ok
    assert not pat({"lines": ["^al", "^gamma"]}, "line").match(r, ctx()).ok


# --- EOF -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap", "line"])
def test_eof(protocol):
    p = pat("EOF", protocol)
    assert p.is_eof and p.accepts_eof
    assert p.describe() == "EOF"
    assert p.match_eof(ctx()).ok
    r = p.match(smtp("221 2.0.0 Bye"), ctx())
    assert not r.ok and r.reason == "expected the server to close the connection, got 221 2.0.0 Bye"


def test_eof_among_alternatives_and_non_eof_patterns_on_close():
    p = pat([221, "EOF"])
    assert not p.is_eof and p.accepts_eof
    assert p.match_eof(ctx()).ok
    assert p.match(smtp("221 Bye"), ctx()).ok
    q = pat(250)
    assert not q.is_eof and not q.accepts_eof
    assert q.match_eof(ctx()) == MatchResult(False, "expected 250, got connection closed by the server")


# --- lists and mappings ----------------------------------------------------------------


def test_alternatives():
    p = pat([250, 251, "5xx Relay"])
    assert p.describe() == "[250, 251, 5xx Relay]"
    assert p.match(OK_MAIL, ctx()).ok
    assert p.match(RELAY, ctx()).ok
    r = p.match(smtp("452 4.5.3 Too many recipients"), ctx())
    assert r.reason == "expected one of [250, 251, 5xx Relay], got 452 4.5.3 Too many recipients"
    # a one-element list explains like its element
    assert pat(["250 2.1.5"]).match(OK_MAIL, ctx()).reason.startswith("expected text '2.1.5'")
    # nested lists are alternatives too
    assert pat([[250], [550]]).match(RELAY, ctx()).ok


def test_mapping_all_checks_must_hold():
    c = ctx()
    p = pat(
        {
            "code": "2xx",
            "text": "queued as",
            "re": r"queued as [0-9A-Za-z]+$",
            "lines": ["^250 "],
            "not": "5xx",
        }
    )
    assert p.match(QUEUED, c).ok
    assert (
        p.describe() == "{code: 2xx, text: queued as, re: queued as [0-9A-Za-z]+$, lines: [^250 ], not: 5xx}"
    )
    assert pat({"code": 250}).match(QUEUED, c).ok
    r = pat({"code": 251}).match(QUEUED, c)
    assert r.reason == "expected 251, got 250 2.0.0 Ok: queued as 4XyZ1k2abc"
    r = pat({"text": "Queued"}).match(QUEUED, c)
    assert r.reason == "expected text 'Queued' in the reply, got 250 2.0.0 Ok: queued as 4XyZ1k2abc"
    r = pat({"re": "^251"}).match(QUEUED, c)
    assert r.reason == "expected the reply to match '^251', got 250 2.0.0 Ok: queued as 4XyZ1k2abc"
    r = pat({"lines": ["PIPELINING", "SMTPUTF8"]}).match(EHLO, c)
    assert r.reason == "expected a line matching 'SMTPUTF8', got 250 CHUNKING (+4 more lines)"
    assert pat({"lines": ["PIPELINING", "^250 CHUNKING$"]}).match(EHLO, c).ok


def test_re_searches_the_whole_reply_multiline():
    assert pat({"re": r"PIPELINING\n250-STARTTLS"}).match(EHLO, ctx()).ok
    assert pat({"re": "^250-STARTTLS$"}).match(EHLO, ctx()).ok


def test_not():
    c = ctx()
    p = pat({"not": "5xx"})
    assert p.match(OK_MAIL, c).ok
    r = p.match(RELAY, c)
    assert not r.ok
    assert r.reason.startswith("reply matched the `not` pattern 5xx")
    p = pat({"code": "2xx", "not": {"text": "STARTTLS"}})
    assert not p.match(EHLO, c).ok
    assert p.match(OK_MAIL, c).ok
    p = pat({"not": [550, 554]})
    assert not p.match(RELAY, c).ok
    assert pat({"code": "OK", "not": "OK [READ-ONLY]"}, "imap").match(SELECT, c).ok
    assert not pat({"not": "-ERR"}, "pop3").match(pop3("-ERR x"), c).ok


# --- templates in patterns ---------------------------------------------------------------


def test_templates_in_code_and_text():
    c = ctx()
    c.define_vars({"code": "250", "enh": "2.1.0", "both": "250 2.1.0"})
    assert pat("{{ code }} {{ enh }}").match(OK_MAIL, c).ok
    assert pat("{{ code }}").match(OK_MAIL, c).ok
    assert pat("{{ both }}").match(OK_MAIL, c).ok  # rendered, then split into CODE and TEXT
    assert not pat("{{ code }} 2.1.5").match(OK_MAIL, c).ok
    assert pat({"code": "{{ code }}", "text": "{{ enh }}"}).match(OK_MAIL, c).ok
    r = pat("{{ code }} nope").match(OK_MAIL, c)
    assert r.reason == "expected text 'nope' in the reply, got 250 2.1.0 Ok"
    r = pat("{{ code }}").match(RELAY, c)
    assert r.reason.startswith("expected 250, got 550")


def test_rendered_code_that_is_not_a_code_is_a_pattern_error():
    c = ctx()
    c.set("bad", "25")
    with pytest.raises(PatternError) as ei:
        pat("{{ bad }}").match(OK_MAIL, c)
    assert "'{{ bad }}' rendered to '25'" in str(ei.value)
    assert "not a reply-code pattern for smtp" in str(ei.value)
    assert ei.value.exit_class == ExitClass.INVALID
    with pytest.raises(PatternError, match="not a valid code for imap"):
        pat({"code": "{{ bad }}"}, "imap").match(LOGIN_OK, c)


def test_undefined_name_in_pattern_is_a_template_error_at_match_time():
    with pytest.raises(TemplateError, match="undefined variable 'qid'"):
        pat({"re": "queued as {{ qid }}"}).match(QUEUED, ctx())


def test_regex_templates_match_values_literally():
    c = ctx()
    c.set("qid", "4XyZ1k2abc")
    c.set("dotty", "a.c")
    assert pat({"re": r"queued as {{ qid }}$"}).match(QUEUED, c).ok
    # '.' in the value is escaped: 'a.c' must not match 'abc'
    assert not pat({"re": "{{ dotty }}"}).match(smtp("250 abc"), c).ok
    assert pat({"re": "{{ dotty }}"}).match(smtp("250 a.c"), c).ok
    assert not pat("x{{ dotty }}", "line").match(line("xabc"), c).ok
    assert pat("x{{ dotty }}", "line").match(line("xa.c"), c).ok
    assert not pat({"lines": ["^250 {{ dotty }}$"]}).match(smtp("250 abc"), c).ok
    # but TEXT and code are plain substrings (no escaping needed, none applied)
    assert pat("250 {{ dotty }}").match(smtp("250 a.c"), c).ok


def test_secret_in_pattern_is_masked_in_reasons():
    c = ctx(secrets=["pw"])
    c.set("pw", "hunter2")
    r = pat({"text": "{{ pw }}"}).match(OK_MAIL, c)
    assert r.reason == f"expected text '{MASK}' in the reply, got 250 2.1.0 Ok"
    r = pat("250 {{ pw }}").match(OK_MAIL, c)
    assert "hunter2" not in r.reason and MASK in r.reason
    r = pat({"re": "x{{ pw | b64 }}"}).match(OK_MAIL, c)
    assert "aHVudGVyMg" not in r.reason
    # the reply itself is redacted in the reason too
    echoed = smtp("535 5.7.8 hunter2 rejected")
    r = pat(235).match(echoed, c)
    assert "hunter2" not in r.reason and r.reason == f"expected 235, got 535 5.7.8 {MASK} rejected"
    assert pat("535 {{ pw }}").match(echoed, c).ok


def test_templates_listing():
    p = pat(
        [{"code": "2xx", "text": "{{ a }}", "re": "{{ b }}", "lines": ["{{ c }}"], "not": "{{ d }} x"}, 250]
    )
    assert p.templates() == ["2xx", "{{ a }}", "{{ b }}", "{{ c }}", "{{ d }} x", "250"]
    assert pat("EOF").templates() == []
    assert pat("^a{{ x }}", "line").templates() == ["^a{{ x }}"]


# --- problems ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, protocol, path, message",
    [
        ("25", "smtp", "", "'25' is not a reply-code pattern for smtp (want 3 chars of digits or x)"),
        ("2500 Ok", "smtp", "", "'2500' is not a reply-code pattern for smtp (want 3 chars of digits or x)"),
        ("25y", "smtp", "", "'25y' is not a reply-code pattern for smtp (want 3 chars of digits or x)"),
        (25, "smtp", "", "25 is not a reply-code pattern for smtp (want 3 chars of digits or x)"),
        (-250, "smtp", "", "-250 is not a reply-code pattern for smtp (want 3 chars of digits or x)"),
        ("OKAY", "imap", "", "'OKAY' is not an imap status (want OK, NO, BAD, PREAUTH, BYE or +)"),
        ("250", "imap", "", "'250' is not an imap status (want OK, NO, BAD, PREAUTH, BYE or +)"),
        ("OK", "pop3", "", "'OK' is not a pop3 status (want +OK, -ERR or +; did you mean '+OK'?)"),
        ("ERR", "pop3", "", "'ERR' is not a pop3 status (want +OK, -ERR or +; did you mean '-ERR'?)"),
        ("+OKAY", "pop3", "", "'+OKAY' is not a pop3 status (want +OK, -ERR or +)"),
        (250, "pop3", "", "250 is an SMTP reply code; a pop3 pattern wants +OK, -ERR or +"),
        (250, "imap", "", "250 is an SMTP reply code; an imap pattern wants OK, NO, BAD, PREAUTH, BYE or +"),
        ("(", "line", "", "invalid regular expression '(': missing ), unterminated subpattern at position 0"),
        (
            {"re": "("},
            "smtp",
            ".re",
            "invalid regular expression '(': missing ), unterminated subpattern at position 0",
        ),
        (
            {"regex": "x"},
            "smtp",
            ".regex",
            "unknown key 'regex' (allowed: code, text, re, lines, order, flags, not)",
        ),
        ([], "smtp", "", "empty list: give at least one alternative"),
        ({}, "smtp", "", "empty mapping: give at least one of code, text, re, lines, order, flags, not"),
        (None, "smtp", "", "empty pattern: give a reply code, EOF, a list or a mapping"),
        ("", "smtp", "", "empty pattern: give a reply code, EOF, a list or a mapping"),
        ("   ", "imap", "", "empty pattern: give a reply code, EOF, a list or a mapping"),
        (
            True,
            "smtp",
            "",
            "true is not a pattern (YAML reads yes/no/on/off/true/false as booleans: quote the text)",
        ),
        (
            False,
            "imap",
            "",
            "false is not a pattern; YAML reads an unquoted NO as false: write 'NO' in quotes",
        ),
        (
            2.5,
            "smtp",
            "",
            "2.5 is not a reply-code pattern (a number with a point: quote it if you meant text)",
        ),
        (b"250", "smtp", "", "a pattern is a string, an integer, a list or a mapping, not bytes"),
        ([250, "2"], "smtp", "[1]", "'2' is not a reply-code pattern for smtp (want 3 chars of digits or x)"),
        (
            {"code": "250 Ok"},
            "smtp",
            ".code",
            "'250 Ok' is not a reply-code pattern for smtp (want 3 chars of digits or x); put the text under `text:`",
        ),
        (
            {"code": 250},
            "imap",
            ".code",
            "250 is an SMTP reply code; an imap pattern wants OK, NO, BAD, PREAUTH, BYE or +",
        ),
        ({"code": "250"}, "line", ".code", "the line protocol has no reply codes (use re, lines or text)"),
        ({"code": None}, "smtp", ".code", "code is empty"),
        ({"text": None}, "smtp", ".text", "text is empty"),
        (
            {"text": ["a"]},
            "smtp",
            ".text",
            "a pattern is a string, an integer, a list or a mapping, not list",
        ),
        ({"lines": []}, "smtp", ".lines", "empty list: give at least one regular expression"),
        ({"lines": 5}, "smtp", ".lines", "lines is a list of regular expressions"),
        (
            {"lines": ["ok", "[a"]},
            "smtp",
            ".lines[1]",
            "invalid regular expression '[a': unterminated character set at position 0",
        ),
        ({"re": True}, "smtp", ".re", "a regular expression is a string, not True"),
        (
            {"not": {"re": "("}},
            "smtp",
            ".not.re",
            "invalid regular expression '(': missing ), unterminated subpattern at position 0",
        ),
        (
            {"not": "2"},
            "smtp",
            ".not",
            "'2' is not a reply-code pattern for smtp (want 3 chars of digits or x)",
        ),
        ({"not": []}, "smtp", ".not", "empty list: give at least one alternative"),
        (
            [{"code": "OKAY"}],
            "imap",
            "[0].code",
            "'OKAY' is not an imap status (want OK, NO, BAD, PREAUTH, BYE or +)",
        ),
        ("250", "http", "", "unknown protocol 'http' (want smtp, lmtp, pop3, imap, line)"),
    ],
)
def test_problem_messages(value, protocol, path, message):
    assert only_problem(value, protocol) == Problem(path, message)


def test_every_problem_is_reported():
    probs = problems({"code": "2", "re": "(", "lines": ["[", "ok", ")"], "bogus": 1, "not": {"text": None}})
    assert {p.path for p in probs} == {".code", ".re", ".lines[0]", ".lines[2]", ".bogus", ".not.text"}


def test_template_syntax_errors_are_problems():
    p = only_problem("250 {{ x | b65 }}")
    assert p.path == "" and "unknown filter 'b65'" in p.message
    p = only_problem({"re": "{{ x"})
    assert p.path == ".re" and "unclosed '{{'" in p.message
    p = only_problem({"text": "{{ }}"})
    assert p.path == ".text" and "empty expression" in p.message
    p = only_problem({"code": "{{ a.b }}"})
    assert p.path == ".code" and "attribute access" in p.message
    p = only_problem(["^x{{ 'a' | nope }}"], "line")
    assert p.path == "[0]" and "unknown filter 'nope'" in p.message


def test_regexes_with_templates_are_checked_around_placeholders():
    assert pat({"re": "^250 {{ x }}(\\s|$)"})  # valid once the template is replaced
    p = only_problem({"re": "({{ x }}"})
    assert p.message.startswith("invalid regular expression '({{ x }}': missing )")
    # a quantifier applied to a template is fine
    assert pat({"lines": ["{{ x }}+"]})


def test_deep_nesting_is_a_problem_not_a_crash():
    value = "250"
    for _ in range(200):
        value = {"not": value}
    probs = problems(value)
    assert any("nested too deeply" in p.message for p in probs)


json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=20),
        st.sampled_from(["250", "2xx", "EOF", "+OK", "OK", "{{ x }}", "(", "{{", "250 {{ a | b64 }}"]),
        st.binary(max_size=4),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["code", "text", "re", "lines", "not", "regex"]), st.integers(), st.none()
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=15,
)


@settings(max_examples=300)
@given(json_like, st.sampled_from(["smtp", "pop3", "imap", "line", "bogus"]))
def test_property_parse_pattern_never_raises(value, protocol):
    p, probs = parse_pattern(value, protocol)
    assert (p is None) == bool(probs)
    assert all(isinstance(x, Problem) and isinstance(x.message, str) for x in probs)
    if p is not None:
        assert isinstance(p.describe(), str)
        assert all(isinstance(t, str) for t in p.templates())


@settings(max_examples=200)
@given(st.text(max_size=30), st.sampled_from(["smtp", "pop3", "imap", "line"]))
def test_property_parsed_text_patterns_match_without_crashing(text, protocol):
    p, _ = parse_pattern(text, protocol)
    if p is None:
        return
    c = ctx()
    for reply in (OK_MAIL, pop3("+OK"), LOGIN_OK, line("x")):
        try:
            r = p.match(reply, c)
        except (TemplateError, PatternError):
            continue
        assert isinstance(r.ok, bool)
        assert r.ok or isinstance(r.reason, str)


# --- capture ---------------------------------------------------------------------------


def test_capture():
    c = ctx()
    assert capture(QUEUED, r"queued as (\w+)", c) == "4XyZ1k2abc"
    assert capture(QUEUED, r"queued as \w+", c) == "queued as 4XyZ1k2abc"
    assert capture(QUEUED, r"nothing here (\w+)", c) is None
    assert capture(QUEUED, r"queued (x)?as", c) == ""  # group 1 took no part
    # re.MULTILINE over reply.text
    assert capture(EHLO, r"^250-(AUTH .*)$", c) == "AUTH PLAIN LOGIN"
    assert capture(SELECT, r"UIDVALIDITY (\d+)", c) == "1795877602"
    assert capture(pop3("+OK 2 1006"), r"^\+OK (\d+) (\d+)", c) == "2"


def test_capture_renders_with_regex_escaping():
    c = ctx()
    c.set("host", "mail.example.org")
    assert capture(EHLO, r"^250-{{ host }}$", c) == "250-mail.example.org"
    assert capture(smtp("250-mailXexample.org", "250 x"), r"^250-{{ host }}$", c) is None


def test_capture_invalid_regex_and_undefined_name():
    with pytest.raises(PatternError, match=r"invalid regular expression '\(': missing \)"):
        capture(QUEUED, "(", ctx())
    with pytest.raises(TemplateError, match="undefined variable 'nope'"):
        capture(QUEUED, "{{ nope }}", ctx())


def test_capture_of_a_challenge_into_a_secret():
    c = ctx(secrets=["challenge"])
    challenge = base64.b64encode(b"<1896.697170952@dbc.mtview.ca.us>").decode()
    reply = smtp(f"334 {challenge}")
    value = capture(reply, r"^334 (\S+)", c)
    c.set("challenge", value)
    assert c.redactor.redact(reply.text) == f"334 {MASK}"
