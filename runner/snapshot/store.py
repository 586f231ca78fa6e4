"""Where a scenario's snapshot lives, and reading and writing it.

`__snapshots__/<scenario stem>.snap.yaml` beside the scenario; with `--matrix`, one per
provider: `<stem>[<provider>].snap.yaml`. The file is YAML a person reviews in a diff: a
comment, `scenario:` (and `provider:`), then `replies:`, one entry per step in the order the
steps are written, keyed by the step's place (`steps 2`, `finally 1`; `SESSION / steps 2` in a
file of several sessions), each with the step's `name`, its `C:` line as written (or `sent:` for
a body or raw step) and `S:`, the masked reply (a block scalar when it has several lines;
`<EOF>` when the server closed as expected). Keys are written in a fixed order; a write goes to
a temporary file in the same folder and replaces the snapshot at once (never half written).
"""

from __future__ import annotations

from runner.errors import ExitClass, MailrunError
from runner.snapshot import DIRECTORY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

SUFFIX = ".snap.yaml"
FIELDS = ("name", "C", "sent", "S")  # an entry's keys, in the order they are written
HEADER = (
    "# mailrun snapshot: every server reply of {source}, volatile parts masked (<queue-id>, <date>, ...).\n"
    "# Review changes in a diff; rewrite it with: mailrun --snapshot-update {source}\n"
)


class SnapshotError(MailrunError):
    """A snapshot file that cannot be read: exit 2, before anything is sent."""

    exit_class = ExitClass.INVALID


def path_for(scenario_path: Path, provider: str | None = None) -> Path:
    stem = scenario_path.name
    for suffix in (".yaml", ".yml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    label = f"{stem}[{provider}]" if provider else stem
    return scenario_path.parent / DIRECTORY / (label + SUFFIX)


def read(path: Path) -> dict[str, dict[str, str]] | None:
    """The stored entries (key -> {field: text}), or None when there is no snapshot file.
    Raises SnapshotError naming the file (and the line, for YAML errors) when it is damaged."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(
            f"{path}: cannot read the snapshot: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    import yaml

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SnapshotError(
            f"{where}: damaged snapshot: {problem} (fix it, or delete it and run --snapshot-update)"
        ) from None
    return _entries(path, data)


def _entries(path: Path, data) -> dict[str, dict[str, str]]:
    def bad(what: str) -> SnapshotError:
        return SnapshotError(
            f"{path}: damaged snapshot: {what} (fix it, or delete it and run --snapshot-update)"
        )

    if not isinstance(data, dict) or not isinstance(data.get("replies", {}), dict):
        raise bad("expected a mapping with 'replies:', a mapping of steps")
    out: dict[str, dict[str, str]] = {}
    for key, entry in (data.get("replies") or {}).items():
        if not isinstance(entry, dict) or "S" not in entry:
            raise bad(f"entry {key!r} has no S: (the stored reply)")
        unknown = set(entry) - set(FIELDS)
        if unknown:
            raise bad(f"entry {key!r} has unknown key {sorted(map(str, unknown))[0]!r}")
        if not all(isinstance(v, (str, int, float)) for v in entry.values()):
            raise bad(f"entry {key!r}: every value is text")
        out[str(key)] = {k: str(v) for k, v in entry.items()}
    return out


def render(source: str, header: Mapping[str, str], entries: Mapping[str, Mapping[str, str]]) -> str:
    """The snapshot file's text: the comment, the header fields, then every entry."""
    import yaml

    class Dumper(yaml.SafeDumper):  # the Python emitter: its analysis is what is changed here
        def analyze_scalar(self, scalar):
            # a TAB inside a line (a folded header's "\tby mail...") is fine in a block scalar,
            # which PyYAML refuses for any TAB: analysed as a space, written as the TAB it is
            analysis = super().analyze_scalar(scalar.replace("\t", " "))
            analysis.scalar = scalar
            return analysis

    def text(dumper, value: str):
        style = "|" if "\n" in value else None  # PyYAML falls back to quotes where it must
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    doc = dict(header)
    doc["replies"] = {key: {f: e[f] for f in FIELDS if f in e} for key, e in entries.items()}
    body = yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1 << 16, indent=2)
    return HEADER.format(source=source) + body


def write(path: Path, text: str) -> None:
    """Atomically (runner.reporters.base.write_atomic: a temporary file beside it, then renamed;
    mode 0644, a file to commit). Raises SnapshotError."""
    from runner.reporters.base import ReportError, write_atomic

    try:
        write_atomic(path, text.encode("utf-8"), "the snapshot")
    except ReportError as exc:
        raise SnapshotError(str(exc)) from None
