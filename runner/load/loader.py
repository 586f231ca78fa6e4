"""Load scenario files: YAML with positions kept, JSON Schema validation, semantic checks.

Every problem is reported as `file:line:col: path: message`, and all problems of a file (and
of the fragments it includes) are reported together in one ScenarioError.

YAML is read with a resolver of our own, not YAML 1.1's: only `true`/`false` are booleans,
only decimal numbers are numbers (`010`, `0o10`, `0x1f`, `1:30`, `.inf` stay strings), there
are no timestamps, a key given twice is an error, and aliases are expanded with a cap on the
number of nodes (so an alias bomb cannot hang the loader).

jsonschema is imported only when a file actually needs schema validation: a cache entry keyed
on the content of the file and its includes (plus SCHEMA_VERSION) records that it validated.
After a clean load the model itself is cached too (runner.cache.store), so the next run of
the same file does not import this module at all.

resolve_connect lives in runner.model.config, discover in runner.cache.store and env_warnings in
runner.model.scenario (cheap to import on the run path); they are re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import json
import math
import os
import re
from functools import lru_cache
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from runner.cache import store as _model_cache
from runner.cache.store import SCHEMA_VERSION
from runner.errors import ScenarioError
from runner.model.config import DEFAULT_PORTS as DEFAULT_PORTS  # re-exports: the run path imports these
from runner.model.config import (  # from runner.model.config, runner.model.scenario and
    PROTOCOLS,
)
from runner.model.config import TLS_MODES as TLS_MODES  # runner.cache.store, never from here
from runner.model.config import TRANSPORTS as TRANSPORTS
from runner.model.config import _convert as _convert
from runner.model.scenario import ConnectSpec, Location, Retry, Scenario, Session, Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "is_fragment",
    "load_env_file",
    "load_vars_file",
    "schema",
    "schema_text",
]

BUILTINS = frozenset({"run_id", "now"})
ACTION_KEYS = ("C", "body", "body_file", "raw", "sleep", "include")
STEP_KEYS = frozenset(
    {"C", "S", "name", "starttls", "capture", "timeout", "body", "body_file", "raw", "sleep", "include"}
    | {"vars", "multiline", "tag"}
)
FRAGMENT_KEYS = frozenset({"steps", "vars", "secrets", "description"})
MAX_NODES = 100_000
MAX_DEPTH = 200
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DATA_DIR = Path(__file__).resolve().parent.parent / "data"

Path_ = tuple  # a JSON path: tuple of str keys and int indexes


# --------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def schema_text() -> str:
    """The packaged JSON Schema, as text."""
    return (_DATA_DIR / "scenario.schema.json").read_text(encoding="utf-8")


def schema() -> dict:
    """The packaged JSON Schema (a fresh copy each call)."""
    return json.loads(schema_text())


# --------------------------------------------------------------------------- YAML


class _Resolver(BaseResolver):
    """YAML 1.2-ish core schema, stricter: true/false, decimal numbers, null; the rest is text."""


_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)$"),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|)$"), ["~", "n", ""])


class _Loader(Reader, Scanner, Parser, Composer, _Resolver):
    def __init__(self, stream):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)


try:  # libyaml: the same nodes and marks, composed about 8x faster than the pure-Python parser
    from yaml.cyaml import CParser as _CParser
except ImportError:  # PyYAML built without libyaml
    _CParser = None

if _CParser is not None:

    class _FastLoader(_CParser, _Resolver):
        def __init__(self, stream):
            _CParser.__init__(self, stream)
            _Resolver.__init__(self)

else:
    _FastLoader = None


def _compose(text: str) -> Node | None:
    """The document's node tree. libyaml composes it when it can; any text it rejects (and any
    text with characters the pure-Python reader refuses) goes through the pure-Python loader,
    whose errors are the ones reported."""
    if _FastLoader is not None and not Reader.NON_PRINTABLE.search(text):
        fast = _FastLoader(text)
        try:
            node = fast.get_single_node()
            if node is not None:
                return node
        except yaml.YAMLError:
            pass
        finally:
            fast.dispose()
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


_T = "tag:yaml.org,2002:"


class _Doc:
    """One parsed YAML file: plain Python data plus the position of every key and value.
    display: the path as the caller gave it (for messages); real: the resolved path;
    marks / kmarks: path -> (line, col) of the value / the key; problems: (line, col, text)
    found while building."""

    __slots__ = ("display", "real", "raw", "data", "marks", "kmarks", "problems")

    def __init__(self, display: str, real: Path, raw: bytes, data: Any):
        self.display = display
        self.real = real
        self.raw = raw
        self.data = data
        self.marks: dict = {}
        self.kmarks: dict = {}
        self.problems: list = []

    @property
    def base_dir(self) -> Path:
        return self.real.parent

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def pos(self, path: Path_, key: bool = False) -> tuple[int, int]:
        if key and path in self.kmarks:
            return self.kmarks[path]
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), (1, 1))

    def loc(self, path: Path_, via: tuple[Location, ...] = ()) -> Location:
        line, col = self.pos(path)
        return Location(self.display, line, col, via)

    def msg(self, path: Path_, message: str, key: bool = False) -> str:
        line, col = self.pos(path, key)
        jp = json_path(path)
        return (
            f"{self.display}:{line}:{col}: {jp}: {message}"
            if jp
            else f"{self.display}:{line}:{col}: {message}"
        )


def json_path(path: Iterable) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _mark(m) -> tuple[int, int]:
    return (m.line + 1, m.column + 1)


class _Builder:
    def __init__(self, doc: _Doc):
        self.doc = doc
        self.count = 0

    def problem(self, node: Node, text: str) -> None:
        line, col = _mark(node.start_mark)
        self.doc.problems.append((line, col, text))

    def build(self, node: Node, path: Path_, stack: tuple = ()) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(node)
        if len(stack) > MAX_DEPTH or any(node is s for s in stack):
            raise _TooBig(node, recursive=True)
        self.doc.marks[path] = _mark(node.start_mark)
        tag = node.tag or ""
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if tag not in (_T + "seq", "!"):
                self.problem(node, f"{json_path(path) or 'document'}: unsupported YAML tag {tag!r} on a list")
            return [self.build(n, path + (i,), stack + (node,)) for i, n in enumerate(node.value)]
        if isinstance(node, MappingNode):
            if tag not in (_T + "map", "!"):
                self.problem(
                    node, f"{json_path(path) or 'document'}: unsupported YAML tag {tag!r} on a mapping"
                )
            return self.mapping(node, path, stack + (node,))
        return None  # pragma: no cover

    def mapping(self, node: MappingNode, path: Path_, stack: tuple) -> dict:
        out: dict[str, Any] = {}
        first: dict[str, tuple[int, int]] = {}
        merges: list[Node] = []
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode):
                self.problem(
                    knode,
                    f"{json_path(path) or 'document'}: a key must be a plain text, not a list or mapping",
                )
                continue
            key = knode.value
            if key == "<<" and not knode.style:
                merges.append(vnode)
                continue
            kpos = _mark(knode.start_mark)
            if key in first:
                self.problem(
                    knode,
                    f"{json_path(path + (key,))}: duplicate key '{key}' (first given at line {first[key][0]})",
                )
                continue
            first[key] = kpos
            self.doc.kmarks[path + (key,)] = kpos
            out[key] = self.build(vnode, path + (key,), stack)
        for m in merges:  # YAML merge keys: `<<: *defaults`; explicit keys win
            sources = m.value if isinstance(m, SequenceNode) else [m]
            for src in sources:
                if not isinstance(src, MappingNode):
                    self.problem(
                        src, f"{json_path(path) or 'document'}: '<<' merges a mapping (or a list of them)"
                    )
                    continue
                merged = self.mapping(src, path, stack + (src,))
                for k, v in merged.items():
                    out.setdefault(k, v)
        return out

    def scalar(self, node: ScalarNode, path: Path_) -> Any:
        tag, value = node.tag or "", node.value
        where = json_path(path) or "document"
        if tag in (_T + "str", "!"):
            return value
        if tag == _T + "bool":
            if value in ("true", "false"):
                return value == "true"
            self.problem(node, f"{where}: {value!r} is not a boolean (only true and false are)")
            return value
        if tag == _T + "int":
            if re.fullmatch(r"[-+]?[0-9]+", value):
                return int(value)
            self.problem(node, f"{where}: {value!r} is not a decimal integer")
            return value
        if tag == _T + "float":
            try:
                f = float(value)
            except ValueError:
                f = math.nan
            if math.isfinite(f) and re.fullmatch(r"[-+]?[0-9.eE+-]+", value):
                return f
            self.problem(node, f"{where}: {value!r} is not a decimal number")
            return value
        if tag == _T + "null":
            return None
        if tag == _T + "binary":
            try:
                return base64.b64decode("".join(value.split()), validate=True)
            except (binascii.Error, ValueError):
                self.problem(node, f"{where}: !!binary value is not valid base64")
                return b""
        self.problem(node, f"{where}: unsupported YAML tag {tag!r} (quote the value to make it text)")
        return value


class _TooBig(Exception):
    def __init__(self, node: Node, recursive: bool = False):
        self.node = node
        self.recursive = recursive


_COLON_HINT = re.compile(r"^(\s*(?:-\s+)?)([A-Za-z_][\w]*):\s+(.*\S.*?:\s.*)$")


def _yaml_error_hint(text: str, exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or ""
    mark = exc.problem_mark
    if "mapping values are not allowed" in problem and mark is not None:
        lines = text.splitlines()
        if 0 <= mark.line < len(lines):
            m = _COLON_HINT.match(lines[mark.line])
            if m:
                key, val = m.group(2), m.group(3).strip()
                return (
                    f"; YAML read {val!r} as key: value — quote the whole value: "
                    f'{key}: "{val.replace(chr(34), chr(92) + chr(34))}"'
                )
        return "; a value containing ': ' must be quoted"
    if "'\\t'" in problem or "\t" in problem:
        return "; YAML does not allow tabs for indentation: use spaces"
    return ""


def _parse_yaml(raw: bytes, display: str, real: Path) -> _Doc:
    """Parse bytes into a _Doc. Fatal problems (encoding, syntax, size) raise ScenarioError."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw_text = raw[3:]
    else:
        raw_text = raw
    try:
        text = raw_text.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw_text[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        raise ScenarioError(
            f"{display}:{line}:{col}: the file is not UTF-8 (byte 0x{raw_text[e.start]:02x}); save it as UTF-8"
        ) from None
    doc = _Doc(display, real, raw, None)
    if not text.strip() or all(ln.strip().startswith("#") or not ln.strip() for ln in text.splitlines()):
        raise ScenarioError(f"{display}:1:1: the file is empty (a scenario needs name, connect and steps)")
    try:
        node = _compose(text)
        if node is None:
            raise ScenarioError(
                f"{display}:1:1: the file is empty (a scenario needs name, connect and steps)"
            )
        data = _Builder(doc).build(node, ())
    except _TooBig as e:
        line, col = _mark(e.node.start_mark)
        what = "a recursive alias" if e.recursive else f"more than {MAX_NODES} nodes after expanding aliases"
        raise ScenarioError(f"{display}:{line}:{col}: the document holds {what}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = _mark(mark) if mark is not None else (1, 1)
        what = (e.problem or str(e)).strip()
        if "expected a single document" in (e.context or ""):
            raise ScenarioError(
                f"{display}:{line}:{col}: the file holds more than one YAML document (---); "
                "a scenario is one document (use sessions: for several connections)"
            ) from None
        ctx = f" ({e.context})" if e.context and e.problem else ""
        raise ScenarioError(
            f"{display}:{line}:{col}: YAML syntax error: {what}{ctx}{_yaml_error_hint(text, e)}"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line, col = _mark(mark) if mark is not None else (1, 1)
        if isinstance(e, yaml.reader.ReaderError):
            line, col = 1, 1
            before = text[: e.position]
            line = before.count("\n") + 1
            col = e.position - (before.rfind("\n") + 1) + 1
            raise ScenarioError(
                f"{display}:{line}:{col}: the file holds a control character (#x{e.character:04x}) YAML does not allow"
            ) from None
        raise ScenarioError(f"{display}:{line}:{col}: YAML error: {e}") from None
    if not isinstance(data, dict):
        kind = _describe_type(data)
        raise ScenarioError(
            f"{display}:1:1: the file must be a mapping (name:, connect:, steps: ...), not {kind}"
        )
    doc.data = data
    return doc


def _read_doc(path: str | Path) -> _Doc:
    display = str(path)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{display}: file not found") from None
    except IsADirectoryError:
        raise ScenarioError(f"{display}: is a directory, not a scenario file") from None
    except OSError as e:
        raise ScenarioError(f"{display}: cannot read: {e.strerror or e}") from None
    return _parse_yaml(raw, display, p.resolve())


def _is_fragment_data(data: Any) -> bool:
    return isinstance(data, dict) and "steps" in data and set(data) <= FRAGMENT_KEYS


def is_fragment(path: str | Path) -> bool:
    """A fragment has `steps` and at most `vars`, `secrets`, `description` (no name/connect/sessions)."""
    try:
        doc = _read_doc(path)
    except ScenarioError:
        return False
    fragment = _is_fragment_data(doc.data)
    _model_cache.remember_kind(doc.raw, fragment)  # discover() on a warm run needs no YAML
    return fragment


# --------------------------------------------------------------------------- schema errors

_JTYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "null": "null",
}


def _jtype(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, bytes):
        return "string"
    return "null"


def _describe_type(v: Any) -> str:
    if isinstance(v, bytes):
        return "binary data"
    return _JTYPE_WORDS[_jtype(v)].replace(" (true or false)", "")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return "<binary>"
    return v


def _secret_path(path: Path_) -> bool:
    """Values under `vars` may be secrets: never quote them."""
    return "vars" in path


def _show(v: Any, path: Path_) -> str:
    if _secret_path(path):
        return _describe_type(v)
    if isinstance(v, (dict, list, bytes)) or v is None:
        return _describe_type(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _deref(sub: Any) -> dict:
    if isinstance(sub, dict) and "$ref" in sub and sub["$ref"].startswith("#/$defs/"):
        return _deref(schema_defs()[sub["$ref"][len("#/$defs/") :]])
    return sub if isinstance(sub, dict) else {}


@lru_cache(maxsize=1)
def _defs_cache() -> str:
    return schema_text()


def schema_defs() -> dict:
    return _schema_obj()["$defs"]


@lru_cache(maxsize=1)
def _schema_obj() -> dict:
    return json.loads(schema_text())


def _branch_types(b: dict) -> set[str]:
    b = _deref(b)
    if "type" in b:
        t = b["type"]
        ts = set(t) if isinstance(t, list) else {t}
        if "number" in ts:
            ts.add("integer")
        return ts
    if "enum" in b:
        return {_jtype(x) for x in b["enum"]}
    if "anyOf" in b:
        out: set[str] = set()
        for x in b["anyOf"]:
            out |= _branch_types(x)
        return out
    return set(_JTYPE_WORDS)


def _is_template_branch(b: dict) -> bool:
    return isinstance(b, dict) and b.get("$ref") == "#/$defs/template"


def _expected_words(branches: list) -> str:
    words = []
    for b in branches:
        if _is_template_branch(b):
            words.append("a {{ template }}")
            continue
        d = _deref(b)
        if "x-error" in d:
            words.append(d["x-error"])
        elif "enum" in d:
            words.append("one of " + ", ".join(str(x) for x in d["enum"]))
        elif "type" in d:
            t = d["type"]
            for x in t if isinstance(t, list) else [t]:
                words.append(_JTYPE_WORDS[x])
    seen: list[str] = []
    for w in words:
        if w not in seen:
            seen.append(w)
    return " or ".join(seen)


_BOOLISH = {
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "true",
    "false",
    "True",
    "False",
    "TRUE",
    "FALSE",
    "Yes",
    "No",
}
_BOOLISH |= {"YES", "NO", "On", "Off", "ON", "OFF"}


def _type_hint(inst: Any, expected: set[str], path: Path_) -> str:
    if isinstance(inst, dict) and len(inst) == 1 and "string" in expected and not _secret_path(path):
        ((k, v),) = inst.items()
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return f" — YAML read '{k}: {v}' as key: value; quote the whole line"
    if isinstance(inst, str) and "boolean" in expected and inst in _BOOLISH:
        return " (only true and false are booleans)"
    if isinstance(inst, str) and expected & {"number", "integer"} and not _secret_path(path):
        return " (numbers are decimal: no octal, hex, 1:30 or .inf)"
    if inst is None:
        return " (the value is empty)"
    return ""


_NONDECIMAL = re.compile(
    r"^[-+]?(0[0-7_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9]+(:[0-5]?[0-9])+|\.(inf|nan|Inf|NaN|INF|NAN))$"
)


def _translate(err, doc: _Doc, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    """One jsonschema error -> [(path, at_key, message)]."""
    v = err.validator
    inst = err.instance
    path: Path_ = tuple(err.absolute_path)
    sch = err.schema if isinstance(err.schema, dict) else {}
    if "propertyNames" in err.absolute_schema_path:
        # the instance is the offending key itself
        return [
            (path + (inst,), True, f"{inst!r} is not a valid name (a letter or _, then letters, digits or _)")
        ]
    if v == "additionalProperties":
        props = sorted(sch.get("properties", {}))
        out = []
        for k in inst:
            if k in sch.get("properties", {}):
                continue
            close = difflib.get_close_matches(k, props, n=1, cutoff=0.6)
            if not close:
                close = [p for p in props if p.lower() == k.lower()][:1]
            if close:
                hint = f" (did you mean '{close[0]}'?)"
                known_keys_missing.add((path, close[0]))
            else:
                hint = " (allowed: " + ", ".join(props) + ")"
            if "sessions" in inst and k in ("connect", "steps", "finally", "protocol", "retry"):
                hint = " (with sessions:, each session has its own connect, protocol, steps and finally)"
            out.append((path + (k,), True, f"unknown key '{k}'{hint}"))
        return out
    if v == "required":
        missing = [r for r in err.validator_value if isinstance(inst, dict) and r not in inst]
        return [
            (path, False, f"missing required key '{m}'")
            for m in missing
            if (path, m) not in known_keys_missing
        ]
    if v == "type":
        t = err.validator_value
        expected = set(t) if isinstance(t, list) else {t}
        words = " or ".join(_JTYPE_WORDS[x] for x in (t if isinstance(t, list) else [t]))
        return [
            (path, False, f"expected {words}, got {_show_kind(inst, path)}{_type_hint(inst, expected, path)}")
        ]
    if v == "enum":
        name = path[-1] if path and isinstance(path[-1], str) else "value"
        allowed = ", ".join(str(x) for x in err.validator_value)
        return [(path, False, f"'{name}' must be one of {allowed} (got {_show(inst, path)})")]
    if v in ("anyOf", "oneOf"):
        branches = sch.get(v, [])
        t = _jtype(inst)
        cands = []
        for i, b in enumerate(branches):
            if t not in _branch_types(b) and not (t == "integer" and "number" in _branch_types(b)):
                continue
            if _is_template_branch(b) and isinstance(inst, str) and "{{" not in inst:
                continue
            cands.append(i)
        if len(cands) == 1:
            subs = [
                e
                for e in (err.context or [])
                if e.relative_schema_path and e.relative_schema_path[0] == cands[0]
            ]
            out = []
            for e in subs:
                out.extend(_translate(e, doc, known_keys_missing))
            if out:
                return out
        expected = sch.get("x-error") or _expected_words(branches)
        exp_types: set[str] = set()
        for b in branches:
            exp_types |= _branch_types(b)
        return [
            (
                path,
                False,
                f"expected {expected}, got {_show_kind(inst, path)}{_type_hint(inst, exp_types, path)}",
            )
        ]
    if v == "pattern":
        what = sch.get("x-error") or f"text matching {err.validator_value!r}"
        hint = ""
        if isinstance(inst, str) and _NONDECIMAL.match(inst) and not _secret_path(path):
            hint = " (numbers are decimal: no octal, hex, 1:30 or .inf)"
        return [(path, False, f"expected {what}, got {_show(inst, path)}{hint}")]
    if v == "minimum":
        return [(path, False, f"must be at least {err.validator_value} (got {_show(inst, path)})")]
    if v == "exclusiveMinimum":
        return [(path, False, f"must be greater than {err.validator_value} (got {_show(inst, path)})")]
    if v == "maximum":
        return [(path, False, f"must be at most {err.validator_value} (got {_show(inst, path)})")]
    if v in ("minItems", "minProperties", "minLength"):
        return [(path, False, "must not be empty")]
    if v == "uniqueItems":
        return [(path, False, "lists a name more than once")]
    return [(path, False, err.message)]


def _show_kind(inst: Any, path: Path_) -> str:
    if isinstance(inst, (dict, list, bytes)) or inst is None or _secret_path(path):
        return _describe_type(inst)
    return f"{_describe_type(inst)} {_show(inst, path)}"


@lru_cache(maxsize=8)
def _validator(defname: str):
    from jsonschema import Draft202012Validator

    s = dict(_schema_obj())
    s.pop("anyOf", None)
    s["$ref"] = f"#/$defs/{defname}"
    return Draft202012Validator(s)


def _schema_problems(doc: _Doc, defname: str) -> list[tuple[int, int, str]]:
    validator = _validator(defname)
    out: list[tuple[int, int, str]] = []
    errors = sorted(validator.iter_errors(_jsonable(doc.data)), key=lambda e: list(map(str, e.absolute_path)))
    # additionalProperties first, so `required` can skip keys a typo explains
    errors.sort(key=lambda e: e.validator != "additionalProperties")
    known: set = set()
    for err in errors:
        path = tuple(err.absolute_path)
        if _in_pattern(path):
            continue  # S: patterns are checked by runner.lang.patterns, with better messages
        for p, at_key, message in _translate(err, doc, known):
            line, col = doc.pos(p, at_key)
            out.append((line, col, doc.msg(p, message, at_key)))
    return out


def _in_pattern(path: Path_) -> bool:
    """Is this path inside a step's `S:`?"""
    return any(p == "S" and i > 0 and isinstance(path[i - 1], int) for i, p in enumerate(path))


# --------------------------------------------------------------------------- cache


def _cache_key(docs: list[_Doc]) -> str:
    h = hashlib.sha256(f"mailrun-schema-{SCHEMA_VERSION}\n".encode())
    for d in docs:
        h.update(d.sha256.encode() + b"\n")
    return h.hexdigest()


def _cache_hit(key: str) -> bool:
    try:
        return _model_cache.read_entry("validated", key) == b"ok\n"
    except OSError:
        return False


def _cache_store(key: str) -> None:
    _model_cache.write_entry("validated", key, b"ok\n")


# --------------------------------------------------------------------------- semantic checks


def _templates():
    from runner.lang import templates

    return templates


def _patterns():
    from runner.lang import patterns

    return patterns


_EXPR_RE = re.compile(r"\{\{(.*?)\}\}", re.S)
_B64ISH = re.compile(r"\bb64\b(?!decode)|\bauth_plain\b|\bxoauth2\b")


class _Scope:
    """tainted: names whose known value holds CR or LF; chain: (real path, "file:line") of each
    include on the way."""

    __slots__ = ("defined", "tainted", "protocol", "via", "bindings", "chain", "check_undefined")

    def __init__(
        self,
        defined: set[str],
        tainted: set[str],
        protocol: str | None,
        via: tuple[Location, ...] = (),
        bindings: tuple[Mapping[str, Any], ...] = (),
        chain: tuple[tuple[Path, str], ...] = (),
        check_undefined: bool = True,
    ):
        self.defined = defined
        self.tainted = tainted
        self.protocol = protocol
        self.via = via
        self.bindings = bindings
        self.chain = chain
        self.check_undefined = check_undefined


class _Checker:
    def __init__(self, defined: Iterable[str]):
        self.problems: list[tuple[int, int, int, str]] = []  # (doc order, line, col, text)
        self.docs: dict[Path, _Doc] = {}
        self.order: list[_Doc] = []
        self.kinds: dict[Path, str] = {}  # real path -> schema def name
        self.external = set(defined)
        self.secrets: set[str] = set()
        self.env_refs: dict[str, list[str]] = {}
        self.starttls: list[tuple[_Doc, Path_]] = []
        self.captured_names: set[str] = set()
        # what the model depends on besides the main file (for the model cache):
        # (path as joined, resolved path, bytes) of each include, and files that must exist
        self.includes: list[tuple[str, str, bytes]] = []
        self.must_exist: list[str] = []

    # -- reporting
    def add(self, doc: _Doc, path: Path_, message: str, key: bool = False) -> None:
        line, col = doc.pos(path, key)
        self.problems.append((self._order(doc), line, col, doc.msg(path, message, key)))

    def add_raw(self, doc: _Doc, line: int, col: int, text: str) -> None:
        self.problems.append((self._order(doc), line, col, text))

    def _order(self, doc: _Doc) -> int:
        for i, d in enumerate(self.order):
            if d is doc:
                return i
        return len(self.order)

    def register(self, doc: _Doc, kind: str) -> None:
        if doc.real not in self.docs:
            self.docs[doc.real] = doc
            self.order.append(doc)
            self.kinds[doc.real] = kind
            for line, col, text in doc.problems:
                self.problems.append((self._order(doc), line, col, f"{doc.display}:{line}:{col}: {text}"))

    # -- templates
    def template(self, doc: _Doc, path: Path_, source: Any, scope: _Scope, *, in_c: bool = False) -> set[str]:
        """Check one template string; returns the names it references (for taint tracking)."""
        if not isinstance(source, str):
            return set()
        T = _templates()
        try:
            t = T.parse(source)
        except T.TemplateError as e:
            self.add(doc, path, f"template error: {e}")
            return set()
        required = t.required_names()
        loc = f"{doc.display}:{doc.pos(path)[0]}: {json_path(path)}"
        for name in sorted(required):
            if name.startswith("env."):
                refs = self.env_refs.setdefault(name[4:], [])
                if loc not in refs:
                    refs.append(loc)
            elif scope.check_undefined and name not in scope.defined:
                close = difflib.get_close_matches(name, sorted(scope.defined), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.add(
                    doc,
                    path,
                    f"undefined variable '{name}'{hint}: define it in vars, with --var or --vars-file, "
                    "or capture it in an earlier step",
                )
        if in_c:
            for m in _EXPR_RE.finditer(source):
                if _B64ISH.search(m.group(1)):
                    continue
                try:
                    names = T.parse(m.group(0)).names()
                except T.TemplateError:
                    continue
                bad = sorted(n for n in names if n in scope.tainted)
                if bad:
                    self.add(
                        doc,
                        path,
                        f"variable '{bad[0]}' holds a line break (CR or LF), which would inject a command "
                        "into this C line; only raw, body and body_file may carry line breaks",
                    )
        return t.names()

    def taints(self, source: Any, scope: _Scope) -> bool:
        """Would this (var) value hold CR or LF, as far as we know?"""
        if not isinstance(source, str):
            return False
        T = _templates()
        try:
            t = T.parse(source)
        except T.TemplateError:
            return False
        literal = _EXPR_RE.sub("", source)
        if "\r" in literal or "\n" in literal:
            return True
        for m in _EXPR_RE.finditer(source):
            if _B64ISH.search(m.group(1)):
                continue
            try:
                if T.parse(m.group(0)).names() & scope.tainted:
                    return True
            except T.TemplateError:
                continue
        del t
        return False

    def vars_block(self, doc: _Doc, path: Path_, values: Any, scope: _Scope, *, sequential: bool) -> dict:
        """Check a `vars:` mapping. sequential: each value sees the ones before (top-level vars)."""
        if not isinstance(values, dict):
            return {}
        out = {}
        new_defined, new_tainted = set(), set()
        for name, value in values.items():
            if not isinstance(value, (str, int, float, bool)) or not _NAME_RE.match(name):
                continue  # the schema reports it
            self.template(doc, path + (name,), value, scope)
            tainted = self.taints(value, scope)
            out[name] = value
            if sequential:
                scope.defined.add(name)
                (scope.tainted.add if tainted else scope.tainted.discard)(name)
            else:
                new_defined.add(name)
                if tainted:
                    new_tainted.add(name)
        if not sequential:
            scope.defined |= new_defined
            scope.tainted |= new_tainted
        return out

    def secrets_block(self, doc: _Doc, path: Path_, values: Any, scope: _Scope, bound: set[str]) -> None:
        if not isinstance(values, list):
            return
        for i, name in enumerate(values):
            if not isinstance(name, str):
                continue
            if name.startswith("env.") and _NAME_RE.match(name[4:]):
                self.secrets.add(name)
                continue
            if not _NAME_RE.match(name):
                continue  # the schema reports it
            if name not in bound and name not in self.external and name not in scope.defined:
                self.add(
                    doc,
                    path + (i,),
                    f"secret '{name}' is not a defined variable (define it in vars or with --var)",
                )
            self.secrets.add(name)

    # -- patterns
    def pattern(self, doc: _Doc, path: Path_, value: Any, scope: _Scope):
        P = _patterns()
        if isinstance(value, dict) and len(value) == 1:
            ((k, v),) = value.items()
            if k not in ("code", "text", "re", "lines", "not") and isinstance(v, (str, int, float)):
                self.add(
                    doc,
                    path,
                    f"expected a reply pattern, got a mapping — YAML read '{k}: {v}' as key: value; "
                    "quote the whole line",
                )
                return None
        protos = [scope.protocol] if scope.protocol else ["smtp", "pop3", "imap"]
        results = [P.parse_pattern(value, pr) for pr in protos]
        good = [r for r in results if r[0] is not None and not r[1]]
        pat, problems = good[0] if good else results[0]
        if not good:
            for pr in problems:
                sub = _subpath(pr.path)
                self.add(doc, path + sub, pr.message)
            return None
        for src in pat.templates():
            self.template(doc, path, src, scope)
        return pat

    # -- steps
    def steps(
        self, doc: _Doc, path: Path_, items: Any, scope: _Scope, *, in_finally: bool = False
    ) -> list[Step]:
        out: list[Step] = []
        if not isinstance(items, list):
            return out
        for i, raw in enumerate(items):
            out.extend(self.step(doc, path + (i,), raw, scope, in_finally))
        return out

    def step(self, doc: _Doc, path: Path_, raw: Any, scope: _Scope, in_finally: bool) -> list[Step]:
        if not isinstance(raw, dict) or not raw:
            return []
        if not set(raw) <= STEP_KEYS:
            return []  # the schema names the unknown key; the rest of this step is guesswork
        actions = [k for k in ACTION_KEYS if k in raw]
        loc = doc.loc(path, scope.via)
        if len(actions) > 1:
            self.add(
                doc,
                path + (actions[1],),
                f"a step does exactly one of C, body, body_file, raw, sleep or include; "
                f"this one has {' and '.join(actions)} (split it into separate steps)",
                key=True,
            )
            return []
        action = actions[0] if actions else None
        if action is None and "S" not in raw:
            self.add(doc, path, "a step needs one of C, S, body, body_file, raw, sleep or include")
            return []
        if action == "include":
            extra = sorted(set(raw) - {"include", "vars"})
            if extra:
                self.add(
                    doc, path + (extra[0],), f"'{extra[0]}' cannot go with include (only vars can)", key=True
                )
                return []
            return self.include(doc, path, raw, scope, loc)
        if "vars" in raw:
            self.add(doc, path + ("vars",), "'vars' in a step goes only with include", key=True)
        if action == "sleep" and len(set(raw) - {"sleep", "name"}) > 0:
            other = sorted(set(raw) - {"sleep", "name"})[0]
            self.add(
                doc, path + (other,), f"'{other}' cannot go with sleep (a sleep step only waits)", key=True
            )
            return []
        ok = True
        kw: dict[str, Any] = {"location": loc, "bindings": scope.bindings}
        if action == "C":
            text = raw["C"]
            if isinstance(text, str):
                if "\r" in text or "\n" in text:
                    ok = False
                    self.add(
                        doc,
                        path + ("C",),
                        "a C line cannot hold a line break (CR or LF): it would send two commands; "
                        "use one step per line, or raw: for exact bytes",
                    )
                self.template(doc, path + ("C",), text, scope, in_c=True)
            kw.update(action="send", text=text)
        elif action == "body":
            self.template(doc, path + ("body",), raw["body"], scope)
            kw.update(action="body", text=raw["body"])
        elif action == "body_file":
            bf = raw["body_file"]
            if isinstance(bf, str) and bf:
                p = doc.base_dir / bf
                if "{{" in bf:
                    ok = False
                    self.add(doc, path + ("body_file",), "body_file is a path, not a template")
                elif not p.is_file():
                    ok = False
                    self.add(doc, path + ("body_file",), f"file {bf!r} not found (relative to {doc.display})")
                else:
                    self.must_exist.append(str(p))
                kw.update(action="body_file", path=p)
        elif action == "raw":
            r = raw["raw"]
            if isinstance(r, bytes):
                kw.update(action="raw", data=r)
            else:
                self.template(doc, path + ("raw",), r, scope)
                kw.update(action="raw", text=r)
        elif action == "sleep":
            s = raw["sleep"]
            kw.update(
                action="sleep",
                seconds=float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else 0.0,
            )
        else:
            kw.update(action="read")
        if "S" in raw:
            kw["expect"] = self.pattern(doc, path + ("S",), raw["S"], scope)
            kw["expect_source"] = raw["S"]
            if kw["expect"] is None:
                ok = False
        name = raw.get("name")
        if isinstance(name, str):
            kw["name"] = name
        t = raw.get("timeout")
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            kw["timeout"] = float(t)
        if raw.get("starttls") is True:
            if "S" not in raw:
                self.add(
                    doc,
                    path + ("starttls",),
                    "starttls: true needs an S: pattern (TLS starts after that reply)",
                    key=True,
                )
            if in_finally:
                self.add(doc, path + ("starttls",), "starttls cannot be used in finally", key=True)
            self.starttls.append((doc, path))
            kw["starttls"] = True
        for key, proto in (("multiline", "pop3"), ("tag", "imap")):
            if key in raw:
                if scope.protocol and scope.protocol != proto:
                    self.add(
                        doc,
                        path + (key,),
                        f"'{key}' is for {proto} only (this session is {scope.protocol})",
                        key=True,
                    )
                elif isinstance(raw[key], bool):
                    kw[key] = raw[key]
        captures = raw.get("capture")
        cap: dict[str, str] = {}
        if captures is not None:
            if "S" not in raw:
                self.add(
                    doc, path + ("capture",), "capture needs an S: pattern (it searches the reply)", key=True
                )
            if isinstance(captures, dict):
                for cname, rx in captures.items():
                    if not isinstance(rx, str) or not _NAME_RE.match(cname):
                        continue
                    self.template(doc, path + ("capture", cname), rx, scope)
                    probe = _EXPR_RE.sub("x", rx)
                    try:
                        re.compile(probe)
                    except re.error as e:
                        self.add(doc, path + ("capture", cname), f"invalid regular expression '{rx}': {e}")
                    cap[cname] = rx
        kw["capture"] = cap
        for cname in cap:
            scope.defined.add(cname)
            scope.tainted.discard(cname)
            self.captured_names.add(cname)
        if not ok or "action" not in kw:
            return []
        return [Step(**kw)]

    def include(self, doc: _Doc, path: Path_, raw: dict, scope: _Scope, loc: Location) -> list[Step]:
        target = raw["include"]
        if not isinstance(target, str) or not target:
            return []
        here = f"{doc.display}:{loc.line}"
        disp = os.path.normpath(os.path.join(os.path.dirname(doc.display), target))
        real = (doc.base_dir / target).resolve()
        chain_text = " -> ".join([c[1] for c in scope.chain] + [here, disp])
        inc_vars = raw.get("vars") if isinstance(raw.get("vars"), dict) else {}
        if (
            real == doc.real
            or any(real == c[0] for c in scope.chain)
            or (not scope.chain and real == self.order[0].real)
        ):
            self.add(doc, path + ("include",), f"{chain_text}: include cycle")
            return []
        frag = self.docs.get(real)
        if frag is None:
            try:
                frag = _read_doc(real)
            except ScenarioError as e:
                if not real.exists():
                    self.add(doc, path + ("include",), f"{chain_text}: file not found")
                else:
                    for p in e.problems:
                        self.add(doc, path + ("include",), f"{chain_text}: {p.split(': ', 1)[-1]}")
                        break
                return []
            frag.display = disp
            if not _is_fragment_data(frag.data):
                self.add(
                    doc,
                    path + ("include",),
                    f"{chain_text}: not a fragment (a fragment has steps and optional vars, secrets, "
                    "description; no name, connect or sessions)",
                )
                return []
            self.register(frag, "fragment")
        elif self.kinds.get(real) != "fragment":
            self.add(doc, path + ("include",), f"{chain_text}: not a fragment")
            return []
        self.includes.append((str(doc.base_dir / target), str(real), frag.raw))
        # include vars and the fragment's defaults are rendered in the including scope
        self.vars_block(doc, path + ("vars",), inc_vars, _copy_scope(scope), sequential=False)
        defaults = frag.data.get("vars") if isinstance(frag.data.get("vars"), dict) else {}
        self.vars_block(frag, ("vars",), defaults, _copy_scope(scope), sequential=False)
        merged = {**defaults, **inc_vars}
        merged = {
            k: v for k, v in merged.items() if isinstance(k, str) and isinstance(v, (str, int, float, bool))
        }
        inner = _Scope(
            defined=set(scope.defined) | set(merged),
            tainted={n for n in scope.tainted if n not in merged}
            | {n for n, v in merged.items() if self.taints(v, scope)},
            protocol=scope.protocol,
            via=scope.via + (loc,),
            bindings=scope.bindings + (merged,),
            chain=scope.chain + ((doc.real, here),),
            check_undefined=scope.check_undefined,
        )
        self.secrets_block(frag, ("secrets",), frag.data.get("secrets"), inner, set(merged))
        before = set(inner.defined)
        steps = self.steps(frag, ("steps",), frag.data.get("steps"), inner)
        new = inner.defined - before
        scope.defined |= new  # captures survive the fragment
        scope.tainted -= new
        return steps


def _copy_scope(s: _Scope) -> _Scope:
    return _Scope(set(s.defined), set(s.tainted), s.protocol, s.via, s.bindings, s.chain, s.check_undefined)


_SUB_RE = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def _subpath(text: str) -> Path_:
    out: list = []
    for m in _SUB_RE.finditer(text or ""):
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
    return tuple(out)


def _literal(v: Any) -> bool:
    return not (isinstance(v, str) and "{{" in v)


# --------------------------------------------------------------------------- sessions


def _build_session(
    chk: _Checker, doc: _Doc, path: Path_, raw: dict, scope: _Scope, name: str | None, protocol: str | None
) -> Session | None:
    proto = protocol if protocol in PROTOCOLS else None
    scope.protocol = proto
    chk.starttls = []
    connect = raw.get("connect") if isinstance(raw.get("connect"), dict) else None
    cpath = path + ("connect",)
    key_locs: dict[str, Location] = {}
    if connect is not None:
        for k, v in connect.items():
            key_locs[k] = doc.loc(cpath + (k,))
            chk.template(doc, cpath + (k,), v, scope)
        _check_connect_literals(chk, doc, cpath, connect, proto)
    steps = chk.steps(doc, path + ("steps",), raw.get("steps"), scope)
    finally_steps = chk.steps(doc, path + ("finally",), raw.get("finally"), scope, in_finally=True)
    # starttls: true only with tls: starttls, exactly once
    tls = connect.get("tls") if connect else None
    if isinstance(tls, str) and _literal(tls):
        if tls == "starttls" and not chk.starttls and connect is not None:
            chk.add(
                doc,
                cpath + ("tls",),
                "tls is starttls but no step has starttls: true (put it on the STARTTLS step)",
            )
        if tls in ("none", "implicit"):
            for d, p in chk.starttls:
                chk.add(
                    d,
                    p + ("starttls",),
                    f"starttls: true needs connect.tls: starttls (it is {tls})",
                    key=True,
                )
    elif tls is None and connect is not None:
        for d, p in chk.starttls:
            chk.add(d, p + ("starttls",), "starttls: true needs connect.tls: starttls (it is none)", key=True)
    if len(chk.starttls) > 1:
        for d, p in chk.starttls[1:]:
            first = chk.starttls[0]
            chk.add(
                d,
                p + ("starttls",),
                f"only one step per session may have starttls: true (the first is at "
                f"{first[0].display}:{first[0].pos(first[1])[0]})",
                key=True,
            )
    if connect is None or proto is None or not isinstance(name, str):
        return None
    retry = None
    r = raw.get("retry")
    if isinstance(r, dict):
        a, iv = r.get("attempts", 1), r.get("interval", 0.0)
        if isinstance(a, int) and isinstance(iv, (int, float)):
            retry = Retry(attempts=int(a), interval=float(iv))
    spec = ConnectSpec(
        values=dict(connect), base_dir=doc.base_dir, location=doc.loc(cpath), key_locations=key_locs
    )
    return Session(
        name=name,
        protocol=proto,  # type: ignore[arg-type]
        connect=spec,
        steps=tuple(steps),
        finally_steps=tuple(finally_steps),
        retry=retry,
        location=doc.loc(path),
    )


def _check_connect_literals(chk: _Checker, doc: _Doc, cpath: Path_, connect: dict, proto: str | None) -> None:
    tls = connect.get("tls")
    transport = connect.get("transport")
    if transport == "telnet" and tls in ("implicit", "starttls"):
        chk.add(
            doc,
            cpath + ("transport",),
            f"the telnet transport cannot speak TLS (tls: {tls}); use transport: socket or transport: openssl",
        )
    if "port" not in connect and proto == "line":
        chk.add(doc, cpath, "missing required key 'port' (protocol line has no usual port)")
    for key in ("ca", "client_cert", "client_key"):
        v = connect.get(key)
        if isinstance(v, str) and v and _literal(v):
            if (doc.base_dir / v).is_file():
                chk.must_exist.append(str(doc.base_dir / v))
            else:
                chk.add(doc, cpath + (key,), f"{key} file {v!r} not found (relative to {doc.display})")
    if ("client_cert" in connect) != ("client_key" in connect) and "client_key" in connect:
        chk.add(doc, cpath + ("client_key",), "client_key needs client_cert")
    port = connect.get("port")
    if isinstance(port, str) and _literal(port) and port.strip().isdigit() and not 1 <= int(port) <= 65535:
        chk.add(doc, cpath + ("port",), f"must be a port number 1..65535 (got {port!r})")
    for key in ("timeout", "connect_timeout"):
        v = connect.get(key)
        if isinstance(v, str) and _literal(v):
            try:
                if float(v) <= 0:
                    chk.add(doc, cpath + (key,), f"must be greater than 0 (got {v!r})")
            except ValueError:
                pass


# --------------------------------------------------------------------------- load


def _load(path: str | Path, defined: Iterable[str], use_cache: bool, *, allow_fragment: bool = False):
    """-> (checker, scenario or None, main doc). Raises ScenarioError for fatal parse problems."""
    doc = _read_doc(path)
    data = doc.data
    fragment = _is_fragment_data(data)
    chk = _Checker(defined)
    if fragment and not allow_fragment:
        raise ScenarioError(
            f"{doc.display}:1:1: this is a fragment (only steps, vars, secrets, description): "
            "include it from a scenario with `include:`; it cannot run by itself"
        )
    kind = "fragment" if fragment else ("sessions_scenario" if "sessions" in data else "scenario")
    chk.register(doc, kind)
    scenario = None
    base = _Scope(defined=set(BUILTINS) | chk.external, tainted=set(), protocol=None)
    if fragment:
        base.check_undefined = False
        defaults = chk.vars_block(doc, ("vars",), data.get("vars"), base, sequential=False)
        chk.secrets_block(doc, ("secrets",), data.get("secrets"), base, set(defaults))
        chk.steps(doc, ("steps",), data.get("steps"), base)
    else:
        scenario = _build_scenario(chk, doc, base)
    # schema validation (skipped when the cache says these exact bytes validated before)
    key = _cache_key(chk.order)
    if not (use_cache and _cache_hit(key)):
        clean = True
        for d in chk.order:
            probs = _schema_problems(d, chk.kinds[d.real])
            clean = clean and not probs and not d.problems
            for line, col, text in probs:
                chk.add_raw(d, line, col, text)
        if clean and use_cache:
            _cache_store(key)
    return chk, scenario, doc


def _build_scenario(chk: _Checker, doc: _Doc, scope: _Scope) -> Scenario | None:
    data = doc.data
    vars_ = chk.vars_block(doc, ("vars",), data.get("vars"), scope, sequential=True)
    chk.secrets_block(doc, ("secrets",), data.get("secrets"), scope, set(vars_))
    name = data.get("name") if isinstance(data.get("name"), str) else None
    sessions: list[Session] = []
    ok = True
    if "sessions" in data:
        items = data["sessions"] if isinstance(data["sessions"], list) else []
        for i, s in enumerate(items):
            if not isinstance(s, dict):
                ok = False
                continue
            sname = s.get("name") if isinstance(s.get("name"), str) else None
            sess = _build_session(chk, doc, ("sessions", i), s, scope, sname, s.get("protocol"))
            if sess is None:
                ok = False
            else:
                sessions.append(sess)
        if not items:
            ok = False
    else:
        proto = data.get("protocol", "smtp")
        sess = _build_session(chk, doc, (), data, scope, name, proto)
        if sess is None:
            ok = False
        else:
            sessions.append(sess)
    if not ok or name is None:
        return None
    tags = data.get("tags") if isinstance(data.get("tags"), list) else []
    desc = data.get("description") if isinstance(data.get("description"), str) else None
    return Scenario(
        path=Path(doc.display),
        name=name,
        sessions=tuple(sessions),
        description=desc,
        tags=tuple(t for t in tags if isinstance(t, str)),
        vars=dict(vars_),
        secrets=frozenset(chk.secrets),
        env_refs={k: tuple(v) for k, v in chk.env_refs.items()},
        location=doc.loc(()),
    )


def _raise_problems(chk: _Checker) -> None:
    if chk.problems:
        seen: list[str] = []
        for _, _, _, text in sorted(chk.problems, key=lambda p: (p[0], p[1], p[2])):
            if text not in seen:
                seen.append(text)
        raise ScenarioError(seen)


def _load_scenario(path: str | Path, defined: list[str], use_cache: bool) -> Scenario:
    """The full load (YAML, schema unless cached, semantic checks); stores the model when
    use_cache. runner.cache.store.load_scenario calls this after a miss."""
    chk, scenario, doc = _load(path, defined, use_cache)
    _raise_problems(chk)
    if scenario is None:  # pragma: no cover - every path to None adds a problem
        raise ScenarioError(f"{doc.display}:1:1: invalid scenario")
    if use_cache:
        _model_cache.store(
            scenario,
            display=doc.display,
            raw=doc.raw,
            defined=defined,
            includes=chk.includes,
            files=chk.must_exist,
        )
    return scenario


def _validate_fragment(path: str | Path, defined: Iterable[str]) -> None:
    chk, _, _ = _load(path, defined, use_cache=False, allow_fragment=True)
    _raise_problems(chk)


# --------------------------------------------------------------------------- vars / env files


def load_vars_file(path: str | Path) -> dict[str, str]:
    """A YAML mapping of names to scalars (strings, numbers, true/false) -> name -> str."""
    doc = _read_doc(path)
    problems = [f"{doc.display}:{line}:{col}: {text}" for line, col, text in doc.problems]
    out: dict[str, str] = {}
    for k, v in doc.data.items():
        if not _NAME_RE.match(k):
            problems.append(doc.msg((k,), f"{k!r} is not a variable name", key=True))
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, (str, int, float)):
            out[k] = str(v)
        else:
            problems.append(doc.msg((k,), f"expected a string or number, got {_describe_type(v)}"))
    if problems:
        raise ScenarioError(problems)
    return out


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def load_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, blank lines, optional `export `, optional quotes."""
    display = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{display}: file not found") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{display}: the file is not UTF-8") from None
    except OSError as e:
        raise ScenarioError(f"{display}: cannot read: {e.strerror or e}") from None
    out: dict[str, str] = {}
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            problems.append(f"{display}:{n}: expected KEY=VALUE")
            continue
        key, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            q = value[0]
            value = value[1:-1]
            if q == '"':
                value = re.sub(
                    r"\\([\\\"nrt$])",
                    lambda mm: {"n": "\n", "r": "\r", "t": "\t"}.get(mm.group(1), mm.group(1)),
                    value,
                )
        elif value[:1] in ("'", '"'):
            problems.append(f"{display}:{n}: {key}: unterminated quote")
            continue
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[key] = value
    if problems:
        raise ScenarioError(problems)
    return out
