"""The sandbox's IMAP server: a small, strict IMAP4rev1 subset over the same Maildirs.

Implemented: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE PLAIN and XOAUTH2 (both
with SASL-IR; a refused XOAUTH2 token gets Gmail's '+ <base64 JSON>' and then NO), SELECT,
EXAMINE, LIST, STATUS (INBOX only), CHECK, FETCH / UID FETCH (UID, FLAGS, INTERNALDATE,
RFC822.SIZE, RFC822, RFC822.HEADER, RFC822.TEXT, BODY[...] and BODY.PEEK[...] with sections
'', HEADER, TEXT, HEADER.FIELDS (...), HEADER.FIELDS.NOT (...) and <partial>), SEARCH /
UID SEARCH, STORE / UID STORE, EXPUNGE, CLOSE, UNSELECT. Client literals {n} and {n+} are
read; message data goes out as {n} literals. Anything else gets a tagged BAD (unknown or
unsupported) or NO (valid but refused), never a guess.

Longer than the size rule by a few lines: it is one session class, one method per command;
the parsing, FETCH and SEARCH it uses are already in imap_syntax, imap_fetch and imap_search.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from typing import TYPE_CHECKING

from runner.sandbox.imap_fetch import FetchItem, imap_flags, parse_fetch_items
from runner.sandbox.imap_search import Search
from runner.sandbox.imap_syntax import BadCommand, Refused, in_ranges, parse_seqset, tokenize
from runner.sandbox.lines import ConnectionGone, LineConnection, LineTooLong
from runner.sandbox.sasl import XOAUTH2_ERROR_CHALLENGE, SaslError, parse_credentials
from runner.sandbox.store import IMAP_TO_MAILDIR, StoredMessage

if TYPE_CHECKING:
    from runner.sandbox.state import SandboxState

log = logging.getLogger("runner.sandbox.imap")

MAX_LINE = 65536
MAX_LITERAL = 10 * 1024 * 1024
MAX_BAD_COMMANDS = 20
SYSTEM_FLAGS = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
_LITERAL_AT_END = re.compile(rb"\{(\d+)(\+?)\}$")
_TAG = re.compile(r"^[\x21-\x7e]+$")
REPLIED = "already replied"  # a handler result: the tagged reply has been sent


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

    async def c_search(self, tag: str, args: list, uid: bool = False) -> str:
        keys = list(args)
        if keys and str(keys[0]).upper() == "CHARSET":
            if len(keys) < 2 or str(keys[1]).upper() not in ("UTF-8", "US-ASCII"):
                raise Refused("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.")
            keys = keys[2:]
        if not keys:
            raise BadCommand("SEARCH needs at least one search key.")
        found = Search(keys, self.msgs, self._headers).found(uid)
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
