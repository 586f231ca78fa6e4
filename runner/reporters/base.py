"""What every reporter is: `Reporter` (a listener on the event stream, runner.events), `Tee`
(several listeners as one), the redactor they accept, `ReportError`, and `write_atomic`, how the
file-writing reports put their file on disk."""

from __future__ import annotations

import os

from runner.errors import ExitClass, MailrunError


class RedactorLike:
    """What reporters need of a redactor (e.g. runner.lang.secrets.Redactor): any object with this
    method will do; it need not derive from this class."""

    def redact(self, text: str) -> str:
        raise NotImplementedError


class ReportError(MailrunError):
    """A report could not be written (bad path, permissions, disk full) or a `--report`
    specification is malformed. The message names the path or the spec."""

    exit_class = ExitClass.INVALID


class Reporter:
    """Base class: ignores every event. Subclasses override what they need. `handle(event)` is
    called in order with the events of one scenario run at a time; `close()` writes files and
    final summaries."""

    def handle(self, event) -> None:  # noqa: B027 - deliberately a no-op default
        pass

    def close(self) -> None:  # noqa: B027
        pass


class Tee(Reporter):
    """Hands every event to several reporters, in order; close() closes them all (and raises
    the first error after trying every one)."""

    def __init__(self, reporters: list[Reporter]):
        self.reporters = list(reporters)

    def handle(self, event) -> None:
        for r in self.reporters:
            r.handle(event)

    def close(self) -> None:
        first: BaseException | None = None
        for r in self.reporters:
            try:
                r.close()
            except Exception as e:  # keep closing the others
                first = first or e
        if first is not None:
            raise first


def write_atomic(path: str | os.PathLike, data: bytes, what: str) -> None:
    """Write a report file whole or not at all: a temporary file beside it, then renamed.
    Raises ReportError naming `what` and the path. (tempfile and pathlib are imported here:
    a plain console run never writes a report file.)"""
    import tempfile
    from pathlib import Path

    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        # a device or FIFO (/dev/stdout, `--report junit=>(cat)`): written in place; a rename
        # would replace it (run as root, /dev/null itself) with a regular file
        try:
            with open(path, "ab") as fh:
                fh.write(data)
        except OSError as e:
            raise ReportError(f"cannot write {what} {path}: {e.strerror or e}") from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mailrun-", suffix=".tmp", dir=path.parent)
        try:
            with open(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise ReportError(f"cannot write {what} {path}: {e.strerror or e}") from None
