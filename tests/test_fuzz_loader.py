"""The loader on arbitrary YAML and arbitrary bytes: a model or ScenarioError (exit 2) every
time, never another exception; and the real `mailrun validate` / `mailrun run` on such files
exits 0, 1 or 2 (2 is the usual answer) without a traceback."""

from __future__ import annotations

import json
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import ScenarioError
from runner.load.api import load_scenario, validate_paths
from tests.support.faultserver import run_mailrun

# Keys the loader knows, and others: a fuzzer that only invents keys never gets past the schema.
KEYS = [
    "name", "protocol", "connect", "steps", "sessions", "vars", "secrets", "finally", "retry",
    "host", "port", "tls", "timeout", "max_reply", "max_line", "C", "S", "include", "body",
    "body_file", "raw", "sleep", "capture", "starttls", "code", "text", "re", "lines", "not",
    "attempts", "interval", "description", "tags", "x",
]  # fmt: skip
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["smtp", "pop3", "imap", "line", "127.0.0.1", "250", "+OK", "{{ x }}", "{{", "EOF"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)
_documents = st.dictionaries(st.sampled_from(KEYS), _values, max_size=8)

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load(path) -> None:
    try:
        load_scenario(path, use_cache=False)
    except ScenarioError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
    report = validate_paths([path], env={})
    assert all(isinstance(p, str) for p in report.errors)


#: the same data written two ways: block YAML, and one line of flow YAML (JSON is YAML)
DUMPS = {
    "block YAML": lambda d: yaml.safe_dump(d, allow_unicode=True),
    "JSON as flow YAML": lambda d: json.dumps(d, default=str),
}


@pytest.mark.parametrize("dump", DUMPS.values(), ids=list(DUMPS))
@SETTINGS
@given(doc=_documents)
def test_loader_on_arbitrary_data(tmp_path, dump, doc):
    p = tmp_path / "fuzz.yaml"
    p.write_text(dump(doc), encoding="utf-8")
    _load(p)


_yamlish = st.lists(
    st.sampled_from(
        [
            "name: x\n",
            "steps:\n",
            "  - C: a\n",
            "    S: 250\n",
            "- ",
            ": ",
            "&a ",
            "*a ",
            "[",
            "]",
            "{",
            "}",
            "'",
            '"',
            "\t",
            "\n",
            "!!binary ",
            "[" * 300,
            "{a: " * 300,
            "- " * 300,
            "<<: ",
            "#",
            "---\n",
        ]
    )
    | st.text(string.printable, max_size=10),
    max_size=40,
).map("".join)


@SETTINGS
@given(text=_yamlish)
def test_loader_on_yaml_like_text(tmp_path, text):
    p = tmp_path / "fuzz.yaml"
    p.write_text(text, encoding="utf-8")
    _load(p)


@SETTINGS
@given(data=st.binary(max_size=400))
def test_loader_on_arbitrary_bytes(tmp_path, data):
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(data)
    _load(p)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | _yamlish.map(str.encode))
def test_mailrun_on_arbitrary_bytes_exits_cleanly(tmp_path, data):
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(data)
    for cmd in ("validate", "run"):
        r = run_mailrun([cmd, str(p)], timeout=60)
        assert r.status in (0, 1, 2), r.output
        assert "Traceback" not in r.output and "internal error" not in r.output, r.output
