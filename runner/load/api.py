"""Loading scenarios: the entry points the rest of mailrun calls.

load_scenario asks the model cache first and runs the full load (runner.load.build: YAML,
schema, semantic checks) only on a miss; discover/find_files list the scenario files of paths,
directories and globs (is_fragment tells fragments apart); validate_paths checks files.
Nothing here imports PyYAML or jsonschema: the full load is imported when it is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.cache import store
from runner.errors import ScenarioError
from runner.load.reading import read_file
from runner.snapshot import DIRECTORY as SNAPSHOTS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from runner.model.scenario import Scenario


def load_scenario(path: str | Path, *, defined: Iterable[str] = (), use_cache: bool = True) -> Scenario:
    """Load, validate and check one scenario file; ScenarioError lists every problem.
    use_cache: take the model from the cache when an entry for these exact bytes (and
    includes, path and defined names) is there (a warm run then never imports the loader,
    PyYAML or jsonschema); store it after a clean load."""
    defined = list(defined)
    if use_cache and (os.environ.get("MAILRUN_NO_CACHE") or not store.is_regular(str(path))):
        use_cache = False  # neither read nor write the cache (a pipe can be read only once)
    if use_cache:
        from runner.lang.pattern_parse import parse_pattern

        sc = store.lookup(path, defined, parse_pattern=parse_pattern)
        if sc is not None:
            return sc
    from runner.load.build import load_scenario_file

    return load_scenario_file(path, defined, use_cache)


def is_fragment(path: str | Path) -> bool:
    """A fragment has `steps` and at most `vars`, `secrets`, `description` (no name/connect/
    sessions). Reads the YAML (and remembers the answer for these bytes, so discover() on a
    warm run needs no YAML); False for a file that cannot be read or parsed."""
    from runner.load.yaml_doc import is_fragment_data, read_doc

    try:
        doc = read_doc(path)
    except ScenarioError:
        return False
    fragment = is_fragment_data(doc.data)
    store.remember_kind(doc.raw, fragment)
    return fragment


def _is_fragment(p: Path) -> bool:
    try:
        kind = store.cached_kind(read_file(p, "a scenario file"))
    except ScenarioError:
        kind = None
    return is_fragment(p) if kind is None else kind


def find_files(paths: Iterable[str | Path], *, fragments: bool) -> list[Path]:
    """Files as given; directories -> every *.yaml/*.yml below (sorted); globs expanded.
    fragments=False leaves fragments out of directories and globs."""
    out: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted({*p.rglob("*.yaml"), *p.rglob("*.yml")})
            for f in found:
                if SNAPSHOTS in f.relative_to(p).parts:  # --snapshot's stored replies, not scenarios
                    continue
                if f.is_file() and (fragments or not _is_fragment(f)):
                    add(f)
        elif not p.exists() and _has_magic(str(raw)):
            import glob

            for g in sorted(glob.glob(str(raw), recursive=True)):
                gp = Path(g)
                if gp.is_dir():
                    for f in find_files([gp], fragments=fragments):
                        add(f)
                elif fragments or not _is_fragment(gp):
                    add(gp)
        else:
            add(p)
    return out


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories -> every *.yaml/*.yml below (sorted), fragments skipped; globs expanded."""
    return find_files(paths, fragments=False)


# --------------------------------------------------------------------------- validate


class ValidationReport:
    """fragments: files recognised (and checked) as fragments; scenarios: the valid ones."""

    __slots__ = ("files", "errors", "warnings", "fragments", "scenarios")

    def __init__(
        self, files: int, errors: list[str], warnings: list[str], fragments: list[str] | None = None
    ):
        self.files = files
        self.errors = errors
        self.warnings = warnings
        self.fragments = [] if fragments is None else fragments
        self.scenarios: list[Scenario] = []

    def __repr__(self) -> str:
        return (
            f"ValidationReport(files={self.files!r}, errors={self.errors!r}, "
            f"warnings={self.warnings!r}, fragments={self.fragments!r})"
        )


def validate_paths(
    paths: Iterable[str | Path], *, env: Mapping[str, str], defined: Iterable[str] = (), strict: bool = False
) -> ValidationReport:
    """Check files without connecting (never uses the cache). Fragments are checked as fragments.
    `strict` is accepted for symmetry; the caller decides whether warnings fail."""
    from runner.load.build import check_file
    from runner.model.scenario import env_warnings

    defined = list(defined)
    files = find_files(paths, fragments=True)
    report = ValidationReport(files=len(files), errors=[], warnings=[])
    if not files:
        report.errors.append(f"{' '.join(map(str, paths))}: no scenario files found")
    for f in files:
        try:
            sc, fragment, problems = check_file(f, defined)
        except ScenarioError as e:
            report.errors.extend(e.problems)
            continue
        report.errors.extend(problems)
        if fragment:
            report.fragments.append(str(f))
        elif sc is not None:
            report.scenarios.append(sc)
            report.warnings.extend(env_warnings(sc, env))
    return report
