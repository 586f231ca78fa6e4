"""Secret values and the redactor that keeps them out of every output.

`Secret` wraps a string so that printing, formatting or repr() shows `****`; the value comes out
only through `reveal()`. It is deliberately not a `str` subclass: `"AUTH " + secret` raises
TypeError instead of leaking.

`Redactor` collects every value that must never be shown (secret variables, their base64 forms,
and whatever runner.lang.templates derives from them) and masks whole occurrences of them in any
text or bytes: what the server sends (a reply is masked as a whole, never per transport read:
`RedactingStream` holds back a tail that could begin a value), and texts built from it.
What the client sends is masked differently: exactly where a secret was rendered into it
(runner.lang.render), so a one-character password does not turn `QUIT` into `****UIT`.

A value shorter than MIN_LENGTH characters is masked all the same, wherever it occurs in what
the server sends; `short_secret_warning` words the warning given for it before a run.
"""

from __future__ import annotations

import _thread  # the lock without importing threading (a few ms at start)
import base64
import re

MASK = "****"
MASK_BYTES = MASK.encode("ascii")


class Secret:
    """A string value that prints masked. Equality and hashing go by value; truthiness too."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret wants a str, got {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The real value: the only way to get it."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo) -> Secret:
        return self

    def __reduce__(self):  # pickling would write the value out; refuse it
        raise TypeError("a Secret cannot be pickled")


MIN_LENGTH = 4  # a secret shorter than this is warned about (short_secret_warning)
MIN_CORE = 6  # base64 characters: a shorter embedded form is not masked (it would hit plain text)


def short_secret_warning(where: str, name: str, value: str) -> str | None:
    """The warning for a secret shorter than MIN_LENGTH characters (None for a longer or empty
    one). Never shows the value."""
    if not value or len(value) >= MIN_LENGTH:
        return None
    n = len(value)
    return (
        f"{where}: secret '{name}' is only {n} character{'s' if n > 1 else ''} long (fewer than "
        f"{MIN_LENGTH}); it is masked wherever it occurs in what the server sends, which hides "
        "ordinary text and shows where the secret's characters appear"
    )


def _b64_forms(value: str) -> list[str]:
    """The standard base64 of value (with and without padding), and its three embedded forms:
    the characters that depend on value alone when value sits at byte offset 0, 1 or 2 of a
    longer base64-encoded text (a 334 challenge that decodes to 'your password is ...'), when
    they are at least MIN_CORE long."""
    raw = value.encode("utf-8")
    enc = base64.b64encode(raw).decode("ascii")
    forms = [enc, enc.rstrip("=")]
    for shift in range(3):
        padded = base64.b64encode(bytes(shift) + raw + bytes(2)).decode("ascii")
        start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6  # chars of value's bits only
        core = padded[start:end]
        if len(core) >= MIN_CORE and core not in forms:
            forms.append(core)
    return forms


# Every run of a scenario registers the same values: their alternations are built once.
_ALTERNATIONS: dict[tuple, re.Pattern] = {}


def _alternation(values: tuple) -> re.Pattern:
    pattern = _ALTERNATIONS.get(values)
    if pattern is None:
        if len(_ALTERNATIONS) >= 64:
            _ALTERNATIONS.clear()
        bar = b"|" if isinstance(values[0], bytes) else "|"
        pattern = _ALTERNATIONS[values] = re.compile(bar.join(map(re.escape, values)))
    return pattern


class Redactor:
    """Masks every registered value in any text. Thread-safe.

    `add(v)` registers v and its standard base64 encoding (with and without '=' padding), and
    the forms v takes inside a longer base64 text (_b64_forms).
    Every occurrence of any registered value is replaced; where occurrences overlap, the
    union of their spans becomes one MASK, so no fragment of a value survives."""

    def __init__(self, values=()):
        self._lock = _thread.allocate_lock()
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()  # longest first
        self._ordered_bytes: tuple[bytes, ...] = ()
        # one alternation per kind: a single scan answers "is any value here?" (the common
        # case is no), before the exact span-merging pass runs
        self._any: re.Pattern[str] | None = None
        self._any_bytes: re.Pattern[bytes] | None = None
        self.active = False  # any value registered: len(self) > 0, without a method call
        self._added: set[str] = set()  # the values add() was given (their forms are in _values)
        for v in values:
            self.add(v)

    def add(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Redactor.add wants a str, got {type(value).__name__}")
        if not value or value in self._added:
            return  # (a value registered only as another's base64 form still gets its own forms)
        forms = [value, *_b64_forms(value)]
        with self._lock:
            self._added.add(value)
            new = [f for f in forms if f and f not in self._values]
            if not new:
                return
            self._values.update(new)
            ordered = tuple(sorted(self._values, key=lambda s: (-len(s), s)))
            self._ordered = ordered
            self._ordered_bytes = tuple(s.encode("utf-8") for s in ordered)
            self._any = self._any_bytes = None  # rebuilt on first use
            self.active = True

    _FAST_PATH_LIMIT = 64  # beyond this many values an alternation costs more than it saves

    def _prefilter(self, binary: bool):
        """The compiled alternation of every value (None when there are too many)."""
        pattern = self._any_bytes if binary else self._any
        if pattern is None and len(self._ordered) <= self._FAST_PATH_LIMIT:
            with self._lock:
                if binary:
                    pattern = self._any_bytes = _alternation(self._ordered_bytes)
                else:
                    pattern = self._any = _alternation(self._ordered)
        return pattern

    def __len__(self) -> int:
        """How many distinct strings are masked (values and their base64 forms)."""
        return len(self._values)

    @staticmethod
    def _spans(haystack, needles) -> list[tuple[int, int]]:
        spans = []
        for needle in needles:
            start = haystack.find(needle)
            while start != -1:
                spans.append((start, start + len(needle)))
                start = haystack.find(needle, start + 1)
        if not spans:
            return spans
        spans.sort()
        merged = [spans[0]]
        for s, e in spans[1:]:
            ls, le = merged[-1]
            if s <= le:
                if e > le:
                    merged[-1] = (ls, e)
            else:
                merged.append((s, e))
        return merged

    @staticmethod
    def _replace(haystack, spans, mask):
        out = []
        pos = 0
        for s, e in spans:
            out.append(haystack[pos:s])
            out.append(mask)
            pos = e
        out.append(haystack[pos:])
        return haystack[:0].join(out)

    def redact(self, text: str) -> str:
        needles = self._ordered
        if not needles or not text:
            return text
        pre = self._any or self._prefilter(False)  # (the built one without a call: every step asks)
        if pre is not None and not pre.search(text):
            return text
        spans = self._spans(text, needles)
        return self._replace(text, spans, MASK) if spans else text

    def redact_bytes(self, data: bytes) -> bytes:
        needles = self._ordered_bytes
        if not needles or not data:
            return data
        pre = self._any_bytes or self._prefilter(True)
        if pre is not None and not pre.search(data):
            return data
        data = bytes(data)
        spans = self._spans(data, needles)
        return self._replace(data, spans, MASK_BYTES) if spans else data

    def redact_cut(self, data: bytes) -> bytes:
        """redact_bytes() for bytes that end early (a reply cut by a deadline, a close, a
        signal): a tail that is the beginning of a secret's form (MIN_LENGTH bytes or more) is
        masked too, since the rest of it will never come to make it whole."""
        data = self.redact_bytes(data)
        for i in range(
            max(0, len(data) - len(self._ordered_bytes[0]) + 1) if self._ordered_bytes else len(data),
            len(data),
        ):
            tail = data[i:]
            if len(tail) >= MIN_LENGTH and any(n.startswith(tail) for n in self._ordered_bytes):
                return data[:i] + MASK_BYTES
        return data

    def contains(self, text: str | bytes) -> bool:
        if not self._ordered or not text:
            return False
        binary = isinstance(text, (bytes, bytearray))
        pre = (self._any_bytes if binary else self._any) or self._prefilter(binary)
        if pre is not None:
            return pre.search(text) is not None
        needles = self._ordered_bytes if binary else self._ordered
        return any(n in text for n in needles)


class RedactingStream:
    """Masks bytes that arrive in pieces (transport reads) as if they had arrived whole: for any
    split of the same bytes, what feed() and flush() return, joined, is the same, and no piece
    holds part of an occurrence of a registered value. feed() returns the masked bytes that can be shown now and
    holds back the shortest tail that could still begin a value (and a match that reaches that
    tail: it could grow, or merge with the next one into one MASK); flush() returns the rest,
    masked (call it where the bytes so far end a reply)."""

    __slots__ = ("redactor", "_held")

    def __init__(self, redactor: Redactor):
        self.redactor = redactor
        self._held = b""

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, data: bytes) -> bytes:
        buf = self._held + bytes(data)
        needles = self.redactor._ordered_bytes
        if not needles:
            self._held = b""
            return buf
        cut = len(buf)
        for i in range(max(0, len(buf) - len(needles[0]) + 1), len(buf)):
            tail = buf[i:]
            if any(len(n) > len(tail) and n.startswith(tail) for n in needles):
                cut = i  # the earliest place a value could begin and continue in the next read
                break
        spans = self.redactor._spans(buf, needles)
        for s, e in spans:
            if s < cut <= e:
                cut = s  # never cut through or right after a match: it may grow or merge
        self._held = buf[cut:]
        shown = buf[:cut]
        inside = [(s, e) for s, e in spans if e <= cut]
        return self.redactor._replace(shown, inside, MASK_BYTES) if inside else shown

    def flush(self) -> bytes:
        """The held-back tail, masked; what could only be the start of a secret is masked too
        (no more bytes will come to show what it was)."""
        held, self._held = self._held, b""
        return self.redactor.redact_cut(held) if held else held
