"""The sandbox IMAP server's mailbox names: INBOX is the user's Maildir, every other mailbox a
Maildir++ folder inside it ('Work/Projects' is the directory '.Work.Projects', as Dovecot and
Courier lay them out), '/' the hierarchy delimiter. Names are plain ASCII (letters, digits,
space, '_', '+', '-'); anything else is refused rather than guessed at. Subscriptions (SUBSCRIBE,
LSUB) are the lines of the file 'subscriptions' in the user's Maildir, so every session shares
them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from runner.sandbox.imap_syntax import Refused, astring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.sandbox.store import MailStore

DELIMITER = "/"
_COMPONENT = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9 _+-]{0,63}$")
MAX_FOLDERS = 200


class Mailboxes:
    """One user's mailboxes: IMAP name <-> store name, listing, creating, deleting."""

    def __init__(self, store: MailStore, user: str):
        self.store = store
        self.user = user

    def store_name(self, name: str, missing: str = "NONEXISTENT") -> str:
        """The store's name for an existing mailbox; else NO [missing] (NONEXISTENT or
        TRYCREATE, RFC 5530 / RFC 3501 7.1)."""
        if name.upper() == "INBOX":
            return self.user
        found = self._folder(name)
        if found is None or not (self.store.path(found) / "cur").is_dir():
            raise Refused(f"[{missing}] Mailbox doesn't exist: {name[:60]}")
        return found

    def _folder(self, name: str) -> str | None:
        parts = name.split(DELIMITER)
        if parts[0].upper() == "INBOX" or not all(_COMPONENT.match(p) for p in parts):
            return None
        return f"{self.user}/." + ".".join(parts)

    def names(self) -> list[str]:
        """INBOX and every folder, folders sorted."""
        try:
            entries = os.listdir(self.store.path(self.user))
        except FileNotFoundError:
            entries = []
        folders = [
            e[1:].replace(".", DELIMITER)
            for e in entries
            if e.startswith(".") and len(e) > 1 and (self.store.path(self.user) / e / "cur").is_dir()
        ]
        return ["INBOX", *sorted(folders)]

    def has_children(self, name: str, names: list[str]) -> bool:
        prefix = ("INBOX" if name.upper() == "INBOX" else name) + DELIMITER
        return any(n.startswith(prefix) for n in names)

    def create(self, name: str) -> None:
        """CREATE (RFC 3501 6.3.3): a trailing delimiter is dropped; missing superiors are made."""
        name = name[:-1] if name.endswith(DELIMITER) else name
        if name.upper() == "INBOX" or name in self.names():
            raise Refused("[ALREADYEXISTS] Mailbox already exists.")
        if self._folder(name) is None:
            raise Refused(
                f"[CANNOT] The sandbox's mailbox names are ASCII letters, digits, space, '_', '+' "
                f"and '-', with '{DELIMITER}' between levels, and not under INBOX: {name[:60]}"
            )
        if len(self.names()) > MAX_FOLDERS:
            raise Refused(f"[LIMIT] At most {MAX_FOLDERS} mailboxes in the sandbox.")
        parts = name.split(DELIMITER)
        for n in range(1, len(parts) + 1):
            folder = self._folder(DELIMITER.join(parts[:n]))
            assert folder is not None
            self.store.maildir(folder)
            (self.store.path(folder) / "maildirfolder").touch()

    def delete(self, name: str) -> None:
        """DELETE (RFC 3501 6.3.4): not INBOX, not a mailbox with children."""
        if name.upper() == "INBOX":
            raise Refused("[CANNOT] INBOX cannot be deleted.")
        folder = self.store_name(name)
        if self.has_children(name, self.names()):
            raise Refused("[CANNOT] Mailbox has children; delete them first.")
        self.store.drop(folder)

    def rename(self, old: str, new: str) -> None:
        """RENAME (RFC 3501 6.3.5): the mailbox and its inferiors get the new name (their
        messages move, with flags and dates; UIDs start again under a new UIDVALIDITY);
        renaming INBOX moves its messages into the new mailbox and leaves INBOX empty."""
        new = new[:-1] if new.endswith(DELIMITER) else new
        source = self.store_name(old)
        names = self.names()
        if new.upper() == "INBOX" or new in names:
            raise Refused("[ALREADYEXISTS] Mailbox already exists.")
        if new.startswith(old + DELIMITER) and old.upper() != "INBOX":
            raise Refused("[CANNOT] A mailbox cannot be renamed to a name under itself.")
        self.create(new)
        if old.upper() == "INBOX":
            self._move_messages(source, self.store_name(new))
            return
        moves = [(n, new + n[len(old) :]) for n in names if n == old or n.startswith(old + DELIMITER)]
        for before, after in moves:
            if after != new:
                self.create(after)
            self._move_messages(self.store_name(before), self.store_name(after))
        for before, _ in sorted(moves, key=lambda pair: -pair[0].count(DELIMITER)):
            self.store.drop(self.store_name(before))

    def _move_messages(self, source: str, target: str) -> None:
        for msg in self.store.scan(source):
            try:
                date = os.stat(msg.path).st_mtime
            except OSError:
                date = None
            self.store.add(target, msg.data(), flags=msg.flags, date=date)
            self.store.remove(source, msg)

    def list_lines(self, reference: str, pattern: str, verb: str = "LIST") -> list[str]:
        """The LIST (or LSUB) replies for `reference` + `pattern` ('*' matches anything, '%'
        anything but the delimiter; INBOX matches in any case)."""
        if pattern == "":
            return [f'* {verb} (\\Noselect) "{DELIMITER}" ""']
        text = "".join(
            ".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in reference + pattern
        )
        rx, inbox = re.compile(text), re.compile(text, re.IGNORECASE)  # INBOX in any case
        names = self.names()
        out = []
        for name in self.subscribed() if verb == "LSUB" else names:
            if not (inbox if name.upper() == "INBOX" else rx).fullmatch(name):
                continue
            if name not in names:  # subscribed, but not there (any more)
                attributes = "\\Noselect"
            else:
                attributes = "\\HasChildren" if self.has_children(name, names) else "\\HasNoChildren"
            out.append(f'* {verb} ({attributes}) "{DELIMITER}" {astring(name)}')
        return out

    # subscriptions (RFC 3501 6.3.6-6.3.9)
    def _subscriptions_file(self) -> Path:
        return self.store.path(self.user) / "subscriptions"

    def subscribed(self) -> list[str]:
        try:
            text = self._subscriptions_file().read_text("utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line]

    def subscribe(self, name: str, on: bool) -> None:
        """SUBSCRIBE (any valid name, there or not) or UNSUBSCRIBE (a subscribed name)."""
        name = "INBOX" if name.upper() == "INBOX" else name
        if name != "INBOX" and self._folder(name) is None:
            raise Refused(f"[CANNOT] Not a mailbox name the sandbox can have: {name[:60]}")
        current = self.subscribed()
        if on and name not in current:
            current.append(name)
        elif not on:
            if name not in current:
                raise Refused(f"[NONEXISTENT] Not subscribed: {name[:60]}")
            current.remove(name)
        self._subscriptions_file().write_text("".join(n + "\n" for n in current), "utf-8")
