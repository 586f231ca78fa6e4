"""The sandbox's IMAP server: a small, strict IMAP4rev1 over the same Maildirs.

This module is the session: the greeting, reading commands (client literals {n} and, RFC 7888
LITERAL+, {n+}), dispatch by state, and the commands valid in any state or before login:
CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE PLAIN and XOAUTH2 (both with SASL-IR; a
refused XOAUTH2 token gets Gmail's '+ <base64 JSON>' and then NO). Once logged in
(imap_authed): SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB,
STATUS, APPEND, IDLE; on a selected
mailbox (imap_selected): FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, CHECK, CLOSE, UNSELECT and
UID FETCH/STORE/SEARCH/COPY/MOVE/EXPUNGE. Mailboxes other than INBOX are Maildir++ folders
(imap_names); FETCH items are in imap_fetch and imap_mime, SEARCH in imap_search. Anything else
gets a tagged BAD (unknown or unsupported) or NO (valid but refused), never a guess.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from runner.sandbox.imap_authed import AuthenticatedCommands
from runner.sandbox.imap_names import Mailboxes
from runner.sandbox.imap_selected import SelectedCommands
from runner.sandbox.imap_syntax import REPLIED, BadCommand, Refused, tokenize
from runner.sandbox.lines import ConnectionGone, LineConnection, LineTooLong
from runner.sandbox.sasl import XOAUTH2_ERROR_CHALLENGE, SaslError, parse_credentials
from runner.sandbox.store import StoredMessage

if TYPE_CHECKING:
    from runner.sandbox.state import SandboxState

log = logging.getLogger("runner.sandbox.imap")

MAX_LINE = 65536
MAX_LITERAL = 10 * 1024 * 1024
MAX_BAD_COMMANDS = 20
_LITERAL_AT_END = re.compile(rb"\{(\d+)(\+?)\}$")
_TAG = re.compile(r"^[\x21-\x7e]+$")
_DISCARD_CHUNK = 65536


# --- the session ---------------------------------------------------------------------------
class IMAPSession(AuthenticatedCommands, SelectedCommands):
    def __init__(self, state: SandboxState, conn: LineConnection):
        self.state = state
        self.conn = conn
        self.mailbox: str | None = None  # authenticated: the user's store name (INBOX)
        self.boxes = Mailboxes(state.store, "")
        self.current = ""  # the selected mailbox's store name
        self.selected = False
        self.readonly = False
        self.msgs: list[StoredMessage] = []
        self.recent: set[str] = set()
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
            caps += ["IDLE", "MOVE", "UIDPLUS", "UNSELECT"]
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
                await self.send(f"{tag} BAD [TOOBIG] Literal too large.")
                if m[2]:  # non-synchronising: the client sends it anyway; swallow it, bounded
                    while size:
                        size -= len(await self.conn.readexactly(min(size, _DISCARD_CHUNK)))
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
            "CREATE": self.c_create,
            "DELETE": self.c_delete,
            "RENAME": self.c_rename,
            "SUBSCRIBE": self.c_subscribe,
            "UNSUBSCRIBE": self.c_unsubscribe,
            "LIST": self.c_list,
            "LSUB": self.c_lsub,
            "STATUS": self.c_status,
            "APPEND": self.c_append,
            "IDLE": self.c_idle,
        }
        selected = {
            "FETCH": self.c_fetch,
            "STORE": self.c_store,
            "SEARCH": self.c_search,
            "UID": self.c_uid,
            "COPY": self.c_copy,
            "MOVE": self.c_move,
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
        self.boxes = Mailboxes(self.state.store, name)
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


def imap_handler(state: SandboxState):
    async def handle(reader, writer) -> None:
        conn = LineConnection(reader, writer, idle_timeout=state.idle_timeout, max_line=MAX_LINE)
        await state.run_session(IMAPSession(state, conn).run(), conn)

    return handle
