"""The cache's files: where the cache lives, which entries may be trusted, atomic private
writes, pruning. Nothing here knows what an entry holds.

An entry is `<cache dir>/<sub>/<name>` (sub: models, validated, kinds). It is read only when the
cache root, <sub> and the entry are this user's and writable by no one else, and the entry is a
regular file reached without following a link (`read_entry`); written 0600 in 0700 directories,
through a uniquely named file and os.replace (`write_entry`); each <sub> is pruned to
MAX_ENTRIES after a write. MAILRUN_NO_CACHE=1: nothing is written (the callers read nothing).
"""

from __future__ import annotations

import os
import stat

try:  # _blake2 alone imports in a fraction of hashlib's time (hashlib loads OpenSSL)
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - every CPython build has _blake2
    from hashlib import blake2b as _blake2b

__all__ = [
    "MAX_ENTRIES",
    "cache_dir",
    "digest",
    "hasher",
    "is_regular",
    "read_entry",
    "read_file",
    "write_entry",
]

MAX_ENTRIES = 1000  # per kind of entry: older versions of files must not pile up forever


def cache_dir() -> str:
    """MAILRUN_CACHE_DIR, else $XDG_CACHE_HOME/mailrun, else ~/.cache/mailrun."""
    d = os.environ.get("MAILRUN_CACHE_DIR")
    if d:
        return d
    x = os.environ.get("XDG_CACHE_HOME")
    if x:
        return os.path.join(x, "mailrun")
    return os.path.join(os.path.expanduser("~"), ".cache", "mailrun")


def hasher():
    """The hash of keys and contents (BLAKE2b, 20 bytes), to be fed with update()."""
    return _blake2b(digest_size=20)


def digest(data: bytes) -> str:
    return _blake2b(data, digest_size=20).hexdigest()


def read_file(path: str) -> bytes:
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
