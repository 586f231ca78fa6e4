"""A step's message content: read from `body_file` (a missing file fails the step, exit 2), or
rendered from `body`; shared by the body_file, bdat and append senders."""

from __future__ import annotations

from runner.engine.verdicts import StepFailure
from runner.errors import ExitClass
from runner.lang.render import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from runner.lang.render import Context


def read_body_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StepFailure(
            "error", ExitClass.INVALID, f"cannot read body_file {path}: {exc.strerror}"
        ) from None


def content(run, path: Path | None, text: str | None, ctx: Context) -> tuple[bytes, bool]:
    """(the message's bytes, whether they hold a secret): the file at `path`, else `text`
    rendered."""
    if path is not None:
        data = read_body_file(path)
        return data, run.redactor.contains(data)
    rendered = render(text or "", ctx)
    return rendered.value.encode("utf-8"), rendered.secret
