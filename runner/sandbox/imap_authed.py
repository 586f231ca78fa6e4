"""The sandbox IMAP server's commands once logged in: SELECT, EXAMINE, CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND (with the APPENDUID code: RFC 4315) and IDLE
(RFC 2177: new mail, expunges and flag changes reported while idling, woken by the store as soon
as another session delivers). A mixin of runner.sandbox.imap.IMAPSession, which holds the state."""

from __future__ import annotations

import asyncio

from runner.sandbox.imap_fetch import in_new
from runner.sandbox.imap_selected import flag_letters
from runner.sandbox.imap_syntax import BadCommand, Q, Refused, astring, parse_date_time
from runner.sandbox.lines import LineTooLong

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.sandbox.imap_names import Mailboxes
    from runner.sandbox.lines import LineConnection
    from runner.sandbox.state import SandboxState
    from runner.sandbox.store import StoredMessage

SYSTEM_FLAGS = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
IDLE_POLL = 1.0  # seconds: while idling, the mailbox is also looked at this often (mail put
# into the Maildir from outside the sandbox's loop, e.g. by Sandbox.mailbox() in a test)


class AuthenticatedCommands:
    state: SandboxState
    conn: LineConnection
    boxes: Mailboxes
    current: str
    selected: bool
    readonly: bool
    msgs: list[StoredMessage]
    recent: set[str]
    _headers: dict[str, object]

    def _mailbox_arg(self, args: list, count: int = 1) -> str:
        if len(args) != count or isinstance(args[0], list):
            raise BadCommand("Expected a mailbox name.")
        return str(args[0])

    async def c_select(self, tag: str, args: list, readonly: bool = False) -> str:
        self.selected = False
        name = self.boxes.store_name(self._mailbox_arg(args))
        store = self.state.store
        self.current = name
        self.msgs = store.scan(name)
        self.readonly = readonly
        self.recent = set()
        self.claim_recent(self.msgs)
        self._headers.clear()
        await self.send(f"* FLAGS {SYSTEM_FLAGS}")
        permanent = "()" if readonly else SYSTEM_FLAGS
        await self.send(f"* OK [PERMANENTFLAGS {permanent}] Flags permitted.")
        await self.send(f"* {len(self.msgs)} EXISTS")
        await self.send(f"* {len(self.recent)} RECENT")
        unseen = next((i for i, m in enumerate(self.msgs, 1) if "S" not in m.flags), None)
        if unseen is not None:
            await self.send(f"* OK [UNSEEN {unseen}] First unseen.")
        await self.send(f"* OK [UIDVALIDITY {store.uidvalidity(name)}] UIDs valid")
        await self.send(f"* OK [UIDNEXT {store.uidnext(name)}] Predicted next UID")
        self.selected = True
        return (
            f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {'Examine' if readonly else 'Select'} completed."
        )

    async def c_examine(self, tag: str, args: list) -> str:
        return await self.c_select(tag, args, readonly=True)

    async def c_create(self, tag: str, args: list) -> str:
        self.boxes.create(self._mailbox_arg(args))
        return "Create completed."

    async def c_delete(self, tag: str, args: list) -> str:
        name = self._mailbox_arg(args)
        if self.selected and name.upper() != "INBOX" and self.boxes.store_name(name) == self.current:
            raise Refused("[INUSE] The selected mailbox cannot be deleted; CLOSE it first.")
        self.boxes.delete(name)
        return "Delete completed."

    async def c_rename(self, tag: str, args: list) -> str:
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise BadCommand("RENAME needs the mailbox's name and its new name.")
        if self.selected and self.boxes.store_name(args[0]) == self.current:
            raise Refused("[INUSE] The selected mailbox cannot be renamed; CLOSE it first.")
        self.boxes.rename(args[0], args[1])
        return "Rename completed."

    async def c_subscribe(self, tag: str, args: list, on: bool = True) -> str:
        self.boxes.subscribe(self._mailbox_arg(args), on)
        return f"{'Subscribe' if on else 'Unsubscribe'} completed."

    async def c_unsubscribe(self, tag: str, args: list) -> str:
        return await self.c_subscribe(tag, args, on=False)

    async def c_list(self, tag: str, args: list, verb: str = "LIST") -> str:
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise BadCommand(f"{verb} needs a reference and a mailbox pattern.")
        for line in self.boxes.list_lines(args[0], args[1], verb):
            await self.send(line)
        return f"{verb.capitalize()} completed."

    async def c_lsub(self, tag: str, args: list) -> str:
        return await self.c_list(tag, args, verb="LSUB")

    async def c_status(self, tag: str, args: list) -> str:
        if len(args) != 2 or not isinstance(args[1], list) or isinstance(args[0], list):
            raise BadCommand("STATUS needs a mailbox and a list of items.")
        name = self.boxes.store_name(str(args[0]))
        store = self.state.store
        msgs = store.scan(name)
        values = {
            "MESSAGES": len(msgs),
            "RECENT": sum(1 for m in msgs if in_new(m)),
            "UIDNEXT": store.uidnext(name),
            "UIDVALIDITY": store.uidvalidity(name),
            "UNSEEN": sum(1 for m in msgs if "S" not in m.flags),
        }
        out = []
        for item in args[1]:
            key = str(item).upper()
            if key not in values:
                raise BadCommand(f"Unknown STATUS item {key[:30]!r}.")
            out.append(f"{key} {values[key]}")
        await self.send(f"* STATUS {astring(str(args[0]))} ({' '.join(out)})")
        return "Status completed."

    async def c_append(self, tag: str, args: list) -> str:
        """APPEND mailbox [(flags)] [date-time] literal (RFC 3501 6.3.11)."""
        if len(args) < 2 or isinstance(args[0], list):
            raise BadCommand("APPEND needs a mailbox name and a message literal.")
        message = args[-1]
        if not isinstance(message, Q) or message.raw is None:
            raise BadCommand("APPEND needs the message as a literal ({size} then the message).")
        options = args[1:-1]
        letters: set[str] = set()
        if options and isinstance(options[0], list):
            letters = flag_letters(options.pop(0))
        date = None
        if options and isinstance(options[0], Q) and options[0].raw is None:
            date = parse_date_time(options.pop(0))
        if options:
            raise BadCommand("APPEND takes a mailbox, optional flags, an optional date-time and the message.")
        name = self.boxes.store_name(str(args[0]), missing="TRYCREATE")
        if not message.raw:
            raise Refused("An empty message cannot be appended.")
        store = self.state.store
        key = store.add(name, message.raw, flags="".join(letters), date=date)
        uid = next(m.uid for m in store.scan(name) if m.key == key)
        if self.selected and name == self.current:
            await self.refresh()
        return f"[APPENDUID {store.uidvalidity(name)} {uid}] Append completed."

    async def c_idle(self, tag: str, args: list) -> str:
        """IDLE until the client's DONE, reporting changes to the selected mailbox as they come."""
        if args:
            raise BadCommand("IDLE takes no arguments.")
        await self.send("+ idling")
        woke = asyncio.Event()

        def watch(name: str) -> None:
            if self.selected and name == self.current:
                woke.set()

        store = self.state.store
        store.watchers.add(watch)
        line = asyncio.ensure_future(self.conn.readline())
        try:
            while not line.done():
                wake = asyncio.ensure_future(woke.wait())
                await asyncio.wait({line, wake}, timeout=IDLE_POLL, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                woke.clear()
                if self.selected and not line.done():
                    await self.refresh()
        finally:
            store.watchers.discard(watch)
            if not line.done():
                line.cancel()
        try:
            done = line.result()
        except LineTooLong:
            raise BadCommand("Expected DONE to end IDLE.") from None
        if done.strip().upper() != b"DONE":
            raise BadCommand("Expected DONE to end IDLE.")
        return "Idle completed."
