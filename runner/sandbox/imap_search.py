"""The sandbox IMAP server's SEARCH: one command's search keys, checked once as a whole (even on
an empty mailbox) and then evaluated against every selected message."""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import default as default_policy

from runner.sandbox.imap_fetch import internal_date, split_message
from runner.sandbox.imap_syntax import BadCommand, in_ranges, parse_search_date, parse_seqset
from runner.sandbox.store import StoredMessage

#: search key -> the Maildir flag letter it tests (UNkey: the flag is not set)
FLAG_KEYS = {"ANSWERED": "R", "DELETED": "T", "FLAGGED": "F", "SEEN": "S", "DRAFT": "D"}
HEADER_KEYS = ("SUBJECT", "FROM", "TO", "CC", "BCC")
#: the keys that take one argument (Search._with_argument)
ARGUMENT_KEYS = (*HEADER_KEYS, "BODY", "TEXT", "LARGER", "SMALLER", "BEFORE", "ON", "SINCE", "UID")


class Search:
    """`keys` (the SEARCH arguments after CHARSET) against `msgs` (the selected messages, in
    sequence order); `headers` caches parsed headers by message key for the session; `recent`
    holds the keys of the messages that are \\Recent in it."""

    def __init__(
        self,
        keys: list,
        msgs: list[StoredMessage],
        headers: dict[str, object],
        recent: frozenset[str] | set[str],
    ):
        self.keys = keys
        self.msgs = msgs
        self.headers = headers
        self.recent = recent
        # every key is looked at once, so a bad one is refused even when no message is there
        self._all(keys, 1, StoredMessage("0.probe", "", "", 0, b"\r\n"))

    def found(self, uid: bool) -> list[int]:
        """The sequence numbers (or UIDs) of the messages that match every key."""
        return [
            msg.uid if uid else seq for seq, msg in enumerate(self.msgs, 1) if self._all(self.keys, seq, msg)
        ]

    def _all(self, keys: list, seq: int, msg: StoredMessage) -> bool:
        """Every key of `keys` matches (each is evaluated: a bad key is an error either way)."""
        ok, pos = True, 0
        while pos < len(keys):
            r, pos = self._match(keys, pos, seq, msg)
            ok = ok and r
        return ok

    def _match(self, keys: list, pos: int, seq: int, msg: StoredMessage) -> tuple[bool, int]:
        """Evaluate one search key at keys[pos]; return (matches, next position)."""
        if pos >= len(keys):
            raise BadCommand("Missing search key.")
        key = keys[pos]
        if isinstance(key, list):
            if not key:
                raise BadCommand("Empty search key list.")
            return self._all(key, seq, msg), pos + 1
        k = str(key).upper()
        if k == "NOT":
            r, p = self._match(keys, pos + 1, seq, msg)
            return not r, p
        if k == "OR":
            r1, p = self._match(keys, pos + 1, seq, msg)
            r2, p = self._match(keys, p, seq, msg)
            return r1 or r2, p
        if k == "ALL":
            return True, pos + 1
        if k in ("RECENT", "OLD"):
            return (msg.key in self.recent) == (k == "RECENT"), pos + 1
        if k == "NEW":  # recent and unseen
            return msg.key in self.recent and "S" not in msg.flags, pos + 1
        if k in FLAG_KEYS:
            return FLAG_KEYS[k] in msg.flags, pos + 1
        if k.startswith("UN") and k[2:] in FLAG_KEYS:
            return FLAG_KEYS[k[2:]] not in msg.flags, pos + 1
        if k == "HEADER":
            return self._header_has(msg, _argument(keys, pos, k, 1), _argument(keys, pos, k, 2)), pos + 3
        if re.fullmatch(r"[0-9:*,]+", k):
            return in_ranges(seq, parse_seqset(k, len(self.msgs))), pos + 1
        if k in ARGUMENT_KEYS:
            return self._with_argument(k, _argument(keys, pos, k, 1), msg), pos + 2
        raise BadCommand(f"Unknown or unsupported search key {k[:30]!r}.")

    def _with_argument(self, k: str, value: str, msg: StoredMessage) -> bool:
        """A key that takes one argument (SUBJECT x, LARGER n, SINCE date, UID set, ...)."""
        if k in HEADER_KEYS:
            return self._header_has(msg, k, value)
        if k in ("BODY", "TEXT"):
            header, text = split_message(msg.data())
            hay = text if k == "BODY" else header + text
            return value.lower().encode("utf-8") in hay.lower()
        if k in ("LARGER", "SMALLER"):
            try:
                n = int(value)
            except ValueError:
                raise BadCommand(f"{k} needs a number.") from None
            size = len(msg.data())
            return size > n if k == "LARGER" else size < n
        if k in ("BEFORE", "ON", "SINCE"):
            day = parse_search_date(value)
            got = internal_date(msg).date()
            return {"BEFORE": got < day, "ON": got == day, "SINCE": got >= day}[k]
        if k == "UID":
            return in_ranges(msg.uid, parse_seqset(value, self.msgs[-1].uid if self.msgs else 0))
        raise AssertionError(k)  # (ARGUMENT_KEYS names the keys above)

    def _header(self, msg: StoredMessage):
        h = self.headers.get(msg.key)
        if h is None:
            h = self.headers[msg.key] = BytesHeaderParser(policy=default_policy).parsebytes(
                split_message(msg.data())[0]
            )
        return h

    def _header_has(self, msg: StoredMessage, field: str, needle: str) -> bool:
        values = self._header(msg).get_all(field) or []
        if needle == "":
            return bool(values)
        return any(needle.lower() in str(v).lower() for v in values)


def _argument(keys: list, pos: int, k: str, offset: int) -> str:
    if pos + offset >= len(keys) or isinstance(keys[pos + offset], list):
        raise BadCommand(f"Search key {k} needs an argument.")
    return str(keys[pos + offset])
