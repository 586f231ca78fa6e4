"""The sandbox IMAP server's message data: FETCH items (parsed once per command, rendered per
message), flags in IMAP form, a message's header and text, and its internal date (the message
file's modification time, which APPEND and COPY set, as Dovecot keeps it for Maildir)."""

from __future__ import annotations

import datetime as dt
import os
import re

from runner.sandbox.imap_mime import Part, envelope, split_header
from runner.sandbox.imap_syntax import MONTHS, BadCommand, Q
from runner.sandbox.store import MAILDIR_TO_IMAP, StoredMessage

_FLAG_ORDER = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]


def imap_flags(maildir_flags: str, recent: bool = False) -> str:
    names = {MAILDIR_TO_IMAP[c] for c in maildir_flags if c in MAILDIR_TO_IMAP}
    return "(" + " ".join([*(f for f in _FLAG_ORDER if f in names), *(["\\Recent"] if recent else [])]) + ")"


def in_new(msg: StoredMessage) -> bool:
    """Still in the Maildir's new/: no IMAP session has seen it yet, so it is \\Recent to the
    first one that selects its mailbox (read-write), which moves it to cur/."""
    return os.path.basename(os.path.dirname(msg.path)) == "new"


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line, text)."""
    return split_header(data)


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
    try:
        ts = int(os.stat(msg.path).st_mtime)
    except OSError:  # renamed or removed by another session meanwhile: the delivery time
        m = re.match(r"^(\d+)\.", msg.key)
        ts = int(m[1]) if m else 0
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def format_internal_date(msg: StoredMessage) -> str:
    d = internal_date(msg)
    return f'"{d.day:2d}-{MONTHS[d.month - 1]}-{d.year:04d} {d.hour:02d}:{d.minute:02d}:{d.second:02d} +0000"'


_SIMPLE = ("UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "RFC822.HEADER", "ENVELOPE", "BODYSTRUCTURE")
_MACROS = {
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}


class FetchItem:
    def __init__(self, spec: str):
        self.spec = spec
        up = spec.upper()
        self.kind = up
        self.peek = False
        self.path: list[int] = []  # the MIME part: BODY[1.2]
        self.section = ""
        self.fields: set[str] = set()
        self.partial: tuple[int, int | None] | None = None
        self.sets_seen = False
        if up in _SIMPLE or up == "BODY":
            return
        if up in ("RFC822", "RFC822.TEXT"):
            self.sets_seen = True
            return
        m = re.fullmatch(
            r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK)\[(.*)\](?:<(\d+)(?:\.(\d+))?>)?", spec, re.I | re.S
        )
        if not m or m[1].upper().startswith("BINARY"):
            raise BadCommand(f"Unknown or unsupported FETCH item {spec[:40]!r}")
        self.kind = "BODY[]"
        self.peek = m[1].upper() == "BODY.PEEK"
        self.sets_seen = not self.peek
        self._parse_section(m[2].strip())
        if m[3] is not None:
            if m[4] is not None and int(m[4]) == 0:
                raise BadCommand("Partial length must be positive")
            self.partial = (int(m[3]), int(m[4]) if m[4] is not None else None)

    def _parse_section(self, section: str) -> None:
        """section-spec (RFC 3501 9): [part number] then HEADER, HEADER.FIELDS[.NOT] (...),
        TEXT, or (after a part number) MIME."""
        pm = re.match(r"([1-9]\d*(?:\.[1-9]\d*)*)(\.(?=\S)|$)", section)
        rest = section
        if pm:
            self.path = [int(n) for n in pm[1].split(".")]
            rest = section[pm.end() :]
        number = pm[1] + "." if pm else ""
        fm = re.fullmatch(r"(HEADER\.FIELDS(?:\.NOT)?)\s*\((.*)\)", rest, re.I | re.S)
        if fm:
            self.section = fm[1].upper()
            names = [n.strip('"') for n in fm[2].split()]
            if not names:
                raise BadCommand("HEADER.FIELDS needs at least one field name")
            self.fields = {n.upper() for n in names}
            self.section_text = f"{number}{self.section} ({' '.join(n.upper() for n in names)})"
        elif rest.upper() in ("", "HEADER", "TEXT") or (rest.upper() == "MIME" and pm):
            self.section = rest.upper()
            self.section_text = (number + self.section).rstrip(".")
        else:
            raise BadCommand(f"Unsupported body section [{section[:40]}]")

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
        if self.kind == "ENVELOPE":
            return b"ENVELOPE " + envelope(header)
        if self.kind in ("BODY", "BODYSTRUCTURE"):
            return self.kind.encode() + b" " + Part(data).structure(extended=self.kind == "BODYSTRUCTURE")
        if self.kind == "RFC822":
            return literal(b"RFC822", data)
        if self.kind == "RFC822.HEADER":
            return literal(b"RFC822.HEADER", header)
        if self.kind == "RFC822.TEXT":
            return literal(b"RFC822.TEXT", text)
        name = f"BODY[{self.section_text}]"
        if self.partial is not None:
            name += f"<{self.partial[0]}>"
        part = self._section(data, header, text)
        if self.partial is not None:
            start, count = self.partial
            part = part[start : start + count] if count is not None else part[start:]
        return literal(name.encode(), part)

    def _section(self, data: bytes, header: bytes, text: bytes) -> bytes:
        """The section's bytes; empty for a part that is not there (as Dovecot answers), and
        for HEADER or TEXT of a part that is no MESSAGE/RFC822 (RFC 3501 6.4.5)."""
        if self.path:
            found = Part(data).section(self.path)
            if found is None:
                return b""
            if self.section == "":
                return found.body
            if self.section == "MIME":
                return found.header
            if found.message is None:
                return b""
            header, text = found.message.header, found.message.body
        if self.section == "":
            return data
        if self.section == "HEADER":
            return header
        if self.section == "TEXT":
            return text
        return header_fields(header, self.fields, keep=self.section == "HEADER.FIELDS")


def literal(name: bytes, data: bytes) -> bytes:
    return name + b" {" + str(len(data)).encode() + b"}\r\n" + data


def parse_fetch_items(arg) -> list[FetchItem]:
    if isinstance(arg, list):
        specs = arg
    elif isinstance(arg, str) and not isinstance(arg, Q):
        specs = _MACROS.get(arg.upper(), [arg])
    else:
        raise BadCommand("Invalid FETCH items")
    if not specs or not all(isinstance(s, str) and not isinstance(s, Q) for s in specs):
        raise BadCommand("Invalid FETCH items")
    return [FetchItem(s) for s in specs]
