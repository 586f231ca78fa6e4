"""The snapshot verdicts of a run: every step's masked reply against the stored one.

SnapshotBook (one per `mailrun --snapshot` invocation) reads every run's snapshot before
anything connects (a damaged file stops the run, exit 2), hands the engine one SnapshotRun per
scenario run, and writes what changed after the runs. SnapshotRun.check is the one call the
engine makes per step; it sets the StepResult's `snapshot` (match | new | updated | differs |
missing) and `snapshot_diff`.

What is compared and stored, step by step:
- a step that reads a reply (`S:`) and did not opt out (`snapshot: false`): its reply, masked
  (runner.snapshot.rules), or `<EOF>` when the server closed as the step expected;
- a step that passed and differs fails (exit 1), with the diff; the conversation goes on (its
  reply passed the step's own `S:`), so one run shows every difference;
- a step that failed its own `S:` (or a capture), a skipped step, and one that ended without a
  reply (a network error) are not compared; their stored entries are kept (a snapshot holds
  accepted replies only), so `differs` and `missing` always mean the snapshot failed the step;
- a session that failed only by snapshot differences is not retried (`retry:` is for a server
  that is not ready yet; a difference would only come again);
- no stored entry: written and reported `new` (exit unchanged), except with `ci`, where the
  step fails as `missing`; `--snapshot-update` writes every passing step's reply (`updated`
  where it differed) and drops entries of steps the scenario no longer has.
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import ExitClass
from runner.snapshot import store
from runner.snapshot.compare import EOF_TEXT, unified
from runner.snapshot.rules import Masker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from runner.lang.secrets import Redactor
    from runner.model.scenario import Scenario, Step
    from runner.results import StepResult


def step_key(session: str | None, section: str, index: int) -> str:
    """'steps 2', 'finally 1'; 'SESSION / steps 2' in a file of several sessions."""
    return f"{session} / {section} {index}" if session else f"{section} {index}"


def snapshot_keys(scenario: Scenario) -> list[str]:
    """The key of every step a snapshot holds, in the order the steps are written."""
    many = len(scenario.sessions) > 1
    keys = []
    for session in scenario.sessions:
        for section, steps in (("steps", session.steps), ("finally", session.finally_steps)):
            for i, step in enumerate(steps, 1):
                if step.expect is not None and step.snapshot:
                    keys.append(step_key(session.name if many else None, section, i))
    return keys


def only_snapshot_failures(steps: Iterable[StepResult]) -> bool:
    """Did these steps fail (if at all) only by their snapshots?"""
    return all(s.snapshot in ("differs", "missing") for s in steps if s.status in ("failed", "error"))


class SnapshotRun:
    """One scenario run's snapshot: the stored entries, what this run saw, the verdicts."""

    def __init__(self, scenario: Scenario, provider: str | None, path: Path, stored, update: bool, ci: bool):
        self.scenario = scenario
        self.provider = provider
        self.path = path
        self.stored: dict[str, dict[str, str]] | None = stored
        self.update = update
        self.ci = ci
        spec = scenario.snapshot
        self.off = spec.off if spec is not None else ()
        self.ignore = spec.ignore if spec is not None else ()
        self.many = len(scenario.sessions) > 1
        self.start(None, "")

    def start(self, redactor: Redactor | None, run_id: str) -> SnapshotRun:
        """Ready for one (new) play of the run: what an earlier attempt saw is forgotten."""
        self.redactor = redactor
        self.masker = Masker(self.off, self.ignore, run_id)
        self.seen: dict[str, dict[str, str]] = {}
        self.played = False
        return self

    def _clean(self, text: str) -> str:
        return self.redactor.redact(text) if self.redactor is not None else text

    def entry(self, step: Step, reply_text: str) -> dict[str, str]:
        out = {}
        if step.name:
            out["name"] = self._clean(step.name)
        if step.action == "send":
            out["C"] = self._clean(step.text or "")  # as written: a template holds no secret's value
        elif step.action == "body_file":
            out["sent"] = f"body_file {step.path.name if step.path else ''}"
        elif step.action != "read":
            out["sent"] = step.action
        out["S"] = reply_text
        return out

    def reply_text(self, protocol: str, step: Step, sr: StepResult) -> str:
        if sr.reply is None:  # a step that passed without a reply: the server closed, as expected
            return EOF_TEXT
        command = (sr.sent or "").split(" ", 1)[0].upper() if step.action == "send" else None
        return self._clean("\n".join(self.masker.mask(sr.reply.lines, protocol, command)))

    def check(
        self, session: str, protocol: str, section: str, index: int, step: Step, sr: StepResult
    ) -> bool:
        """The snapshot verdict on one step's result (see the module's docstring); True when it
        failed a step that had passed."""
        if step.expect is None or not step.snapshot or sr.status != "passed":
            return False
        self.played = True
        now = self.reply_text(protocol, step, sr)
        key = step_key(session if self.many else None, section, index)
        stored = (self.stored or {}).get(key)
        if stored is None:
            if self.ci and not self.update:
                sr.snapshot = "missing"
                return self._fail(
                    sr,
                    f"no snapshot of this reply ({key}) in {self.path} (--ci: run --snapshot-update and commit it)",
                )
            sr.snapshot = "new"
            self.seen[key] = self.entry(step, now)
            return False
        sr.snapshot_diff = unified(stored["S"], now, key, str(self.path))
        if sr.snapshot_diff is None:
            sr.snapshot = "match"
            self.seen[key] = self.entry(step, now)
            return False
        if self.update:
            sr.snapshot = "updated"
            self.seen[key] = self.entry(step, now)
            return False
        sr.snapshot = "differs"
        return self._fail(sr, f"the reply differs from its snapshot ({key} in {self.path})")

    @staticmethod
    def _fail(sr: StepResult, reason: str) -> bool:
        sr.status, sr.exit_class, sr.reason = "failed", ExitClass.FAILED, reason
        return True

    def changes(self) -> tuple[str | None, str]:
        """(the new text of the snapshot file or None when nothing is to be written, a summary)."""
        stored = self.stored or {}
        keys = snapshot_keys(self.scenario)
        new = [k for k in self.seen if k not in stored]
        if not self.played or not (new or self.update):
            return None, ""
        known = [k for k in keys if k in self.seen or k in stored]
        if self.update:  # every reply seen now (its C: line and name too), nothing stale
            updated = [k for k in self.seen if k in stored and self.seen[k] != stored[k]]
            removed = [k for k in stored if k not in keys]
            entries = {k: self.seen.get(k) or stored[k] for k in known}
        else:  # a plain --snapshot adds the new entries and changes nothing else
            updated, removed = [], []
            entries = {k: stored.get(k) or self.seen[k] for k in known}
            entries.update({k: v for k, v in stored.items() if k not in entries})
        header = {"scenario": self._clean(self.scenario.name)}
        if self.provider:
            header["provider"] = self.provider
        text = store.render(self.scenario.path.name, header, entries)
        parts = [f"{len(new)} new"] * bool(new) + [f"{len(updated)} updated"] * bool(updated)
        parts += [f"{len(removed)} removed: {', '.join(removed)}"] * bool(removed)  # no step shows these
        return text, ", ".join(parts) or "unchanged"


class SnapshotBook:
    """Every run's snapshot for one invocation: `update` (--snapshot-update), `ci` (--ci or
    CI=true: a missing snapshot fails)."""

    def __init__(self, update: bool = False, ci: bool = False):
        self.update = update
        self.ci = ci
        self.runs: dict[tuple[str, str | None], SnapshotRun] = {}

    def load(self, runs: Iterable[tuple[Scenario, str | None]]) -> list[str]:
        """Reads the snapshot of every (scenario, provider) run; -> one problem per damaged file."""
        problems = []
        for scenario, provider in runs:
            path = store.path_for(Path(scenario.path), provider)
            try:
                stored = store.read(path)
            except store.SnapshotError as exc:
                problems.append(str(exc))
                continue
            self.runs[(str(scenario.path), provider)] = SnapshotRun(
                scenario, provider, path, stored, self.update, self.ci
            )
        return problems

    def run_for(
        self, scenario: Scenario, provider: str | None, redactor: Redactor, run_id: str
    ) -> SnapshotRun | None:
        run = self.runs.get((str(scenario.path), provider))
        return None if run is None else run.start(redactor, run_id)

    def finish(self) -> tuple[list[str], bool]:
        """Writes every snapshot that changed; -> (one line per file written or not written,
        whether one could not be written)."""
        lines, failed = [], False
        for run in self.runs.values():
            text, summary = run.changes()
            if text is None:
                continue
            try:
                old = run.path.read_text(encoding="utf-8") if run.path.exists() else None
            except OSError:
                old = None
            if text == old:
                continue
            try:
                store.write(run.path, text)
            except store.SnapshotError as exc:
                lines.append(f"snapshot: {exc}")
                failed = True
                continue
            lines.append(f"snapshot: wrote {run.path} ({summary})")
        return lines, failed
