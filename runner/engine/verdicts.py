"""How a step's error becomes its verdict: one table from exception type to (status, exit class,
whether the connection is gone), instead of an except clause per type.

The most specific entry wins (the exception's class, then its bases in MRO order), so a
DeadlineError (a NetworkError that leaves the connection usable) is not mistaken for the
NetworkError that ends it.
"""

from __future__ import annotations

from runner.errors import (
    ConnectionClosed,
    DeadlineError,
    ExitClass,
    MailrunError,
    NetworkError,
    ProtocolError,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from runner.protocols.base import Reply


class StepFailure(Exception):
    """Internal: ends a step with a verdict it carries itself (and the reply that caused it)."""

    def __init__(self, status: str, exit_class: ExitClass, reason: str, reply: Reply | None = None):
        super().__init__(reason)
        self.status = status
        self.exit_class = exit_class
        self.reason = reason
        self.reply = reply


class Verdict:
    """status: 'failed' | 'error'; exit_class: None means the exception's own (MailrunError.
    exit_class: 2 for templates, scenario and usage errors); closed: the connection is gone."""

    __slots__ = ("status", "exit_class", "closed")

    def __init__(self, status: str, exit_class: ExitClass | None, closed: bool):
        self.status = status
        self.exit_class = exit_class
        self.closed = closed


#: exception type -> its step verdict (see the module's docstring for the lookup)
VERDICTS: dict[type[BaseException], Verdict] = {
    ConnectionClosed: Verdict("error", ExitClass.NETWORK, closed=True),
    DeadlineError: Verdict("error", ExitClass.NETWORK, closed=False),  # the server may still answer
    NetworkError: Verdict("error", ExitClass.NETWORK, closed=True),  # TLS and I/O errors
    ProtocolError: Verdict("failed", ExitClass.FAILED, closed=False),  # a malformed reply
    MailrunError: Verdict("error", None, closed=False),  # TemplateError, ScenarioError, UsageError
}


def verdict(exc: MailrunError) -> tuple[str, ExitClass, bool]:
    """(status, exit class, connection closed) for an error a step raised."""
    for cls in type(exc).__mro__:
        v = VERDICTS.get(cls)
        if v is not None:
            return v.status, v.exit_class if v.exit_class is not None else exc.exit_class, v.closed
    raise TypeError(f"no verdict for {type(exc).__name__}")  # pragma: no cover - MailrunError has one
