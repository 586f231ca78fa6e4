"""What the command line checks of the paths it is given, before anything is loaded or sent:
scenario paths that do not exist, and the --report / --transcript destinations."""

from __future__ import annotations

import os
from pathlib import Path

from runner.errors import UsageError

GLOB_CHARS = "*?["


def missing_paths(paths) -> list[str]:
    """The paths given that name nothing (a glob is never missing: it may match nothing)."""
    return [p for p in paths if not any(c in str(p) for c in GLOB_CHARS) and not os.path.lexists(p)]


def check_outputs(reports, transcript: str | None) -> None:
    """--report and --transcript destinations are checked before anything is sent, by doing
    what writing them will do (a temporary file created and removed in the directory; a
    device or FIFO opened for appending), so a run is never lost to a path that cannot be
    written. UsageError (exit 2) naming the option and why."""
    for kind, path in reports:
        where = f"--report {kind}={path}"
        p = Path(path)
        if p.is_dir():
            raise UsageError(f"{where}: is a directory; name a file")
        if p.is_fifo():  # written in place; opening it here would end its reader's input
            if not os.access(p, os.W_OK):
                raise UsageError(f"{where}: not writable")
            continue
        if p.exists() and not p.is_file():  # /dev/stdout, a device: written in place
            _try_append(p, where)
            continue
        _try_create_in(p.parent, where)
    if transcript:
        d = Path(transcript)
        if d.exists() and not d.is_dir():
            raise UsageError(f"--transcript {transcript}: exists and is not a directory")
        _try_create_in(d, f"--transcript {transcript}")


def _try_create_in(d: Path, where: str) -> None:
    import tempfile

    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{where}: cannot create {d}: a file of that name is not a directory") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot create {d}: {exc.strerror or exc}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mailrun-check-", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"{where}: {d} is not writable: {exc.strerror or exc}") from None


def _try_append(p: Path, where: str) -> None:
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
        os.close(fd)
    except OSError as exc:
        raise UsageError(f"{where}: cannot write to {p}: {exc.strerror or exc}") from None
