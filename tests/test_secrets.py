import base64
import copy
import pickle
import threading

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from runner.lang.secrets import MASK, Redactor, Secret


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# --- Secret ----------------------------------------------------------------------------


def test_secret_prints_masked_everywhere():
    s = Secret("hunter2")
    assert str(s) == MASK
    assert f"{s}" == MASK
    assert f"{s:>6}" == "  ****"
    assert "{}".format(s) == MASK  # noqa: UP032 - str.format is what we test
    assert "%s" % s == MASK  # noqa: UP031 - %-formatting is what we test
    assert repr(s) == "Secret('****')"
    assert "hunter2" not in repr([s, {"k": s}])
    assert s.reveal() == "hunter2"


def test_secret_is_not_a_str_and_does_not_concatenate():
    s = Secret("hunter2")
    assert not isinstance(s, str)
    with pytest.raises(TypeError):
        _ = "AUTH " + s  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = s + "x"  # type: ignore[operator]


def test_secret_equality_hash_and_truth_by_value():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"  # a plain str is not the same thing
    assert hash(Secret("a")) == hash(Secret("a"))
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2
    assert bool(Secret("x")) is True
    assert bool(Secret("")) is False


def test_secret_copies_but_refuses_pickling():
    s = Secret("pw")
    assert copy.deepcopy(s) == s
    assert copy.copy(s) is s
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_rejects_non_str():
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]
    assert Secret(Secret("x")).reveal() == "x"


# --- Redactor --------------------------------------------------------------------------


def test_redacts_value_and_base64_forms():
    r = Redactor()
    r.add("hunter2")
    enc = b64("hunter2")  # aHVudGVyMg==
    assert enc.endswith("=")
    text = f"pw hunter2 b64 {enc} bare {enc.rstrip('=')} end"
    out = r.redact(text)
    assert "hunter2" not in out
    assert enc.rstrip("=") not in out
    assert out == "pw **** b64 **** bare **** end"
    assert r.contains(text)
    assert not r.contains(out)


def test_ignores_empty_and_counts_distinct():
    r = Redactor()
    r.add("")
    assert len(r) == 0
    assert r.redact("anything") == "anything"
    r.add("abc")  # 'abc', 'YWJj' (no padding needed, one form)
    assert len(r) == 2
    r.add("abc")
    assert len(r) == 2
    r.add("hunter2")  # value + padded + unpadded base64 + its 3 forms inside a longer base64
    assert len(r) == 8


def test_longest_match_wins_and_overlaps_leave_nothing():
    r = Redactor()
    r.add("pass")
    r.add("password123")
    assert r.redact("x password123 y pass z") == "x **** y **** z"
    r2 = Redactor()
    r2.add("abcd")
    r2.add("cdef")
    # overlapping occurrences: the union of spans is masked, no fragment survives
    assert r2.redact("__abcdef__") == "__****__"


def test_regex_special_characters_are_literal():
    r = Redactor()
    r.add("a.b*(c")
    assert r.redact("a.b*(c axb*(c") == "**** axb*(c"


def test_redact_bytes_uses_utf8_encoding():
    r = Redactor()
    r.add("pässwörd")
    data = "USER x\r\nPASS pässwörd\r\n".encode()
    assert r.redact_bytes(data) == b"USER x\r\nPASS ****\r\n"
    assert r.contains(data)
    assert r.redact_bytes(b"\xff\xfe binary " + b64("pässwörd").encode()) == b"\xff\xfe binary ****"
    assert r.redact_bytes(bytearray(b"p\xc3\xa4sswo\xcc\x88rd")) == b"p\xc3\xa4sswo\xcc\x88rd"  # other form


def test_add_accepts_secret():
    r = Redactor()
    r.add(Secret("tok"))
    assert r.redact("a tok b") == "a **** b"


def test_thread_safe_adds():
    r = Redactor()

    def worker(k):
        for i in range(200):
            r.add(f"secret-{k}-{i}")
            r.redact("secret-0-0 text")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    for k in range(4):
        for i in (0, 199):
            assert r.redact(f"x secret-{k}-{i} y") == "x **** y"


@given(st.text(min_size=1, max_size=30), st.text(max_size=40), st.text(max_size=40))
def test_property_value_never_survives(value, before, after):
    assume("*" not in value)  # the mask itself could spell such a value next to the text
    r = Redactor()
    r.add(value)
    text = before + value + after
    out = r.redact(text)
    assert value not in out
    assert not r.contains(out)
    assert value.encode() not in r.redact_bytes(text.encode())
    for enc in (b64(value), b64(value).rstrip("=")):
        assert enc not in r.redact(before + enc + after)


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5), st.text(max_size=20))
def test_property_no_registered_value_survives(values, filler):
    assume(not any("*" in v for v in values))
    r = Redactor()
    for v in values:
        r.add(v)
    out = r.redact(filler.join(values) + filler)
    assert not r.contains(out)


def test_a_value_known_as_a_base64_form_still_gets_its_own_forms():
    """Whatever the order of add(): add(v) masks v and its base64 forms."""
    for order in (("hunter2", "aHVudGVyMg=="), ("aHVudGVyMg==", "hunter2")):
        r = Redactor()
        for v in order:
            r.add(v)
        b64_of_b64 = base64.b64encode(b"aHVudGVyMg==").decode()  # 'YUhWdWRHVnlNZz09'
        assert r.redact(f"x {b64_of_b64} y") == "x **** y", order
        assert r.redact("hunter2 aHVudGVyMg") == "**** ****"


# --- the model cache never gets a secret's literal value (runner.load.cacheable) ----------


def _scenario(vars_: dict, secrets: set[str], bindings: tuple = ()):
    from pathlib import Path

    from runner.model.scenario import ConnectSpec, Location, Scenario, Session, Step

    loc = Location("s.yaml", 1)
    step = Step(location=loc, action="send", text="NOOP", bindings=bindings)
    spec = ConnectSpec(values={"host": "h"}, base_dir=Path("."), location=loc)
    return Scenario(
        Path("s.yaml"), "s", (Session("s", "smtp", spec, (step,)),), vars=vars_, secrets=frozenset(secrets)
    )


@pytest.mark.parametrize(
    ("vars_", "secrets", "bindings", "literal"),
    [
        ({"pw": "hunter2"}, {"pw"}, (), True),
        ({"pw": "{{ env.PW }}"}, {"pw"}, (), False),
        ({"pw": "{{ other }}", "other": "hunter2"}, {"pw"}, (), True),  # through the var it uses
        ({"pw": "{{ other | default('hunter2') }}"}, {"pw"}, (), True),  # a quoted string inside
        ({"pw": "x{{ env.PW }}"}, {"pw"}, (), True),  # text outside {{ }}
        ({"pw": "{{ env.PW"}, {"pw"}, (), True),  # not a template: literal text
        ({"pw": 1234}, {"pw"}, (), True),
        ({}, {"env.PW"}, (), False),
        ({}, {"pw"}, ({"pw": "hunter2"},), True),  # an include's binding
        ({"user": "bob"}, {"pw"}, (), False),
    ],
)
def test_holds_secret_literal(vars_, secrets, bindings, literal):
    from runner.load.cacheable import holds_secret_literal

    assert holds_secret_literal(_scenario(vars_, secrets, bindings)) is literal
