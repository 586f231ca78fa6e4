"""runner.cache.store: the model cache. The model rebuilt from JSON equals the loader's (over
every project file, the fixtures and generated scenarios); stale, damaged and foreign entries
fall back to the full load; secrets never reach the disk; a warm `mailrun FILE` imports neither
PyYAML, jsonschema nor the full load (runner.load.build, runner.load.yaml_doc)."""

from __future__ import annotations

import ast
import base64
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path, PurePath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cache import codec, files
from runner.cache import store as C
from runner.errors import ScenarioError
from runner.lang.pattern_parse import parse_pattern
from runner.load import api as A
from runner.model.config import ConnectConfig
from runner.model.scenario import ConnectSpec, Location, Retry, Scenario, Session, Step
from tests.support.servers import Server, scripted

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures"
HEAD = "name: t\nconnect: {host: localhost, port: 25}\n"
SMTP = {b"QUIT": b"221 bye\r\n", b"*": b"250 ok\r\n"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("MAILRUN_CACHE_DIR", str(d))
    return d


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def entries(cache: Path, sub: str = "models") -> list[Path]:
    d = cache / sub
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def dump(o):
    """A structural dump: every slot / attribute, with types (1 != 1.0 != True, tuple != list)."""
    if o is None or isinstance(o, (bool, int, float, str, bytes)):
        return (type(o).__name__, o)
    if isinstance(o, PurePath):
        return ("Path", str(o))
    if isinstance(o, (list, tuple)):
        return (type(o).__name__, [dump(x) for x in o])
    if isinstance(o, (set, frozenset)):
        return (type(o).__name__, sorted(dump(x) for x in o))
    if isinstance(o, dict):
        return ("dict", [(dump(k), dump(v)) for k, v in o.items()])
    if isinstance(o, re.Pattern):
        return ("re", o.pattern, o.flags)
    fields = {}
    for klass in type(o).__mro__:
        for name in getattr(klass, "__slots__", ()):
            if hasattr(o, name):
                fields[name] = dump(getattr(o, name))
    for name, value in getattr(o, "__dict__", {}).items():
        fields[name] = dump(value)
    return (type(o).__name__, sorted(fields.items()))


def project_files() -> list[Path]:
    out = []
    for root in (REPO / "scenarios", FIX / "valid"):
        out += sorted({*root.rglob("*.yaml"), *root.rglob("*.yml")})
    return out


def lookup(path, defined=()) -> Scenario | None:
    """The cache's model of the file, its `S:` patterns rebuilt as runner.load.api has them."""
    return C.lookup(path, defined, parse_pattern=parse_pattern)


def round_trip(sc: Scenario) -> Scenario:
    """The model through the codec and JSON text, without the disk."""
    return codec.decode(json.loads(json.dumps(codec.encode(sc))), parse_pattern)


def loaded(path, **kw) -> Scenario | None:
    try:
        return A.load_scenario(path, use_cache=False, **kw)
    except ScenarioError:
        return None


# ------------------------------------------------------------------ equality


def assert_round_trip(path, cache: Path, **kw) -> Scenario | None:
    """Full load, then the cached model: structurally equal; returns the cached one (None for
    a file with a literal secret, which is never stored: its model still round-trips in memory)."""
    reference = A.load_scenario(path, use_cache=False, **kw)
    in_memory = round_trip(reference)
    assert dump(in_memory) == dump(reference)
    stored = A.load_scenario(path, **kw)  # a miss: full load, stores the model
    cached = lookup(path, kw.get("defined", ()))
    if cached is None:  # the loader stores no model holding a secret's literal value
        assert reference.secrets, f"{path}: no cache entry was written"
        return None
    assert cached is not stored
    assert dump(stored) == dump(reference)
    assert dump(cached) == dump(reference)
    return cached


def test_every_project_scenario_and_fixture_round_trips(cache):
    files = project_files()
    scenarios = [f for f in files if loaded(f) is not None]
    # the top-level scenarios/ files and the valid fixtures are all scenarios; lib/ and matrix/
    # hold fragments and vars files, which the cache never stores as models
    assert len(scenarios) >= 25
    assert {f for f in (REPO / "scenarios").glob("*.yaml")} <= set(scenarios)
    cached = [f for f in scenarios if assert_round_trip(f, cache) is not None]
    assert len(cached) >= 20  # the sandbox files carry the sandbox's literal password
    for f in set(files) - set(scenarios):
        assert lookup(f) is None
    # the cache front door gives exactly the loader's model for each, and knows fragments
    for f in scenarios:
        assert dump(A.load_scenario(f)) == dump(loaded(f))
    found = sorted({*(REPO / "scenarios").rglob("*.yaml"), *(REPO / "scenarios").rglob("*.yml")})
    assert A.discover([REPO / "scenarios"]) == [f for f in found if not A.is_fragment(f)]


def test_round_trip_with_a_relative_path(cache, tmp_path, monkeypatch):
    write(tmp_path / "lib" / "f.yaml", "vars: {who: x}\nsteps:\n  - C: 'HELO {{ who }}'\n    S: 250\n")
    write(tmp_path / "s.yaml", HEAD + "steps:\n  - include: lib/f.yaml\n    vars: {who: me}\n")
    monkeypatch.chdir(tmp_path)
    sc = assert_round_trip("s.yaml", cache)
    assert str(sc.path) == "s.yaml" and sc.sessions[0].steps[0].location.file == "lib/f.yaml"
    # the same bytes reached by another path are another entry: locations name the path given
    other = assert_round_trip(str(tmp_path / "s.yaml"), cache)
    assert str(other.path) == str(tmp_path / "s.yaml")


EVERYTHING = """\
name: everything
description: all the fields
tags: [a, b]
vars:
  user: "{{ env.MAILRUN_T_USER }}"
  password: "{{ env.MAILRUN_T_PW }}"
  n: 3
  f: 1.5
  yes: true
secrets: [password, env.MAILRUN_T_TOKEN]
sessions:
  - name: send
    protocol: smtp
    connect: {host: "{{ env.MAILRUN_T_HOST | default('localhost') }}", port: 2525, timeout: 3,
              tls: starttls, connect_timeout: 1.5}
    retry: {attempts: 3, interval: 0.5}
    steps:
      - S: [220, "421 busy"]
      - C: EHLO x
        S: {code: 250, lines: ["^STARTTLS"], not: {text: nope}}
        name: hello
        timeout: 2
      - C: STARTTLS
        S: 220
        starttls: true
      - include: lib/auth.yaml
        vars: {who: "{{ user }}", n: 4}
      - C: "MAIL FROM:<{{ user }}>"
        S: 2xx ok
        capture: {qid: "queued as (\\\\w+)", all: ".*"}
      - raw: !!binary AAEC/w==
      - raw: "DATA\\r\\n"
        S: 354
      - body: "Subject: x\\n\\nhi {{ qid }}\\n"
        S: 250
      - body_file: message.eml
        S: 250
      - sleep: 0.25
      - S: EOF
    finally:
      - C: QUIT
        S: 221
  - name: read
    protocol: pop3
    connect: {host: localhost, port: 1110}
    steps:
      - S: +OK
      - C: LIST
        S: +OK
        multiline: true
  - name: imap
    protocol: imap
    connect: {host: localhost}
    steps:
      - S: OK
      - C: "a LOGOUT"
        tag: false
        S: {re: "BYE"}
  - name: lines
    protocol: line
    connect: {host: localhost, port: 7}
    steps:
      - C: ping
        S: "^pong$"
"""


def test_every_field_round_trips(cache, tmp_path):
    write(
        tmp_path / "lib" / "auth.yaml",
        """\
        vars: {who: nobody, n: 1, token: "{{ env.MAILRUN_T_TOKEN }}"}
        secrets: [token]
        steps:
          - C: "AUTH PLAIN {{ auth_plain(who, password) }}"
            S: 235
          - include: inner.yaml
            vars: {token: "{{ env.MAILRUN_T_TOKEN }}"}
        """,
    )
    write(tmp_path / "lib" / "inner.yaml", "steps:\n  - C: 'NOOP {{ token | b64 }}'\n    S: 250\n")
    (tmp_path / "message.eml").write_bytes(b"Subject: m\n\nbody\n")
    sc = assert_round_trip(write(tmp_path / "all.yaml", EVERYTHING), cache)
    send = sc.sessions[0]
    assert [s.action for s in send.steps][-6:] == ["raw", "raw", "body", "body_file", "sleep", "read"]
    raw = next(s for s in send.steps if s.data is not None)
    assert raw.data == b"\x00\x01\x02\xff" and type(raw.data) is bytes
    inner = next(s for s in send.steps if s.text and s.text.startswith("NOOP"))
    assert len(inner.location.via) == 2 and len(inner.bindings) == 2
    assert send.retry.attempts == 3 and send.retry.interval == 0.5
    assert sc.secrets == frozenset({"password", "token", "env.MAILRUN_T_TOKEN"})
    assert (
        send.steps[1].expect.describe()
        == A.load_scenario(tmp_path / "all.yaml").sessions[0].steps[1].expect.describe()
    )
    assert sc.sessions[1].steps[1].multiline is True and sc.sessions[2].steps[1].tag is False


def test_dump_sees_every_field():
    """The equality above means something only if the dump reads every slot of the model."""
    loc = Location("f", 1)
    step = Step(location=loc, action="send", text="A")
    spec = ConnectSpec(values={}, base_dir=Path("/"), location=loc)
    objects = [
        loc,
        step,
        spec,
        Retry(),
        Session("s", "smtp", spec, (step,)),
        Scenario(Path("x"), "x", ()),
        ConnectConfig("h", 1),
    ]
    for o in objects:
        names = {n for n, _ in dump(o)[1]}
        assert names == set(type(o).__slots__), type(o).__name__
        assert not hasattr(o, "__dict__")
        assert repr(o).startswith(type(o).__name__ + "(")
    other = Step(location=loc, action="send", text="A", timeout=1)
    assert dump(other) != dump(step)
    assert dump(Step(location=loc, action="send", text="A", timeout=1.0)) != dump(other)


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(" :-#'\"{}[]é"),
    min_size=1,
    max_size=12,
)


@st.composite
def scenarios(draw):
    steps = ["  - S: 220"]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["C", "raw", "binary", "body", "sleep", "read"]))
        text = draw(_TEXT).strip() or "x"
        if kind == "C":
            steps.append(f"  - C: {_yq(text)}")
        elif kind == "raw":
            steps.append(f"  - raw: {_yq(text + chr(10))}")
        elif kind == "binary":
            data = draw(st.binary(min_size=1, max_size=16))
            steps.append(f"  - raw: !!binary {base64.b64encode(data).decode()}")
        elif kind == "body":
            steps.append(f"  - body: {_yq(text)}")
        elif kind == "sleep":
            steps.append(f"  - sleep: {draw(st.sampled_from(['0', '0.5', '1', '2.25']))}")
        else:
            steps.append("  - S: 250")
            continue
        if draw(st.booleans()):
            steps.append(f"    S: {draw(st.sampled_from(['250', '2xx', '[250, 251]', '{code: 250}']))}")
            if draw(st.booleans()):
                steps.append(f"    name: {_yq(draw(_TEXT))}")
            if draw(st.booleans()):
                steps.append(f"    timeout: {draw(st.sampled_from(['1', '2.5']))}")
    v = draw(st.sampled_from(["1", "1.0", "true", "'1'", "x"]))
    return f"name: {_yq(draw(_TEXT))}\nconnect: {{host: localhost, port: 25}}\nvars: {{v: {v}}}\nsteps:\n" + (
        "\n".join(steps) + "\n"
    )


def _yq(text: str) -> str:
    """A YAML double-quoted scalar."""
    out = "".join(c if c not in '"\\' and c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    return f'"{out}"'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=scenarios())
def test_generated_scenarios_round_trip(text, tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    os.environ["MAILRUN_CACHE_DIR"] = str(d / "cache")
    path = write(d / "g.yaml", text)
    if loaded(path) is None:
        return  # not every generated document is a valid scenario (e.g. sleep without S is fine)
    assert_round_trip(path, d / "cache")


# ------------------------------------------------------------------ staleness


def test_entry_is_keyed_on_bytes_path_and_defined_names(cache, tmp_path):
    p = write(tmp_path / "s.yaml", HEAD + "steps:\n  - C: 'HELO {{ x }}'\n    S: 250\n")
    assert A.load_scenario(p, defined=["x"]).sessions[0].steps[0].text == "HELO {{ x }}"
    assert lookup(p, ["x"]) is not None
    assert lookup(p) is None  # without --var x the file is invalid: the loader must say so
    with pytest.raises(ScenarioError, match="undefined variable 'x'"):
        A.load_scenario(p)
    p.write_text(HEAD + "steps:\n  - C: 'EHLO {{ x }}'\n    S: 250\n")
    assert lookup(p, ["x"]) is None
    assert A.load_scenario(p, defined=["x"]).sessions[0].steps[0].text == "EHLO {{ x }}"


def test_changed_or_moved_include_is_a_miss(cache, tmp_path):
    write(tmp_path / "lib" / "a.yaml", "steps:\n  - C: NOOP\n")
    write(tmp_path / "lib" / "b.yaml", "steps:\n  - C: RSET\n")
    os.symlink("a.yaml", tmp_path / "lib" / "f.yaml")
    p = write(tmp_path / "s.yaml", HEAD + "steps:\n  - include: lib/f.yaml\n")
    assert A.load_scenario(p).sessions[0].steps[0].text == "NOOP"
    assert lookup(p).sessions[0].steps[0].text == "NOOP"
    # the link now points at another file with other bytes
    (tmp_path / "lib" / "f.yaml").unlink()
    os.symlink("b.yaml", tmp_path / "lib" / "f.yaml")
    assert lookup(p) is None
    assert A.load_scenario(p).sessions[0].steps[0].text == "RSET"
    assert lookup(p).sessions[0].steps[0].text == "RSET"
    # the file itself changes
    write(tmp_path / "lib" / "b.yaml", "steps:\n  - C: QUIT\n")
    assert lookup(p) is None
    assert A.load_scenario(p).sessions[0].steps[0].text == "QUIT"


def test_a_vanished_body_file_is_reported_not_served_from_cache(cache, tmp_path):
    (tmp_path / "m.eml").write_text("Subject: x\n\nhi\n")
    p = write(tmp_path / "s.yaml", HEAD + "steps:\n  - body_file: m.eml\n    S: 250\n")
    assert A.load_scenario(p).sessions[0].steps[0].path == tmp_path / "m.eml"
    assert lookup(p) is not None
    (tmp_path / "m.eml").unlink()
    assert lookup(p) is None
    with pytest.raises(ScenarioError, match="file 'm.eml' not found"):
        A.load_scenario(p)


def test_use_cache_false_neither_reads_nor_writes(cache, tmp_path):
    p = write(tmp_path / "s.yaml", HEAD + "steps: [{S: 220}]\n")
    A.load_scenario(p, use_cache=False)
    A.load_scenario(p, use_cache=False)
    assert not cache.exists()
    A.load_scenario(p)
    assert len(entries(cache)) == 1
    # an entry for these bytes that says something else is not read when use_cache=False
    (entry,) = entries(cache)
    entry.write_bytes(b"garbage")
    assert A.load_scenario(p, use_cache=False).name == "t"


def test_mailrun_no_cache_neither_reads_nor_writes(cache, tmp_path, monkeypatch):
    p = write(tmp_path / "s.yaml", HEAD + "steps: [{S: 220}]\n")
    monkeypatch.setenv("MAILRUN_NO_CACHE", "1")
    assert A.load_scenario(p).name == "t"
    assert A.load_scenario(p).name == "t"
    assert A.discover([tmp_path]) == [p]
    assert not cache.exists()
    monkeypatch.delenv("MAILRUN_NO_CACHE")
    A.load_scenario(p)
    (entry,) = entries(cache)
    entry.write_bytes(b"garbage")  # an entry that says something else is not read
    monkeypatch.setenv("MAILRUN_NO_CACHE", "1")
    assert A.load_scenario(p).name == "t"
    assert entry.read_bytes() == b"garbage"


def test_old_entries_are_pruned(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_ENTRIES", 3)
    paths = [write(tmp_path / f"s{i}.yaml", HEAD + f"steps: [{{S: 22{i}}}]\n") for i in range(5)]
    for i, p in enumerate(paths):
        A.load_scenario(p)
        # the entry just written gets the write time i s (distinct whatever the clock's resolution)
        for e in entries(cache):
            if e.stat().st_mtime_ns > i * 10**9:
                os.utime(e, ns=(i * 10**9, i * 10**9))
    assert len(entries(cache)) == 3
    # the newest three are still served from the cache: their entries decode to their models
    assert [lookup(p) is not None for p in paths] == [False, False, True, True, True]


def test_invalid_files_store_no_model(cache):
    for f in sorted((FIX / "invalid").glob("*.yaml")):
        with pytest.raises(ScenarioError) as full:
            A.load_scenario(f, use_cache=False)
        with pytest.raises(ScenarioError) as front:
            A.load_scenario(f)
        assert front.value.problems == full.value.problems
    assert entries(cache) == []


def test_entries_are_private_and_written_atomically(cache, tmp_path):
    p = write(tmp_path / "s.yaml", HEAD + "steps: [{S: 220}]\n")
    A.load_scenario(p)
    for sub in ("models", "validated"):
        assert stat.S_IMODE((cache / sub).stat().st_mode) == 0o700
        for e in entries(cache, sub):
            assert stat.S_IMODE(e.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert not [x for x in (cache / "models").iterdir() if x.name.startswith(".")]  # no temp file left
    # a directory an older mailrun made world-readable is tightened
    os.chmod(cache / "validated", 0o755)
    p.write_text(HEAD + "steps: [{S: 221}]\n")
    A.load_scenario(p)
    assert stat.S_IMODE((cache / "validated").stat().st_mode) == 0o700


def test_unwritable_cache_dir_still_loads(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MAILRUN_CACHE_DIR", str(tmp_path / "file" / "sub"))
    p = write(tmp_path / "s.yaml", HEAD + "steps: [{S: 220}]\n")
    assert A.load_scenario(p).name == "t"
    assert A.load_scenario(p).name == "t"
    assert A.discover([tmp_path]) == [p]


# ------------------------------------------------------------------ damaged and foreign entries


def test_damaged_entries_fall_back_to_the_full_load(cache, tmp_path):
    p = write(tmp_path / "all.yaml", EVERYTHING)
    write(tmp_path / "lib" / "auth.yaml", "steps:\n  - C: NOOP\n    S: 250\n")
    (tmp_path / "message.eml").write_text("x\n")
    reference = dump(A.load_scenario(p, use_cache=False))
    A.load_scenario(p)
    (entry,) = entries(cache)
    good = entry.read_bytes()
    rnd = random.Random(1234)
    damaged = [
        b"",
        b"\n",
        good[: len(good) // 2],
        good + b"x",
        good.replace(b"mailrun-model", b"mailrun-m0del"),
    ]
    for _ in range(150):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        damaged.append(bytes(b))
    for _ in range(30):
        i, j = sorted(rnd.randrange(len(good)) for _ in range(2))
        damaged.append(good[:i] + good[j:])
    for data in damaged:
        entry.write_bytes(data)
        assert dump(A.load_scenario(p)) == reference
        entry.write_bytes(data)
        assert dump(A.load_scenario(p)) == reference


def _rehash(head: bytes, body: bytes) -> bytes:
    parts = head.split(b" ")
    parts[3] = files.digest(body).encode()
    return b" ".join(parts) + b"\n" + body


def test_well_formed_but_wrong_entries_never_crash(cache, tmp_path):
    """Entries whose checksum holds but whose JSON is not what this mailrun wrote (another
    version's layout, hand edits): a miss or a model, never an exception."""
    p = write(tmp_path / "all.yaml", EVERYTHING)
    write(tmp_path / "lib" / "auth.yaml", "steps:\n  - C: NOOP\n    S: 250\n")
    (tmp_path / "message.eml").write_text("x\n")
    A.load_scenario(p)
    (entry,) = entries(cache)
    head, _, body = entry.read_bytes().partition(b"\n")
    data = json.loads(body)
    rnd = random.Random(99)
    junk = [None, 0, 1.5, True, "x", [], {}, [[]], {"a": 1}, "\udcff", 10**400]

    def paths(o, here=()):
        yield here
        if isinstance(o, dict):
            for k, v in o.items():
                yield from paths(v, here + (k,))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                yield from paths(v, here + (i,))

    all_paths = [x for x in paths(data) if x]
    for _ in range(300):
        mutated = json.loads(body)
        where = rnd.choice(all_paths)
        parent = mutated
        for k in where[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and rnd.random() < 0.3:
            del parent[where[-1]]
        else:
            parent[where[-1]] = rnd.choice(junk)
        entry.write_bytes(_rehash(head, json.dumps(mutated).encode()))
        assert isinstance(A.load_scenario(p), Scenario)
    for text in (b"[]", b"null", b"{}", b'{"includes": 5}', b"[" * 100000):
        entry.write_bytes(_rehash(head, text))
        assert lookup(p) is None
        assert A.load_scenario(p).name == "everything"


def test_an_entry_for_another_file_is_not_used(cache, tmp_path):
    a = write(tmp_path / "a.yaml", "name: a\nconnect: {host: localhost, port: 25}\nsteps: [{S: 220}]\n")
    b = write(tmp_path / "b.yaml", "name: b\nconnect: {host: localhost, port: 25}\nsteps: [{S: 220}]\n")
    A.load_scenario(a)
    (ea,) = entries(cache)
    A.load_scenario(b)
    (eb,) = [e for e in entries(cache) if e != ea]
    eb.write_bytes(ea.read_bytes())  # a's entry (valid checksum) under b's key
    assert lookup(b) is None
    assert A.load_scenario(b).name == "b"


# ------------------------------------------------------------------ secrets


@pytest.mark.parametrize(
    "text",
    [
        "vars: {password: hunter2-Zq9}\nsecrets: [password]\n",
        "vars: {password: 'pre{{ env.X }}hunter2-Zq9'}\nsecrets: [password]\n",
        "vars: {password: \"{{ env.X | default('hunter2-Zq9') }}\"}\nsecrets: [password]\n",
        "vars: {pw: hunter2-Zq9, password: '{{ pw }}'}\nsecrets: [password]\n",
        "vars: {n: 12345678901}\nsecrets: [n]\n",
    ],
    ids=["literal", "mixed", "default", "derived", "number"],
)
def test_a_literal_secret_is_never_written(cache, tmp_path, text):
    p = write(tmp_path / "s.yaml", HEAD + text + "steps: [{S: 220}]\n")
    sc = A.load_scenario(p)
    assert sc.secrets and lookup(p) is None
    assert entries(cache) == [] and entries(cache, "validated")  # the validation record is kept
    secret = b"hunter2-Zq9" if b"hunter2" in p.read_bytes() else b"12345678901"
    for f in cache.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert secret not in data and base64.b64encode(secret)[:12] not in data


def test_a_literal_secret_bound_by_an_include_is_never_written(cache, tmp_path):
    write(tmp_path / "lib" / "auth.yaml", "secrets: [pw]\nsteps:\n  - C: 'AUTH {{ pw | b64 }}'\n    S: 235\n")
    p = write(tmp_path / "s.yaml", HEAD + "steps:\n  - include: lib/auth.yaml\n    vars: {pw: hunter2-Zq9}\n")
    assert A.load_scenario(p).sessions[0].steps[0].bindings == ({"pw": "hunter2-Zq9"},)
    assert entries(cache) == []
    q = write(
        tmp_path / "q.yaml", HEAD + "steps:\n  - include: lib/auth.yaml\n    vars: {pw: '{{ env.PW }}'}\n"
    )
    A.load_scenario(q)
    assert len(entries(cache)) == 1
    assert not any(b"hunter2" in f.read_bytes() for f in cache.rglob("*") if f.is_file())


def test_secrets_from_the_environment_are_cached(cache, tmp_path):
    p = write(
        tmp_path / "s.yaml",
        HEAD + "vars: {password: '{{ env.PW }}', key: '{{ env.K | b64 }}'}\nsecrets: [password, key]\n"
        "steps: [{S: 220}]\n",
    )
    A.load_scenario(p)
    assert lookup(p) is not None


# ------------------------------------------------------------------ discovery


def test_discover_matches_the_loader_and_remembers_fragments(cache, tmp_path):
    write(tmp_path / "d" / "lib" / "f.yaml", "steps:\n  - C: NOOP\n")
    write(tmp_path / "d" / "a.yaml", HEAD + "steps:\n  - include: lib/f.yaml\n")
    write(tmp_path / "d" / "b.yml", HEAD + "steps: [{S: 220}]\n")
    write(tmp_path / "d" / "broken.yaml", "name: [\n")
    want = [tmp_path / "d" / "a.yaml", tmp_path / "d" / "b.yml", tmp_path / "d" / "broken.yaml"]
    assert A.discover([tmp_path / "d"]) == want
    assert {e.read_bytes() for e in entries(cache, "kinds")} == {b"fragment\n", b"scenario\n"}
    assert A.discover([tmp_path / "d"]) == want
    assert A.discover([str(tmp_path / "d" / "*.y*ml")]) == want
    assert A.discover([str(tmp_path / "d" / "**")]) == want
    assert A.find_files([tmp_path / "d"], fragments=True) == sorted(
        [*want, tmp_path / "d" / "lib" / "f.yaml"]
    )


# ------------------------------------------------------------------ the warm run


_PROBE = textwrap.dedent(
    """\
    import sys
    from runner.cli.main import main
    rc = main(sys.argv[1:])
    print("MODULES", " ".join(sorted(sys.modules)))
    sys.exit(rc)
    """
)
HEAVY = ("yaml", "jsonschema", "runner.load.yaml_doc")


def run_probe(args, cache: Path, **env) -> tuple[int, set[str], str]:
    full = {**os.environ, "MAILRUN_CACHE_DIR": str(cache), "NO_COLOR": "1", **env}
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, args)],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=60,
    )
    line = next((x for x in r.stdout.splitlines() if x.startswith("MODULES ")), "MODULES ")
    return r.returncode, set(line.split()[1:]), r.stdout + r.stderr


SEND = """\
name: warm
connect: {host: 127.0.0.1, port: %d, timeout: 5}
vars:
  user: alice@example.test
  password: "{{ env.MAILRUN_T_PW }}"
secrets: [password]
steps:
  - S: 220
  - C: EHLO warm.test
    S: 250
  - include: lib/auth.yaml
  - C: "MAIL FROM:<{{ user }}>"
    S: 250
  - C: "RCPT TO:<bob@example.test>"
    S: 250
  - C: RSET
    S: 250
  - C: QUIT
    S: 221
"""


def test_a_warm_run_imports_neither_yaml_jsonschema_nor_the_loader(cache, tmp_path):
    write(
        tmp_path / "lib" / "auth.yaml",
        "steps:\n  - C: 'AUTH PLAIN {{ auth_plain(user, password) }}'\n    S: 250\n",
    )
    with Server(scripted(b"220 warm ready\r\n", SMTP)) as srv:
        p = write(tmp_path / "send.yaml", SEND % srv.port)
        env = {"MAILRUN_T_PW": "pw-Zq9"}
        for args in ([p], [tmp_path]):
            rc, cold, out = run_probe(args, cache, **env)
            assert rc == 0, out
            # the first runs load in full, so the probe does see imports (the directory run asks
            # the loader which files are fragments once; the file's model is cached by then)
            assert {"yaml", "runner.load.yaml_doc"} <= cold
        for args in ([p], ["run", p], [tmp_path]):
            rc, warm, out = run_probe(args, cache, **env)
            assert rc == 0, out
            assert "PASS warm" in out and "pw-Zq9" not in out
            assert not (set(HEAVY) & warm), sorted(set(HEAVY) & warm)
            # (json is the cache's reader: issue 13 gave up the hand-rolled one on the C scanner)
            assert not {"dataclasses", "hashlib", "argparse", "shutil"} & warm
        conns = [srv.wait_connection(i, timeout=10) for i in range(5)]
        assert all(b"QUIT\r\n" in c.wait_closed(10) for c in conns)
        # a changed fragment makes the next run load in full again, and say so in its imports
        write(
            tmp_path / "lib" / "auth.yaml", "steps:\n  - C: 'AUTH PLAIN {{ auth_plain(user, password) }}'\n"
        )
        rc, again, out = run_probe([p], cache, **env)
        assert rc == 1 or rc == 0, out
        assert "yaml" in again


def test_a_warm_run_with_an_invalid_file_still_reports_it(cache, tmp_path):
    good = write(tmp_path / "ok.yaml", HEAD + "steps: [{S: 220}]\n")
    bad = write(tmp_path / "bad.yaml", HEAD + "steps: [{S: '25'}]\n")
    run_probe(["validate", good], cache)
    rc, _, out = run_probe([good, bad], cache)
    assert rc == 2 and "'25' is not a reply-code pattern" in out and "Traceback" not in out


def test_run_without_options_skips_argparse_with_the_same_arguments():
    from runner.cli import args as cli

    for argv in (["a.yaml"], ["a.yaml", "dir", "x*.yml"]):
        fast = cli.parse_run_args(argv)
        assert isinstance(fast, cli.RunArgs)
        assert vars(fast) == vars(cli.build_run_parser().parse_intermixed_args(argv))
    assert not isinstance(cli.parse_run_args(["a.yaml", "-v"]), cli.RunArgs)
    assert cli.parse_run_args(["a.yaml", "-v"]).verbose is True
    assert not isinstance(cli.parse_run_args(["-", "a.yaml"]), cli.RunArgs)


def test_a_piped_scenario_is_read_once_and_never_cached(cache, tmp_path):
    """`mailrun <(cat x.yaml)` / `cat x.yaml | mailrun /dev/stdin`: a pipe can be read only once,
    so the cache must not read it before the loader does."""
    text = (HEAD + "steps: [{S: 220}]\n").encode()
    for _ in range(2):  # the second time a cache entry could exist, if anything had stored one
        r, w = os.pipe()
        os.write(w, text)
        os.close(w)
        try:
            sc = A.load_scenario(f"/dev/fd/{r}")
        finally:
            os.close(r)
        assert sc.name == "t" and len(sc.sessions[0].steps) == 1
    assert entries(cache) == []


def test_entries_someone_else_could_write_are_not_used(cache, tmp_path):
    p = write(tmp_path / "s.yaml", HEAD + "steps: [{S: 220}]\n")
    A.load_scenario(p)
    assert lookup(p) is not None
    (entry,) = entries(cache)
    for where, mode in ((entry, 0o622), (cache / "models", 0o777), (cache, 0o757)):
        before = where.stat().st_mode & 0o777
        where.chmod(mode)
        try:
            assert lookup(p) is None, where  # group/world-writable: a full load instead
            assert A.load_scenario(p).name == "t"
        finally:
            where.chmod(before)
    assert lookup(p) is not None
    # an entry that is a link is not followed
    target = tmp_path / "elsewhere"
    target.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(target)
    assert lookup(p) is None


# ------------------------------------------------------------------ the cache as a leaf (issue 13)


def chain(root: Path, depth: int, port: int = 25) -> Path:
    """A scenario whose include chain is `depth` fragments deep, each binding a variable."""
    for i in range(depth):
        inner = f"  - include: f{i + 1}.yaml\n    vars: {{who: 'x{i}'}}\n" if i + 1 < depth else ""
        step = f"  - C: 'NOOP {i} {{{{ who }}}}'\n    S: 250\n"
        write(root / "lib" / f"f{i}.yaml", f"vars: {{who: n}}\nsteps:\n{step}{inner}")
    head = f"name: deep\nconnect: {{host: 127.0.0.1, port: {port}}}\n"
    return write(root / "s.yaml", head + "steps:\n  - S: 220\n  - include: lib/f0.yaml\n")


def test_an_include_entry_grows_linearly_with_depth(cache, tmp_path):
    """Each step's Location.via holds the include steps' Locations, which carry their own via: an
    entry that writes them as a tree doubles per level (81 KB at 12 levels, 5 MB at 18). Shared
    objects are written once, and a step's via and bindings as its including step's plus one, so
    an entry grows linearly with the depth."""
    sizes = {}
    for depth in (7, 14):
        p = chain(tmp_path / str(depth), depth)
        sc = assert_round_trip(p, cache)
        steps = sc.sessions[0].steps[1:]
        assert len(steps) == depth and len(steps[-1].location.via) == depth
        assert steps[-1].location.via[3] is steps[5].location.via[3]  # the sharing comes back too
        (entry,) = entries(cache)
        sizes[depth] = entry.stat().st_size
        shutil.rmtree(cache / "models")
    assert sizes[14] < 2.1 * sizes[7], sizes  # twice as deep, (at most about) twice the size
    assert sizes[14] < 16_000, sizes


def test_a_32_level_include_chain_runs_cold_and_warm(cache, tmp_path):
    """It hung at 40 levels: 2**40 Locations to write. At the deepest chain allowed
    (runner.load.includes.MAX_INCLUDE_DEPTH; tests/test_fault_files.py: 40 is refused), both runs
    end (the subprocess has a deadline) and pass."""
    with Server(scripted(b"220 deep\r\n", SMTP)) as srv:
        p = chain(tmp_path, 32, srv.port)
        for run in ("cold", "warm"):
            rc, modules, out = run_probe([p], cache)
            assert rc == 0 and "PASS deep" in out, (run, out)
            assert ("yaml" in modules) == (run == "cold")  # the warm run took the model from the cache
    (entry,) = entries(cache)
    assert entry.stat().st_size < 64_000
    assert [s.text for s in lookup(p).sessions[0].steps[1:]] == [f"NOOP {i} {{{{ who }}}}" for i in range(32)]


def _imports(path: Path) -> set[str]:
    """Every module a source file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if base in ("runner", "runner.model"))
    return out


def test_the_cache_imports_only_the_model_and_the_standard_library():
    allowed_runner = {
        "runner",
        "runner.__version__",
        "runner.records",
        "runner.errors",
        "runner.cache",
        "runner.model",
    }
    for f in sorted((REPO / "runner" / "cache").glob("*.py")):
        for name in _imports(f):
            top = name.split(".")[0]
            if top != "runner":
                assert top in sys.stdlib_module_names or top in ("__future__",), (f.name, name)
                assert top != "_json", (f.name, "a hand-rolled JSON reader")
                continue
            ok = name in allowed_runner or name.startswith(("runner.model.", "runner.cache."))
            assert ok, f"runner/cache/{f.name} imports {name}"


def test_the_codec_names_no_field_of_the_model():
    """The codec is derived from the record classes: a field added to a model class needs no line
    in the cache. Only the pattern's fields (and the protocol it is parsed in) are named."""
    from runner.model import config, scenario

    text = (REPO / "runner" / "cache" / "codec.py").read_text()
    code = ast.parse(text)
    strings = {n.value for n in ast.walk(code) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    attrs = {n.attr for n in ast.walk(code) if isinstance(n, ast.Attribute)}
    model_fields = {f for c in codec.CLASSES.values() for f in c.__slots__}
    assert model_fields & (strings | attrs) <= {"expect", "expect_source", "protocol"}
    assert set(codec.CLASSES) >= {"Scenario", "Session", "Step", "Location", "ConnectSpec", "Retry"}
    assert codec.CLASSES["ConnectConfig"] is config.ConnectConfig and codec.CLASSES["Step"] is scenario.Step


def test_a_new_record_class_and_field_round_trip_without_a_line_in_the_codec(monkeypatch):
    from runner.records import Plain

    class Extra(Plain):
        __slots__ = ("when", "data", "where", "_memo")

        def __init__(self, when: tuple, data: bytes = b"", where: Path | None = None):
            self.when = when
            self.data = data
            self.where = where
            self._memo = None

    class Broken(Plain):  # a constructor that does not take its fields
        __slots__ = ("a",)

        def __init__(self):
            self.a = 1

    monkeypatch.setitem(codec.CLASSES, "Extra", Extra)
    monkeypatch.setitem(codec.CLASSES, "Broken", Broken)
    loc = Location("f", 1)
    x = Extra((1, 2.5, [True, None]), b"\x00\xff", Path("/tmp/x"))
    step = Step(location=loc, action="send", text="A", bindings=({"x": x, "y": frozenset({"a"})},))
    sc = Scenario(Path("s.yaml"), "s", (Session("s", "smtp", ConnectSpec({}, Path("/"), loc), (step,)),))
    back = round_trip(sc)
    assert dump(back) == dump(sc)
    assert back.sessions[0].steps[0].bindings[0]["x"]._memo is None
    step.bindings = ({"b": Broken()},)
    with pytest.raises(codec.NotCacheable):
        codec.encode(sc)
    step.bindings = ({"b": {1: 2}},)
    with pytest.raises(codec.NotCacheable):
        codec.encode(sc)


def test_patterns_are_rebuilt_by_the_parser_the_caller_gives(cache, tmp_path):
    with_s = write(tmp_path / "a.yaml", HEAD + "steps: [{S: 220}]\n")
    without = write(tmp_path / "b.yaml", HEAD + "steps: [{C: NOOP}]\n")
    for p in (with_s, without):
        A.load_scenario(p)
    assert C.lookup(with_s) is None  # no parser: a miss, never a step without its pattern
    assert C.lookup(without).sessions[0].steps[0].text == "NOOP"
    seen = []

    def parser(source, protocol):
        seen.append((source, protocol))
        return parse_pattern(source, protocol)

    assert C.lookup(with_s, parse_pattern=parser).sessions[0].steps[0].expect is not None
    assert seen == [(220, "smtp")]
    assert C.lookup(with_s, parse_pattern=lambda s, p: (None, ["bad"])) is None


def test_the_source_fingerprint_covers_every_module_of_the_model_rooms(tmp_path, monkeypatch):
    """A module the loader or the language room gains later changes every key, unlisted."""
    here = tmp_path / "runner"
    for sub in ("model", "load", "lang", "cache", "data"):
        shutil.copytree(REPO / "runner" / sub, here / sub)
    shutil.copy(REPO / "runner" / "records.py", here / "records.py")
    monkeypatch.setattr(C, "_HERE", str(here))

    def fingerprint() -> bytes:
        monkeypatch.setattr(C, "_fingerprint", None)
        return C._sources_fingerprint()

    before = fingerprint()
    assert before == fingerprint()
    for new in ("load/schema.py", "lang/render.py", "model/more.py", "cache/codec2.py"):
        (here / new).write_text("")
        after = fingerprint()
        assert after != before, new
        before = after
    (here / "records.py").write_text("# changed\n")
    assert fingerprint() != before
