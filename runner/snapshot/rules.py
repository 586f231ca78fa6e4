"""The masks a snapshot applies to every reply before it compares or stores it: built-in, named
rules for what varies between runs of the same conversation with the same server, so that a
snapshot shows only what the server really changed.

A rule is a name, regular expressions and their replacements (a `<placeholder>`, keeping any
group the replacement names), optionally only for some protocols and only after some commands
(a POP3 LIST body is counts and sizes, a RETR body is not). Rules apply line by line, in the
order of RULES; a scenario turns one off with `snapshot: {rules: {NAME: off}}` and adds its own
with `snapshot: {ignore: [REGEX, ...]}` (each match, or each of its groups, becomes `<ignored>`).
What a rule leaves alone is compared as it is: a banner, an EHLO keyword, an enhanced status
code, SIZE's limit, a CAPABILITY list.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_HEX4 = r"[0-9A-Fa-f]{1,4}"
_IPV4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_IPV6 = (
    rf"(?:(?:{_HEX4}:){{7}}{_HEX4}"  # full
    rf"|(?:{_HEX4}:){{1,7}}:(?:{_HEX4}(?::{_HEX4}){{0,6}})?"  # 2001:db8::1, fe80::
    rf"|::{_HEX4}(?::{_HEX4}){{0,6}})"  # ::1
)


class Rule:
    """name: what `rules: {NAME: off}` says; subs: (compiled regex, replacement) in order;
    protocols / commands: where it applies (None: everywhere; commands are the first word of
    the step's `C:` line, upper case); about: one line for the README and messages."""

    __slots__ = ("name", "subs", "protocols", "commands", "about")

    def __init__(
        self,
        name: str,
        about: str,
        subs: Sequence[tuple[str, str]],
        protocols: Iterable[str] | None = None,
        commands: Iterable[str] | None = None,
    ):
        self.name = name
        self.about = about
        self.subs = tuple((re.compile(rx), repl) for rx, repl in subs)
        self.protocols = None if protocols is None else frozenset(protocols)
        self.commands = None if commands is None else frozenset(commands)

    def applies(self, protocol: str, command: str | None) -> bool:
        if self.protocols is not None and protocol not in self.protocols:
            return False
        return self.commands is None or command in self.commands

    def apply(self, line: str) -> str:
        for rx, repl in self.subs:
            line = rx.sub(repl, line)
        return line


#: The built-in rules, in the order they apply (run-id is the run's own value, see Masker).
RULES: tuple[Rule, ...] = (
    Rule(
        "message-id",
        "Message-ID headers; the <id> of Microsoft's 250 2.6.0",
        [
            (r"(?i)^((?:resent-)?message-id:\s*)\S.*$", r"\g<1><message-id>"),
            (r"^(250[ -]2\.6\.0 )<[^<>\s]+>", r"\g<1><message-id>"),
        ],
    ),
    Rule(
        "timing",
        "Dovecot's and Cyrus' '(0.001 + 0.000 secs)', Exchange's 'N bytes in 0.123, 9.8 KB/sec'",
        [
            (r"\(\d+\.\d+(?: \+ \d+\.\d+)* secs?\)", "(<timing>)"),
            (r"\b\d+ bytes in \d+(?:\.\d+)?, \d+(?:\.\d+)? [KMG]?B/sec\b", "<size> bytes in <timing>"),
        ],
    ),
    Rule(
        "ip-address",
        "IPv4 and IPv6 addresses, and a port after one",
        [
            (rf"\[{_IPV6}\]:\d{{1,5}}\b", "[<ip>]:<port>"),
            (rf"(?<![\w.:/])(\[?){_IPV4}(\]?):\d{{1,5}}\b", r"\g<1><ip>\g<2>:<port>"),
            (rf"(?<![\w./]){_IPV4}(?![\w./])", "<ip>"),  # not a version: Sendmail's 8.17.1.9/8.17.1.9
            (rf"(?<![\w:.]){_IPV6}(?![\w:.])", "<ip>"),
        ],
    ),
    Rule(
        "date",
        "dates and times: RFC 5322, IMAP INTERNALDATE, ISO 8601, ctime, Unix seconds before Gmail's id, hh:mm:ss",
        [
            (
                rf"(?:{_DAY},?\s+)?\d{{1,2}}\s+{_MONTH}\s+\d{{2,4}}\s+\d{{1,2}}:\d{{2}}(?::\d{{2}})?"
                r"(?:\s+(?:[+-]\d{4}|[A-Z]{1,5}))?(?:\s+\([A-Za-z ]+\))?",
                "<date>",
            ),
            (rf"\b\d{{1,2}}-{_MONTH}-\d{{4}} \d{{2}}:\d{{2}}:\d{{2}} [+-]\d{{4}}", "<date>"),
            (
                r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|\s?[+-]\d{2}:?\d{2})?)?\b",
                "<date>",
            ),
            (rf"\b{_DAY} {_MONTH} [ \d]\d \d{{2}}:\d{{2}}:\d{{2}}(?: [A-Z]{{1,5}})? \d{{4}}\b", "<date>"),
            (r"\b1\d{9}\b(?= \S+ - gsmtp\b)", "<date>"),
            (r"\b\d{1,2}:\d{2}:\d{2}\b", "<time>"),
        ],
    ),
    Rule(
        "queue-id",
        "queue and transaction ids: Postfix 'queued as', Received 'with ESMTP id', Exim/GMX 'id=', "
        "Sendmail, Dovecot LMTP, Microsoft's InternalId",
        [
            (r"(\bqueued as )[0-9A-Za-z]+", r"\g<1><queue-id>"),
            (r"(\bwith [A-Za-z0-9]+ id )[\w.-]+", r"\g<1><queue-id>"),
            (r"\bid=[\w.-]+", "id=<queue-id>"),
            (r"^(250[ -]2\.0\.0 )\w+( Message accepted for delivery)", r"\g<1><queue-id>\g<2>"),
            (
                r"(> )[A-Za-z0-9+/]{22}(?::R\d+)?( Saved)",
                r"\g<1><queue-id>\g<2>",
            ),  # Dovecot LMTP, each recipient
            (r"(\bdelivered as )[0-9A-Za-z]+", r"\g<1><queue-id>"),  # the sandbox's LMTP
            (r"\bInternalId=\d+", "InternalId=<queue-id>"),
        ],
    ),
    Rule(
        "session-id",
        "session and connection ids: Gmail's '... - gsmtp' token and 'ready for requests from' id, "
        "a POP3 APOP greeting's <...@...>, Exchange's [base64] greeting tag",
        [
            (r"[\w.-]*\d[\w.-]*(?= - gsmtp\b)", "<session-id>"),
            (r"(ready for requests from \S+ )\S+", r"\g<1><session-id>"),
            (r"^(\+OK .*)<[^<>\s@]+@[^<>\s]+>$", r"\g<1><session-id>"),
            (r"^(\*? ?(?:\+OK|OK) .*)\[[A-Za-z0-9+/]{16,}={0,2}\]$", r"\g<1>[<session-id>]"),
        ],
    ),
    Rule(
        "server-node",
        "the node of a load-balanced provider: Microsoft's per-connection host names, GMX's (mrgmx...)",
        [
            (
                r"\b[A-Z]{2,}\d[A-Z0-9]{4,}\.(?:[A-Za-z0-9-]+\.)*(?:outlook\.com|office365\.com|OUTLOOK\.COM)\b",
                "<server-node>",
            ),
            (r"\(mr[a-z]+\d+\)", "(<server-node>)"),
        ],
    ),
    Rule(
        "mailbox-state",
        "IMAP UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, MODSEQ, UID values, APPENDUID/COPYUID; the \\Recent "
        "flag, left out (it says which session saw a message first)",
        [
            (r" ?\\Recent\b(?=[^()]*\))", ""),
            (r"(FLAGS \() ", r"\g<1>"),
            (r"\bUIDVALIDITY \d+", "UIDVALIDITY <uidvalidity>"),
            (r"\bUIDNEXT \d+", "UIDNEXT <uidnext>"),
            (r"\bHIGHESTMODSEQ \d+", "HIGHESTMODSEQ <modseq>"),
            (r"\bMODSEQ \(\d+\)", "MODSEQ (<modseq>)"),
            (r"\bUID \d+", "UID <uid>"),
            (r"\[(APPENDUID|COPYUID) \d+ [\d:,]+(?: [\d:,]+)?\]", r"[\g<1> <uids>]"),
        ],
        protocols=("imap",),
    ),
    Rule(
        "message-count",
        "message counts: IMAP EXISTS, RECENT, EXPUNGE, FETCH and SEARCH numbers, UNSEEN, STATUS "
        "MESSAGES; POP3 STAT, 'N messages', LIST and UIDL lines",
        [
            (r"^\* \d+ (EXISTS|RECENT|EXPUNGE|FETCH)\b", r"* <n> \g<1>"),
            (r"\b(UNSEEN|MESSAGES|RECENT|DELETED) \d+", r"\g<1> <n>"),
            (r"^\* SEARCH(?: \d+)+$", "* SEARCH <ids>"),
            (r"^(\+OK )\d+( messages?\b)", r"\g<1><n>\g<2>"),
        ],
        protocols=("imap", "pop3"),
    ),
    Rule(
        "message-count",
        "POP3 STAT, LIST and UIDL: each line a message number and its size or unique id",
        [
            (r"^(\+OK )\d+ \d+$", r"\g<1><n> <size>"),
            (r"^(\+OK )\d+ \S+$", r"\g<1><n> <uid>"),  # `UIDL 1`
            (r"^\d+ \d+$", "<n> <size>"),
            (r"^\d+ \S+$", "<n> <uid>"),
        ],
        protocols=("pop3",),
        commands=("STAT", "LIST", "UIDL"),
    ),
    Rule(
        "message-size",
        "message sizes: IMAP RFC822.SIZE, STATUS SIZE and {literal} sizes; POP3 'N octets'",
        [
            (r"\b(RFC822\.SIZE|SIZE) \d+(?=[ )]|$)", r"\g<1> <size>"),
            (r"\{\d+\+?\}$", "{<size>}"),
            (r"\b\d+ octets\b", "<size> octets"),
        ],
        protocols=("imap", "pop3"),
    ),
)

#: every rule name a scenario may turn off (run-id first: it applies before the others)
NAMES: tuple[str, ...] = ("run-id", *dict.fromkeys(r.name for r in RULES))


def unknown_rule_problem(name: str) -> str | None:
    """None for a rule name that exists, else the message naming the closest ones."""
    if name in NAMES:
        return None
    import difflib

    close = difflib.get_close_matches(name, NAMES, n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown snapshot rule {name!r}{hint} (rules: {', '.join(NAMES)})"


def ignore_problem(regex: str) -> str | None:
    """None for an `ignore` regex that compiles (it is not a template), else why not."""
    try:
        re.compile(regex)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    return None


class Masker:
    """The masks of one scenario run: its `ignore` regexes first (each match, or each group of
    one, becomes `<ignored>`), then its run id (`<run_id>`), then every built-in rule it did not
    turn off."""

    __slots__ = ("ignore", "run_id", "rules")

    def __init__(self, off: Iterable[str] = (), ignore: Iterable[str] = (), run_id: str = ""):
        off = frozenset(off)
        self.ignore = tuple(re.compile(rx) for rx in ignore)
        self.run_id = run_id if run_id and "run-id" not in off else ""
        self.rules = tuple(r for r in RULES if r.name not in off)

    def mask(self, lines: Iterable[str], protocol: str, command: str | None = None) -> list[str]:
        rules = [r for r in self.rules if r.applies(protocol, command)]
        out = []
        for line in lines:
            for rx in self.ignore:
                line = rx.sub(_ignored, line)
            if self.run_id:
                line = line.replace(self.run_id, "<run_id>")
            for rule in rules:
                line = rule.apply(line)
            out.append(line)
        return out


def _ignored(m: re.Match) -> str:
    """A match of an `ignore` regex: its groups become `<ignored>` (the rest is kept), or the
    whole match when it has none."""
    if not m.re.groups:
        return "<ignored>"
    text, start = m.group(0), m.start()
    out, at = [], 0
    for i in range(1, m.re.groups + 1):
        s, e = m.span(i)
        if s < 0 or s - start < at:
            continue
        out.append(text[at : s - start])
        out.append("<ignored>")
        at = e - start
    out.append(text[at:])
    return "".join(out)
