"""One reply against its stored entry: equal, or a unified diff that names the lines."""

from __future__ import annotations

EOF_TEXT = "<EOF>"  # what a snapshot stores for a step whose server closed, as `S: EOF` expected


def unified(stored: str, now: str, key: str, path: str) -> str | None:
    """None when the two texts are equal, else their unified diff: `-` what the snapshot holds,
    `+` what the server said now (both masked), with up to 3 lines of context and the line
    numbers of the reply in each hunk header."""
    if stored == now:
        return None
    import difflib

    lines = difflib.unified_diff(
        stored.split("\n"),
        now.split("\n"),
        fromfile=f"{path} ({key})",
        tofile="reply now",
        lineterm="",
    )
    return "\n".join(lines)
