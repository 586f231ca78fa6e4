"""The model cache: a warm `mailrun FILE` rebuilds the validated Scenario from JSON instead of
importing the full loader (PyYAML, jsonschema, the semantic checks). Bytes and hashes in, a model
or nothing out: the cache knows the model (runner.model) and nothing of how it is loaded.

After a clean load the loader calls `store` (or not: whether a model may reach the disk, e.g.
one holding a secret's literal value, is the loader's decision). The model goes, as JSON (never
pickle or marshal: reading an entry cannot run code; the encoding is runner.cache.codec's), to
`<cache dir>/models/<key>`. The key covers the entry format, the mailrun version, the schema
version, the size and mtime of every source file that shapes a model (_SOURCE_DIRS), the file's
path as given and resolved, the names defined outside the file (--var, --vars-file, --matrix)
and the file's bytes. The entry lists every fragment the model includes (path as joined,
resolved path, hash of its bytes) and every file that must exist (body_file, literal
ca/client_cert/client_key); `lookup` uses it only if all still hold. The entry carries a hash
of its own body, so a damaged entry is noticed, and any problem reading one is a silent miss:
the caller loads the file in full. Trust, atomic writes and pruning: runner.cache.files.

Whether a file is a fragment is remembered per content in `<cache dir>/kinds` (remember_kind,
cached_kind), so discovering a directory's scenarios on a warm run needs no YAML either; the
loader keeps its schema-validation records in `<cache dir>/validated` (read_entry, write_entry).
"""

from __future__ import annotations

import os
from pathlib import Path

from runner import __version__
from runner.cache import codec
from runner.cache.files import cache_dir, digest, hasher, is_regular, read_entry, read_file, write_entry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from runner.cache.codec import PatternParser
    from runner.model.scenario import Scenario

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "cache_dir",
    "cached_kind",
    "is_regular",
    "lookup",
    "read_entry",
    "remember_kind",
    "store",
    "write_entry",
]

SCHEMA_VERSION = "1"  # the scenario schema's version (part of every key; runner.load.schema uses it too)
FORMAT = "2"  # the layout of a model entry: bump it when the encoding changes
_MAGIC = b"mailrun-model"
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the runner package
# Every module of these packages, and these files, shape what a model means: a change to any
# (a development checkout, an upgrade without a version bump, a module added) makes every older
# entry a miss.
_SOURCE_DIRS = ("model", "load", "lang", "cache")
_SOURCE_FILES = ("records.py", os.path.join("data", "scenario.schema.json"))

_fingerprint: bytes | None = None


def _sources_fingerprint() -> bytes:
    global _fingerprint
    if _fingerprint is None:
        parts = []
        names = list(_SOURCE_FILES)
        for sub in _SOURCE_DIRS:
            try:
                names += sorted(
                    os.path.join(sub, n) for n in os.listdir(os.path.join(_HERE, sub)) if n.endswith(".py")
                )
            except OSError:
                parts.append(f"{sub}/:-")
        for name in names:
            try:
                st = os.stat(os.path.join(_HERE, name))
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{name}:-")
        _fingerprint = "\n".join(parts).encode()
    return _fingerprint


def _model_key(display: str, real: str, defined: Iterable[str], raw: bytes) -> str:
    names = "\0".join(sorted({str(n) for n in defined}))
    head = "\0".join((FORMAT, __version__, SCHEMA_VERSION, display, real, names))
    h = hasher()
    h.update(_MAGIC + b"\0" + head.encode("utf-8", "surrogateescape") + b"\0")
    h.update(_sources_fingerprint() + b"\0")
    h.update(raw)
    return h.hexdigest()


def _kind_key(raw: bytes) -> str:
    h = hasher()
    h.update(b"mailrun-kind\0" + __version__.encode() + b"\0" + _sources_fingerprint() + b"\0")
    h.update(raw)
    return h.hexdigest()


def _head(key: str, body: bytes) -> bytes:
    """A model entry's first line: what it is, its format, its key and the hash of its body."""
    return b" ".join((_MAGIC, FORMAT.encode(), key.encode(), digest(body).encode()))


# --------------------------------------------------------------------------- models


def store(
    sc: Scenario,
    *,
    display: str,
    raw: bytes,
    defined: Iterable[str],
    includes: Iterable[tuple[str, str, bytes]],
    files: Iterable[str],
) -> bool:
    """Write the model of a clean load. `includes`: (path as joined, resolved path, bytes) of
    every fragment the model took steps from; `files`: paths that must stay files (body_file,
    literal TLS files). False when the model is not stored (a value JSON cannot give back
    exactly). Write errors are silent (runner.cache.files.write_entry)."""
    try:
        model = codec.encode(sc)
    except codec.NotCacheable:
        return False
    import json

    key = _model_key(display, os.path.realpath(display), defined, raw)
    body = json.dumps(
        {
            "includes": [list(d) for d in sorted({(j, r, digest(b)) for j, r, b in includes})],
            "files": sorted(set(files)),
            "model": model,
        },
        ensure_ascii=True,
        separators=(",", ":"),
        allow_nan=False,
    ).encode("ascii")
    write_entry("models", key, _head(key, body) + b"\n" + body)
    return True


def lookup(
    path: str | Path, defined: Iterable[str] = (), parse_pattern: PatternParser | None = None
) -> Scenario | None:
    """The cached model of the file, or None (no entry, a stale, damaged or foreign entry, or
    any error at all: the caller then loads the file in full, which reports real problems).
    parse_pattern (runner.lang.patterns.parse_pattern) rebuilds the `S:` patterns: without it,
    a model that has any is a miss."""
    try:
        return _lookup(str(path), defined, parse_pattern)
    except Exception:
        return None


def _lookup(display: str, defined: Iterable[str], parse_pattern: PatternParser | None) -> Scenario | None:
    if not is_regular(display):
        return None
    try:
        raw = read_file(display)
    except OSError:
        return None
    key = _model_key(display, os.path.realpath(display), defined, raw)
    try:
        entry = read_entry("models", key)
    except OSError:
        return None
    head, sep, body = entry.partition(b"\n")
    if not sep or head != _head(key, body):
        return None
    import json

    data = json.loads(body)
    for joined, resolved, h in data["includes"]:
        if os.path.realpath(joined) != resolved or digest(read_file(resolved)) != h:
            return None
    for f in data["files"]:
        if not os.path.isfile(f):
            return None
    return codec.decode(data["model"], parse_pattern)


# --------------------------------------------------------------------------- discovery


def remember_kind(raw: bytes, fragment: bool) -> None:
    write_entry("kinds", _kind_key(raw), b"fragment\n" if fragment else b"scenario\n")


def cached_kind(raw: bytes) -> bool | None:
    """What remember_kind said of these bytes: True for a fragment, False for a scenario, None
    when nothing (or something unreadable) is remembered."""
    try:
        kind = read_entry("kinds", _kind_key(raw))
    except OSError:
        return None
    if kind in (b"fragment\n", b"scenario\n"):
        return kind == b"fragment\n"
    return None
