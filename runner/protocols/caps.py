"""Which replies carry a server's capability list, and how to read it: protocol knowledge, sans-IO
(a Reply and the command it answers in, a mapping out; no socket, no clock).

A capability list is a mapping NAME -> value, NAME upper-cased, the value the keyword's
parameters as the server wrote them (space-separated; '' for a bare keyword):

    smtp, lmtp  the 250 reply to EHLO or LHLO (RFC 5321 4.1.1.1): each line after the first is
          `KEYWORD [params]`: {"SIZE": "10240000", "AUTH": "PLAIN LOGIN", "STARTTLS": ""};
          the old `AUTH=PLAIN LOGIN` form adds to AUTH (each mechanism once)
    pop3  the +OK reply to CAPA (RFC 2449): each body line is `TAG [params]`; the SASL
          mechanisms are under SASL and, so that AUTH=PLAIN means the same everywhere, AUTH
    imap  any reply with an untagged `* CAPABILITY ...` line or a `[CAPABILITY ...]` response
          code on an OK/PREAUTH line (the greeting, a LOGIN's or AUTHENTICATE's OK, the
          CAPABILITY command's): each atom `NAME` or `NAME=VALUE`; the values of one NAME are
          joined: AUTH=PLAIN AUTH=LOGIN -> {"AUTH": "PLAIN LOGIN"}

`EXTRACTORS` is the one table (protocol name -> function); `capabilities()` asks it. A
function returns None when the reply carries no capability list. `CARRIERS` says, for the load
checks, which commands' replies may carry one ("*": any reply, the greeting included).
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.protocols.base import Reply

__all__ = ["CARRIERS", "EXTRACTORS", "capabilities", "may_carry"]


#: protocol -> the command verbs whose reply may carry a capability list ("*": any reply)
CARRIERS: dict[str, frozenset[str]] = {
    "smtp": frozenset({"EHLO", "LHLO"}),
    "lmtp": frozenset({"LHLO", "EHLO"}),
    "pop3": frozenset({"CAPA"}),
    "imap": frozenset({"*"}),
}


def _add(out: dict[str, str], name: str, value: str) -> None:
    """NAME's parameters, with those of an earlier line of the same NAME first (each once)."""
    name = name.upper()
    words = out.get(name, "").split()
    seen = {w.upper() for w in words}
    for w in value.split():
        if w.upper() not in seen:
            seen.add(w.upper())
            words.append(w)
    out[name] = " ".join(words)


def _keyword_lines(lines: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in lines:
        keyword, _, params = text.strip().partition(" ")
        if not keyword:
            continue
        if "=" in keyword:  # SMTP's pre-RFC `AUTH=LOGIN PLAIN`
            keyword, _, first = keyword.partition("=")
            params = f"{first} {params}".strip()
        _add(out, keyword, " ".join(params.split()))
    return out


#: the lines of a reply read for its capability list: a real one has a few dozen; a hostile
#: server's millions of `250-` lines are not decoded and kept one string each for it
MAX_LINES = 1000


def smtp(command: str | None, reply: Reply) -> dict[str, str] | None:
    if _verb(command) not in CARRIERS["smtp"] or reply.code != "250":
        return None
    return _keyword_lines(reply.texts[1 : MAX_LINES + 1])


def pop3(command: str | None, reply: Reply) -> dict[str, str] | None:
    if _verb(command) not in CARRIERS["pop3"] or reply.code != "+OK" or not reply.multiline:
        return None
    out = _keyword_lines(reply.texts[1 : MAX_LINES + 1])
    if "SASL" in out:
        _add(out, "AUTH", out["SASL"])
    return out


_IMAP_UNTAGGED = re.compile(r"\* CAPABILITY(?: (.*))?$", re.IGNORECASE)
_IMAP_ANY = re.compile(rb"CAPABILITY", re.IGNORECASE)
_IMAP_CODE = re.compile(r"\S+ (?:OK|PREAUTH) \[CAPABILITY(?: ([^\]]*))?\]", re.IGNORECASE)


def imap(command: str | None, reply: Reply) -> dict[str, str] | None:
    if _IMAP_ANY.search(reply.raw) is None:  # one scan of the bytes, not a match per line
        return None
    atoms = None
    lines = reply.lines
    # (a long reply: its first lines and its status line, whose code may carry the list)
    for line in (*lines[:MAX_LINES], *lines[-1:]) if len(lines) > MAX_LINES else lines:
        m = _IMAP_UNTAGGED.match(line) or _IMAP_CODE.match(line)
        if m is not None:
            atoms = (m.group(1) or "").split()  # the last list in a reply wins
    if atoms is None:
        return None
    out: dict[str, str] = {}
    for atom in atoms:
        name, _, value = atom.partition("=")
        _add(out, name, value)
    return out


def _verb(command: str | None) -> str:
    return command.split(None, 1)[0].upper() if command and command.strip() else ""


EXTRACTORS: dict[str, Callable[[str | None, Reply], dict[str, str] | None]] = {
    "smtp": smtp,
    "lmtp": smtp,  # LHLO's reply is EHLO's
    "pop3": pop3,
    "imap": imap,
}


def capabilities(protocol: str, command: str | None, reply: Reply) -> dict[str, str] | None:
    """The capability list `reply` carries (command: the `C:` line it answers, None for a reply
    read without sending, like the greeting), or None. The line protocol has none."""
    extract = EXTRACTORS.get(protocol)
    return None if extract is None else extract(command, reply)


def may_carry(protocol: str, command: str | None) -> bool:
    """Can the reply to `command` (None: a reply read without sending) carry a capability list?
    A command whose verb is a template may be anything: True."""
    verbs = CARRIERS.get(protocol, frozenset())
    if "*" in verbs:
        return True
    verb = _verb(command)
    return verb in verbs or "{{" in verb
