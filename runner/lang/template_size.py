"""How long a template renders, estimated before the run (the loader's check for a template
bomb: each variable ten times the one before)."""

from __future__ import annotations

from runner.lang.templates import Name, Str

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.lang.templates import Template


def rendered_size(t: Template, sizes: Mapping[str, int]) -> int:
    """About how long `t` renders, given the sizes of the names it uses (a name not in sizes
    counts 0: a --var, an env value or a capture is not known before the run)."""
    n = len(t.literal_text())
    for e in t.expressions:
        op = e.operand
        if isinstance(op, Str):
            size = len(op.value)
        elif isinstance(op, Name):
            size = sizes.get(op.name, 0)
        else:  # auth_plain / xoauth2: base64 of its arguments and a few bytes
            size = (
                (sum(sizes.get(a.name, 0) if isinstance(a, Name) else len(a.value) for a in op.args) + 40)
                * 4
                // 3
            )
        for f in e.filters:
            if f.name == "b64":
                size = (size + 2) // 3 * 4
            elif f.name == "default":
                size = max(size, len(f.arg or ""))
        n += size
    return n
