"""The sandbox IMAP server's commands on a selected mailbox: FETCH, STORE, SEARCH, COPY, MOVE
(RFC 6851), EXPUNGE, UID FETCH/STORE/SEARCH/COPY/MOVE/EXPUNGE (UID EXPUNGE and the COPYUID
codes: RFC 4315 UIDPLUS), CLOSE, UNSELECT, and the untagged updates other sessions' changes
cause (`refresh`). A mixin of runner.sandbox.imap.IMAPSession, which holds the state."""

from __future__ import annotations

import re

from runner.sandbox.imap_fetch import FetchItem, imap_flags, in_new, internal_date, parse_fetch_items
from runner.sandbox.imap_search import Search
from runner.sandbox.imap_syntax import BadCommand, Refused, in_ranges, parse_seqset, uid_set
from runner.sandbox.store import IMAP_TO_MAILDIR, StoredMessage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.sandbox.imap_names import Mailboxes
    from runner.sandbox.state import SandboxState


class SelectedCommands:
    state: SandboxState
    boxes: Mailboxes
    current: str  # the selected mailbox's store name
    selected: bool
    readonly: bool
    msgs: list[StoredMessage]
    recent: set[str]  # the keys of the messages that are \Recent in this session
    _headers: dict[str, object]

    def flags(self, msg: StoredMessage) -> str:
        return imap_flags(msg.flags, recent=msg.key in self.recent)

    def claim_recent(self, msgs: list[StoredMessage]) -> None:
        """The messages no session has seen become \\Recent here (EXAMINE: without taking them)."""
        for m in msgs:
            if in_new(m):
                self.recent.add(m.key)
                if not self.readonly:
                    self.state.store.set_flags(self.current, m, m.flags)  # new/ -> cur/

    async def refresh(self) -> None:
        """Tell the client about messages added, re-flagged or removed by other sessions."""
        current = {m.key: m for m in self.state.store.scan(self.current)}
        for seq in range(len(self.msgs), 0, -1):
            if self.msgs[seq - 1].key not in current:
                self.recent.discard(self.msgs[seq - 1].key)
                del self.msgs[seq - 1]
                await self.send(f"* {seq} EXPUNGE")
        known = {m.key for m in self.msgs}
        for seq, m in enumerate(self.msgs, 1):
            now = current[m.key]
            changed = now.flags != m.flags
            m.path, m.flags = now.path, now.flags
            if changed:
                await self.send(f"* {seq} FETCH (FLAGS {self.flags(m)})")
        new = sorted((m for k, m in current.items() if k not in known), key=lambda m: m.uid)
        if new:
            before = len(self.recent)
            self.claim_recent(new)
            self.msgs.extend(new)
            await self.send(f"* {len(self.msgs)} EXISTS")
            if len(self.recent) != before:
                await self.send(f"* {len(self.recent)} RECENT")

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
                self.state.store.set_flags(self.current, msg, msg.flags + "S")
                flags_changed = True
            flags_text = self.flags(msg)
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
        letters = flag_letters(args[2] if isinstance(args[2], list) else [args[2]])
        if self.readonly:
            raise Refused("Mailbox is read-only (EXAMINE).")
        targets = self._select_msgs(args[0], uid)
        for seq, msg in targets:
            current = set(msg.flags)
            if m[1] == "+":
                new = current | letters
            elif m[1] == "-":
                new = current - letters
            else:
                new = letters | (current - set(IMAP_TO_MAILDIR.values()))
            self.state.store.set_flags(self.current, msg, "".join(new))
            if not m[2]:
                uid_part = f"UID {msg.uid} " if uid else ""
                await self.send(f"* {seq} FETCH ({uid_part}FLAGS {self.flags(msg)})")
        return "Store completed."

    async def c_search(self, tag: str, args: list, uid: bool = False) -> str:
        keys = list(args)
        if keys and str(keys[0]).upper() == "CHARSET":
            if len(keys) < 2 or str(keys[1]).upper() not in ("UTF-8", "US-ASCII"):
                raise Refused("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.")
            keys = keys[2:]
        if not keys:
            raise BadCommand("SEARCH needs at least one search key.")
        found = Search(keys, self.msgs, self._headers, self.recent).found(uid)
        await self.send("* SEARCH" + "".join(f" {n}" for n in found))
        return "Search completed."

    async def c_uid(self, tag: str, args: list) -> str:
        if not args or isinstance(args[0], list):
            raise BadCommand("UID needs FETCH, SEARCH, STORE, COPY, MOVE or EXPUNGE.")
        sub = str(args[0]).upper()
        handler = {
            "FETCH": self.c_fetch,
            "SEARCH": self.c_search,
            "STORE": self.c_store,
            "COPY": self.c_copy,
            "MOVE": self.c_move,
            "EXPUNGE": self.c_expunge,
        }.get(sub)
        if handler is None:
            raise BadCommand(f"UID {sub[:20]} is not supported.")
        return await handler(tag, args[1:], uid=True)

    async def _copy(self, args: list, uid: bool, verb: str) -> tuple[str, list[tuple[int, StoredMessage]]]:
        """Copy the messages `args` names to the mailbox it names; (the COPYUID response code,
        or '' when nothing was copied, and the messages copied)."""
        if len(args) != 2 or isinstance(args[1], list):
            raise BadCommand(f"{verb} needs a message set and a mailbox name.")
        targets = self._select_msgs(args[0], uid)
        dest = self.boxes.store_name(str(args[1]), missing="TRYCREATE")
        store = self.state.store
        keys = []
        for _, msg in targets:
            date = internal_date(msg).timestamp()
            keys.append(store.add(dest, msg.data(), flags=msg.flags, date=date))
        if not keys:
            return "", targets
        uids = {m.key: m.uid for m in store.scan(dest)}
        new = [uids[k] for k in keys]
        code = f"[COPYUID {store.uidvalidity(dest)} {uid_set([m.uid for _, m in targets])} {uid_set(new)}]"
        if dest == self.current:
            await self.refresh()
        return code, targets

    async def c_copy(self, tag: str, args: list, uid: bool = False) -> str:
        code, _ = await self._copy(args, uid, "COPY")
        return f"{code} Copy completed.".lstrip()

    async def c_move(self, tag: str, args: list, uid: bool = False) -> str:
        """RFC 6851: the COPYUID in an untagged OK, then an EXPUNGE per message moved."""
        if self.readonly:
            raise Refused("[CANNOT] Mailbox is read-only (EXAMINE): nothing can be moved out of it.")
        code, moved = await self._copy(args, uid, "MOVE")
        if code:
            await self.send(f"* OK {code} Moved.")
        gone = {m.key for _, m in moved}
        for seq in range(len(self.msgs), 0, -1):
            msg = self.msgs[seq - 1]
            if msg.key in gone:
                self.recent.discard(msg.key)
                self.state.store.remove(self.current, msg)
                del self.msgs[seq - 1]
                await self.send(f"* {seq} EXPUNGE")
        return "Move completed."

    async def _expunge(self, announce: bool, only: set[str] | None = None) -> None:
        for seq in range(len(self.msgs), 0, -1):
            msg = self.msgs[seq - 1]
            if "T" in msg.flags and (only is None or msg.key in only):
                self.recent.discard(msg.key)
                self.state.store.remove(self.current, msg)
                del self.msgs[seq - 1]
                if announce:
                    await self.send(f"* {seq} EXPUNGE")

    async def c_expunge(self, tag: str, args: list, uid: bool = False) -> str:
        if uid != bool(args) or len(args) > 1:
            raise BadCommand("UID EXPUNGE takes a UID set." if uid else "EXPUNGE takes no arguments.")
        if self.readonly:
            raise Refused("Mailbox is read-only (EXAMINE).")
        only = {m.key for _, m in self._select_msgs(args[0], uid=True)} if uid else None
        await self._expunge(announce=True, only=only)
        return "Expunge completed."

    async def c_close(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("CLOSE takes no arguments.")
        if not self.readonly:
            await self._expunge(announce=False)
        self.selected = False
        self.msgs, self.recent = [], set()
        return "Close completed."

    async def c_unselect(self, tag: str, args: list) -> str:
        if args:
            raise BadCommand("UNSELECT takes no arguments.")
        self.selected = False
        self.msgs, self.recent = [], set()
        return "Unselect completed."


def flag_letters(flag_args: list) -> set[str]:
    """IMAP flags (STORE, APPEND) -> Maildir letters; only the system flags can be kept."""
    letters = set()
    for f in flag_args:
        if isinstance(f, list):
            raise BadCommand("Invalid flag list.")
        name = "\\" + str(f)[1:].capitalize() if str(f).startswith("\\") else str(f)
        if name == "\\Recent":
            raise BadCommand("\\Recent cannot be stored.")
        if name not in IMAP_TO_MAILDIR:
            raise Refused(f"Only system flags can be stored in the sandbox, not {str(f)[:30]}.")
        letters.add(IMAP_TO_MAILDIR[name])
    return letters
