"""One session's conversation as it happened, turned into the turns a scenario is written from.

Sans-IO, like the protocols: `Conversation` is told each line the client typed (`client_line`)
and each complete server reply (`replied`), in order, and never touches a socket. The live
recorder (runner.record.live) sends what `client_line` returns and reads replies with the
protocol it holds; the importer (runner.record.transcript) feeds a pasted transcript's lines
through the same calls. So both understand the same things the same way:

- SMTP/LMTP: after `DATA` answered 354, lines up to the lone `.` are the message (`body:`,
  un-dot-stuffed); after `BDAT n [LAST]` the next n bytes of lines are its chunk (`raw:`, sent
  without waiting for a reply in between, as RFC 3030 says); `STARTTLS` answered 220 upgrades
  (`starttls: true`)
- POP3: `STLS` answered +OK upgrades; the protocol knows which replies are multi-line
- IMAP: a tag the user typed is dropped (mailrun tags every line itself); a line ending in a
  literal `{N}` waits for `+`, then the next N bytes are the literal (`raw:`), `{N+}` does not
  wait; `LOGIN` with literals becomes quoted strings (its length would change with the
  password); `STARTTLS` answered OK upgrades
- AUTH / AUTHENTICATE: lines after a 334 or `+` challenge are SASL answers
- every client line goes through runner.record.credentials first
"""

from __future__ import annotations

import re

from runner import protocols
from runner.errors import MailrunError
from runner.protocols.smtp import encode_body
from runner.record.credentials import Credentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.protocols.base import Reply

IMAP_COMMANDS = frozenset(
    {
        *("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "SELECT", "EXAMINE"),
        *("CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE"),
        *("STATUS", "APPEND", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE"),
        *("COPY", "MOVE", "UID", "IDLE", "ENABLE", "ID", "GETQUOTA", "GETQUOTAROOT", "GETACL"),
        *("XLIST", "COMPRESS"),
    }
)
_LITERAL = re.compile(r"\{(\d+)(\+?)\}\Z")
_BDAT = re.compile(r"BDAT\s+(\d+)(?:\s+LAST)?\s*\Z", re.IGNORECASE)
_STARTTLS = {"smtp": "STARTTLS", "lmtp": "STARTTLS", "pop3": "STLS", "imap": "STARTTLS"}
_SASL = {"smtp": "AUTH", "lmtp": "AUTH", "pop3": "AUTH", "imap": "AUTHENTICATE"}


class Turn:
    """One step of the scenario to be: what the client sent and what came back.

    kind      greeting | send | body | raw
    text      the scenario text (a `C:` line without tag, a body, raw data), credentials
              replaced and literal `{{` escaped
    shown     the same for display: credentials as ****
    waits     a reply is expected before the client goes on
    reply     the server's reply, once it came; eof: the server closed instead
    starttls  this step upgraded the connection
    note      why there is no reply (a deadline, an error), written as a comment"""

    __slots__ = (
        "kind",
        "text",
        "shown",
        "waits",
        "reply",
        "eof",
        "starttls",
        "note",
        "verb",
        "merged",
        "literal",
        "assumed",
    )

    def __init__(self, kind: str, text: str, shown: str, waits: bool = True, verb: str = ""):
        self.kind, self.text, self.shown, self.waits, self.verb = kind, text, shown, waits, verb
        self.reply: Reply | None = None
        self.eof = False
        self.starttls = False
        self.note: str | None = None
        self.merged = False  # folded into the turn before it (an IMAP LOGIN literal)
        self.literal: int | None = None  # IMAP: the line ends in a synchronizing literal {N}
        self.assumed = False  # a greeting the transcript did not show (its usual code expected)


class Outgoing:
    """What to send for a client line: `data` (bytes for the wire), and whether to read a
    reply before taking the next line."""

    __slots__ = ("data", "waits", "turn")

    def __init__(self, data: bytes, waits: bool, turn: Turn):
        self.data, self.waits, self.turn = data, waits, turn


class Conversation:
    def __init__(self, protocol: str, passwords: list[str] | None = None):
        self.protocol_name = protocol
        self.protocol = protocols.create(protocol)  # frames replies; knows tags and multi-line
        self.credentials = Credentials(protocol, passwords)
        # the greeting is the first reply (the line protocol has none: a line the server sends
        # unasked becomes a read step)
        self.turns: list[Turn] = [] if protocol == "line" else [Turn("greeting", "", "")]
        self._waiting: list[Turn] = list(self.turns)  # sent, reply not yet come, oldest first
        self._body: list[str] | None = None  # SMTP message lines, after DATA's 354
        self._literal: int | None = None  # IMAP literal bytes still to come
        self._literal_parts: list[bytes] = []
        self._chunk: int | None = None  # SMTP/LMTP: bytes of a BDAT chunk still to come
        self._chunk_parts: list[bytes] = []
        self._login: Turn | None = None  # an IMAP LOGIN whose literals are being folded in
        self._login_text = ""
        self._sasl = False  # the next line answers a SASL challenge
        self.upgraded = False

    # ------------------------------------------------------------------ the client side
    @property
    def in_body(self) -> bool:
        return self._body is not None

    @property
    def in_literal(self) -> bool:
        return self._literal is not None

    @property
    def counted_left(self) -> int | None:
        """Bytes an IMAP literal or a BDAT chunk still needs (None: none is being sent)."""
        return self._literal if self._literal is not None else self._chunk

    @property
    def in_data(self) -> bool:
        """A message body, an IMAP literal or a BDAT chunk is being sent: every line is data."""
        return self.in_body or self.counted_left is not None

    @property
    def awaits_secret(self) -> bool:
        """The next line answers a challenge asking for a password (prompt without echo)."""
        return self._sasl and "pass" in self.credentials.challenge.lower()

    def client_line(self, line: str) -> Outgoing | None:
        """The bytes to send for a line the client typed (without its line end), or None when
        the line is part of something not yet complete (a message body before its `.`)."""
        if self._body is not None:
            return self._body_line(line)
        if self._literal is not None:
            return self._literal_line(line)
        if self._chunk is not None:
            return self._chunk_line(line)
        if self._sasl:
            text, _secret = self.credentials.replace(line)
            return self._send(line, text, verb="SASL")
        user_line = self._untagged(line)
        verb = user_line.split(" ", 1)[0].upper()
        text, _secret = self.credentials.replace(user_line)
        return self._send(user_line, text, verb=verb)

    def _untagged(self, line: str) -> str:
        """IMAP: the line without a tag the user typed (mailrun adds its own)."""
        if self.protocol_name != "imap":
            return line
        words = line.split(" ", 2)
        if words[0].upper() in IMAP_COMMANDS or len(words) < 2:
            return line
        return line.split(" ", 1)[1]

    def _send(self, line: str, text: str, verb: str) -> Outgoing:
        literal = _LITERAL.search(line) if self.protocol_name == "imap" else None
        turn = Turn("send", text, self.credentials.redact(text), verb=verb)
        if literal and verb == "LOGIN":
            self._login, self._login_text = turn, line[: literal.start()]
        data = self.protocol.command(line)
        self.turns.append(turn)
        bdat = _BDAT.match(line) if self.protocol_name in ("smtp", "lmtp") else None
        if literal and literal.group(2):  # LITERAL+: the literal follows without waiting
            turn.waits = False
            self._start_literal(int(literal.group(1)))
        elif bdat:  # the chunk follows the command line at once; its reply answers both
            turn.waits = False
            self._chunk, self._chunk_parts = int(bdat.group(1)), []
            if not self._chunk:  # `BDAT 0 LAST`: nothing follows
                self._chunk = None
                self._waiting.append(turn)
                turn.waits = True
        else:
            turn.literal = int(literal.group(1)) if literal else None
            self._waiting.append(turn)
        return Outgoing(data, turn.waits, turn)

    def _body_line(self, line: str) -> Outgoing | None:
        assert self._body is not None
        if line != ".":
            self._body.append(line[1:] if line.startswith(".") else line)  # un-dot-stuffed
            return None
        text = "".join(f"{part}\n" for part in self._body)
        self._body = None
        data = encode_body(text.encode("utf-8", "surrogateescape"))
        shown_text, _secret = self.credentials.scrub(text)
        turn = Turn("body", shown_text, self.credentials.redact(shown_text), verb="BODY")
        self.protocol.sent_raw(data)
        self.turns.append(turn)
        self._waiting.append(turn)
        return Outgoing(data, True, turn)

    def _chunk_line(self, line: str) -> Outgoing | None:
        """BDAT chunk data: lines (each with its CRLF) until the chunk's n bytes are there (the
        CRLF of the line that fills it may be left over: a line end as shown). A line that runs
        further past them is refused: its rest would go out as a command."""
        assert self._chunk is not None
        data = line.encode("utf-8", "surrogateescape") + b"\r\n"
        piece, rest = data[: self._chunk], data[self._chunk :]
        if rest and rest != b"\r\n":
            self._chunk = None  # (given up: the lines after it are read as commands)
            raise MailrunError(
                f"the BDAT chunk ends {len(rest) - 2} byte(s) before the end of this line, whose rest "
                "would be sent as a command: does the BDAT count match the lines after it?"
            )
        self._chunk -= len(piece)
        self._chunk_parts.append(piece)
        if self._chunk:
            return None
        self._chunk = None
        raw = b"".join(self._chunk_parts)
        text, _secret = self.credentials.scrub(raw.decode("utf-8", "surrogateescape"))
        turn = Turn("raw", text, self.credentials.redact(text), verb="CHUNK")
        self.protocol.sent_raw(raw)
        self.turns.append(turn)
        self._waiting.append(turn)
        return Outgoing(raw, True, turn)

    def _start_literal(self, size: int) -> None:
        self._literal, self._literal_parts = size, []

    def _literal_line(self, line: str) -> Outgoing | None:
        """IMAP literal data: N bytes, then the rest of the command's line."""
        assert self._literal is not None
        data = line.encode("utf-8", "surrogateescape")
        if len(data) + 2 <= self._literal:  # the whole line and its CRLF are literal content
            self._literal -= len(data) + 2
            self._literal_parts.append(data + b"\r\n")
            return None  # at 0 the literal ended with this CRLF: the next line goes on with the command
        content, rest = data[: self._literal], data[self._literal :]
        self._literal = None
        raw = b"".join(self._literal_parts) + content + rest + b"\r\n"
        literal_text = (b"".join(self._literal_parts) + content).decode("utf-8", "surrogateescape")
        rest_text = rest.decode("utf-8", "surrogateescape")
        more = _LITERAL.search(rest_text)
        turn = Turn("raw", "", "", verb="LITERAL")
        if self._login is not None:  # LOGIN {n}: folded into the LOGIN step as quoted strings
            self._login_text += '"' + literal_text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            self._login_text += rest_text[: more.start()] if more else rest_text
            turn.merged = True
            if not more:
                text, _secret = self.credentials.replace(self._login_text)
                self._login.text, self._login.shown = text, self.credentials.redact(text)
                self._login = None
        else:
            text, _secret = self.credentials.scrub(raw.decode("utf-8", "surrogateescape"))
            turn.text, turn.shown = text, self.credentials.redact(text)
        self.protocol.sent_raw(raw)
        self.turns.append(turn)
        if more and more.group(2):
            turn.waits = False
            self._start_literal(int(more.group(1)))
        else:
            turn.literal = int(more.group(1)) if more else None
            self._waiting.append(turn)
        return Outgoing(raw, turn.waits, turn)

    # ------------------------------------------------------------------ the server side
    def replied(self, reply: Reply) -> Turn | None:
        """A complete reply: it answers the oldest turn still waiting (None if none is: the
        server spoke unasked). Returns that turn; `turn.starttls` says the connection must
        now be upgraded."""
        if not self._waiting:  # unasked (the line protocol's lines, an untimely reply): a read step
            turn = Turn("read", "", "")
            turn.reply = reply
            self.turns.append(turn)
            return turn
        turn = self._waiting.pop(0)
        turn.reply = reply
        code = reply.code
        if turn.merged and self._login is None:
            self._fold_reply(turn, reply)
        if self._sasl or turn.verb == _SASL.get(self.protocol_name):
            challenge = code in ("334", "+")
            self._sasl = challenge
            self.credentials.replied(code, reply.texts[-1] if reply.texts else "")
        elif turn.verb == "DATA" and code == "354" and self.protocol_name in ("smtp", "lmtp"):
            self._body = []
        elif code == "+" and turn.literal is not None:
            self._start_literal(turn.literal)
        elif (
            turn.verb == _STARTTLS.get(self.protocol_name)
            and _success(self.protocol_name, code)
            and not self.upgraded
        ):
            turn.starttls = self.upgraded = True
        return turn

    def _fold_reply(self, turn: Turn, reply: Reply) -> None:
        """A folded IMAP LOGIN literal's final reply belongs to the LOGIN step."""
        for earlier in reversed(self.turns[: self.turns.index(turn)]):
            if not earlier.merged:
                earlier.reply = reply
                return

    def closed(self, note: str | None = None) -> None:
        """The server closed the connection: the oldest waiting turn gets `EOF`."""
        if self._waiting:
            turn = self._waiting.pop(0)
            turn.eof = True
            turn.note = note
        self._waiting.clear()

    def greeting_not_shown(self) -> None:
        """A transcript that starts with a client line (pasted after the greeting): the
        greeting step expects the protocol's usual greeting, and the replies that follow answer
        the client's lines."""
        if self.turns and self.turns[0].kind == "greeting" and self.turns[0].reply is None:
            greeting = self.turns[0]
            greeting.note = "the transcript does not show the greeting: the usual one is expected"
            greeting.assumed = True
            self.protocol.greeting_read_elsewhere()  # the first reply answers a command
            if self._waiting and self._waiting[0] is greeting:
                self._waiting.pop(0)

    def gave_up(self, note: str) -> None:
        """No reply came (a deadline, an error): the waiting turn gets a note instead."""
        if self._waiting:
            self._waiting.pop(0).note = note

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)


def guess_protocol(first_line: str) -> str:
    """The protocol a server's first line (its greeting) belongs to (SMTP when it cannot tell)."""
    if first_line.startswith(("+OK", "-ERR")):
        return "pop3"
    if first_line.startswith("* "):
        return "imap"
    return "smtp"


def _success(protocol: str, code: str | None) -> bool:
    if code is None:
        return False
    return code.startswith("2") if protocol in ("smtp", "lmtp") else code in ("+OK", "OK")
