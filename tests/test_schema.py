"""The JSON Schema: well-formed, shipped identically, documented, and agreeing with the loader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from runner.load import schema as L
from runner.load.yaml_doc import read_doc

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures"
TOP = ROOT / "schemas" / "scenario.schema.json"
PKG = ROOT / "runner" / "data" / "scenario.schema.json"

VALID = sorted((FIX / "valid").glob("*.yaml"))
INVALID = sorted((FIX / "invalid").glob("*.yaml"))
SCHEMA_LEVEL = [f for f in INVALID if "# schema-level" in f.read_text(encoding="utf-8", errors="replace")]


def _plain(path: Path):
    """The data as the loader reads it (YAML 1.2-like: `NO` is text), JSON-compatible."""
    return L._jsonable(read_doc(path).data)


def test_copies_are_byte_identical():
    assert TOP.read_bytes() == PKG.read_bytes()


def test_schema_is_valid_2020_12_and_exposed():
    s = json.loads(TOP.read_text())
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"]
    assert L.schema() == s
    assert json.loads(L.schema_text()) == s
    assert isinstance(L.SCHEMA_VERSION, str) and L.SCHEMA_VERSION


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def test_every_object_forbids_unknown_keys():
    s = L.schema()
    for path, node in _walk(s):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path


def test_every_property_has_title_and_description():
    s = L.schema()
    defs = s["$defs"]

    def doc_of(sub):
        if "$ref" in sub and not ("description" in sub and "title" in sub):
            target = defs[sub["$ref"].split("/")[-1]]
            return {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
        return sub

    for path, node in _walk(s):
        for name, sub in (node.get("properties") or {}).items():
            d = doc_of(sub)
            assert d.get("description"), f"{path}/properties/{name} has no description"
            assert d.get("title"), f"{path}/properties/{name} has no title"


def test_defs_are_reusable_pieces():
    defs = L.schema()["$defs"]
    for name in ("step", "pattern", "connect", "session", "fragment", "scenario"):
        assert name in defs


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixtures_pass_plain_jsonschema(path):
    errors = list(Draft202012Validator(L.schema()).iter_errors(_plain(path)))
    assert not errors, [e.message for e in errors]


def test_fragment_fixture_passes_plain_jsonschema():
    frag = FIX / "valid" / "lib" / "smtp_auth_plain.yaml"
    assert not list(Draft202012Validator(L.schema()).iter_errors(_plain(frag)))


@pytest.mark.parametrize("path", SCHEMA_LEVEL, ids=lambda p: p.name)
def test_schema_level_invalid_fixtures_fail_plain_jsonschema(path):
    data = _plain(path)
    assert list(Draft202012Validator(L.schema()).iter_errors(data)), path.name


def test_there_are_schema_level_fixtures():
    assert len(SCHEMA_LEVEL) >= 8


MODELINE = re.compile(r"#\s*yaml-language-server:\s*\$schema=(\S+)")
WITH_MODELINE = [p for p in [*VALID, *(FIX / "valid").rglob("lib/*.yaml")] if MODELINE.search(p.read_text())]


@pytest.mark.parametrize("path", WITH_MODELINE, ids=lambda p: p.name)
def test_modeline_points_at_the_schema(path):
    m = MODELINE.search(path.read_text(encoding="utf-8"))
    target = (path.parent / m.group(1)).resolve()
    assert target == TOP.resolve()


def test_at_least_two_fixtures_carry_the_modeline():
    assert len(WITH_MODELINE) >= 3


def test_schema_rejects_what_loader_rejects_structurally():
    v = Draft202012Validator(L.schema())
    ok = {"name": "x", "connect": {"host": "h", "port": 25}, "steps": [{"S": 220}]}
    assert not list(v.iter_errors(ok))
    for bad in (
        {**ok, "conect": {}},
        {**ok, "connect": {"host": "h", "tls": "off"}},
        {**ok, "connect": {"host": "h", "port": 0}},
        {**ok, "steps": [{"C": "NOOP", "expect": 250}]},
        {**ok, "steps": [{"sleep": -1}]},
        {**ok, "steps": [{"S": 220, "timeout": 0}]},
        {**ok, "steps": [{"S": {"regex": "x"}}]},
        {"name": "x", "sessions": [{"name": "a", "connect": {"host": "h"}, "steps": []}]},
        {"steps": [{"S": 220}], "connect": {"host": "h"}},
    ):
        assert list(v.iter_errors(bad)), bad


def test_yaml_1_1_readers_see_the_traps_the_loader_avoids():
    """PyYAML's YAML 1.1 reading of the same fixture differs: that is why the loader has its own."""
    plain = yaml.safe_load((FIX / "valid" / "imap_no.yaml").read_text())
    assert plain["steps"][1]["S"] is False
    assert _plain(FIX / "valid" / "imap_no.yaml")["steps"][1]["S"] == "NO"
