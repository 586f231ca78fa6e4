"""Snapshots (`mailrun --snapshot`): every reply of a run, volatile parts masked, compared with
the one stored beside the scenario (`__snapshots__/<stem>.snap.yaml`).

    rules.py    the named built-in masks (queue ids, dates, Message-IDs, ...) and a scenario's own
    store.py    where a snapshot lives, reading it (exit 2 when damaged) and writing it atomically
    compare.py  one reply against its stored entry: the unified diff
    check.py    a run's snapshot (SnapshotRun: the verdict on each step's reply) and every run's
                (SnapshotBook: loaded before connecting, written after the runs)

The engine calls SnapshotRun.check once per step (runner.engine.session); the reply it sees is
already masked by the Redactor, so no secret reaches a snapshot.
"""

DIRECTORY = "__snapshots__"  # beside the scenario; suites never take the files below it for scenarios
