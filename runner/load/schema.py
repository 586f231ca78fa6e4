"""The scenario JSON Schema: validating a Doc against it, in friendly words.

Each jsonschema error becomes `file:line:col: path: message` with a hint where one helps (a
typo'd key, YAML reading `a: b` inside a value, yes/no as booleans, octal numbers). Errors
inside a step's `S:` are left to runner.lang.pattern_parse, whose messages know the protocol.

check marks on the Doc what the schema rejected (Doc.rejected), so the semantic checks of
runner.load.build run only on what the schema accepted. jsonschema is imported only when a
file needs validation: a cache entry keyed on a file's bytes (and SCHEMA_VERSION) records
that it validated before.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from runner.cache import store as _model_cache
from runner.cache.store import SCHEMA_VERSION
from runner.load.yaml_doc import TYPE_WORDS, describe_type, jtype

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runner.load.yaml_doc import Doc, Path_

__all__ = ["SCHEMA_VERSION", "check", "schema", "schema_defs", "schema_text"]

_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@lru_cache(maxsize=1)
def schema_text() -> str:
    """The packaged JSON Schema, as text."""
    return (_DATA_DIR / "scenario.schema.json").read_text(encoding="utf-8")


def schema() -> dict:
    """The packaged JSON Schema (a fresh copy each call)."""
    return json.loads(schema_text())


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
        return describe_type(v)
    if isinstance(v, (dict, list, bytes)) or v is None:
        return describe_type(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _deref(sub: Any) -> dict:
    if isinstance(sub, dict) and "$ref" in sub and sub["$ref"].startswith("#/$defs/"):
        return _deref(schema_defs()[sub["$ref"][len("#/$defs/") :]])
    return sub if isinstance(sub, dict) else {}


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
        return {jtype(x) for x in b["enum"]}
    if "anyOf" in b:
        out: set[str] = set()
        for x in b["anyOf"]:
            out |= _branch_types(x)
        return out
    return set(TYPE_WORDS)


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
                words.append(TYPE_WORDS[x])
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


def _translate(err, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    """One jsonschema error -> [(path, at_key, message)]. known_keys_missing: (path, key) of
    keys a typo explains (so `required` does not report them again)."""
    path: Path_ = tuple(err.absolute_path)
    sch = err.schema if isinstance(err.schema, dict) else {}
    if "propertyNames" in err.absolute_schema_path:
        inst = err.instance  # the offending key itself
        return [
            (path + (inst,), True, f"{inst!r} is not a valid name (a letter or _, then letters, digits or _)")
        ]
    special = _SPECIAL.get(err.validator)
    if special is not None:
        return special(err, path, sch, known_keys_missing)
    simple = _SIMPLE.get(err.validator)
    message = err.message if simple is None else simple(err.validator_value, _show(err.instance, path))
    return [(path, False, message)]


def _unknown_keys(err, path: Path_, sch: dict, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    inst = err.instance
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


def _missing_keys(err, path: Path_, sch: dict, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    inst = err.instance
    missing = [r for r in err.validator_value if isinstance(inst, dict) and r not in inst]
    return [
        (path, False, f"missing required key '{m}'") for m in missing if (path, m) not in known_keys_missing
    ]


def _wrong_type(err, path: Path_, sch: dict, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    t = err.validator_value
    types = t if isinstance(t, list) else [t]
    words = " or ".join(TYPE_WORDS[x] for x in types)
    hint = _type_hint(err.instance, set(types), path)
    return [(path, False, f"expected {words}, got {_show_kind(err.instance, path)}{hint}")]


def _not_in_enum(err, path: Path_, sch: dict, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    name = path[-1] if path and isinstance(path[-1], str) else "value"
    allowed = ", ".join(str(x) for x in err.validator_value)
    words = [x for x in err.validator_value if isinstance(x, str)]
    close = (
        difflib.get_close_matches(err.instance, words, n=1, cutoff=0.5)
        if isinstance(err.instance, str)
        else []
    )
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return [(path, False, f"'{name}' must be one of {allowed} (got {_show(err.instance, path)}{hint})")]


def _no_branch(err, path: Path_, sch: dict, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    """anyOf/oneOf: when exactly one branch has the value's type, that branch's errors;
    otherwise one message naming what would do."""
    inst = err.instance
    branches = sch.get(err.validator, [])
    t = jtype(inst)
    cands = []
    for i, b in enumerate(branches):
        if t not in _branch_types(b) and not (t == "integer" and "number" in _branch_types(b)):
            continue
        if _is_template_branch(b) and isinstance(inst, str) and "{{" not in inst:
            continue
        cands.append(i)
    if len(cands) == 1:
        out = []
        for e in err.context or []:
            if e.relative_schema_path and e.relative_schema_path[0] == cands[0]:
                out.extend(_translate(e, known_keys_missing))
        if out:
            return out
    expected = sch.get("x-error") or _expected_words(branches)
    exp_types: set[str] = set()
    for b in branches:
        exp_types |= _branch_types(b)
    return [
        (path, False, f"expected {expected}, got {_show_kind(inst, path)}{_type_hint(inst, exp_types, path)}")
    ]


def _no_match(err, path: Path_, sch: dict, known_keys_missing: set) -> list[tuple[Path_, bool, str]]:
    inst = err.instance
    what = sch.get("x-error") or f"text matching {err.validator_value!r}"
    hint = ""
    if isinstance(inst, str) and _NONDECIMAL.match(inst) and not _secret_path(path):
        hint = " (numbers are decimal: no octal, hex, 1:30 or .inf)"
    return [(path, False, f"expected {what}, got {_show(inst, path)}{hint}")]


_SPECIAL = {
    "additionalProperties": _unknown_keys,
    "required": _missing_keys,
    "type": _wrong_type,
    "enum": _not_in_enum,
    "anyOf": _no_branch,
    "oneOf": _no_branch,
    "pattern": _no_match,
}
_SIMPLE = {  # (the schema's value, the instance as shown) -> message
    "minimum": lambda limit, got: f"must be at least {limit} (got {got})",
    "exclusiveMinimum": lambda limit, got: f"must be greater than {limit} (got {got})",
    "maximum": lambda limit, got: f"must be at most {limit} (got {got})",
    "minItems": lambda limit, got: "must not be empty",
    "minProperties": lambda limit, got: "must not be empty",
    "minLength": lambda limit, got: "must not be empty",
    "uniqueItems": lambda limit, got: "lists a name more than once",
}


def _show_kind(inst: Any, path: Path_) -> str:
    if isinstance(inst, (dict, list, bytes)) or inst is None or _secret_path(path):
        return describe_type(inst)
    return f"{describe_type(inst)} {_show(inst, path)}"


@lru_cache(maxsize=8)
def _validator(defname: str):
    from jsonschema import Draft202012Validator

    s = dict(_schema_obj())
    s.pop("anyOf", None)
    s["$ref"] = f"#/$defs/{defname}"
    return Draft202012Validator(s)


def _schema_problems(doc: Doc, defname: str) -> list[tuple[int, int, str]]:
    validator = _validator(defname)
    out: list[tuple[int, int, str]] = []
    errors = sorted(validator.iter_errors(_jsonable(doc.data)), key=lambda e: list(map(str, e.absolute_path)))
    # additionalProperties first, so `required` can skip keys a typo explains
    errors.sort(key=lambda e: e.validator != "additionalProperties")
    known: set = set()
    for err in errors:
        path = tuple(err.absolute_path)
        if _in_pattern(path):
            continue  # S: patterns are checked by runner.lang.pattern_parse, with better messages
        found = _translate(err, known)
        if err.validator == "additionalProperties" or "propertyNames" in err.absolute_schema_path:
            doc.rejected.update(p for p, _, _ in found)  # the unknown key or bad name, not its mapping
        elif err.validator != "required":  # a missing key leaves the rest of the mapping to check
            doc.rejected.add(path)
        for p, at_key, message in found:
            line, col = doc.pos(p, at_key)
            out.append((line, col, doc.msg(p, message, at_key)))
    return out


def _in_pattern(path: Path_) -> bool:
    """Is this path inside a step's `S:`?"""
    return any(p == "S" and i > 0 and isinstance(path[i - 1], int) for i, p in enumerate(path))


def check(doc: Doc, defname: str, *, use_cache: bool) -> list[tuple[int, int, str]]:
    """Validate doc against the schema's `defname` (scenario, sessions_scenario, fragment):
    -> (line, col, message) problems, and doc.rejected holds the paths the schema rejected.
    Skipped when the cache says these exact bytes validated before."""
    key = _cache_key(doc, defname)
    if use_cache and _cache_hit(key):
        return []
    problems = _schema_problems(doc, defname)
    if use_cache and not problems and not doc.problems:
        _model_cache.write_entry("validated", key, b"ok\n")
    return problems


def _cache_key(doc: Doc, defname: str) -> str:
    h = hashlib.sha256(f"mailrun-schema-{SCHEMA_VERSION}\n{defname}\n".encode())
    h.update(doc.sha256.encode() + b"\n")
    return h.hexdigest()


def _cache_hit(key: str) -> bool:
    try:
        return _model_cache.read_entry("validated", key) == b"ok\n"
    except OSError:
        return False
