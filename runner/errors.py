"""Exit classes and the exception types that carry them.

Exit status of `mailrun`:
  0  every step passed
  1  a step's expectation failed (the server answered, but not as expected), or a scenario run
     none of whose checks was played (`unchecked`: the transport's program performed them)
  2  invalid scenario or command line: nothing was sent
  3  network failure: connect, DNS, TLS, deadline, connection closed
  129 interrupted by SIGHUP (the terminal went away)
  130 interrupted by SIGINT (Ctrl-C)
  143 interrupted by SIGTERM (CI cancelling a job, `kill`)
An interrupted run still writes every report and transcript (runner.interrupt): 128 + the
signal's number, as a shell reports a process the signal killed.
"""

from __future__ import annotations

from enum import IntEnum


class ExitClass(IntEnum):
    OK = 0
    FAILED = 1
    INVALID = 2
    NETWORK = 3
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143


#: What each exit status means: `mailrun --help`, the man page and the README's table say this.
EXIT_STATUS = {
    ExitClass.OK: "every step passed",
    ExitClass.FAILED: "a step's expectation failed (the server answered, but not as expected), or no check was played",
    ExitClass.INVALID: "invalid scenario or command line: nothing was sent",
    ExitClass.NETWORK: "network failure: connect, DNS, TLS, deadline, connection closed",
    ExitClass.HANGUP: "interrupted by SIGHUP (every report and transcript is still written)",
    ExitClass.INTERRUPTED: "interrupted by SIGINT, Ctrl-C (every report and transcript is still written)",
    ExitClass.TERMINATED: "interrupted by SIGTERM (every report and transcript is still written)",
}


def most_severe(classes) -> ExitClass:
    """The exit class a set of results adds up to: an interruption (129, 130, 143) > 3 > 2 > 1 > 0."""
    order = [
        ExitClass.OK,
        ExitClass.FAILED,
        ExitClass.INVALID,
        ExitClass.NETWORK,
        ExitClass.HANGUP,
        ExitClass.INTERRUPTED,
        ExitClass.TERMINATED,
    ]
    worst = ExitClass.OK
    for c in classes:
        c = ExitClass(c)
        if order.index(c) > order.index(worst):
            worst = c
    return worst


class MailrunError(Exception):
    """Base of every error mailrun reports to a person. The message is safe to print:
    it never contains a secret's value."""

    exit_class = ExitClass.FAILED


class ScenarioError(MailrunError):
    """A scenario (or the command line) is invalid. Nothing has been sent.

    `problems` lists every problem found as `file:line:col: path: message` strings."""

    exit_class = ExitClass.INVALID

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(MailrunError):
    """Bad command line."""

    exit_class = ExitClass.INVALID


class NetworkError(MailrunError):
    """Connect, DNS, TLS, deadline or connection-closed failures (exit class 3)."""

    exit_class = ExitClass.NETWORK


class ConnectError(NetworkError):
    """Could not establish the connection (DNS, refused, unreachable, connect deadline).
    Raised before any byte was sent, so a retry is safe."""


class TLSError(NetworkError):
    """TLS handshake or verification failed; the message names the reason."""


class DeadlineError(NetworkError):
    """A read did not complete before its deadline."""

    def __init__(self, message: str, partial: bytes = b""):
        super().__init__(message)
        self.partial = partial


class ConnectionClosed(NetworkError):
    """The peer closed the connection (or the spawned program exited)."""


class ProtocolError(MailrunError):
    """The server's bytes break the protocol's framing (malformed reply, line or reply too
    long). Fails the step (exit class 1)."""

    exit_class = ExitClass.FAILED
