"""Checks of a reply's lines that `S:` mappings use beside code, text and re: `lines` (with
`order: any | sequence`) and IMAP `flags` (runner.lang.patterns.AllPattern asks them)."""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.protocols.base import Reply

ORDERS = ("any", "sequence")  # `lines` with `order:`


def lines_problem(compiled: list[tuple[re.Pattern, str]], order: str | None, reply: Reply) -> str | None:
    """Why the reply's lines do not satisfy `lines`, given as (compiled regex, as shown) (None:
    they do). Without `order` each regex
    must match some line; `any`: each a line of its own, in any order (servers list EXPUNGE and
    FETCH responses as they like); `sequence`: each a line of its own, in this order."""
    lines = reply.lines
    if order is None:
        for rx, display in compiled:
            if not any(rx.search(line) for line in lines):
                return f"expected a line matching '{display}'"
        return None
    if order == "sequence":
        at = 0
        for rx, display in compiled:
            while at < len(lines) and not rx.search(lines[at]):
                at += 1
            if at == len(lines):
                return f"expected the lines in order; none after the earlier ones matches '{display}'"
            at += 1
        return None
    taken: dict[int, int] = {}  # line index -> the regex that has it (augmenting paths)

    def place(i: int, seen: set[int]) -> bool:
        for j, line in enumerate(lines):
            if j not in seen and compiled[i][0].search(line):
                seen.add(j)
                if j not in taken or place(taken[j], seen):
                    taken[j] = i
                    return True
        return False

    for i, (_rx, display) in enumerate(compiled):
        if not place(i, set()):
            return f"expected a line of its own matching '{display}' (order: any)"
    return None


_FLAGS = re.compile(r"\bFLAGS \(([^)]*)\)", re.IGNORECASE)


def flags_problem(wanted: tuple[str, ...], reply: Reply) -> str | None:
    """`flags`: some FLAGS (...) list of the reply holds exactly these flags, in any order
    (system flags such as \\Seen compared without case; \\Recent left out unless wanted)."""

    def norm(flag: str) -> str:
        return flag.lower() if flag.startswith("\\") else flag

    want = {norm(f) for f in wanted}
    seen = [m.group(1).split() for line in reply.lines for m in _FLAGS.finditer(line)]
    # \Recent says which session saw a message first (RFC 3501): only checked when asked for
    recent = set() if "\\recent" in want else {"\\recent"}
    if any({norm(f) for f in flags} - recent == want for flags in seen):
        return None
    shown = "; ".join("(" + " ".join(f) + ")" for f in seen) if seen else "no FLAGS list"
    return f"expected FLAGS ({' '.join(wanted)}) in any order, got {shown}"
