"""`mailrun record`: a live session, typed or played from a file, kept as it happened.

Like telnet: each line the user types (or each line of `--script FILE`, sent one at a time) goes
to the server, and the server's reply is shown before the next line is taken. What the client
sent and what came back go into a runner.record.conversation.Conversation, which says what each
line is (a command, a message body, an IMAP literal, a SASL answer) and when the connection
must be upgraded; runner.record.write turns it into the scenario.

Every read waits against a deadline (`timeout` seconds per reply). A session that ends in an
error (the server closed, a reply never came, a refused STARTTLS) still gives its scenario: the
error is that step's expectation (`S: EOF`) or a comment on it. Credentials are never shown
or written (runner.record.credentials).
"""

from __future__ import annotations

import time

from runner import transports
from runner.errors import ConnectionClosed, DeadlineError, MailrunError
from runner.protocols.smtp import decode_challenge
from runner.record.conversation import Conversation, guess_protocol
from runner.reporters.text import safe_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from runner.model.config import ConnectConfig
    from runner.protocols.base import Reply


class Recording:
    """The outcome of a live session: its conversation, and the error that ended it (None when
    the input ran out or the server said goodbye)."""

    __slots__ = ("conversation", "error", "peer", "interrupted")

    def __init__(self, conversation: Conversation, error: MailrunError | None, peer: str, interrupted: bool):
        self.conversation, self.error, self.peer = conversation, error, peer
        self.interrupted = interrupted  # Ctrl-C ended it (what came before is still written)


class LiveSession:
    """One connection: `run(lines)` plays the client's lines and records the session."""

    def __init__(
        self, config: ConnectConfig, protocol: str | None, show: Callable[[str], None], echo: bool = True
    ):
        """protocol None: told by the greeting (runner.record.conversation.guess_protocol)."""
        self.config = config
        self.echo = echo  # show the client's lines (a script's; a person sees what they type)
        self.guess = protocol is None
        self.conversation = Conversation(protocol or "smtp")
        self.show = show
        self.transport = None
        self.open = False

    def run(self, lines: Iterator[str]) -> Recording:
        conv = self.conversation
        error: MailrunError | None = None
        interrupted = False
        self.transport = transports.create(
            self.config, on_note=lambda kind, text: self.show(f"--- {text} ---")
        )
        info = self.transport.connect()  # a failure to connect is not a session: it is raised
        self.open = True
        self.show(f"--- connected to {info.peer} ---")
        if info.tls is not None:
            self.show(f"--- TLS: {info.tls.describe()} ---")
        try:
            if self.guess:
                conv = self.conversation = self._told_by_greeting()
            if conv.waiting:
                self._answer()  # the greeting
            for line in lines:
                if not self.open:
                    break
                self._line(line)
            if self.open and conv.in_data:  # the input stopped halfway
                what = (
                    "a message body (no line with a lone '.')" if conv.in_body else "a literal or BDAT chunk"
                )
                self.show(f"--- the input ended inside {what}: that part was not sent ---")
        except MailrunError as exc:  # the server closed, a deadline, a malformed reply, a refusal
            error = exc
        except KeyboardInterrupt:
            self.show("--- interrupted ---")
            interrupted = True
        finally:
            self.transport.close()
        return Recording(conv, error, info.peer, interrupted)

    def _told_by_greeting(self) -> Conversation:
        """A conversation of the protocol the greeting's first line says, the bytes read so far
        fed to it (what could be read before a deadline or the close: the greeting step says)."""
        data, deadline = b"", self._deadline()
        try:
            while b"\n" not in data and len(data) < 4096:
                more = self.transport.recv(deadline)
                if not more:
                    break
                data += more
        except DeadlineError:
            pass
        conv = Conversation(guess_protocol(data.decode("utf-8", "replace")))
        self.show(
            f"--- the greeting says {conv.protocol_name.upper()} (give --protocol to say otherwise) ---"
        )
        if data:
            conv.protocol.receive_data(data)
        return conv

    def _line(self, line: str) -> None:
        conv = self.conversation
        if not line and not conv.in_data:
            return  # a blank line between commands (a script's last line, say) sends nothing
        out = conv.client_line(line)
        if out is None:
            return
        problem = self.transport.check_sendable(out.data)
        if problem:
            raise MailrunError(problem)
        self.transport.send(out.data, self._deadline())
        if self.echo:
            turn = out.turn
            shown = f"(message: {turn.shown.count(chr(10))} lines)" if turn.kind == "body" else turn.shown
            self.show(f"C: {safe_text(shown)}")
        if out.waits:
            self._answer()

    def _answer(self) -> None:
        """Reads replies until the oldest waiting turn has its answer; upgrades after STARTTLS."""
        conv = self.conversation
        try:
            reply = self._reply()
        except ConnectionClosed:
            conv.closed("the server closed the connection")
            self.open = False
            self.show("--- the server closed the connection ---")
            return
        except DeadlineError:
            conv.gave_up(f"no reply within {self.config.timeout:g} s")
            raise
        turn = conv.replied(reply)
        self._show_reply(reply)
        if conv.protocol_name == "line":  # lines already here belong to this answer too
            while (more := conv.protocol.next_reply()) is not None:
                conv.replied(more)
                self._show_reply(more)
        if turn is not None and turn.starttls:
            if conv.protocol.pending():
                turn.note = "data came after the STARTTLS reply, before the handshake: refused"
                raise MailrunError("the server sent data after its STARTTLS reply; refusing to continue")
            tls = self.transport.start_tls()
            self.show(f"--- TLS started: {tls.describe()} ---")

    def _reply(self) -> Reply:
        proto = self.conversation.protocol
        deadline = self._deadline()
        while True:
            reply = proto.next_reply()
            if reply is not None:
                return reply
            if proto.at_eof:
                raise ConnectionClosed("the server closed the connection")
            data = self.transport.recv(deadline)
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()

    def _show_reply(self, reply: Reply) -> None:
        redact = self.conversation.credentials.redact
        for i, line in enumerate(reply.lines):
            text = safe_text(redact(line))
            decoded = _challenge(line) if i == len(reply.lines) - 1 else None
            self.show(f"S: {text}" + (f"   ({safe_text(redact(decoded))})" if decoded else ""))

    def _deadline(self) -> float:
        return time.monotonic() + self.config.timeout


def _challenge(line: str) -> str | None:
    """The decoded text of a SASL challenge line (`334 VXNlcm5hbWU6`, `+ VXNlcm5hbWU6`)."""
    if line.startswith("+ "):
        return decode_challenge(line[2:])
    if line.startswith("334"):
        return decode_challenge(line)
    return None
