"""`--shard I/N`: the stable part I of N of a suite's runs, for suites bigger than one machine.
The CI system (a matrix job, a Kubernetes indexed Job) starts the N shards; mailrun schedules
nothing. A run belongs to the shard its key hashes to: the scenario file's path (relative to
the current directory when it lies below it, so every checkout agrees) and the provider. The
same arguments in every shard therefore play every run exactly once across the N shards, and a
run stays in its shard when others are added or removed. Imported only when a shard is asked
for (hashlib is no plain run's business)."""

from __future__ import annotations

import os

from runner.errors import UsageError
from runner.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


class Shard(Record):
    """Shard `index` (1-based) of `total`."""

    __slots__ = ("index", "total")

    def __init__(self, index: int, total: int):
        self.index = index
        self.total = total

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    def keeps(self, path: str | Path, provider: str | None) -> bool:
        """Whether the run of `path` with `provider` (None without a matrix) is this shard's."""
        return shard_of(path, provider, self.total) == self.index


def parse_shard(text: str, option: str = "--shard") -> Shard:
    """'2/5' -> Shard(2, 5); UsageError (naming `option`, if given) unless 1 <= I <= N."""
    index, sep, total = text.strip().partition("/")
    if sep and index.isdigit() and total.isdigit() and 1 <= int(index) <= int(total):
        return Shard(int(index), int(total))
    said = f"{option} " if option else ""
    raise UsageError(f"{said}wants I/N with 1 <= I <= N (e.g. 2/5), got {text!r}")


def run_key(path: str | Path, provider: str | None) -> str:
    """What a run's shard is hashed from: 'dir/x.yaml' (relative to the current directory when
    below it, else absolute; '/' separators), a NUL, the provider ('' without one)."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    shown = full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel
    return f"{shown.replace(os.sep, '/')}\0{provider or ''}"


def shard_of(path: str | Path, provider: str | None, total: int) -> int:
    """The shard (1..total) the run of `path` with `provider` belongs to: SHA-256 of its key,
    the same in every process and on every machine (Python's hash() is salted per process)."""
    import hashlib

    digest = hashlib.sha256(run_key(path, provider).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % total + 1
