"""The model cache: a warm `mailrun FILE` rebuilds the validated Scenario from JSON instead of
importing runner.load.loader (PyYAML, jsonschema, the semantic checks).

After a clean load, runner.load.loader calls `store`: the model goes, as JSON (never pickle
or marshal: reading an entry cannot run code), to `<cache dir>/models/<key>`. The key covers
the cache format, the mailrun version, the schema version, the size and mtime of the loader's
own source files, the file's path as given and resolved, the names defined outside the file
(--var, --vars-file, --matrix) and the file's bytes. The entry lists every fragment the model
includes (path as joined, resolved path, hash of its bytes) and every file that must exist
(body_file, literal ca/client_cert/client_key); `lookup` uses it only if all still hold. The
entry carries a hash of its own body, so a damaged entry is noticed, and any problem reading
one is a silent miss: the caller loads the file in full.

A model whose `vars` (or include bindings) hold a literal value for a secret is never stored:
only templates like `{{ env.PASSWORD }}` may reach the disk. Entries are read only from
directories and files that are this user's and writable by no one else (`read_entry`), never
for a scenario that is not a regular file (a pipe can be read only once), and each kind of
entry is pruned to MAX_ENTRIES after a write. MAILRUN_NO_CACHE=1: no reads, no writes.

Whether a file is a fragment is remembered per content in `<cache dir>/kinds` (remember_kind,
cached_kind), so discovering a directory's scenarios on a warm run needs no YAML either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runner import __version__
from runner.model.scenario import ConnectSpec, Location, Retry, Scenario, Session, Step

try:  # _blake2 alone imports in a fraction of hashlib's time (hashlib loads OpenSSL)
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - every CPython build has _blake2
    from hashlib import blake2b as _blake2b

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = ["FORMAT", "SCHEMA_VERSION", "cache_dir", "cached_kind", "lookup", "remember_kind", "store"]

SCHEMA_VERSION = "1"  # the scenario schema's version (runner.load.loader re-exports it)
FORMAT = "1"  # the layout of a model entry: bump it when the model or its encoding changes
_MAGIC = b"mailrun-model"
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the runner package
# A change to any of these (a development checkout, an upgrade without a version bump) makes
# every older entry a miss.
_SOURCES = (
    os.path.join("load", "loader.py"),
    os.path.join("cache", "store.py"),
    os.path.join("model", "scenario.py"),
    os.path.join("lang", "patterns.py"),
    os.path.join("lang", "templates.py"),
    os.path.join("data", "scenario.schema.json"),
)


class _NotCacheable(Exception):
    """The model holds something JSON cannot give back exactly (or a secret's literal value)."""


def cache_dir() -> str:
    """MAILRUN_CACHE_DIR, else $XDG_CACHE_HOME/mailrun, else ~/.cache/mailrun."""
    d = os.environ.get("MAILRUN_CACHE_DIR")
    if d:
        return d
    x = os.environ.get("XDG_CACHE_HOME")
    if x:
        return os.path.join(x, "mailrun")
    return os.path.join(os.path.expanduser("~"), ".cache", "mailrun")


def digest(data: bytes) -> str:
    return _blake2b(data, digest_size=20).hexdigest()


_fingerprint: bytes | None = None


def _sources_fingerprint() -> bytes:
    global _fingerprint
    if _fingerprint is None:
        parts = []
        for name in _SOURCES:
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
    h = _blake2b(digest_size=20)
    h.update(_MAGIC + b"\0" + head.encode("utf-8", "surrogateescape") + b"\0")
    h.update(_sources_fingerprint() + b"\0")
    h.update(raw)
    return h.hexdigest()


def _kind_key(raw: bytes) -> str:
    h = _blake2b(digest_size=20)
    h.update(b"mailrun-kind\0" + __version__.encode() + b"\0" + _sources_fingerprint() + b"\0")
    h.update(raw)
    return h.hexdigest()


class _ScanContext:
    """What the C JSON scanner reads from json.JSONDecoder (strict JSON, no NaN/Infinity)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str):
        raise ValueError(f"{name} in a cache entry")


def _loads(text: str) -> Any:
    """json.loads for an entry we wrote, by the C scanner the json package uses itself: a warm
    run need not import the json package (its encoder and pure-Python decoder)."""
    try:
        from _json import make_scanner
    except ImportError:  # pragma: no cover - CPython always has _json
        import json

        return json.loads(text)
    try:
        value, end = make_scanner(_ScanContext)(text, 0)
    except StopIteration:
        raise ValueError("not a JSON value") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def is_regular(path: str) -> bool:
    """A regular file: only those can be read twice (a pipe such as `mailrun <(...)` or
    /dev/stdin cannot: the cache must not take its bytes from the loader)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _trusted(st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else: only then may an entry stand in for the
    full load (a cache dir someone else can write to could hand us any model)."""
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def read_entry(sub: str, name: str) -> bytes:
    """The bytes of <cache dir>/<sub>/<name>, or OSError when it is missing or not to be trusted:
    the root, <sub> and the entry must all be this user's and writable by no one else, and the
    entry a regular file reached without following a link."""
    root = cache_dir()
    d = os.path.join(root, sub)
    for where in (root, d):
        st = os.lstat(where)
        if not stat.S_ISDIR(st.st_mode) or not _trusted(st):
            raise PermissionError(f"untrusted cache directory {where}")
    fd = os.open(os.path.join(d, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st):
            raise PermissionError("untrusted cache entry")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writing


def _ensure_dir(sub: str) -> str:
    """<cache dir>/<sub>, created 0700 (and tightened if an older mailrun made it looser)."""
    root = cache_dir()
    d = os.path.join(root, sub)
    if not os.path.isdir(root):
        os.makedirs(root, mode=0o700, exist_ok=True)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"{d} is not this user's directory") from None  # never read either
        if st.st_mode & 0o077:
            os.chmod(d, 0o700)
    return d


MAX_ENTRIES = 1000  # per kind of entry: older versions of files must not pile up forever


def _prune(d: str) -> None:
    """Keeps a cache directory to MAX_ENTRIES entries; the least recently written go first (a
    pruned entry only costs its file one full load). Runs after a write, i.e. on cold runs."""
    try:
        with os.scandir(d) as it:
            files = [e for e in it if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
        extra = len(files) - MAX_ENTRIES
        if extra <= 0:
            return
        files.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
        for e in files[:extra]:
            os.unlink(e.path)
    except OSError:
        pass


def write_entry(sub: str, name: str, data: bytes) -> None:
    """Write <cache dir>/<sub>/<name> atomically, mode 0600: a uniquely named file beside it,
    then os.replace. Any OSError means no cache, silently. MAILRUN_NO_CACHE: nothing is written."""
    if os.environ.get("MAILRUN_NO_CACHE"):
        return
    tmp = None
    try:
        d = _ensure_dir(sub)
        tmp = os.path.join(d, f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(d, name))
        tmp = None
        _prune(d)
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# --------------------------------------------------------------------------- encoding


def _plain(v: Any) -> Any:
    """v itself if JSON gives it back exactly (str, int, float, bool, None, lists, str-keyed
    dicts), else _NotCacheable."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            raise _NotCacheable("non-finite number")
        return v
    if t is list:
        return [_plain(x) for x in v]
    if t is dict:
        for k in v:
            if type(k) is not str:
                raise _NotCacheable("non-text key")
        return {k: _plain(x) for k, x in v.items()}
    raise _NotCacheable(f"a {t.__name__} value")


def _enc_loc(loc: Location | None) -> Any:
    if loc is None:
        return None
    return [loc.file, loc.line, loc.column, [_enc_loc(v) for v in loc.via]]


def _enc_step(s: Step) -> dict:
    if s.expect is not None and s.expect_source is None:
        raise _NotCacheable("a pattern without its source")
    return {
        "location": _enc_loc(s.location),
        "action": s.action,
        "text": s.text,
        "data": None if s.data is None else _b64(s.data),
        "path": None if s.path is None else str(s.path),
        "seconds": s.seconds,
        "S": None if s.expect is None else [_plain(s.expect_source)],
        "name": s.name,
        "capture": _plain(dict(s.capture)),
        "timeout": s.timeout,
        "starttls": s.starttls,
        "multiline": s.multiline,
        "tag": s.tag,
        "bindings": [_plain(dict(b)) for b in s.bindings],
    }


def _enc_session(s: Session) -> dict:
    c = s.connect
    return {
        "name": s.name,
        "protocol": s.protocol,
        "connect": {
            "values": _plain(dict(c.values)),
            "base_dir": str(c.base_dir),
            "location": _enc_loc(c.location),
            "key_locations": {k: _enc_loc(v) for k, v in c.key_locations.items()},
        },
        "steps": [_enc_step(x) for x in s.steps],
        "finally_steps": [_enc_step(x) for x in s.finally_steps],
        "retry": None if s.retry is None else [s.retry.attempts, s.retry.interval],
        "location": _enc_loc(s.location),
    }


def encode(sc: Scenario) -> dict:
    """The model as JSON-ready data (_NotCacheable when it cannot be given back exactly)."""
    return {
        "path": str(sc.path),
        "name": sc.name,
        "sessions": [_enc_session(s) for s in sc.sessions],
        "description": sc.description,
        "tags": list(sc.tags),
        "vars": _plain(dict(sc.vars)),
        "secrets": sorted(sc.secrets),
        "env_refs": {k: list(v) for k, v in sc.env_refs.items()},
        "location": _enc_loc(sc.location),
    }


def _b64(data: bytes) -> str:
    from binascii import b2a_base64

    return b2a_base64(data, newline=False).decode("ascii")


# --------------------------------------------------------------------------- decoding


class _Bad(Exception):
    pass


def _want(v: Any, *types: type) -> Any:
    if type(v) not in types:
        raise _Bad(f"expected {types}, got {type(v).__name__}")
    return v


def _opt(v: Any, *types: type) -> Any:
    return None if v is None else _want(v, *types)


def _num(v: Any) -> float:
    return float(_want(v, int, float))


def _opt_num(v: Any) -> float | None:
    return None if v is None else _num(v)


def _dec_loc(v: Any) -> Location:
    file, line, column, via = _want(v, list)
    return Location(_want(file, str), _want(line, int), _want(column, int), tuple(_dec_loc(x) for x in via))


def _dec_str_map(v: Any) -> dict:
    for x in _want(v, dict).values():
        _want(x, str)
    return v


def _dec_step(v: dict, protocol: str, parse_pattern) -> Step:
    _want(v, dict)
    expect = source = None
    if v["S"] is not None:
        (source,) = _want(v["S"], list)
        expect, problems = parse_pattern(source, protocol)
        if expect is None or problems:
            raise _Bad("pattern")
    data = v["data"]
    if data is not None:
        from binascii import a2b_base64

        data = a2b_base64(_want(data, str))
    path = _opt(v["path"], str)
    multiline = _opt(v["multiline"], bool)
    return Step(
        location=_dec_loc(v["location"]),
        action=_want(v["action"], str),
        text=_opt(v["text"], str),
        data=data,
        path=None if path is None else Path(path),
        seconds=_opt_num(v["seconds"]),
        expect=expect,
        name=_opt(v["name"], str),
        capture=_dec_str_map(v["capture"]),
        timeout=_opt_num(v["timeout"]),
        starttls=_want(v["starttls"], bool),
        multiline=multiline,
        tag=_want(v["tag"], bool),
        bindings=tuple(_want(b, dict) for b in _want(v["bindings"], list)),
        expect_source=source,
    )


def _dec_session(v: dict, parse_pattern) -> Session:
    _want(v, dict)
    protocol = _want(v["protocol"], str)
    c = _want(v["connect"], dict)
    retry = v["retry"]
    if retry is not None:
        attempts, interval = _want(retry, list)
        retry = Retry(attempts=_want(attempts, int), interval=_num(interval))
    return Session(
        name=_want(v["name"], str),
        protocol=protocol,
        connect=ConnectSpec(
            values=_want(c["values"], dict),
            base_dir=Path(_want(c["base_dir"], str)),
            location=_dec_loc(c["location"]),
            key_locations={_want(k, str): _dec_loc(x) for k, x in _want(c["key_locations"], dict).items()},
        ),
        steps=tuple(_dec_step(x, protocol, parse_pattern) for x in _want(v["steps"], list)),
        finally_steps=tuple(_dec_step(x, protocol, parse_pattern) for x in _want(v["finally_steps"], list)),
        retry=retry,
        location=None if v["location"] is None else _dec_loc(v["location"]),
    )


def decode(v: Any) -> Scenario:
    """The model back from `encode`'s data (_Bad, KeyError, TypeError, ValueError on damage)."""
    from runner.lang.patterns import parse_pattern

    _want(v, dict)
    sessions = tuple(_dec_session(s, parse_pattern) for s in _want(v["sessions"], list))
    if not sessions:
        raise _Bad("no sessions")
    for t in _want(v["tags"], list):
        _want(t, str)
    for s in _want(v["secrets"], list):
        _want(s, str)
    env_refs = {}
    for k, refs in _want(v["env_refs"], dict).items():
        env_refs[k] = tuple(_want(r, str) for r in _want(refs, list))
    return Scenario(
        path=Path(_want(v["path"], str)),
        name=_want(v["name"], str),
        sessions=sessions,
        description=_opt(v["description"], str),
        tags=tuple(v["tags"]),
        vars=_want(v["vars"], dict),
        secrets=frozenset(v["secrets"]),
        env_refs=env_refs,
        location=None if v["location"] is None else _dec_loc(v["location"]),
    )


# --------------------------------------------------------------------------- secrets


def _template_names(value: str) -> set[str] | None:
    """The identifiers the `{{ }}` expressions of a pure template mention, or None when the value
    holds literal text: characters outside `{{ }}`, or a quoted string inside one (a
    `default('...')` can carry a password as well as plain text can)."""
    import re

    exprs = re.findall(r"\{\{(.*?)\}\}", value, re.S)
    rest = re.sub(r"\{\{.*?\}\}", "", value, flags=re.S)
    if not exprs or rest.strip() or any("'" in e or '"' in e for e in exprs):
        return None
    names: set[str] = set()
    for e in exprs:
        names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", e))
    return names


def holds_secret_literal(sc: Scenario) -> bool:
    """Do the scenario's vars (or an include's bindings) give a secret, or a variable a secret's
    template uses, a literal value? Then the model must not be written to disk."""
    mappings = [sc.vars]
    for sess in sc.sessions:
        for step in (*sess.steps, *sess.finally_steps):
            mappings.extend(b for b in step.bindings if b not in mappings)
    tainted = {s for s in sc.secrets if not s.startswith("env.")}
    todo = list(tainted)
    while todo:
        name = todo.pop()
        for m in mappings:
            if name not in m:
                continue
            value = m[name]
            names = _template_names(value) if isinstance(value, str) else None
            if names is None:
                return True
            for n in names - tainted:
                tainted.add(n)
                todo.append(n)
    return False


# --------------------------------------------------------------------------- store / lookup


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
    literal TLS files). False when the model is not stored (a secret's literal value, a value
    JSON cannot give back exactly, a cache dir that cannot be written)."""
    if holds_secret_literal(sc):
        return False
    try:
        model = encode(sc)
    except _NotCacheable:
        return False
    real = os.path.realpath(display)
    key = _model_key(display, real, defined, raw)
    deps = sorted({(j, r, digest(b)) for j, r, b in includes})
    import json

    body = json.dumps(
        {
            "includes": [list(d) for d in deps],
            "files": sorted(set(files)),
            "model": model,
        },
        ensure_ascii=True,
        separators=(",", ":"),
        allow_nan=False,
    ).encode("ascii")
    write_entry("models", key, _head(key, body) + b"\n" + body)
    return True


def _head(key: str, body: bytes) -> bytes:
    """A model entry's first line: what it is, its format, its key and the hash of its body."""
    return b" ".join((_MAGIC, FORMAT.encode(), key.encode(), digest(body).encode()))


def lookup(path: str | Path, defined: Iterable[str] = ()) -> Scenario | None:
    """The cached model of the file, or None (no entry, a stale, damaged or foreign entry, or
    any error at all: the caller then loads the file in full, which reports real problems)."""
    try:
        return _lookup(str(path), defined)
    except Exception:
        return None


def _lookup(display: str, defined: Iterable[str]) -> Scenario | None:
    if not is_regular(display):
        return None
    try:
        raw = _read(display)
    except OSError:
        return None
    real = os.path.realpath(display)
    key = _model_key(display, real, defined, raw)
    try:
        entry = read_entry("models", key)
    except OSError:
        return None
    head, sep, body = entry.partition(b"\n")
    if not sep or head != _head(key, body):
        return None
    data = _loads(body.decode("ascii"))
    for joined, resolved, h in data["includes"]:
        if os.path.realpath(joined) != resolved or digest(_read(resolved)) != h:
            return None
    for f in data["files"]:
        if not os.path.isfile(f):
            return None
    return decode(data["model"])


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
