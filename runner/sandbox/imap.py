"""The sandbox's IMAP server: a small, strict IMAP4rev1 subset over the same Maildirs.

Implemented: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE PLAIN and XOAUTH2 (both
with SASL-IR; a refused XOAUTH2 token gets Gmail's '+ <base64 JSON>' and then NO), SELECT,
EXAMINE, LIST, STATUS (INBOX only), CHECK, FETCH / UID FETCH (UID, FLAGS, INTERNALDATE,
RFC822.SIZE, RFC822, RFC822.HEADER, RFC822.TEXT, BODY[...] and BODY.PEEK[...] with sections
'', HEADER, TEXT, HEADER.FIELDS (...), HEADER.FIELDS.NOT (...) and <partial>), SEARCH /
UID SEARCH, STORE / UID STORE, EXPUNGE, CLOSE, UNSELECT. Client literals {n} and {n+} are
read; message data goes out as {n} literals. Anything else gets a tagged BAD (unknown or
unsupported) or NO (valid but refused), never a guess.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import re
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING

from runner.sandbox.lines import ConnectionGone, LineConnection, LineTooLong
from runner.sandbox.sasl import XOAUTH2_ERROR_CHALLENGE, SaslError, parse_credentials
from runner.sandbox.store import IMAP_TO_MAILDIR, MAILDIR_TO_IMAP, StoredMessage

if TYPE_CHECKING:
    from runner.sandbox.server import SandboxState

log = logging.getLogger("runner.sandbox.imap")

MAX_LINE = 65536
MAX_LITERAL = 10 * 1024 * 1024
MAX_BAD_COMMANDS = 20
SYSTEM_FLAGS = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
_FLAG_ORDER = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_LITERAL_AT_END = re.compile(rb"\{(\d+)(\+?)\}$")
_TAG = re.compile(r"^[\x21-\x7e]+$")


class BadCommand(Exception):
    """Answer with a tagged BAD and this text."""


class Refused(Exception):
    """Answer with a tagged NO and this text."""


REPLIED = "already replied"  # a handler result: the tagged reply has been sent


class Q(str):
    """A quoted string or literal (as opposed to an atom)."""


# --- parsing -------------------------------------------------------------------------------
def tokenize(data: bytes) -> list:
    """IMAP command arguments -> nested lists of atoms (str) and strings (Q)."""
    root: list = []
    stack = [root]
    i, n = 0, len(data)
    while i < n:
        c = data[i : i + 1]
        if c == b" ":
            i += 1
        elif c == b"(":
            new: list = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == b")":
            if len(stack) == 1:
                raise BadCommand("Unexpected ')'")
            stack.pop()
            i += 1
        elif c == b'"':
            out = bytearray()
            i += 1
            while True:
                if i >= n:
                    raise BadCommand("Missing '\"'")
                ch = data[i : i + 1]
                if ch == b"\\" and i + 1 < n:
                    out += data[i + 1 : i + 2]
                    i += 2
                elif ch == b'"':
                    i += 1
                    break
                else:
                    out += ch
                    i += 1
            stack[-1].append(Q(out.decode("utf-8", "replace")))
        elif c == b"{":
            m = re.match(rb"\{(\d+)\+?\}\r\n", data[i:])
            if not m:
                raise BadCommand("Invalid literal")
            start = i + m.end()
            size = int(m[1])
            if start + size > n:
                raise BadCommand("Literal shorter than announced")
            stack[-1].append(Q(data[start : start + size].decode("utf-8", "replace")))
            i = start + size
        else:
            j = i
            depth = 0
            while j < n:
                ch = data[j : j + 1]
                if ch == b"[":
                    depth += 1
                elif ch == b"]":
                    depth = max(0, depth - 1)
                elif depth == 0 and ch in (b" ", b"(", b")", b'"', b"{"):
                    break
                j += 1
            stack[-1].append(data[i:j].decode("utf-8", "replace"))
            i = j
    if len(stack) != 1:
        raise BadCommand("Missing ')'")
    return root


def parse_seqset(text: str, largest: int) -> list[tuple[int, int]]:
    """'1:3,7,9:*' -> [(1, 3), (7, 7), (9, largest)] ('*' is `largest`)."""
    if not isinstance(text, str) or isinstance(text, Q) or not re.fullmatch(r"[0-9:*,]+", text):
        raise BadCommand("Invalid message set")
    ranges = []
    for part in text.split(","):
        bounds = part.split(":")
        if len(bounds) > 2 or not all(bounds):
            raise BadCommand("Invalid message set")
        nums = []
        for b in bounds:
            if b == "*":
                nums.append(largest)
            elif b.isdigit() and int(b) > 0:
                nums.append(int(b))
            else:
                raise BadCommand("Invalid message set")
        lo, hi = min(nums), max(nums)
        ranges.append((lo, hi))
    return ranges


def in_ranges(value: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


def imap_flags(maildir_flags: str) -> str:
    names = {MAILDIR_TO_IMAP[c] for c in maildir_flags if c in MAILDIR_TO_IMAP}
    return "(" + " ".join(f for f in _FLAG_ORDER if f in names) + ")"


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line, text)."""
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return data, b""
    return data[: i + 4], data[i + 4 :]


def header_fields(header: bytes, names: set[str], keep: bool) -> bytes:
    out = bytearray()
    include = False
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if include:
                out += line + b"\r\n"
            continue
        field = line.split(b":", 1)[0].strip().decode("ascii", "replace").upper()
        include = (field in names) == keep
        if include:
            out += line + b"\r\n"
    return bytes(out) + b"\r\n"


def internal_date(msg: StoredMessage) -> dt.datetime:
    m = re.match(r"^(\d+)\.", msg.key)
    ts = int(m[1]) if m else 0
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def format_internal_date(msg: StoredMessage) -> str:
    d = internal_date(msg)
    return (
        f'"{d.day:2d}-{_MONTHS[d.month - 1]}-{d.year:04d} {d.hour:02d}:{d.minute:02d}:{d.second:02d} +0000"'
    )


def parse_search_date(text: str) -> dt.date:
    m = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", str(text))
    if not m or m[2].capitalize() not in _MONTHS:
        raise BadCommand(f"Invalid search date {text!r}")
    try:
        return dt.date(int(m[3]), _MONTHS.index(m[2].capitalize()) + 1, int(m[1]))
    except ValueError:
        raise BadCommand(f"Invalid search date {text!r}") from None


# --- FETCH items ---------------------------------------------------------------------------
class FetchItem:
    def __init__(self, spec: str):
        self.spec = spec
        up = spec.upper()
        self.kind = up
        self.peek = False
        self.section = ""
        self.fields: set[str] = set()
        self.partial: tuple[int, int | None] | None = None
        self.sets_seen = False
        if up in ("UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "RFC822.HEADER"):
            return
        if up in ("RFC822", "RFC822.TEXT"):
            self.sets_seen = True
            return
        m = re.fullmatch(
            r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK)\[(.*)\](?:<(\d+)(?:\.(\d+))?>)?", spec, re.I | re.S
        )
        if not m or m[1].upper().startswith("BINARY"):
            raise BadCommand(f"Unknown or unsupported FETCH item {spec[:40]!r}")
        self.kind = "BODY"
        self.peek = m[1].upper() == "BODY.PEEK"
        self.sets_seen = not self.peek
        section = m[2].strip()
        sec_up = section.upper()
        fm = re.fullmatch(r"(HEADER\.FIELDS(?:\.NOT)?)\s*\((.*)\)", section, re.I | re.S)
        if fm:
            self.section = fm[1].upper()
            names = [n.strip('"') for n in fm[2].split()]
            if not names:
                raise BadCommand("HEADER.FIELDS needs at least one field name")
            self.fields = {n.upper() for n in names}
            self.section_text = f"{self.section} ({' '.join(n.upper() for n in names)})"
        elif sec_up in ("", "HEADER", "TEXT"):
            self.section = sec_up
            self.section_text = sec_up
        else:
            raise BadCommand(f"Unsupported body section [{section[:40]}]")
        if m[3] is not None:
            if m[4] is not None and int(m[4]) == 0:
                raise BadCommand("Partial length must be positive")
            self.partial = (int(m[3]), int(m[4]) if m[4] is not None else None)

    def render(self, msg: StoredMessage, flags_text: str) -> bytes:
        data = msg.data()
        if self.kind == "UID":
            return f"UID {msg.uid}".encode()
        if self.kind == "FLAGS":
            return f"FLAGS {flags_text}".encode()
        if self.kind == "RFC822.SIZE":
            return f"RFC822.SIZE {len(data)}".encode()
        if self.kind == "INTERNALDATE":
            return f"INTERNALDATE {format_internal_date(msg)}".encode()
        header, text = split_message(data)
        if self.kind == "RFC822":
            return literal(b"RFC822", data)
        if self.kind == "RFC822.HEADER":
            return literal(b"RFC822.HEADER", header)
        if self.kind == "RFC822.TEXT":
            return literal(b"RFC822.TEXT", text)
        if self.section == "":
            part = data
        elif self.section == "HEADER":
            part = header
        elif self.section == "TEXT":
            part = text
        else:
            part = header_fields(header, self.fields, keep=self.section == "HEADER.FIELDS")
        name = f"BODY[{self.section_text}]"
        if self.partial is not None:
            start, count = self.partial
            part = part[start : start + count] if count is not None else part[start:]
            name += f"<{start}>"
        return literal(name.encode(), part)


def literal(name: bytes, data: bytes) -> bytes:
    return name + b" {" + str(len(data)).encode() + b"}\r\n" + data


def parse_fetch_items(arg) -> list[FetchItem]:
    if isinstance(arg, list):
        specs = arg
    elif isinstance(arg, str) and not isinstance(arg, Q):
        up = arg.upper()
        if up == "FAST":
            specs = ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
        elif up in ("ALL", "FULL"):
            raise BadCommand(f"FETCH {up} needs ENVELOPE, which the sandbox does not implement")
        else:
            specs = [arg]
    else:
        raise BadCommand("Invalid FETCH items")
    if not specs or not all(isinstance(s, str) and not isinstance(s, Q) for s in specs):
        raise BadCommand("Invalid FETCH items")
    return [FetchItem(s) for s in specs]


# --- the session ---------------------------------------------------------------------------
class IMAPSession:
    def __init__(self, state: SandboxState, conn: LineConnection):
        self.state = state
        self.conn = conn
        self.mailbox: str | None = None  # authenticated
        self.selected = False
        self.readonly = False
        self.msgs: list[StoredMessage] = []
        self.bad = 0
        self._headers: dict[str, object] = {}

    # output
    async def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        await self.conn.send(data + b"\r\n")

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "SASL-IR", "LITERAL+"]
        if self.mailbox is None:
            if not self.conn.tls:
                caps.append("STARTTLS")
            caps += ["AUTH=PLAIN", "AUTH=XOAUTH2"]
        else:
            caps.append("UNSELECT")
        return " ".join(caps)

    async def run(self) -> None:
        try:
            await self.send(f"* OK [CAPABILITY {self.capabilities()}] mailrun sandbox IMAP ready.")
            while True:
                try:
                    data = await self.read_command()
                except LineTooLong:
                    await self.send("* BAD Command line too long.")
                    continue
                if data is None:
                    continue
                if not await self.dispatch(data):
                    break
        except ConnectionGone:
            pass
        finally:
            self.conn.close()

    async def read_command(self) -> bytes | None:
        data = bytearray()
        while True:
            line = await self.conn.readline()
            data += line
            m = _LITERAL_AT_END.search(line)
            if not m:
                return bytes(data)
            size = int(m[1])
            if size > MAX_LITERAL or len(data) > MAX_LINE * 16:
                tag = bytes(data).split(b" ", 1)[0].decode("ascii", "replace")
                await self.send(f"{tag} BAD Literal too large.")
                if m[2]:  # non-synchronising: the client sends it anyway; swallow it
                    await self.conn.readexactly(size)
                    await self.conn.readline()
                return None
            if not m[2]:
                await self.send("+ Ready for literal data.")
            data += b"\r\n" + await self.conn.readexactly(size)

    async def dispatch(self, data: bytes) -> bool:
        tag_b, _, rest = data.partition(b" ")
        tag = tag_b.decode("ascii", "replace")
        if not tag_b or not _TAG.match(tag) or any(c in tag for c in '(){%*"\\+'):
            await self.send("* BAD Invalid tag.")
            return await self._count_bad()
        name_b, _, args_b = rest.partition(b" ")
        name = name_b.decode("ascii", "replace").upper()
        if not name:
            await self.send(f"{tag} BAD Missing command.")
            return await self._count_bad()
        try:
            args = tokenize(args_b)
            handler = self._handler(name)
            result = await handler(tag, args)
        except BadCommand as e:
            await self.send(f"{tag} BAD {e}")
            return await self._count_bad()
        except Refused as e:
            await self.send(f"{tag} NO {e}")
            return True
        if result is False:
            return False
        if result is REPLIED:
            return True
        await self.send(f"{tag} OK {result or name.capitalize() + ' completed.'}")
        return True

    async def _count_bad(self) -> bool:
        self.bad += 1
        if self.bad > MAX_BAD_COMMANDS:
            await self.send("* BYE Too many invalid IMAP commands.")
            return False
        return True

    def _handler(self, name: str):
        anywhere = {"CAPABILITY": self.c_capability, "NOOP": self.c_noop, "LOGOUT": self.c_logout}
        if name in anywhere:
            return anywhere[name]
        not_auth = {"STARTTLS": self.c_starttls, "LOGIN": self.c_login, "AUTHENTICATE": self.c_authenticate}
        authed = {
            "SELECT": self.c_select,
            "EXAMINE": self.c_examine,
            "LIST": self.c_list,
            "STATUS": self.c_status,
        }
        selected = {
            "FETCH": self.c_fetch,
            "STORE": self.c_store,
            "SEARCH": self.c_search,
            "UID": self.c_uid,
            "EXPUNGE": self.c_expunge,
            "CLOSE": self.c_close,
            "UNSELECT": self.c_unselect,
            "CHECK": self.c_noop,
        }
        if name in not_auth:
            if self.mailbox is not None:
                raise BadCommand(f"{name} is not valid after login.")
            return not_auth[name]
        if name in authed or name in selected:
            if self.mailbox is None:
                raise BadCommand(f"{name} is not valid before login.")
            if name in selected and not self.selected:
                raise BadCommand(f"{name} needs a selected mailbox (SELECT INBOX first).")
            return authed.get(name) or selected[name]
        raise BadCommand(f"Unknown or unsupported command {name[:30]!r}.")

    # any state
    async def c_capability(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("CAPABILITY takes no arguments.")
        await self.send(f"* CAPABILITY {self.capabilities()}")
        return "Capability completed."

    async def c_noop(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("NOOP takes no arguments.")
        if self.selected:
            await self.refresh()
        return "NOOP completed."

    async def c_logout(self, tag: str, args: list) -> bool:
        if args:
            raise BadCommand("LOGOUT takes no arguments.")
        await self.send("* BYE Logging out")
        await self.send(f"{tag} OK Logout completed.")
        return False

    # not authenticated
    async def c_starttls(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("STARTTLS takes no arguments.")
        if self.conn.tls:
            raise BadCommand("TLS is already active.")
        await self.conn.start_tls(self.state.tls_context, f"{tag} OK Begin TLS negotiation now.\r\n".encode())
        return REPLIED

    async def _login(self, user: str, password: str, *, oauth: bool = False) -> str:
        name = self.state.authenticate(user, password)
        if name is None:
            if oauth:  # Gmail/Outlook: the error as a JSON challenge, the client's empty answer, NO
                await self.send(f"+ {XOAUTH2_ERROR_CHALLENGE}")
                try:
                    await self.conn.readline()  # the client's answer (empty), ignored
                except LineTooLong:
                    pass
                raise Refused("[AUTHENTICATIONFAILED] Invalid credentials (Failure)")
            raise Refused("[AUTHENTICATIONFAILED] Authentication failed.")
        self.mailbox = name
        return f"[CAPABILITY {self.capabilities()}] Logged in"

    async def c_login(self, tag: str, args: list) -> str:
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise BadCommand("LOGIN needs a user name and a password.")
        return await self._login(args[0], args[1])

    async def c_authenticate(self, tag: str, args: list) -> str:
        if not args or len(args) > 2 or not all(isinstance(a, str) for a in args):
            raise BadCommand("AUTHENTICATE needs a mechanism.")
        mechanism = args[0].upper()
        if mechanism not in ("PLAIN", "XOAUTH2"):
            raise Refused("Unsupported authentication mechanism.")
        if len(args) == 2:
            blob = args[1]
        else:
            await self.send("+ ")
            try:
                blob = (await self.conn.readline()).decode("ascii", "replace").strip()
            except LineTooLong:
                raise BadCommand("AUTHENTICATE response too long.") from None
            if blob == "*":
                raise BadCommand("Authentication aborted by client.")
        try:
            user, secret = parse_credentials(mechanism, blob)
        except SaslError as why:
            raise BadCommand(f"Invalid AUTHENTICATE {mechanism} response: {why}.") from None
        return await self._login(user, secret, oauth=mechanism == "XOAUTH2")

    # authenticated
    def _check_inbox(self, args: list, count: int = 1) -> None:
        if len(args) != count or not isinstance(args[0], str):
            raise BadCommand("Expected a mailbox name.")
        if args[0].upper() != "INBOX":
            raise Refused(f"[NONEXISTENT] Mailbox doesn't exist: {args[0][:60]} (the sandbox has only INBOX)")

    async def c_select(self, tag: str, args: list, readonly: bool = False) -> str:
        self.selected = False
        self._check_inbox(args)
        assert self.mailbox is not None
        store = self.state.store
        self.msgs = store.scan(self.mailbox)
        self.readonly = readonly
        self._headers.clear()
        await self.send(f"* FLAGS {SYSTEM_FLAGS}")
        permanent = "()" if readonly else SYSTEM_FLAGS
        await self.send(f"* OK [PERMANENTFLAGS {permanent}] Flags permitted.")
        await self.send(f"* {len(self.msgs)} EXISTS")
        await self.send("* 0 RECENT")
        unseen = next((i for i, m in enumerate(self.msgs, 1) if "S" not in m.flags), None)
        if unseen is not None:
            await self.send(f"* OK [UNSEEN {unseen}] First unseen.")
        await self.send(f"* OK [UIDVALIDITY {store.uidvalidity(self.mailbox)}] UIDs valid")
        await self.send(f"* OK [UIDNEXT {store.uidnext(self.mailbox)}] Predicted next UID")
        self.selected = True
        return (
            f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {'Examine' if readonly else 'Select'} completed."
        )

    async def c_examine(self, tag: str, args: list) -> str:
        return await self.c_select(tag, args, readonly=True)

    async def c_list(self, tag: str, args: list) -> str:
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise BadCommand("LIST needs a reference and a mailbox pattern.")
        pattern = args[1]
        if pattern == "":
            await self.send('* LIST (\\Noselect) "/" ""')
        elif fnmatch.fnmatchcase("INBOX", (args[0] + pattern).upper().replace("%", "*")):
            await self.send('* LIST (\\HasNoChildren) "/" INBOX')
        return "List completed."

    async def c_status(self, tag: str, args: list) -> str:
        if len(args) != 2 or not isinstance(args[1], list):
            raise BadCommand("STATUS needs a mailbox and a list of items.")
        self._check_inbox(args[:1])
        assert self.mailbox is not None
        store = self.state.store
        msgs = store.scan(self.mailbox)
        values = {
            "MESSAGES": len(msgs),
            "RECENT": 0,
            "UIDNEXT": store.uidnext(self.mailbox),
            "UIDVALIDITY": store.uidvalidity(self.mailbox),
            "UNSEEN": sum(1 for m in msgs if "S" not in m.flags),
        }
        out = []
        for item in args[1]:
            key = str(item).upper()
            if key not in values:
                raise BadCommand(f"Unknown STATUS item {key[:30]!r}.")
            out.append(f"{key} {values[key]}")
        await self.send(f"* STATUS INBOX ({' '.join(out)})")
        return "Status completed."

    # selected
    async def refresh(self) -> None:
        """Tell the client about messages delivered or removed by other sessions."""
        assert self.mailbox is not None
        current = {m.key: m for m in self.state.store.scan(self.mailbox)}
        for seq in range(len(self.msgs), 0, -1):
            if self.msgs[seq - 1].key not in current:
                del self.msgs[seq - 1]
                await self.send(f"* {seq} EXPUNGE")
        known = {m.key for m in self.msgs}
        for m in self.msgs:
            if m.key in current:
                m.path, m.flags = current[m.key].path, current[m.key].flags
        new = sorted((m for k, m in current.items() if k not in known), key=lambda m: m.uid)
        if new:
            self.msgs.extend(new)
            await self.send(f"* {len(self.msgs)} EXISTS")

    def _select_msgs(self, setspec, uid: bool) -> list[tuple[int, StoredMessage]]:
        if uid:
            largest = self.msgs[-1].uid if self.msgs else 0
            ranges = parse_seqset(setspec, largest)
            # "n:*" with n above every UID still names the largest UID (RFC 9051 6.4.8):
            # parse_seqset orders the bounds, so (largest, n) includes it.
            return [(i, m) for i, m in enumerate(self.msgs, 1) if in_ranges(m.uid, ranges)]
        ranges = parse_seqset(setspec, len(self.msgs))
        if any(lo < 1 or hi > len(self.msgs) for lo, hi in ranges):
            raise BadCommand("Invalid message set: no such message.")
        return [(i, m) for i, m in enumerate(self.msgs, 1) if in_ranges(i, ranges)]

    async def c_fetch(self, tag: str, args: list, uid: bool = False) -> str:
        if len(args) != 2:
            raise BadCommand("FETCH needs a message set and items.")
        items = parse_fetch_items(args[1])
        targets = self._select_msgs(args[0], uid)
        if uid and not any(it.kind == "UID" for it in items):
            items = [FetchItem("UID"), *items]
        for seq, msg in targets:
            flags_changed = False
            if not self.readonly and any(it.sets_seen for it in items) and "S" not in msg.flags:
                assert self.mailbox is not None
                self.state.store.set_flags(self.mailbox, msg, msg.flags + "S")
                flags_changed = True
            flags_text = imap_flags(msg.flags)
            parts = [it.render(msg, flags_text) for it in items]
            if flags_changed and not any(it.kind == "FLAGS" for it in items):
                parts.append(f"FLAGS {flags_text}".encode())
            await self.send(f"* {seq} FETCH (".encode() + b" ".join(parts) + b")")
        return "Fetch completed."

    async def c_store(self, tag: str, args: list, uid: bool = False) -> str:
        if len(args) != 3:
            raise BadCommand("STORE needs a message set, FLAGS/+FLAGS/-FLAGS and flags.")
        op = str(args[1]).upper()
        m = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", op)
        if not m:
            raise BadCommand(f"Unknown STORE item {op[:30]!r}.")
        flag_args = args[2] if isinstance(args[2], list) else [args[2]]
        letters = set()
        for f in flag_args:
            name = "\\" + str(f)[1:].capitalize() if str(f).startswith("\\") else str(f)
            if name == "\\Recent":
                raise BadCommand("\\Recent cannot be stored.")
            if name not in IMAP_TO_MAILDIR:
                raise Refused(f"Only system flags can be stored in the sandbox, not {str(f)[:30]}.")
            letters.add(IMAP_TO_MAILDIR[name])
        if self.readonly:
            raise Refused("Mailbox is read-only (EXAMINE).")
        targets = self._select_msgs(args[0], uid)
        assert self.mailbox is not None
        for seq, msg in targets:
            current = set(msg.flags)
            if m[1] == "+":
                new = current | letters
            elif m[1] == "-":
                new = current - letters
            else:
                new = letters | (current - set(IMAP_TO_MAILDIR.values()))
            self.state.store.set_flags(self.mailbox, msg, "".join(new))
            if not m[2]:
                uid_part = f"UID {msg.uid} " if uid else ""
                await self.send(f"* {seq} FETCH ({uid_part}FLAGS {imap_flags(msg.flags)})")
        return "Store completed."

    def _header(self, msg: StoredMessage):
        h = self._headers.get(msg.key)
        if h is None:
            h = self._headers[msg.key] = BytesHeaderParser(policy=default_policy).parsebytes(
                split_message(msg.data())[0]
            )
        return h

    def _match(self, keys: list, pos: int, seq: int, msg: StoredMessage) -> tuple[bool, int]:
        """Evaluate one search key at keys[pos]; return (matches, next position)."""
        if pos >= len(keys):
            raise BadCommand("Missing search key.")
        key = keys[pos]
        if isinstance(key, list):
            ok, p = True, 0
            if not key:
                raise BadCommand("Empty search key list.")
            while p < len(key):
                r, p = self._match(key, p, seq, msg)
                ok = ok and r
            return ok, pos + 1
        k = str(key).upper()

        def arg(offset: int = 1) -> str:
            if pos + offset >= len(keys) or isinstance(keys[pos + offset], list):
                raise BadCommand(f"Search key {k} needs an argument.")
            return str(keys[pos + offset])

        flags = msg.flags
        flag_keys = {"ANSWERED": "R", "DELETED": "T", "FLAGGED": "F", "SEEN": "S", "DRAFT": "D"}
        if k == "ALL" or k == "OLD":
            return True, pos + 1
        if k in ("RECENT", "NEW"):
            return False, pos + 1
        if k in flag_keys:
            return flag_keys[k] in flags, pos + 1
        if k.startswith("UN") and k[2:] in flag_keys:
            return flag_keys[k[2:]] not in flags, pos + 1
        if k in ("SUBJECT", "FROM", "TO", "CC", "BCC"):
            return self._header_has(msg, k, arg()), pos + 2
        if k == "HEADER":
            return self._header_has(msg, arg(1), arg(2)), pos + 3
        if k in ("BODY", "TEXT"):
            header, text = split_message(msg.data())
            hay = text if k == "BODY" else header + text
            return arg().lower().encode("utf-8") in hay.lower(), pos + 2
        if k in ("LARGER", "SMALLER"):
            try:
                n = int(arg())
            except ValueError:
                raise BadCommand(f"{k} needs a number.") from None
            size = len(msg.data())
            return (size > n if k == "LARGER" else size < n), pos + 2
        if k in ("BEFORE", "ON", "SINCE"):
            day = parse_search_date(arg())
            got = internal_date(msg).date()
            return {"BEFORE": got < day, "ON": got == day, "SINCE": got >= day}[k], pos + 2
        if k == "NOT":
            r, p = self._match(keys, pos + 1, seq, msg)
            return not r, p
        if k == "OR":
            r1, p = self._match(keys, pos + 1, seq, msg)
            r2, p = self._match(keys, p, seq, msg)
            return r1 or r2, p
        if k == "UID":
            ranges = parse_seqset(arg(), self.msgs[-1].uid if self.msgs else 0)
            return in_ranges(msg.uid, ranges), pos + 2
        if re.fullmatch(r"[0-9:*,]+", k):
            return in_ranges(seq, parse_seqset(k, len(self.msgs))), pos + 1
        raise BadCommand(f"Unknown or unsupported search key {k[:30]!r}.")

    def _header_has(self, msg: StoredMessage, field: str, needle: str) -> bool:
        values = self._header(msg).get_all(field) or []
        if needle == "":
            return bool(values)
        return any(needle.lower() in str(v).lower() for v in values)

    async def c_search(self, tag: str, args: list, uid: bool = False) -> str:
        keys = list(args)
        if keys and str(keys[0]).upper() == "CHARSET":
            if len(keys) < 2 or str(keys[1]).upper() not in ("UTF-8", "US-ASCII"):
                raise Refused("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.")
            keys = keys[2:]
        if not keys:
            raise BadCommand("SEARCH needs at least one search key.")
        # Validate the whole expression once, even on an empty mailbox.
        probe = StoredMessage("0.probe", "", "", 0, b"\r\n")
        pos = 0
        while pos < len(keys):
            _, pos = self._match(keys, pos, 1, probe)
        found = []
        for seq, msg in enumerate(self.msgs, 1):
            pos, ok = 0, True
            while pos < len(keys):
                r, pos = self._match(keys, pos, seq, msg)
                ok = ok and r
            if ok:
                found.append(msg.uid if uid else seq)
        await self.send("* SEARCH" + "".join(f" {n}" for n in found))
        return "Search completed."

    async def c_uid(self, tag: str, args: list) -> str:
        if not args or isinstance(args[0], list):
            raise BadCommand("UID needs FETCH, SEARCH or STORE.")
        sub = str(args[0]).upper()
        handler = {"FETCH": self.c_fetch, "SEARCH": self.c_search, "STORE": self.c_store}.get(sub)
        if handler is None:
            raise BadCommand(f"UID {sub[:20]} is not supported.")
        return await handler(tag, args[1:], uid=True)

    async def _expunge(self, announce: bool) -> None:
        assert self.mailbox is not None
        for seq in range(len(self.msgs), 0, -1):
            msg = self.msgs[seq - 1]
            if "T" in msg.flags:
                self.state.store.remove(self.mailbox, msg)
                del self.msgs[seq - 1]
                if announce:
                    await self.send(f"* {seq} EXPUNGE")

    async def c_expunge(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("EXPUNGE takes no arguments.")
        if self.readonly:
            raise Refused("Mailbox is read-only (EXAMINE).")
        await self._expunge(announce=True)
        return "Expunge completed."

    async def c_close(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("CLOSE takes no arguments.")
        if not self.readonly:
            await self._expunge(announce=False)
        self.selected = False
        self.msgs = []
        return "Close completed."

    async def c_unselect(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("UNSELECT takes no arguments.")
        self.selected = False
        self.msgs = []
        return "Unselect completed."


def imap_handler(state: SandboxState):
    async def handle(reader, writer) -> None:
        conn = LineConnection(reader, writer, idle_timeout=state.idle_timeout, max_line=MAX_LINE)
        await state.run_session(IMAPSession(state, conn).run(), conn)

    return handle
