"""`mailrun import`: a pasted conversation read back into sessions, without connecting.

It reads, one line at a time:
- `S: ...` / `C: ...` lines (also `S:`/`C:` with nothing after: an empty line), the form of the
  README's walk-through, most tutorials and the reference transcripts; mailrun's own transcripts
  (each line after its `HH:MM:SS.mmm +N.Nms` time stamp); swaks output (`<-`/`->`, `<~`/`~>`
  after TLS, `<**` for errors); `<`/`>` prefixed lines
- a conversation with no prefixes at all (a pasted telnet session): a line shaped like a reply
  of the protocol (`250-...`, `+OK`, `* ...`, `a1 OK`), or one the server is still sending
  (a POP3 body, an IMAP literal), is the server's; any other is the client's
- `\\r`, `\\n`, `\\t`, `\\xNN` escapes: a line that ends in `\\r\\n` (or `\\n`) holds its own line
  end; otherwise CRLF is added. A client line ending in `<CR><LF>` (RFC 3030's examples) ends
  there.
- `--- ... ---` notes of mailrun and the reference transcripts (sessions, connect, TLS, close),
  swaks `===` notes, telnet's own chatter (`$ telnet host 25`, `Trying ...`, `Connected to ...`),
  `$ openssl s_client -connect host:465` (implicit TLS to that host and port) and its handshake
  chatter (`depth=...`, `verify return:1`),
  `#` comments and blank lines are not conversation; what they say about the host, port, TLS
  or a new session is used. Lines before the conversation starts are a preamble, skipped.
- `   <- remark` after two or more spaces is a remark (the README's walk-through), dropped
- RFC-style examples, indented as a whole or not: `S:   * OK ...` with the text set in a column (the spaces every `S:`/`C:`
  line has after its prefix are dropped, the rest kept), and narration in angle brackets such as
  `S: <wait for connection on TCP port 110>` or `C: <open connection>` (RFC 1939), which is not
  conversation

Replies are framed by the protocol's own framer (through runner.record.conversation), so a
reply must be what that protocol sends; anything else is an error naming its line.
"""

from __future__ import annotations

import re
import textwrap

from runner.errors import MailrunError, ScenarioError
from runner.model.config import DEFAULT_PORTS
from runner.record.conversation import Conversation, guess_protocol
from runner.record.write import HOST_PLACEHOLDER, SessionOut

_STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}\s+\+[\d.]+m?s ")
_REMARK = re.compile(r"\s{2,}<-\s.*$")
_ESCAPE = re.compile(r"\\(r|n|t|x[0-9a-fA-F]{2})")
_PREFIXES = (  # (regex, direction); the first that matches wins
    (re.compile(r"^S: ?"), "S"),
    (re.compile(r"^C: ?"), "C"),
    (re.compile(r"^<(?:-|~|\*\*|~\*) {0,2}"), "S"),
    (re.compile(r"^ ?(?:-|~|\*\*|\*~)> ?"), "C"),
    (re.compile(r"^< "), "S"),
    (re.compile(r"^> "), "C"),
)
_TELNET = re.compile(
    r"^(?:\$ ?telnet\s|Trying \S+\.\.\.|Connected to \S|Escape character is|Connection closed by)"
)
_TELNET_CMD = re.compile(r"^\$ ?telnet\s+(\S+)(?:\s+(\d+))?")
_OPENSSL_CMD = re.compile(r"^\$ ?openssl\s+s_client\b(.*)")
_OPENSSL_CONNECT = re.compile(r"-connect\s+(?:\[([^\]]+)\]|([^\s:]+)):(\d+)")
# what `openssl s_client` prints about the handshake before the conversation (without -quiet, more)
_OPENSSL_CHATTER = re.compile(r"^(?:depth=\d+ |verify (?:return|error):|CONNECTED\(|DONE$|read R BLOCK$)")
_CONNECTED = re.compile(r"connected to (?:\[([^\]]+)\]|([^\s:\[\]]+)):(\d+)\b", re.IGNORECASE)
_SESSION = re.compile(r"^--- session (.+?) \((\w+)\).*?: (\S+?):(\d+) via \w+, tls (\w+)")
_SWAKS_TRYING = re.compile(r"^=== Trying (\S+?):(\d+)\.\.\.")
_REPLY_SHAPE = {
    "smtp": re.compile(r"^\d{3}(?:[ -]|$)"),
    "lmtp": re.compile(r"^\d{3}(?:[ -]|$)"),
    "pop3": re.compile(r"^(?:\+OK|-ERR|\+)(?: |$)"),
    "imap": re.compile(r"^(?:\* |\+(?: |$)|[A-Za-z0-9.]+ (?:OK|NO|BAD)(?: |$))"),
}
_CRLF_MARK = re.compile(r"<CR><LF>\Z")  # RFC 3030: `C: To: Susan@random.com<CR><LF>`
_COLUMN = re.compile(r"^[SC]:( +)\S")  # the text of an `S:`/`C:` line, and the spaces before it
# RFC-style narration of what happens, not what is sent: `<wait for connection on TCP port 110>`
_NARRATION = re.compile(r"^\s*<[A-Za-z][^<>\"=]*\s[^<>\"=]*>\s*$")
_USUAL_PORTS = {name for name, _tls in DEFAULT_PORTS}
_DEFAULT_TLS_PORTS = {465: "implicit", 993: "implicit", 995: "implicit"}


class Imported:
    """The sessions read from a transcript, and the problems and notes met on the way."""

    __slots__ = ("sessions", "problems", "notes")

    def __init__(self):
        self.sessions: list[SessionOut] = []
        self.problems: list[str] = []
        self.notes: list[str] = []


def unescape(text: str) -> tuple[bytes, bool]:
    """The bytes a transcript line stands for, and whether it ends with its own line end."""
    own_end = text.endswith(("\\r\\n", "\\n"))

    def one(m: re.Match) -> str:
        code = m.group(1)
        return {"r": "\r", "n": "\n", "t": "\t"}.get(code) or chr(int(code[1:], 16))

    data = _ESCAPE.sub(one, text).encode("utf-8", "surrogateescape")
    return data, own_end


class Reader:
    """Reads one transcript (`feed` each line, then `finish`) into an Imported."""

    def __init__(self, source: str, protocol: str | None, connect: dict, column: int = 1):
        self.source = source
        self.column = column  # the spaces every `S:`/`C:` line has after its prefix (column_of)
        self.passwords: list[str] = []  # every session's (runner.record.credentials)
        self.data_line = 0  # the line of the command whose literal or BDAT chunk is being read
        self.protocol = protocol
        self.given_protocol = protocol  # --protocol; else each session's is guessed
        self.given_connect = dict(connect)
        self.connect = dict(connect)
        self.out = Imported()
        self.conv: Conversation | None = None
        self.session_name: str | None = None
        self.prefixed: bool | None = None  # decided by the first conversation line
        self.started = False
        self.reply_line = 0  # where the reply being read began
        # client lines before the first server line, with no --protocol: the greeting says
        # which protocol they speak, so they wait for it (_client, _server)
        self.early: list[tuple[int, str]] = []

    # ------------------------------------------------------------------ lines
    def feed(self, number: int, line: str) -> None:
        line = _STAMP.sub("", line.rstrip("\r\n"))
        if self._note(number, line):
            return
        direction, text = self._direction(line)
        if direction is not None and _NARRATION.match(text):
            return  # `<open connection>`: what happens, not what is sent
        if direction is None:
            if self.started and line.strip():
                self._problem(number, f"cannot place this line: {line[:60]!r} (not a client or server line)")
            return
        self.started = True
        text = _REMARK.sub("", text)
        if direction == "S":
            self._server(number, text)
        else:
            self._client(number, text)

    def _direction(self, line: str) -> tuple[str | None, str]:
        for regex, direction in _PREFIXES:
            m = regex.match(line)
            if m and (self.prefixed is not False):
                if self.prefixed is None and not line.startswith(("< ", "> ")):
                    self.prefixed = True
                text = line[m.end() :]
                if self.column > 1 and line[1] == ":":  # `S:   * OK`: the text's column
                    text = text[: self.column - 1].lstrip(" ") + text[self.column - 1 :]
                return direction, text
        conv = self.conv
        if self.prefixed is False and conv is not None and conv.in_data and not conv.protocol.pending():
            return "C", line  # a message line (or literal or chunk data), blank ones included
        if not line.strip() or self.prefixed:
            return None, line
        if self.prefixed is None and not self._could_be_unprefixed(line):
            return None, line
        self.prefixed = False
        proto_name = self.protocol or guess_protocol(line)
        shape = _REPLY_SHAPE.get(proto_name)
        busy = conv is not None and bool(conv.protocol.pending())  # a reply still coming
        if busy or (shape is not None and shape.match(line)):
            return "S", line
        return "C", line

    def _could_be_unprefixed(self, line: str) -> bool:
        """Before the conversation: only a line shaped like a greeting starts one."""
        return any(shape.match(line) for shape in _REPLY_SHAPE.values())

    def _note(self, number: int, line: str) -> bool:
        """Lines that are not conversation; what they say is used."""
        stripped = line.strip()
        if not stripped:
            return not (self.conv is not None and (self.conv.in_data or self.prefixed is False))
        if set(stripped) == {"="} and len(stripped) >= 10:  # a section rule: prose may follow
            self.started = False
            return True
        if stripped.startswith("#") or set(stripped) <= {"=", "-"}:
            return True
        if stripped.startswith("*** ") and not (self.conv is not None and self.conv.in_data):
            return True  # swaks's own remarks ("*** No authentication type succeeded")
        m = _OPENSSL_CMD.match(stripped)
        if m:
            self._openssl(number, m.group(1))
            return True
        if _OPENSSL_CHATTER.match(stripped) and self.conv is None:
            return True
        m = _TELNET_CMD.match(stripped)
        if m:
            self.connect.setdefault("host", m.group(1))
            if m.group(2):
                self.connect.setdefault("port", int(m.group(2)))
            return True
        if _TELNET.match(stripped):
            return True
        if stripped.startswith("---") and stripped.endswith("---") or stripped.startswith("=== "):
            self._use_note(stripped)
            return True
        return False

    def _openssl(self, number: int, args: str) -> None:
        """`$ openssl s_client -connect HOST:PORT ...`: implicit TLS to that host and port. With
        -starttls, openssl played the greeting, EHLO and STARTTLS itself and shows none of them."""
        m = _OPENSSL_CONNECT.search(args)
        if m:
            self.connect.setdefault("host", m.group(1) or m.group(2))
            self.connect.setdefault("port", int(m.group(3)))
        if "-starttls" in args.split():
            self._problem(
                number,
                "a transcript of `openssl s_client -starttls` lacks what openssl sent and read before "
                "TLS (the greeting, EHLO, STARTTLS): record the session instead, with "
                "`mailrun record HOST PORT --tls starttls`",
            )
        else:
            self.connect.setdefault("tls", "implicit")

    def _use_note(self, note: str) -> None:
        m = _SESSION.match(note)
        if m:
            self._new_session(m.group(1), m.group(2))
            self.connect.update(host=m.group(3), port=int(m.group(4)))
            if m.group(5) != "none":
                self.connect["tls"] = m.group(5)
            return
        m = _CONNECTED.search(note)
        host_port = (m.group(1) or m.group(2), m.group(3)) if m else None
        m = _SWAKS_TRYING.match(note)
        host_port = (m.group(1), m.group(2)) if m else host_port
        if host_port is not None:
            if self.conv is not None and self.conv.turns:  # a new connection: a new session
                self._new_session(None, self.given_protocol)
            self.connect.setdefault("host", host_port[0])
            self.connect.setdefault("port", int(host_port[1]))
        low = note.lower()
        nothing_yet = self.conv is None or not any(t.reply for t in self.conv.turns)
        if "tls" in low and nothing_yet and host_port is None:  # a handshake before the greeting
            self.connect["tls"] = "implicit"
        if ("closed" in low and "connection" in low) and self.conv is not None and self.conv.waiting:
            self.conv.closed("the server closed the connection")

    # ------------------------------------------------------------------ the two sides
    def _conversation(self, first_line: str) -> Conversation:
        if self.conv is None:
            self.protocol = self.protocol or guess_protocol(first_line)
            self.conv = Conversation(self.protocol, self.passwords)
        return self.conv

    def _server(self, number: int, text: str) -> None:
        conv = self._conversation(text)
        if self.early and not _looks_like_greeting(conv.protocol_name, text):
            conv.greeting_not_shown()  # the transcript begins after the greeting
        self._replay_early()
        if conv.counted_left is not None:  # the client's counted data is not all there
            self._problem(
                number,
                f"a server line while the client's literal or BDAT chunk still needs {conv.counted_left} "
                f"byte(s) (from line {self.data_line}): does its count match the lines sent?",
            )
            self._start_over()
            return
        data, own_end = unescape(text)
        if not conv.protocol.pending():
            self.reply_line = number
        try:
            conv.protocol.receive_data(data if own_end else data + b"\r\n")
            while (reply := conv.protocol.next_reply()) is not None:
                conv.replied(reply)
                self.reply_line = number + 1
        except MailrunError as exc:
            self._problem(self.reply_line or number, f"not a {self.protocol} reply: {exc}")
            self._start_over()

    def _start_over(self) -> None:
        """After a problem: a fresh conversation, so that reading goes on and finds the others."""
        self.conv = Conversation(self.protocol or "smtp", self.passwords)

    def _client(self, number: int, text: str) -> None:
        if self.conv is None and self.protocol != "line":
            # before any server line: sent blind before the greeting, or pasted after it; the
            # first server line tells (_server)
            self.early.append((number, text))
            return
        conv = self._lmtp_if_lhlo(self._conversation(""), text)
        data, _own_end = unescape(_CRLF_MARK.sub("", text))
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        if lines[-1] == "" and len(lines) > 1:
            lines.pop()
        for part in lines:
            counting = conv.counted_left is not None
            try:
                conv.client_line(part.rstrip("\r"))
            except MailrunError as exc:
                self._problem(number, str(exc))
            if not counting and conv.counted_left is not None:
                self.data_line = number  # where the counted data began (for a message)

    def _lmtp_if_lhlo(self, conv: Conversation, text: str) -> Conversation:
        """A conversation taken for SMTP whose first command is LHLO is LMTP (RFC 2033): made
        anew as one, its greeting answered the same."""
        first = conv.protocol_name == "smtp" and len(conv.turns) == 1 and self.given_protocol is None
        if not (first and text.split(" ", 1)[0].upper() == "LHLO"):
            return conv
        lmtp = Conversation("lmtp", self.passwords)
        greeting = conv.turns[0]
        if greeting.assumed:
            lmtp.greeting_not_shown()
        elif greeting.reply is not None:
            lmtp.protocol.greeting_read_elsewhere()  # (the SMTP framer read it)
            lmtp.replied(greeting.reply)
        self.conv, self.protocol = lmtp, "lmtp"
        return lmtp

    def _replay_early(self) -> None:
        """The client lines that came before the first server line, now that it said the
        protocol (the conversation's greeting turn still comes first: Conversation)."""
        early, self.early = self.early, []
        for number, text in early:
            self._client(number, text)

    # ------------------------------------------------------------------ sessions
    def _new_session(self, name: str | None, protocol: str | None) -> None:
        self.finish_session()
        self.session_name, self.protocol = name, protocol
        self.connect, self.prefixed = dict(self.given_connect), None

    def finish_session(self) -> None:
        if self.early:  # client lines and no server line: SMTP, as a guess
            self._conversation("")
            self._replay_early()
        conv = self.conv
        if conv is None:
            return
        if conv.protocol.pending():
            self._problem(
                self.reply_line, "this reply is not complete: the transcript ends in the middle of it"
            )
        for turn in conv.turns:
            if turn.kind != "greeting" and turn.waits and turn.reply is None and not turn.eof:
                turn.note = turn.note or "no reply in the transcript"
        connect = dict(self.connect)
        connect.setdefault("host", HOST_PLACEHOLDER)
        if "port" not in connect and conv.protocol_name not in _USUAL_PORTS:
            self.out.problems.append(
                f"{self.source}: the transcript does not say the port, and protocol "
                f"{conv.protocol_name} has no usual one: give --port"
            )
        if conv.upgraded:
            connect["tls"] = "starttls"
        elif "tls" not in connect and connect.get("port") in _DEFAULT_TLS_PORTS:
            connect["tls"] = _DEFAULT_TLS_PORTS[connect["port"]]
        name = self.session_name or f"session {len(self.out.sessions) + 1} ({conv.protocol_name})"
        self.out.sessions.append(SessionOut(name, conv.protocol_name, _ordered(connect), conv))
        self.conv, self.session_name, self.started = None, None, False

    def _problem(self, number: int, message: str) -> None:
        self.out.problems.append(f"{self.source}:{number}: {message}")


def _ordered(connect: dict) -> dict:
    return {k: connect[k] for k in ("host", "port", "tls") if k in connect}


def _looks_like_greeting(protocol: str, line: str) -> bool:
    """Is a transcript's first server line, after client lines, the greeting (they were sent
    blind before it) rather than the reply to the first of them (the greeting was not pasted)?"""
    if protocol in ("smtp", "lmtp"):
        return line.startswith("220")
    if protocol == "imap":
        return line.startswith(("* OK", "* PREAUTH", "* BYE"))
    if protocol == "pop3":  # +OK answers USER too: a greeting says it is ready, or has APOP's <...>
        return line.startswith("+OK") and (
            "ready" in line.lower() or re.search(r"<[^>]*@[^>]*>", line) is not None
        )
    return False


def column_of(lines: list[str]) -> int:
    """How many spaces every `S:`/`C:` line with text has after its prefix (narration left
    out): 1 in `S: 250 OK`, 3 in RFC 3501's `S:   * OK`. Spaces beyond them are the line's."""
    widths = [
        len(m.group(1)) for line in lines if (m := _COLUMN.match(line)) and not _NARRATION.match(line[2:])
    ]
    return min(widths, default=1)


def read_transcript(
    text: str, source: str, protocol: str | None = None, connect: dict | None = None
) -> Imported:
    """Every session in a transcript; raises ScenarioError listing every line it cannot place."""
    lines = textwrap.dedent(text).splitlines()  # a transcript indented as a whole (RFC text)
    reader = Reader(source, protocol, connect or {}, column_of(lines))
    for number, line in enumerate(lines, start=1):
        reader.feed(number, line)
    reader.finish_session()
    out = reader.out
    if not out.problems and not any(s.conversation.turns for s in out.sessions):
        out.problems.append(
            f"{source}: no conversation found (no client or server lines; a file of client lines "
            "alone, nc style, is played against a server with `mailrun record HOST PORT --script FILE`)"
        )
    if out.problems:
        raise ScenarioError(out.problems)
    return out
