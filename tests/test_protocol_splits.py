"""Fed any split of the same byte stream, each protocol returns the same replies.

Streams come from the byte-exact Postfix/Dovecot transcripts in
/work/shared/reference/transcripts/ and from hypothesis-generated conversations (random
multi-line SMTP replies, POP3 bodies with dot lines, IMAP responses with random literals
holding CRLF, '{' and ')' bytes). A conversation is a list of exchanges: the command lines the
client sends, then the bytes of the one reply that answers them. Commands go out only after the
previous reply came back, as the engine does (or all at once, for pipelining).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner.protocols import create
from runner.protocols.base import decode

TRANSCRIPTS = Path("/work/shared/reference/transcripts")
PORTS = {2525: "smtp", 2587: "smtp", 2465: "smtp", 2110: "pop3", 2995: "pop3", 2143: "imap", 2993: "imap"}


@dataclass
class Exchange:
    commands: list[str]
    reply: bytes
    expect: dict = field(default_factory=dict)  # Reply attributes the model predicts


@dataclass
class Conversation:
    protocol: str
    exchanges: list[Exchange]
    name: str = ""
    tag_false: bool = False  # IMAP: the command lines carry their own tags

    @property
    def stream(self) -> bytes:
        return b"".join(e.reply for e in self.exchanges)


# --- transcripts ------------------------------------------------------------------------

_ESC = re.compile(r"\\([rnt])")


def _unescape(s: str) -> bytes:
    return _ESC.sub(lambda m: {"r": "\r", "n": "\n", "t": "\t"}[m.group(1)], s).encode("utf-8")


def load_transcripts() -> list[Conversation]:
    out = []
    for path in sorted(TRANSCRIPTS.glob("*.txt")):
        conv = None
        commands: list[str] = []
        reply = b""
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"--- connected to 127\.0\.0\.1:(\d+) ---", line)
            if m:
                conv = Conversation(PORTS[int(m.group(1))], [], f"{path.name}:{m.group(1)}", tag_false=True)
                out.append(conv)
                commands, reply = [], b""
            elif conv is None:
                continue
            elif line.startswith("C: "):
                if reply:
                    conv.exchanges.append(Exchange(commands, reply))
                    commands, reply = [], b""
                commands.append(_unescape(line[3:]).decode().removesuffix("\r\n"))
            elif line.startswith("S: "):
                reply += _unescape(line[3:])
            elif line.startswith("--- connection closed"):
                if reply:
                    conv.exchanges.append(Exchange(commands, reply))
                conv = None
    return out


TRANSCRIPT_CONVERSATIONS = load_transcripts() if TRANSCRIPTS.is_dir() else []
needs_transcripts = pytest.mark.skipif(
    not TRANSCRIPT_CONVERSATIONS, reason="reference transcripts not present"
)


# --- the driver -------------------------------------------------------------------------


def play(conv: Conversation, chunks: list[bytes], *, eager: bool = False, early: bool = False):
    """Feeds chunks; sends each exchange's commands once the previous reply came back (or,
    eager, all commands right after the first reply; early, all of them before the greeting
    arrived, the blind `nc < file` style). Returns the replies."""
    p = create(conv.protocol)
    ex = conv.exchanges
    sent = 0

    def send_up_to(k):
        nonlocal sent
        while sent <= min(k, len(ex) - 1):
            for c in ex[sent].commands:
                p.command(c, tag=not conv.tag_false)
            sent += 1

    send_up_to(len(ex) if early else 0)
    replies = []
    for chunk in chunks + [None]:
        if chunk is None:
            p.receive_eof()
        else:
            p.receive_data(chunk)
        while (r := p.next_reply()) is not None:
            replies.append(r)
            send_up_to(len(ex) if eager else len(replies))
    assert p.at_eof and p.pending() == b""
    return replies


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def check(conv: Conversation, replies) -> None:
    assert len(replies) == len(conv.exchanges)
    for r, e in zip(replies, conv.exchanges, strict=True):
        assert r.raw == e.reply
        for k, v in e.expect.items():
            assert getattr(r, k) == v, (k, r)


cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=40)


# --- transcripts: every split gives the same replies ------------------------------------


@needs_transcripts
def test_transcripts_were_parsed():
    names = {c.protocol for c in TRANSCRIPT_CONVERSATIONS}
    assert names == {"smtp", "pop3", "imap"}
    total = sum(len(c.exchanges) for c in TRANSCRIPT_CONVERSATIONS)
    assert total > 60


@needs_transcripts
@pytest.mark.parametrize("conv", TRANSCRIPT_CONVERSATIONS, ids=lambda c: c.name)
def test_transcript_one_chunk_and_one_byte_chunks(conv):
    whole = play(conv, [conv.stream])
    check(conv, whole)
    bytewise = play(conv, [bytes([b]) for b in conv.stream])
    assert bytewise == whole
    if not _continued(conv):  # every command recorded before the greeting: the same replies
        assert play(conv, [conv.stream], early=True) == whole
        assert play(conv, [bytes([b]) for b in conv.stream], early=True) == whole


def _continued(conv: Conversation) -> bool:
    """A reply is a continuation ('+', '334'): the line after it answers it, so the commands
    cannot all go out before the greeting."""
    return any(e.reply[:1] == b"+" and e.reply[:3] != b"+OK" or e.reply[:3] == b"334" for e in conv.exchanges)


@needs_transcripts
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(min_value=0), cuts=cuts)
def test_transcripts_any_split(index, cuts):
    conv = TRANSCRIPT_CONVERSATIONS[index % len(TRANSCRIPT_CONVERSATIONS)]
    assert play(conv, split(conv.stream, cuts)) == play(conv, [conv.stream])
    if not _continued(conv):
        assert play(conv, split(conv.stream, cuts), early=True) == play(conv, [conv.stream])


@needs_transcripts
def test_transcript_replies_have_the_expected_shape():
    by_name = {c.name: c for c in TRANSCRIPT_CONVERSATIONS}
    pop = play(by_name["pop3-2110-session.txt:2110"], [by_name["pop3-2110-session.txt:2110"].stream])
    retr = pop[5]
    assert retr.multiline and retr.lines[0] == "+OK 548 octets"
    assert ".this line starts with a dot, so it is dot-stuffed on the wire." in retr.lines
    imap_conv = by_name["imap-2143-session.txt:2143"]
    imap = play(imap_conv, [imap_conv.stream])
    fetch = imap[4]
    assert fetch.tag == "a4" and fetch.code == "OK"
    assert fetch.lines[0].endswith("BODY[] {458}")
    assert fetch.lines[1] == "Return-Path: <alice@example.test>"
    assert fetch.lines[-3:] == (
        "First message in bob's mailbox.",
        ")",
        "a4 OK Fetch completed (0.001 + 0.000 secs).",
    )
    smtp_conv = by_name["smtp-2525-auth-login.txt:2525"]
    smtp = play(smtp_conv, [smtp_conv.stream])
    assert [r.note for r in smtp[2:4]] == ["Username:", "Password:"]
    assert smtp[-2].enhanced == "2.0.0"


# --- generated SMTP ---------------------------------------------------------------------

_text = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@st.composite
def smtp_conversations(draw):
    exchanges = []
    for i in range(draw(st.integers(min_value=1, max_value=8))):
        code = str(draw(st.integers(min_value=200, max_value=599))).encode()
        texts = draw(st.lists(_text, min_size=1, max_size=6))
        bare_last = draw(st.booleans()) and texts[-1] == b""
        raw = b""
        for j, t in enumerate(texts):
            eol = draw(st.sampled_from([b"\r\n", b"\n"]))
            last = j == len(texts) - 1
            raw += code + (b"" if last and bare_last else b" " if last else b"-") + t + eol
        expect = {"code": code.decode(), "texts": tuple(decode(t) for t in texts)}
        exchanges.append(Exchange([] if i == 0 else ["NOOP"], raw, expect))
    return Conversation("smtp", exchanges)


@settings(max_examples=200, deadline=None)
@given(conv=smtp_conversations(), cuts=cuts)
@example(
    conv=Conversation("smtp", [Exchange([], b"250-a\r\n250-b\n250 c\r\n", {"texts": ("a", "b", "c")})]),
    cuts=[1, 6, 7, 8],
)
def test_smtp_any_split(conv, cuts):
    whole = play(conv, [conv.stream])
    check(conv, whole)
    assert play(conv, split(conv.stream, cuts)) == whole
    assert play(conv, split(conv.stream, cuts), early=True) == whole


# --- generated POP3 ---------------------------------------------------------------------

_body_line = st.one_of(
    _text,
    st.sampled_from([b".", b"..", b".x", b"...", b". ", b"+OK", b"-ERR", b""]),
    _text.map(lambda t: b"." + t),
)


def _stuff(line: bytes) -> bytes:
    return b"." + line if line.startswith(b".") else line


@st.composite
def pop3_conversations(draw):
    exchanges = [Exchange([], b"+OK ready\r\n", {"code": "+OK", "multiline": False})]
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        kind = draw(st.sampled_from(["single", "multi", "err", "auth"]))
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        if kind == "single":
            cmd = draw(st.sampled_from(["STAT", "NOOP", "LIST 1", "UIDL 2", "DELE 1"]))
            exchanges.append(Exchange([cmd], b"+OK 1 2" + eol, {"code": "+OK", "multiline": False}))
        elif kind == "err":
            cmd = draw(st.sampled_from(["RETR 9", "LIST", "TOP 1 2", "STAT"]))
            exchanges.append(Exchange([cmd], b"-ERR no" + eol, {"code": "-ERR", "multiline": False}))
        elif kind == "multi":
            cmd = draw(st.sampled_from(["RETR 1", "TOP 1 5", "LIST", "UIDL", "CAPA", "retr 2"]))
            body = draw(st.lists(_body_line, max_size=8))
            raw = b"+OK body" + eol + b"".join(_stuff(b) + eol for b in body) + b"." + eol
            lines = ("+OK body", *(decode(b) for b in body))
            exchanges.append(Exchange([cmd], raw, {"code": "+OK", "multiline": True, "lines": lines}))
        else:
            exchanges.append(Exchange(["AUTH LOGIN"], b"+ VXNlcm5hbWU6" + eol, {"code": "+"}))
            exchanges.append(Exchange(["CAPA"], b"+ " + eol, {"code": "+", "texts": ("",)}))
            exchanges.append(Exchange(["LIST"], b"+OK Logged in." + eol, {"code": "+OK", "multiline": False}))
    return Conversation("pop3", exchanges)


@settings(max_examples=200, deadline=None)
@given(conv=pop3_conversations(), cuts=cuts)
def test_pop3_any_split(conv, cuts):
    whole = play(conv, [conv.stream])
    check(conv, whole)
    assert play(conv, split(conv.stream, cuts)) == whole
    if not any(e.expect.get("code") == "+" for e in conv.exchanges):
        # pipelined: every command goes out before the replies are read (or the greeting came)
        assert play(conv, split(conv.stream, cuts), eager=True) == whole
        assert play(conv, split(conv.stream, cuts), early=True) == whole


# --- generated IMAP ---------------------------------------------------------------------

_atom_text = st.text(alphabet="abcdefXYZ0123 ()[]\\*", max_size=30).map(str.encode)
_literal = st.lists(
    st.sampled_from(
        [b"\r\n", b"\n", b"\r", b"{", b"}", b")", b"(", b"a", b"\x00", b"\xff", b"{5}\r\n", b"* ", b"a1 OK "]
    ),
    max_size=12,
).map(b"".join)


def _literal_lines(content: bytes) -> list[str]:
    parts = content.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return [decode(p[:-1] if p.endswith(b"\r") else p) for p in parts]


@st.composite
def imap_conversations(draw):
    exchanges = [Exchange([], b"* OK [CAPABILITY IMAP4rev1] ready\r\n", {"code": "OK", "tag": None})]
    n = 0
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        n += 1
        tag = f"a{n}"
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        raw = b""
        lines: list[str] = []
        commands = [draw(st.sampled_from(["NOOP", "FETCH 1 BODY[]", "SELECT INBOX"]))]
        if draw(st.booleans()):
            # a continuation first: the reply ends at '+', the data goes out untagged
            exchanges.append(Exchange(["APPEND INBOX {3}"], b"+ Ready" + eol, {"code": "+", "tag": None}))
            commands = ["abc"]
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            head = b"* " + draw(st.integers(min_value=1, max_value=99).map(lambda i: str(i).encode()))
            head += b" FETCH (BODY[] "
            literals = draw(st.lists(_literal, max_size=3))
            if not literals:
                line = head + draw(_atom_text)
                raw += line + eol
                lines.append(decode(line))
                continue
            seg = head
            for k, content in enumerate(literals):
                marker = draw(st.sampled_from([b"{%d}", b"{%d+}", b"~{%d}"])) % len(content)
                raw += seg + marker + eol + content
                lines.append(decode(seg + marker))
                lines.extend(_literal_lines(content))
                seg = b" BODY[" + str(k).encode() + b"] "
            raw += b")" + eol
            lines.append(")")
        status = draw(st.sampled_from([b"OK", b"NO", b"BAD"]))
        raw += tag.encode() + b" " + status + b" done" + eol
        lines.append(f"{tag} {status.decode()} done")
        exchanges.append(
            Exchange(commands, raw, {"code": status.decode(), "tag": tag, "lines": tuple(lines)})
        )
    return Conversation("imap", exchanges)


@settings(max_examples=200, deadline=None)
@given(conv=imap_conversations(), cuts=cuts)
def test_imap_any_split(conv, cuts):
    whole = play(conv, [conv.stream])
    check(conv, whole)
    assert play(conv, split(conv.stream, cuts)) == whole
    if not any(e.expect.get("code") == "+" for e in conv.exchanges):
        assert play(conv, split(conv.stream, cuts), eager=True) == whole
        assert play(conv, split(conv.stream, cuts), early=True) == whole


# --- generated IMAP IDLE: untagged responses one at a time while IDLE is outstanding -----


@st.composite
def idle_streams(draw):
    """(stream, the untagged responses' raw bytes, the tagged OK's): after IDLE's '+', untagged
    responses (some with literals), then the OK that answers DONE."""
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    responses = []
    for i in range(draw(st.integers(min_value=1, max_value=5))):
        if draw(st.booleans()):
            content = draw(_literal)
            responses.append(b"* %d FETCH (BODY[] {%d}" % (i + 1, len(content)) + eol + content + b")" + eol)
        else:
            responses.append(b"* %d EXISTS" % (i + 1) + eol)
    done = b"a1 OK Idle completed" + eol
    return b"+ idling" + eol + b"".join(responses) + done, responses, done


def play_idle(before: list[bytes], after: list[bytes], count: int, peek: bool):
    """IDLE; its '+' by next_reply(); `count` untagged responses by next_untagged() (with peek,
    next_reply() is asked first each time, as a caller mixing the two might: it must find no
    reply and change nothing); DONE; its OK. The server's bytes: `before` while idling, `after`
    (the OK) once DONE went out, as a server sends them."""
    p = create("imap")
    p.command("IDLE")
    got, untagged, done = None, [], None
    for chunk in before:
        p.receive_data(chunk)
        while True:
            if got is None:
                r = got = p.next_reply()
            else:
                if peek:
                    assert p.next_reply() is None
                r = p.next_untagged()
                if r is not None:
                    untagged.append(r)
            if r is None:
                break
    assert len(untagged) == count and p.in_continuation
    p.command("DONE")
    assert not p.in_continuation
    for chunk in after + [None]:
        if chunk is None:
            p.receive_eof()
        else:
            p.receive_data(chunk)
        while (r := p.next_reply()) is not None:
            assert done is None, "a reply after DONE's OK"
            done = r
    assert p.at_eof and p.pending() == b""
    return got, untagged, done


@settings(max_examples=200, deadline=None)
@given(stream=idle_streams(), cuts=cuts, peek=st.booleans())
def test_imap_untagged_during_idle_any_split(stream, cuts, peek):
    data, responses, done = stream
    idling = data[: len(data) - len(done)]
    got, untagged, ok = play_idle([idling], [done], len(responses), peek=False)
    assert got.code == "+" and [r.raw for r in untagged] == responses and ok.raw == done
    assert all(r.tag is None and r.code is None for r in untagged)
    assert ok.code == "OK" and ok.tag == "a1"
    again = play_idle(split(idling, cuts), split(done, cuts), len(responses), peek)
    assert again == (got, untagged, ok)


# --- generated line streams -------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(_text, max_size=10), tail=_text, cuts=cuts)
def test_line_any_split(lines, tail, cuts):
    stream = b"".join(t + b"\r\n" for t in lines) + tail
    conv = Conversation(
        "line", [Exchange([], t + b"\r\n") for t in lines] + ([Exchange([], tail)] if tail else [])
    )
    whole = play(conv, [stream])
    check(conv, whole)
    assert [r.lines for r in whole] == [(decode(t),) for t in lines] + ([(decode(tail),)] if tail else [])
    assert play(conv, split(stream, cuts)) == whole
