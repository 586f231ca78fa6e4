"""The sandbox IMAP server's command syntax: arguments into atoms, strings and lists, message
sets, search dates, and the two ways a command fails (BadCommand: tagged BAD, Refused: NO)."""

from __future__ import annotations

import datetime as dt
import re

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")
_ATOM_END = (b" ", b"(", b")", b'"', b"{")


class BadCommand(Exception):
    """Answer with a tagged BAD and this text."""


class Refused(Exception):
    """Answer with a tagged NO and this text."""


class Q(str):
    """A quoted string or literal (as opposed to an atom); a literal keeps its bytes in `raw`."""

    raw: bytes | None = None


REPLIED = "already replied"  # a command handler's result: the tagged reply has been sent
_ATOM_SPECIALS = re.compile(r'[\s(){%*"\\\]\x00-\x1f\x7f]')


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
        else:
            read = _quoted if c == b'"' else _literal if c == b"{" else _atom
            value, i = read(data, i)
            stack[-1].append(value)
    if len(stack) != 1:
        raise BadCommand("Missing ')'")
    return root


def _quoted(data: bytes, i: int) -> tuple[Q, int]:
    """The quoted string starting at data[i] ('"'), and the position after it."""
    out = bytearray()
    i += 1
    n = len(data)
    while True:
        if i >= n:
            raise BadCommand("Missing '\"'")
        ch = data[i : i + 1]
        if ch == b"\\" and i + 1 < n:
            out += data[i + 1 : i + 2]
            i += 2
        elif ch == b'"':
            return Q(out.decode("utf-8", "replace")), i + 1
        else:
            out += ch
            i += 1


def _literal(data: bytes, i: int) -> tuple[Q, int]:
    """The literal {n}CRLF... starting at data[i] ('{'), and the position after it."""
    m = _LITERAL.match(data, i)
    if not m:
        raise BadCommand("Invalid literal")
    start = m.end()
    size = int(m[1])
    if start + size > len(data):
        raise BadCommand("Literal shorter than announced")
    value = Q(data[start : start + size].decode("utf-8", "replace"))
    value.raw = data[start : start + size]
    return value, start + size


def _atom(data: bytes, i: int) -> tuple[str, int]:
    """The atom starting at data[i] (brackets may hold spaces: BODY[HEADER.FIELDS (A B)]), and
    the position after it."""
    j, n = i, len(data)
    depth = 0
    while j < n:
        ch = data[j : j + 1]
        if ch == b"[":
            depth += 1
        elif ch == b"]":
            depth = max(0, depth - 1)
        elif depth == 0 and ch in _ATOM_END:
            break
        j += 1
    return data[i:j].decode("utf-8", "replace"), j


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


def parse_search_date(text: str) -> dt.date:
    m = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", str(text))
    if not m or m[2].capitalize() not in MONTHS:
        raise BadCommand(f"Invalid search date {text!r}")
    try:
        return dt.date(int(m[3]), MONTHS.index(m[2].capitalize()) + 1, int(m[1]))
    except ValueError:
        raise BadCommand(f"Invalid search date {text!r}") from None


def parse_date_time(text: str) -> float:
    """An APPEND date-time ('7-Dec-2026 01:02:03 +0100', RFC 3501 date-time) as a timestamp."""
    m = re.fullmatch(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", str(text))
    if not m or m[2].capitalize() not in MONTHS:
        raise BadCommand(f"Invalid date-time {str(text)[:40]!r}")
    offset = dt.timedelta(hours=int(m[8]), minutes=int(m[9])) * (1 if m[7] == "+" else -1)
    try:
        when = dt.datetime(
            int(m[3]),
            MONTHS.index(m[2].capitalize()) + 1,
            int(m[1]),
            int(m[4]),
            int(m[5]),
            int(m[6]),
            tzinfo=dt.timezone(offset),
        )
    except ValueError:
        raise BadCommand(f"Invalid date-time {str(text)[:40]!r}") from None
    return when.timestamp()


def astring(value: str) -> str:
    """A mailbox name for a reply: an atom as is, else a quoted string."""
    if value and not _ATOM_SPECIALS.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: list[int]) -> str:
    """[1, 2, 3, 7] -> '1:3,7' (a COPYUID / APPENDUID uid-set, in the order given)."""
    out: list[list[int]] = []
    for u in uids:
        if out and u == out[-1][1] + 1:
            out[-1][1] = u
        else:
            out.append([u, u])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in out)
