"""Reading a scenario file: YAML with the position of every key and value kept.

YAML is read with a resolver of our own, not YAML 1.1's: only `true`/`false` are booleans,
only decimal numbers are numbers (`010`, `0o10`, `0x1f`, `1:30`, `.inf` stay strings), there
are no timestamps, a key given twice is an error, and aliases are expanded with a cap on the
number of nodes (so an alias bomb cannot hang the loader).

read_doc gives a Doc: plain Python data plus marks, so every later problem (schema, semantic)
can be reported as `file:line:col: path: message`. Problems found while building the data
(a duplicate key, a bad tag) are kept on the Doc; fatal ones (encoding, syntax, size) raise
ScenarioError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from runner.errors import ScenarioError
from runner.load.reading import read_file
from runner.load.yaml_shape import MAX_DEPTH, MAX_NODES, TooBig, check_shape
from runner.model.scenario import Location

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = [
    "Doc",
    "describe_type",
    "is_fragment_data",
    "json_path",
    "jtype",
    "parse_yaml",
    "read_doc",
    "read_file",
]

FRAGMENT_KEYS = frozenset({"steps", "vars", "secrets", "description"})

Path_ = tuple  # a JSON path: tuple of str keys and int indexes


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
    fast = _FastLoader is not None and not Reader.NON_PRINTABLE.search(text)
    check_shape(_FastLoader if fast else _Loader, text)
    if fast:
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


class Doc:
    """One parsed YAML file: plain Python data plus the position of every key and value.
    display: the path as the caller gave it (for messages); real: the resolved path;
    marks / kmarks: path -> (line, col) of the value / the key; problems: (line, col, text)
    found while building; rejected: the paths whose values the schema rejected
    (runner.load.schema.check fills it)."""

    __slots__ = ("display", "real", "raw", "data", "marks", "kmarks", "problems", "rejected")

    def __init__(self, display: str, real: Path, raw: bytes, data: Any):
        self.display = display
        self.real = real
        self.raw = raw
        self.data = data
        self.marks: dict = {}
        self.kmarks: dict = {}
        self.problems: list = []
        self.rejected: set[Path_] = set()

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

    def accepted(self, path: Path_) -> bool:
        """Did the schema accept the value at path and everything below it?"""
        n = len(path)
        return not any(r[:n] == path for r in self.rejected)

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
    def __init__(self, doc: Doc):
        self.doc = doc
        self.count = 0

    def problem(self, node: Node, text: str) -> None:
        line, col = _mark(node.start_mark)
        self.doc.problems.append((line, col, text))

    def build(self, node: Node, path: Path_, stack: tuple = ()) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise TooBig(node.start_mark)
        if len(stack) > MAX_DEPTH or any(node is s for s in stack):
            raise TooBig(node.start_mark, recursive=True)
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


def parse_yaml(raw: bytes, display: str, real: Path) -> Doc:
    """Parse bytes into a Doc. Fatal problems (encoding, syntax, size) raise ScenarioError."""
    raw_text = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        text = raw_text.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw_text[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        raise ScenarioError(
            f"{display}:{line}:{col}: the file is not UTF-8 (byte 0x{raw_text[e.start]:02x}); save it as UTF-8"
        ) from None
    doc = Doc(display, real, raw, None)
    empty = f"{display}:1:1: the file is empty (a scenario needs name, connect and steps)"
    if not text.strip() or all(ln.strip().startswith("#") or not ln.strip() for ln in text.splitlines()):
        raise ScenarioError(empty)
    try:
        node = _compose(text)
        if node is None:
            raise ScenarioError(empty)
        data = _Builder(doc).build(node, ())
    except TooBig as e:
        line, col = _mark(e.mark)
        if e.recursive:
            what = "holds a recursive alias (or aliases nested too deep)"
        elif e.deep:
            what = f"nests lists and mappings more than {MAX_DEPTH} levels deep (the limit)"
        elif "*" in text:
            what = f"holds more than {MAX_NODES} values (keys, items and scalars, aliases expanded)"
        else:
            what = f"holds more than {MAX_NODES} values (keys, items and scalars): split it with include:"
        raise ScenarioError(f"{display}:{line}:{col}: the document {what}") from None
    except RecursionError:  # a parser that recursed where _check_shape saw no depth (belt and braces)
        raise ScenarioError(f"{display}:1:1: the document nests too deep to read") from None
    except yaml.YAMLError as e:
        raise ScenarioError(_yaml_error(e, text, display)) from None
    if not isinstance(data, dict):
        kind = describe_type(data)
        raise ScenarioError(
            f"{display}:1:1: the file must be a mapping (name:, connect:, steps: ...), not {kind}"
        )
    doc.data = data
    return doc


def _yaml_error(e: yaml.YAMLError, text: str, display: str) -> str:
    """PyYAML's error as `file:line:col: ...`, in words a scenario's author can act on."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line, col = _mark(mark) if mark is not None else (1, 1)
    if isinstance(e, yaml.MarkedYAMLError):
        what = (e.problem or str(e)).strip()
        if "expected a single document" in (e.context or ""):
            return (
                f"{display}:{line}:{col}: the file holds more than one YAML document (---); "
                "a scenario is one document (use sessions: for several connections)"
            )
        ctx = f" ({e.context})" if e.context and e.problem else ""
        return f"{display}:{line}:{col}: YAML syntax error: {what}{ctx}{_yaml_error_hint(text, e)}"
    if isinstance(e, yaml.reader.ReaderError):
        before = text[: e.position]
        line = before.count("\n") + 1
        col = e.position - (before.rfind("\n") + 1) + 1
        return f"{display}:{line}:{col}: the file holds a control character (#x{e.character:04x}) YAML does not allow"
    return f"{display}:{line}:{col}: YAML error: {e}"


def read_doc(path: str | Path, *, what: str = "a scenario file", pipe_ok: bool = False) -> Doc:
    return parse_yaml(read_file(path, what, pipe_ok=pipe_ok), str(path), Path(path).resolve())


def is_fragment_data(data: Any) -> bool:
    """A fragment has `steps` and at most `vars`, `secrets`, `description` (no name/connect/sessions)."""
    return isinstance(data, dict) and "steps" in data and set(data) <= FRAGMENT_KEYS


# --------------------------------------------------------------------------- kinds of value

TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "null": "null",
}


def jtype(v: Any) -> str:
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


def describe_type(v: Any) -> str:
    if isinstance(v, bytes):
        return "binary data"
    return TYPE_WORDS[jtype(v)].replace(" (true or false)", "")
