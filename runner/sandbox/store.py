"""Maildir-backed mail store shared by the sandbox's SMTP, POP3 and IMAP servers.

One Maildir per mailbox name under a root directory. Delivery goes through the stdlib
`mailbox.Maildir`; reading lists `new/` and `cur/` directly so that flags (the `:2,FLAGS` info
suffix) and removals are cheap renames/unlinks that any Maildir reader understands.

Messages are stored with LF line ends (as Postfix/Dovecot do) and served with CRLF; every size
reported to a client (POP3 octets, IMAP RFC822.SIZE) is the size of the CRLF form.

A mailbox is created when first used (a login, a delivery, or a configured user at start); with
`welcome=True` a newly created one gets one welcome message (`welcome_message`), so receive
scenarios have something to read on a fresh sandbox. A Maildir already on disk (`--maildir DIR`
from an earlier run) is not new and gets none.

All methods are called from the sandbox's event-loop thread; `Sandbox.mailbox()` hands a
`mailbox.Maildir` on the same directory to other threads (tests), which only adds or reads.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

_KEY_ORDER = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._%+=@-]{1,128}$")
_CRLF = re.compile(rb"\r?\n")

#: IMAP system flag <-> Maildir info letter.
IMAP_TO_MAILDIR = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D"}
MAILDIR_TO_IMAP = {v: k for k, v in IMAP_TO_MAILDIR.items()}


def to_crlf(data: bytes) -> bytes:
    return _CRLF.sub(b"\r\n", data)


def to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def normalise(address: str, domain: str) -> str | None:
    """'Alice@MailRun.test' -> 'alice'; 'bob@gmx.net' -> 'bob@gmx.net'; None if unusable as a
    mailbox directory name (empty, path separators, leading dot, odd characters)."""
    name = address.strip().strip("<>").strip().lower()
    suffix = "@" + domain.lower()
    if name.endswith(suffix):
        name = name[: -len(suffix)]
    if not name or name.startswith(".") or ".." in name or not _SAFE_NAME.match(name):
        return None
    return name


@dataclass
class StoredMessage:
    key: str  # Maildir unique name (without the ':2,' info)
    path: str  # current file path
    flags: str  # Maildir info letters, sorted
    uid: int
    _data: bytes | None = field(default=None, repr=False)

    @property
    def uidl(self) -> str:
        """A stable POP3 unique-id (RFC 1939: 1-70 printable characters)."""
        return hashlib.sha1(self.key.encode()).hexdigest()

    def data(self) -> bytes:
        """The message in CRLF form."""
        if self._data is None:
            with open(self.path, "rb") as f:
                self._data = to_crlf(f.read())
        return self._data

    @property
    def size(self) -> int:
        return len(self.data())


class _UidState:
    def __init__(self, at_least: int = 0) -> None:
        self.uidvalidity = max(int(time.time()), at_least)
        self.uidnext = 1
        self.uids: dict[str, int] = {}


WELCOME_SUBJECT = "Welcome to the mailrun sandbox"


def welcome_message(name: str, domain: str) -> bytes:
    """The message a new mailbox starts with (CRLF). Its body has a line starting with '.' and a
    lone '.' line, which a POP3 server must byte-stuff (RFC 1939 section 3)."""
    address = name if "@" in name else f"{name}@{domain}"
    lines = [
        f"Return-Path: <postmaster@{domain}>",
        f"Delivered-To: {address}",
        f"From: mailrun sandbox <postmaster@{domain}>",
        f"To: <{address}>",
        f"Subject: {WELCOME_SUBJECT}",
        f"Date: {format_datetime(datetime.now(UTC))}",
        f"Message-ID: <welcome.{secrets.token_hex(8)}@{domain}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"Hello {address},",
        "",
        "the mailrun sandbox put this message here when it created your mailbox, so that",
        "receive scenarios (POP3 RETR, IMAP FETCH) have something to read from the start.",
        "",
        ".this line starts with a dot: POP3 sends it as '..this', clients show '.this'",
        ".",
        "The line above is a single dot; stuffed as '..', it does not end the message.",
        "",
        "-- ",
        "mailrun sandbox",
    ]
    return "".join(line + "\r\n" for line in lines).encode("ascii")


class MailStore:
    def __init__(self, root: Path, domain: str, *, welcome: bool = False):
        self.root = Path(root)
        self.domain = domain
        self.welcome = welcome
        self._uidstate: dict[str, _UidState] = {}
        self._cache: dict[tuple[str, str], bytes] = {}
        self.locks: set[str] = set()  # mailboxes held by a POP3 session (RFC 1939 maildrop lock)
        # called with a mailbox's name after a message is added, re-flagged or removed (IMAP IDLE)
        self.watchers: set[Callable[[str], None]] = set()
        self._dropped: dict[str, int] = {}  # a deleted mailbox's UIDVALIDITY: a new one gets more
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def maildir(self, name: str) -> mailbox.Maildir:
        return mailbox.Maildir(self.path(name), factory=None, create=True)

    def ensure(self, name: str) -> bool:
        """Create the mailbox unless it exists; True if it was created (and welcomed, if on)."""
        if self.path(name).is_dir():
            return False
        md = self.maildir(name)
        if self.welcome:
            md.add(to_lf(welcome_message(name, self.domain)))
        return True

    def deliver(self, name: str, content: bytes) -> str:
        self.ensure(name)
        key = self.maildir(name).add(to_lf(content))
        self.notify(name)
        return key

    def add(self, name: str, content: bytes, *, flags: str = "", date: float | None = None) -> str:
        """Put a message into a mailbox with its flags and internal date (the file's mtime), as
        IMAP APPEND and COPY do; unlike `deliver`, a new mailbox gets no welcome message."""
        key = self.maildir(name).add(to_lf(content))  # bytes: stored exactly, in new/
        path = self.path(name) / "new" / key
        if flags:
            target = self.path(name) / "cur" / f"{key}:2,{''.join(sorted(set(flags)))}"
            os.rename(path, target)
            path = target
        if date is not None:
            os.utime(path, (date, date))
        self.notify(name)
        return key

    def drop(self, name: str) -> None:
        """Delete a mailbox and its messages (IMAP DELETE); made again, it has a new UIDVALIDITY."""
        shutil.rmtree(self.path(name), ignore_errors=True)
        st = self._uidstate.pop(name, None)
        if st is not None:
            self._dropped[name] = st.uidvalidity
        self._cache = {k: v for k, v in self._cache.items() if k[0] != name}

    def notify(self, name: str) -> None:
        for watcher in list(self.watchers):
            watcher(name)

    def uidvalidity(self, name: str) -> int:
        return self._uid_state(name).uidvalidity

    def uidnext(self, name: str) -> int:
        return self._uid_state(name).uidnext

    def _uid_state(self, name: str) -> _UidState:
        st = self._uidstate.get(name)
        if st is None:
            st = self._uidstate[name] = _UidState(self._dropped.get(name, -1) + 1)
        return st

    def scan(self, name: str) -> list[StoredMessage]:
        """Every message of a mailbox in delivery order, with a UID each (assigned on first sight)."""
        base = self.path(name)
        found: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            try:
                entries = os.listdir(base / sub)
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.startswith("."):
                    continue
                key, _, info = entry.partition(":")
                flags = info[2:] if info.startswith("2,") else ""
                found[key] = (str(base / sub / entry), "".join(sorted(flags)))
        st = self._uid_state(name)
        for gone in set(st.uids) - set(found):
            del st.uids[gone]
            self._cache.pop((name, gone), None)
        for key in sorted((k for k in found if k not in st.uids), key=lambda k: _order(k, found[k][0])):
            st.uids[key] = st.uidnext
            st.uidnext += 1
        out = []
        for key, (path, flags) in found.items():
            msg = StoredMessage(key, path, flags, st.uids[key])
            cached = self._cache.get((name, key))
            if cached is not None:
                msg._data = cached
            out.append(msg)
        out.sort(key=lambda m: m.uid)
        for m in out:
            self._cache[(name, m.key)] = m.data()
        return out

    def set_flags(self, name: str, msg: StoredMessage, flags: str) -> bool:
        """Rename the message file to carry `flags`; False if the message is gone."""
        flags = "".join(sorted(set(flags)))
        base = self.path(name)
        new_path = str(base / "cur" / f"{msg.key}:2,{flags}")
        if new_path == msg.path:
            msg.flags = flags
            return True
        for attempt in range(2):
            try:
                os.rename(msg.path, new_path)
                break
            except FileNotFoundError:
                # Another session renamed (re-flagged) or removed it: find where it is now.
                current = self._locate(base, msg.key)
                if current is None or attempt:
                    return False
                msg.path = current
        msg.path = new_path
        msg.flags = flags
        self.notify(name)
        return True

    @staticmethod
    def _locate(base: Path, key: str) -> str | None:
        for sub in ("new", "cur"):
            try:
                for entry in os.listdir(base / sub):
                    if entry == key or entry.startswith(key + ":"):
                        return str(base / sub / entry)
            except FileNotFoundError:
                continue
        return None

    def remove(self, name: str, msg: StoredMessage) -> None:
        try:
            os.unlink(msg.path)
        except FileNotFoundError:
            current = self._locate(self.path(name), msg.key)
            if current is not None:
                os.unlink(current)
        self._cache.pop((name, msg.key), None)
        self.notify(name)


def arrival_key(key: str) -> tuple:
    """A Maildir key's place in delivery order, for readers outside the loop thread (tests)."""
    return _order(key, "")


def _order(key: str, path: str) -> tuple:
    m = _KEY_ORDER.match(key)
    if m:
        return (int(m[1]), int(m[2]), int(m[4]), key)
    try:
        return (int(os.stat(path).st_mtime), 0, 0, key)
    except OSError:
        return (0, 0, 0, key)
