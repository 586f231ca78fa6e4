import base64
import email.utils
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.errors import ExitClass, MailrunError
from runner.lang.render import Context, Rendered, render
from runner.lang.secrets import MASK, Redactor, Secret
from runner.lang.templates import BUILTINS, Template, TemplateError, parse


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def ctx(**kw) -> Context:
    kw.setdefault("env", {"HOME": "/home/u", "TOKEN": "tok-123"})
    kw.setdefault("run_id", "run42")
    return Context(**kw)


# --- parse -----------------------------------------------------------------------------


def test_constant_templates():
    t = parse("MAIL FROM:<a@b> } { }} {")
    assert t.is_constant
    assert t.names() == set()
    assert render(t, ctx()).value == "MAIL FROM:<a@b> } { }} {"


def test_names_and_required_names():
    t = parse(
        "{{ a }} {{ env.HOME }} {{ b | default('x') }} {{ auth_plain(u, env.PW) | b64 }}"
        " {{ 'lit' }} {{ c|upper|default(\"\") }} {{ run_id }}"
    )
    assert not t.is_constant
    assert t.names() == {"a", "env.HOME", "b", "u", "env.PW", "c", "run_id"}
    assert t.required_names() == {"a", "env.HOME", "u", "env.PW", "run_id"}


def test_template_is_frozen_and_cached():
    assert parse("x {{ y }}") is parse("x {{ y }}")
    t = Template("x {{ y }}")
    assert t == parse("x {{ y }}")
    assert t.source == "x {{ y }}"
    with pytest.raises(AttributeError):
        t.source = "z"  # type: ignore[misc]


def test_whitespace_inside_braces_is_optional():
    c = ctx()
    c.set("x", "v")
    assert render("{{x}}|{{  x  }}|{{x|upper}}", c).value == "v|v|V"


@pytest.mark.parametrize(
    "source, fragment, column",
    [
        ("abc {{ x", "unclosed '{{' at column 5", 5),
        ("{{ x | b65 }}", "unknown filter 'b65'", 8),
        ("{{ }}", "empty expression", 1),
        ("{{ foo(a, b) }}", "unknown function 'foo'", 4),
        ("{{ auth_plain(a) }}", "auth_plain() takes 2 arguments, got 1", 4),
        ("{{ xoauth2(a, b, c) }}", "xoauth2() takes 2 arguments, got 3", 4),
        ("{{ auth_plain(a, b }}", "unclosed '(' in call of auth_plain()", 14),
        ("{{ auth_plain(a b) }}", "bad call of auth_plain()", None),
        ("{{ auth_plain(a, |) }}", "bad call of auth_plain()", None),
        ("{{ auth_plain(a, upper(b)) }}", "nested calls", None),
        ("{{ a.b }}", "attribute access 'a.b' is not supported", 4),
        ("{{ env.A.B }}", "attribute access", None),
        ("{{ env }}", "'env' needs a variable name", 4),
        ("{{ env. }}", "expected a name after 'env.'", None),
        ("{{ x | default }}", 'default needs a value: default("x")', None),
        ("{{ x | default(y) }}", "expected a quoted string", None),
        ("{{ x | default('a' }}", "expected ')'", None),
        ("{{ x | b64() }}", "filter 'b64' takes no arguments", None),
        ("{{ x | }}", "expected a filter name after '|'", None),
        ("{{ x y }}", "unexpected 'y'", 6),
        ("{{ 'abc }}", "unterminated string", 4),
        ("{{ x % 2 }}", "unexpected character '%'", 6),
        ("{{ x } }}", "unexpected '}'", 6),
        ("{{ b64(x) }}", "'b64' is a filter", 4),
        ("{{ | x }}", "expected a name, a quoted string or a function call", None),
    ],
)
def test_syntax_errors(source, fragment, column):
    with pytest.raises(TemplateError) as ei:
        parse(source)
    assert fragment in str(ei.value)
    if column is not None:
        assert ei.value.column == column
    assert ei.value.exit_class == ExitClass.INVALID
    assert isinstance(ei.value, MailrunError)


def test_unknown_filter_lists_known_ones_and_suggests():
    with pytest.raises(TemplateError) as ei:
        parse("250 {{ x | b65 }}")
    msg = str(ei.value)
    assert "known: b64, b64decode, default, literal, lower, upper" in msg
    assert "did you mean 'b64'" in msg
    assert "'{{ x | b65 }}'" in msg


@given(st.text(max_size=80))
def test_property_parse_raises_only_template_error(text):
    try:
        t = parse(text)
    except TemplateError:
        return
    assert isinstance(t.names(), set)
    assert t.required_names() <= t.names()


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["{{", "}}", "|", "(", ")", ",", ".", "'", '"', "\\", " ", "env", "x"]),
            st.sampled_from(["b64", "b64decode", "default", "lower", "upper", "auth_plain", "xoauth2"]),
            st.text(max_size=3),
        ),
        max_size=20,
    )
)
def test_property_parse_of_template_like_text(pieces):
    text = "".join(pieces)
    try:
        parse(text)
    except TemplateError:
        pass


# --- render ----------------------------------------------------------------------------


def test_render_names_strings_env_and_filters():
    c = ctx()
    c.set("user", "Bob")
    out = render(
        "{{ user }} {{ user|lower }} {{ user | upper }} {{ 'it\\'s' }} {{ \"a\\\"b\" }} {{ env.HOME }}"
        " {{ user | b64 }} {{ 'Qm9i' | b64decode }} {{ 'Qm9i' | b64decode | upper }}",
        c,
    )
    assert out.value == f"Bob bob BOB it's a\"b /home/u {b64('Bob')} Bob BOB"
    assert out.display == out.value
    assert out.secret is False
    assert str(out) == out.display


def test_default_filter_on_undefined_and_empty():
    c = ctx()
    c.set("empty", "")
    c.set("x", "val")
    assert render("{{ nope | default('d') }}", c).value == "d"
    assert render("{{ empty | default('d') }}", c).value == "d"
    assert render("{{ x | default('d') }}", c).value == "val"
    assert render("{{ nope | upper | default('d') }}", c).value == "d"
    assert render("{{ env.NOPE | default('none') }}", c).value == "none"
    assert render("{{ auth_plain(nope, x) | default('d') }}", c).value == "d"
    # default comes after: the filters after it apply to the default
    assert render("{{ nope | default('d') | upper }}", c).value == "D"


def test_undefined_variable_errors_suggest_close_names():
    c = ctx()
    c.set("username", "u")
    with pytest.raises(TemplateError) as ei:
        render("{{ usernme }}", c)
    assert str(ei.value).startswith("undefined variable 'usernme'")
    assert "did you mean 'username'" in str(ei.value)
    with pytest.raises(TemplateError, match=r"^undefined variable 'zzz'$"):
        render("{{ zzz }}", c)
    with pytest.raises(TemplateError) as ei:
        render("{{ env.HOM }}", c)
    assert "environment variable 'HOM' is not set" in str(ei.value)
    assert "env.HOME" in str(ei.value)
    with pytest.raises(TemplateError, match="undefined variable 'p'"):
        render("{{ auth_plain(username, p) }}", c)


def test_auth_plain_and_xoauth2():
    c = ctx()
    c.set("u", "user@example.org")
    c.set("p", "pw")
    assert render("{{ auth_plain(u, p) }}", c).value == b64("\0user@example.org\0pw")
    assert render("{{ auth_plain('a', \"b\") }}", c).value == b64("\0a\0b")
    assert render("{{ xoauth2(u, env.TOKEN) }}", c).value == b64(
        "user=user@example.org\x01auth=Bearer tok-123\x01\x01"
    )


def test_builtins_run_id_and_now():
    c = ctx(run_id="abc")
    assert set(BUILTINS) == {"run_id", "now"}
    assert render("<{{ run_id }}@x>", c).value == "<abc@x>"
    now = render("{{ now }}", c).value
    assert email.utils.parsedate_to_datetime(now) is not None
    assert c.has("now") and c.has("run_id")
    c2 = Context(env={})
    c3 = Context(env={})
    assert c2.run_id and c2.run_id != c3.run_id
    # a scenario var shadows a built-in
    c.set("run_id", "mine")
    assert render("{{ run_id }}", c).value == "mine"


def test_b64decode_errors():
    c = ctx()
    c.set("bad", "!!notbase64!!")
    with pytest.raises(TemplateError, match="b64decode: '!!notbase64!!' is not valid base64"):
        render("{{ bad | b64decode }}", c)
    c.set("notutf8", base64.b64encode(b"\xff\xfe").decode())
    with pytest.raises(TemplateError, match="not UTF-8"):
        render("{{ notutf8 | b64decode }}", c)
    # missing padding and whitespace are tolerated
    c.set("nopad", "Qm9i\n")
    assert render("{{ 'aGk' | b64decode }}{{ nopad | b64decode }}", c).value == "hiBob"


def test_regex_mode_escapes_substitutions_only():
    c = ctx()
    c.set("id", "a.b+c(1)")
    r = render(r"^250 .*{{ id }}\s$", c, regex=True)
    assert r.value == r"^250 .*" + re.escape("a.b+c(1)") + r"\s$"
    assert re.search(r.value, "250 queued as a.b+c(1) ")
    assert not re.search(r.value, "250 queued as axb+c(1) ")
    assert render("{{ id }}", c).value == "a.b+c(1)"


# --- secrets ---------------------------------------------------------------------------


def test_secret_names_are_masked_and_derivations_registered():
    red = Redactor()
    c = ctx(secrets=["password"], redactor=red)
    c.define_vars({"user": "bob", "password": "s3cr3t!"})
    assert isinstance(c.get("password"), Secret)
    assert c.get("user") == "bob"
    r = render("AUTH PLAIN {{ auth_plain(user, password) }}", c)
    plain = b64("\0bob\0s3cr3t!")
    assert r.value == f"AUTH PLAIN {plain}"
    assert r.display == f"AUTH PLAIN {MASK}"
    assert r.secret is True
    assert plain not in repr(r)
    assert red.redact(f"C: AUTH PLAIN {plain}") == f"C: AUTH PLAIN {MASK}"

    for source, value in [
        ("{{ password | b64 }}", b64("s3cr3t!")),
        ("{{ password | upper }}", "S3CR3T!"),
        ("{{ password | lower | b64 }}", b64("s3cr3t!")),
        ("{{ xoauth2(user, password) }}", b64("user=bob\x01auth=Bearer s3cr3t!\x01\x01")),
    ]:
        r = render(source, c)
        assert r.value == value
        assert r.display == MASK and r.secret
        assert red.redact(f"x {value} y") == f"x {MASK} y"
    assert "S3CR3T!" not in red.redact("S3CR3T! " + b64("S3CR3T!"))


def test_secret_value_stays_secret_through_b64decode_and_regex_escape():
    c = ctx(secrets=["enc"])
    c.define_vars({"enc": b64("pa.ss")})
    r = render("{{ enc | b64decode }}", c)
    assert r.value == "pa.ss" and r.display == MASK
    assert c.redactor.redact("pa.ss") == MASK
    r = render("x{{ enc | b64decode }}y", c, regex=True)
    assert r.value == r"xpa\.ssy" and r.display == f"x{MASK}y"
    assert c.redactor.redact(r"pa\.ss") == MASK


def test_b64decode_error_of_secret_does_not_show_it():
    c = ctx(secrets=["pw"])
    c.set("pw", "not base64!!")
    with pytest.raises(TemplateError) as ei:
        render("{{ pw | b64decode }}", c)
    assert "not base64!!" not in str(ei.value)
    assert "its input is not valid base64" in str(ei.value)


def test_secret_objects_env_secrets_and_derived_vars():
    c = ctx(secrets=["env.TOKEN"])
    c.set("api", Secret("k-999"))
    assert c.redactor.contains("key k-999")
    r = render("{{ api }}/{{ env.TOKEN }}/{{ env.HOME }}", c)
    assert r.value == "k-999/tok-123//home/u"
    assert r.display == f"{MASK}/{MASK}//home/u"
    assert c.redactor.contains("tok-123")
    # a var rendered from a secret is itself secret
    c.define_vars({"header": "Bearer {{ api }}"})
    assert isinstance(c.get("header"), Secret)
    assert render("{{ header }}", c).display == MASK
    assert c.redactor.redact("Bearer k-999") == MASK


def test_display_is_redacted_even_for_plain_vars_holding_a_secret():
    c = ctx(secrets=["pw"])
    c.set("pw", "hunter2")
    c.set("echo", "server said hunter2")  # e.g. a capture of an echoed value
    r = render("{{ echo }}", c)
    assert r.value == "server said hunter2"
    assert "hunter2" not in r.display


def test_literal_strings_and_default_are_not_secret():
    c = ctx(secrets=["pw"])
    c.set("pw", "")
    r = render("{{ pw | default('fallback') }}", c)
    assert r.value == "fallback" and r.display == "fallback" and r.secret is False


# --- Context ---------------------------------------------------------------------------


def test_define_vars_in_order_with_scalars():
    c = ctx()
    c.define_vars(
        {"host": "mx", "port": 25, "ratio": 1.5, "on": True, "off": False, "url": "{{ host }}:{{ port }}"}
    )
    assert c.get("url") == "mx:25"
    assert c.get("ratio") == "1.5"
    assert c.get("on") == "true" and c.get("off") == "false"
    with pytest.raises(TemplateError, match="var 'later': undefined variable 'later2'"):
        c.define_vars({"later": "{{ later2 }}", "later2": "x"})
    with pytest.raises(TemplateError, match="var 'n' has no value"):
        c.define_vars({"n": None})
    with pytest.raises(TemplateError, match="var 'l' must be a string or a number, got list"):
        c.define_vars({"l": [1]})


def test_get_has_set():
    c = ctx()
    assert not c.has("x")
    with pytest.raises(TemplateError, match="undefined variable 'x'"):
        c.get("x")
    c.set("x", "1")
    assert c.has("x") and c.get("x") == "1"
    assert c.get("env.HOME") == "/home/u"
    assert c.has("env.HOME") and not c.has("env.NOPE")
    with pytest.raises(TemplateError, match="invalid variable name"):
        c.set("bad-name", "v")
    with pytest.raises(TemplateError, match="invalid variable name"):
        c.set("1x", "v")


def test_default_env_is_os_environ(monkeypatch):
    monkeypatch.setenv("MAILRUN_TEST_X", "yes")
    assert render("{{ env.MAILRUN_TEST_X }}", Context()).value == "yes"


def test_child_scope_lookup_and_captures_reach_root():
    root = ctx(secrets=["pw"])
    root.define_vars({"user": "alice", "pw": "pa55", "greeting": "hi"})
    child = root.child({"user": "bob", "who": "{{ user }}", "login": "{{ auth_plain(user, pw) }}", "n": 3})
    # bindings are rendered in the parent: 'who' sees the root's user
    assert child.get("user") == "bob"
    assert child.get("who") == "alice"
    assert child.get("n") == "3"
    assert child.get("greeting") == "hi"  # falls through to the root
    assert isinstance(child.get("login"), Secret)
    assert render("{{ login }}", child).display == MASK
    assert child.redactor is root.redactor and child.run_id == root.run_id
    assert root.get("user") == "alice"
    assert not root.has("who")

    # set() on a child writes to the root, so a capture survives the fragment
    child.set("queue_id", "Q1")
    assert root.get("queue_id") == "Q1"
    assert child.get("queue_id") == "Q1"
    # a capture named like a binding updates what the fragment sees too
    child.set("user", "carol")
    assert child.get("user") == "carol" and root.get("user") == "carol"

    grandchild = child.child({"deep": "{{ who }}-{{ user }}"})
    assert grandchild.get("deep") == "alice-carol"
    grandchild.set("cap", "v")
    assert root.get("cap") == "v"


def test_child_binding_named_secret_is_secret_and_errors_name_the_binding():
    root = ctx(secrets=["token"])
    child = root.child({"token": "abc123"})
    assert isinstance(child.get("token"), Secret)
    assert root.redactor.contains("abc123")
    with pytest.raises(TemplateError, match="include var 'x': undefined variable 'missing'"):
        root.child({"x": "{{ missing }}"})
    child2 = root.child({"s": Secret("direct")})
    assert isinstance(child2.get("s"), Secret)


def test_template_error_messages_never_contain_secret():
    c = ctx(secrets=["pw"])
    c.set("pw", "topsecret")
    for source in ["{{ pw | b64decode }}", "{{ pw2 }}", "{{ auth_plain(pw, nothere) }}"]:
        with pytest.raises(TemplateError) as ei:
            render(source, c)
        assert "topsecret" not in str(ei.value)
    assert "topsecret" not in repr(c)


def test_rendered_repr_hides_value():
    r = Rendered("real", MASK, True)
    assert "real" not in repr(r)
    assert str(r) == MASK
