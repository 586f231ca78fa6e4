"""A reply's lines without a str per line: where the lines are in the raw bytes (a Layout per
framing), and Lines, the sequence that decodes each line from them when it is read.

A reply of many short lines held as a tuple of str costs 30 to 50 times its bytes (a str
object per line, twice: lines and texts); Lines costs nothing beyond the raw bytes, so the
memory a reply takes is about its size whatever its line lengths. Small replies (the usual
ones) still get plain tuples: reply_lines() chooses.
"""

from __future__ import annotations

from itertools import islice

from runner.protocols.base import decode

#: replies up to this size get their lines as tuples of str when framed; larger ones build each
#: line from `raw` when asked (Lines), so a reply costs about its bytes, whatever its lines
EAGER_LINES_BELOW = 64 << 10


class Layout:
    """Where the lines of a complete reply are in its raw bytes: one per framing (SMTP, POP3
    single or multi-line, IMAP, plain lines). `spans(raw)` yields (start, text_start, end) per
    line: the line is raw[start:end] (line end, POP3 byte-stuffing removed), its text (what
    follows the code) raw[text_start:end]. count and last have faster forms in subclasses."""

    def spans(self, raw: bytes):
        raise NotImplementedError

    def count(self, raw: bytes) -> int:
        return sum(1 for _ in self.spans(raw))

    def last(self, raw: bytes) -> tuple[int, int, int] | None:
        span = None
        for span in self.spans(raw):  # noqa: B007 - the last one is wanted
            pass
        return span

    def text(self, raw: bytes) -> str:
        """The lines joined with LF, decoded (one str; no list of lines on the way). Decoding
        the joined bytes equals joining the decoded lines: UTF-8 never has a LF byte inside a
        character, and an incomplete character before a LF is escaped the same way."""
        out = bytearray()
        first = True
        for piece in self.pieces(raw):
            if not first:
                out += b"\n"
            out += piece
            first = False
        return decode(out)

    def pieces(self, raw: bytes):
        """What text() joins with LF: each line's bytes (a subclass may give several lines in
        one piece, already joined)."""
        view = memoryview(raw)
        for start, _t, end in self.spans(raw):
            yield view[start:end]


class LinesLayout(Layout):
    """Plain lines (the line protocol, a partial reply): split on LF, trailing CRs dropped, an
    unterminated last piece is a line when not empty."""

    def spans(self, raw: bytes):
        pos, n = 0, len(raw)
        find = raw.find
        while pos < n:
            i = find(b"\n", pos)
            nxt = n if i < 0 else i + 1
            end = n if i < 0 else i
            while end > pos and raw[end - 1] == 0x0D:
                end -= 1
            yield pos, pos, end
            pos = nxt


PLAIN_LINES = LinesLayout()


class Lines:
    """A reply's lines (or texts) built from its raw bytes when asked: a read-only sequence of
    str (len, iteration, indexing, slicing; equal to the tuple of the same lines). Holding it
    costs nothing beyond `raw`; each line is decoded when it is read. `fn` maps every line
    (a masked copy of a reply: Redactor.redact)."""

    __slots__ = ("_raw", "_layout", "_texts", "_fn", "_n")

    def __init__(self, raw: bytes, layout: Layout, *, texts: bool = False, fn=None):
        self._raw = raw
        self._layout = layout
        self._texts = texts
        self._fn = fn
        self._n: int | None = None

    def _line(self, span: tuple[int, int, int]) -> str:
        s = decode(self._raw[span[1] if self._texts else span[0] : span[2]])
        return self._fn(s) if self._fn is not None else s

    def __iter__(self):
        raw, k, fn = self._raw, 1 if self._texts else 0, self._fn
        for span in self._layout.spans(raw):
            s = decode(raw[span[k] : span[2]])
            yield fn(s) if fn is not None else s

    def __len__(self) -> int:
        if self._n is None:
            self._n = self._layout.count(self._raw)
        return self._n

    def __bool__(self) -> bool:
        return next(iter(self._layout.spans(self._raw)), None) is not None

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.start, index.stop, index.step
            if (start or 0) >= 0 and (stop is None or stop >= 0) and (step or 1) > 0:
                return tuple(islice(self, start, stop, step))
            return tuple(self)[index]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError("reply line index out of range")
        if i == n - 1:
            span = self._layout.last(self._raw)
            assert span is not None
            return self._line(span)
        return next(islice(self, i, None))

    def mapped(self, fn) -> Lines:
        """The same lines, each passed through fn (after any fn already applied)."""
        inner = self._fn
        return Lines(
            self._raw, self._layout, texts=self._texts, fn=fn if inner is None else lambda s: fn(inner(s))
        )

    def text(self) -> str:
        t = self._layout.text(self._raw)
        return self._fn(t) if self._fn is not None else t

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lines | tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))


def reply_lines(raw: bytes, layout: Layout) -> tuple[tuple[str, ...] | Lines, tuple[str, ...] | Lines]:
    """(lines, texts) of a framed reply: tuples for a small reply, Lines for a large one."""
    if len(raw) < EAGER_LINES_BELOW:
        spans = list(layout.spans(raw))
        lines = tuple(decode(raw[s:e]) for s, _t, e in spans)
        texts = tuple(
            line if t == s else decode(raw[t:e]) for line, (s, t, e) in zip(lines, spans, strict=True)
        )
        return lines, texts
    return Lines(raw, layout), Lines(raw, layout, texts=True)
