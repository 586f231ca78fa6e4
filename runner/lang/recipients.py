"""LMTP's `S:` after a message (RFC 2033): one reply per accepted recipient, matched per
recipient (runner.protocols.lmtp gives them together, as a reply with `parts`)."""

from __future__ import annotations

from runner.lang.patterns import MATCHED, MatchResult, Pattern, summarize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.lang.render import Context
    from runner.protocols.base import Reply


class RecipientsPattern(Pattern):
    """LMTP (RFC 2033): after a message the server answers once per accepted recipient, and the
    framer gives those replies together (a reply with `parts`). There a list `S:` is one pattern
    per recipient, in RCPT order, and a single pattern must hold for every recipient. Any other
    reply is matched by `whole`, the pattern as SMTP reads it (a list: alternatives)."""

    def __init__(self, whole: Pattern, each: list[Pattern] | None):
        self.whole = whole
        self.each = None if each is None else tuple(each)

    @property
    def is_eof(self) -> bool:  # type: ignore[override]
        return self.whole.is_eof

    @property
    def accepts_eof(self) -> bool:
        return self.whole.accepts_eof

    def match(self, reply: Reply, ctx: Context) -> MatchResult:
        parts = getattr(reply, "parts", None)
        if parts is None:
            return self.whole.match(reply, ctx)
        patterns = self.each if self.each is not None else (self.whole,) * len(parts)
        if len(patterns) != len(parts):
            return MatchResult(
                False,
                f"expected {len(patterns)} replies (one per recipient), got {len(parts)}: "
                + "; ".join(ctx.redactor.redact(summarize(p, "smtp")) for p in parts),
            )
        for number, (pattern, part) in enumerate(zip(patterns, parts, strict=True), start=1):
            outcome = pattern.match(part, ctx)
            if not outcome.ok:
                return MatchResult(False, f"recipient {number} of {len(parts)}: {outcome.reason}")
        return MATCHED

    def describe(self) -> str:
        return self.whole.describe()

    def templates(self) -> list[str]:
        return self.whole.templates()
