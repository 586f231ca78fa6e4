"""The sandbox IMAP server's view of a message's structure (RFC 3501 7.4.2): ENVELOPE,
BODY / BODYSTRUCTURE, and the MIME part a section number ('1.2') names. Everything is read from
the stored bytes (CRLF form), so sizes and line counts are those of the message as it is.

Checked against Dovecot's answers for the same messages (tests/test_sandbox_imap_structure.py):
types and parameters keep the case they are written in, a text part without a charset gets
("charset" "us-ascii") at the end, a body's lines are its line ends. One difference is kept on
purpose: BODY[n] of a multipart that is itself a part ends before the CRLF of the next
delimiter line, which RFC 2046 5.1.1 gives to the delimiter (Dovecot includes it)."""

from __future__ import annotations

import re

MAX_DEPTH = 30  # deeper MIME nesting is taken as an opaque leaf part
_TOKEN = re.compile(rb'\s+|"(?:[^"\\]|\\.)*"?|\[[^\]]*\]?|[<>,:;@.()]|[^\s"\[\]<>,:;@.()]+', re.S)
SPACE = b" "  # the token for whitespace and comments: a phrase keeps one space there


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line that ends it, body); a part may have no header at all."""
    if data.startswith(b"\r\n"):
        return b"\r\n", data[2:]
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return data, b""
    return data[: i + 4], data[i + 4 :]


def fields(header: bytes) -> dict[str, list[bytes]]:
    """Field name (lower case) -> raw values, unfolded (the CRLFs of folding removed), without
    the whitespace after the colon."""
    out: dict[str, list[list[bytes]]] = {}
    name = None
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and name is not None:
            out[name][-1].append(line)
            continue
        head, colon, value = line.partition(b":")
        if not colon or not head or b" " in head.strip():
            name = None
            continue
        name = head.strip().decode("ascii", "replace").lower()
        out.setdefault(name, []).append([value])
    return {k: [b"".join(v).lstrip() for v in vs] for k, vs in out.items()}


def nstring(value: bytes | str | None) -> bytes:
    """NIL, a quoted string, or a literal when the value holds CR, LF, NUL or 8-bit bytes."""
    if value is None:
        return b"NIL"
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if re.search(rb"[\r\n\x00\x80-\xff]", value):
        return b"{%d}\r\n" % len(value) + value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _first(f: dict[str, list[bytes]], name: str) -> bytes | None:
    """A field's first value as written after the colon; None when absent or empty."""
    values = f.get(name)
    return values[0] if values and values[0].strip() else None


# --- ENVELOPE -------------------------------------------------------------------------------
def envelope(header: bytes) -> bytes:
    """(date subject from sender reply-to to cc bcc in-reply-to message-id); sender and
    reply-to default to from (RFC 3501 7.4.2)."""
    f = fields(header)

    def text(name: str) -> bytes | None:  # the first field as written, "" kept (as Dovecot:
        if name not in f:  # a tab in the Subject becomes a space, elsewhere it stays)
            return None
        return f[name][0].replace(b"\t", b" ") if name == "subject" else f[name][0]

    def addresses(name: str) -> bytes | None:  # every field of the name, one list
        return b",".join(f[name]) if name in f else None

    sender = addresses("from")
    parts = [nstring(text("date")), nstring(text("subject"))]
    for name in ("from", "sender", "reply-to", "to", "cc", "bcc"):
        value = addresses(name)
        if name in ("sender", "reply-to") and not (value or b"").strip():
            value = sender
        parts.append(address_list(value))
    parts += [nstring(text("in-reply-to")), nstring(text("message-id"))]
    return b"(" + b" ".join(parts) + b")"


def address_list(value: bytes | None) -> bytes:
    """An address header as IMAP address structures: (name adl mailbox host) each; a group is
    (NIL NIL name NIL) ... (NIL NIL NIL NIL). NIL when there is no address."""
    if value is None:
        return b"NIL"
    tokens = _tokens(value)
    out: list[tuple] = []
    pos = 0
    while pos < len(tokens):
        pos = _address(tokens, pos, out)
    if not out:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(nstring(x) for x in a) + b")" for a in out) + b")"


def _tokens(value: bytes) -> list[bytes]:
    """RFC 5322 tokens (atoms, quoted strings, domain literals, specials); whitespace and
    comments become one SPACE each."""
    out, depth = [], 0
    for t in _TOKEN.findall(value):
        if t == b"(":
            depth += 1
        elif t == b")" and depth:
            depth -= 1
            if not depth:
                out.append(SPACE)
        elif depth == 0:
            out.append(SPACE if t.isspace() else t)
    return out


def _address(tokens: list[bytes], pos: int, out: list[tuple], in_group: bool = False) -> int:
    """One address (or group) from tokens[pos]; appended to `out`; the position after it (always
    past tokens[pos], except at the ';' that ends the group being read)."""
    stops = (b"<", b",", b";") if in_group else (b"<", b":", b",", b";")  # groups do not nest
    phrase: list[bytes] = []
    while pos < len(tokens) and tokens[pos] not in stops:
        phrase.append(tokens[pos])
        pos += 1
    end = tokens[pos] if pos < len(tokens) else b","
    if end == b":":  # group: name: members;
        out.append((None, None, _phrase(phrase), None))
        pos += 1
        while pos < len(tokens) and tokens[pos] != b";":
            pos = _address(tokens, pos, out, in_group=True) if tokens[pos] != b"," else pos + 1
        out.append((None, None, None, None))
        return pos + 1
    if end == b"<":
        try:
            close = tokens.index(b">", pos)
        except ValueError:
            close = len(tokens)
        inner = tokens[pos + 1 : close]
        adl = None
        if b":" in inner:  # obsolete route: <@a,@b:user@host>
            colon = inner.index(b":")
            adl, inner = b"".join(inner[:colon]), inner[colon + 1 :]
        out.append((_phrase(phrase), adl and adl.replace(SPACE, b""), *_addr_spec(inner)))
        pos = close + 1
        while pos < len(tokens) and tokens[pos] not in (b",", b";"):
            pos += 1
        end = tokens[pos] if pos < len(tokens) else b","
    elif _phrase(phrase) is not None:
        out.append((None, None, *_addr_spec(phrase)))
    return pos if end == b";" and in_group else pos + 1


def _phrase(words: list[bytes]) -> bytes | None:
    """A display name: quoted strings unquoted, each run of whitespace one space, as written
    otherwise ('J. Q. Doe', 'John.Doe')."""
    text = b"".join(_unquote(w) for w in words)
    return re.sub(rb"\s+", b" ", text).strip() or None


def _unquote(word: bytes) -> bytes:
    if word.startswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", word[1:-1] if word.endswith(b'"') and len(word) > 1 else word[1:])
    return word


def _addr_spec(tokens: list[bytes]) -> tuple[bytes, bytes]:
    """(mailbox, host) of local@domain; a part that is missing named as Dovecot names it."""
    tokens = [t for t in tokens if t != SPACE]
    at = len(tokens) - 1 - tokens[::-1].index(b"@") if b"@" in tokens else len(tokens)
    return b"".join(tokens[:at]) or b"MISSING_MAILBOX", b"".join(tokens[at + 1 :]) or b"MISSING_DOMAIN"


# --- BODY and BODYSTRUCTURE -----------------------------------------------------------------
class Part:
    """One MIME entity: its header, body, content type and (for multiparts and message/rfc822)
    the parts inside."""

    def __init__(self, data: bytes, default: bytes = b"text/plain", depth: int = 0):
        self.header, self.body = split_header(data)
        self.fields = fields(self.header)
        ctype = _first(self.fields, "content-type")
        parsed = _content_type(ctype) if ctype is not None else None
        if parsed is None:  # none, or malformed: the default (RFC 2045 5.2)
            self.type, _, self.subtype = default.partition(b"/")
            self.params: list[tuple[bytes, bytes]] = []
        else:
            self.type, self.subtype, self.params = parsed
        kind = (self.type.lower(), self.subtype.lower())
        if kind[0] == b"text" and not any(k.lower() == b"charset" for k, _ in self.params):
            self.params.append((b"charset", b"us-ascii"))  # RFC 2045's default, said (as Dovecot does)
        self.children: list[Part] = []
        self.message: Part | None = None
        if depth >= MAX_DEPTH:
            return
        if kind[0] == b"multipart":
            boundary = next((v for k, v in self.params if k.lower() == b"boundary"), b"")
            inner = b"message/rfc822" if kind[1] == b"digest" else b"text/plain"
            chunks = split_multipart(self.body, boundary) or [b""]  # none found: one empty part (Dovecot)
            self.children = [Part(chunk, inner, depth + 1) for chunk in chunks]
        elif kind == (b"message", b"rfc822"):
            self.message = Part(self.body, b"text/plain", depth + 1)

    def structure(self, extended: bool) -> bytes:
        if self.children:
            out = b"(" + b"".join(c.structure(extended) for c in self.children) + b" " + nstring(self.subtype)
            if extended:
                out += b" " + b" ".join([_param_list(self.params), *self._extension()])
            return out + b")"
        f = self.fields
        encoding = (_first(f, "content-transfer-encoding") or b"7bit").strip()
        items = [
            nstring(self.type),
            nstring(self.subtype),
            _param_list(self.params),
            nstring(_first(f, "content-id")),
            nstring(_first(f, "content-description")),
            nstring(encoding),
            str(len(self.body)).encode(),
        ]
        if self.message is not None:
            items += [envelope(self.message.header), self.message.structure(extended), _lines(self.body)]
        elif self.type.lower() == b"text":
            items.append(_lines(self.body))
        if extended:
            items += [nstring(_first(f, "content-md5")), *self._extension()]
        return b"(" + b" ".join(items) + b")"

    def _extension(self) -> list[bytes]:
        """body-fld-dsp, body-fld-lang, body-fld-loc."""
        disposition = b"NIL"
        value = _first(self.fields, "content-disposition")
        if value is not None:
            kind = value.split(b";", 1)[0].strip()
            disposition = b"(" + nstring(kind) + b" " + _param_list(_params(value)) + b")"
        language = _first(self.fields, "content-language")
        if language is not None:
            langs = [x.strip() for x in language.split(b",") if x.strip()]
            lang = b"(" + b" ".join(nstring(x) for x in langs) + b")" if langs else b"NIL"
        else:
            lang = b"NIL"
        return [disposition, lang, nstring(_first(self.fields, "content-location"))]

    def section(self, path: list[int]) -> Part | None:
        """The part a section number names (RFC 3501 6.4.5): in a message, part 1 of a single
        part is its body; numbers after a MESSAGE/RFC822 part go into the message it holds; a
        single part inside a multipart has itself as part 1 (as Dovecot answers 'n.1')."""
        part: Part | None = None
        itself = False  # `part` is the single part of a message, or a part as its own 'n.1'
        for n in path:
            if part is None:
                options, single = self.children or [self], not self.children
            elif part.children:
                options, single = part.children, False
            elif part.message is not None:
                inner = part.message
                options, single = inner.children or [inner], not inner.children
            elif not itself:
                options, single = [part], True
            else:
                return None
            if not 0 < n <= len(options):
                return None
            part, itself = options[n - 1], single
        return part


_TYPE = re.compile(rb"\s*([^\s/;]+)(?:\s*/\s*([^\s;]*))?")
_PARAM = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _content_type(value: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """type, subtype and parameters as written (Dovecot keeps their case too); None if malformed."""
    m = _TYPE.match(value)
    if not m:
        return None
    return m[1], m[2] or b"", _params(value)  # 'foo' alone: type foo, subtype "" (as Dovecot)


def _params(value: bytes) -> list[tuple[bytes, bytes]]:
    """The attribute=value parameters after the first ';' (quoted values unquoted)."""
    out = []
    for m in _PARAM.finditer(value, max(value.find(b";"), 0)):
        v = m[2].strip()
        if v.startswith(b'"'):
            v = re.sub(rb"\\(.)", rb"\1", v[1:-1])
        out.append((m[1], v))
    return out


def _param_list(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in params) + b")"


def _lines(body: bytes) -> bytes:
    """body-fld-lines: the line ends in the body (a last line without one is not counted, as
    Dovecot counts)."""
    return str(body.count(b"\n")).encode()


def split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """The body parts between `--boundary` lines (RFC 2046 5.1.1): the CRLF before each
    delimiter belongs to it; the preamble and the epilogue are not parts."""
    if not boundary:
        return []
    delim = b"--" + boundary
    marks: list[tuple[int, int]] = []  # (delimiter start, its line's end)
    i = 0
    while True:
        j = body.find(delim, i)
        if j < 0:
            break
        after = body[j + len(delim) : j + len(delim) + 1]
        if (j == 0 or body[j - 1 : j] == b"\n") and after in (b"", b"-", b"\r", b"\n", b" ", b"\t"):
            eol = body.find(b"\n", j)
            marks.append((j, len(body) if eol < 0 else eol + 1))
            if body[j + len(delim) : j + len(delim) + 2] == b"--":
                break
        i = j + len(delim)
    parts = []
    for n, (start, line_end) in enumerate(marks):
        if body[start + len(delim) : start + len(delim) + 2] == b"--":
            break
        stop = marks[n + 1][0] if n + 1 < len(marks) else len(body)
        chunk = body[line_end:stop]
        if n + 1 < len(marks):
            chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1] if chunk.endswith(b"\n") else chunk
        parts.append(chunk)
    return parts
