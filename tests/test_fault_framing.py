"""Replies built lazily (runner.protocols.lines.Lines) equal the ones built eagerly, under any
split of any stream; the per-protocol max_reply defaults and their messages; memory of a big
reply measured in process (no socket: the framers alone)."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import ProtocolError
from runner.protocols import create
from runner.protocols import lines as L
from runner.protocols.base import Reply
from runner.protocols.lines import PLAIN_LINES, Lines
from tests.support.framing import drain, greeted
from tests.test_protocol_splits import (
    cuts,
    imap_conversations,
    play,
    pop3_conversations,
    smtp_conversations,
    split,
)

CONVERSATIONS = {"smtp": smtp_conversations, "pop3": pop3_conversations, "imap": imap_conversations}


def _shape(r: Reply) -> tuple:
    lines, texts = r.lines, r.texts
    return (
        tuple(lines),
        tuple(texts),
        r.text,
        len(lines),
        len(texts),
        lines[0] if lines else None,
        lines[-1] if lines else None,
        texts[-1] if texts else None,
        tuple(lines[1:3]),
        bool(lines),
        r.code,
        r.enhanced,
        r.note,
        r.tag,
    )


@pytest.mark.parametrize("protocol", sorted(CONVERSATIONS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), cut=cuts)
def test_lazy_lines_equal_eager_lines_under_any_split(protocol, data, cut, monkeypatch):
    conv = data.draw(CONVERSATIONS[protocol]())
    chunks = split(conv.stream, cut)
    eager = play(conv, chunks)
    monkeypatch.setattr(L, "EAGER_LINES_BELOW", 0)  # every reply's lines built from its bytes
    lazy = play(conv, chunks)
    monkeypatch.undo()
    assert all(isinstance(r.lines, Lines) for r in lazy)
    assert [_shape(r) for r in lazy] == [_shape(r) for r in eager]
    assert lazy == eager  # Reply equality across the two forms


def test_lines_as_a_sequence():
    raw = b"a\r\nb\n\rc\r\r\n"
    lines = Lines(raw, PLAIN_LINES)
    assert lines == ("a", "b", "\rc") and len(lines) == 3
    assert lines[0] == "a" and lines[-1] == "\rc" and lines[1] == "b" and lines[-2] == "b"
    assert lines[:2] == ("a", "b") and lines[::-1] == ("\rc", "b", "a")
    with pytest.raises(IndexError):
        lines[3]
    assert lines.mapped(str.upper) == ("A", "B", "\rC") and lines.mapped(str.upper).text() == "A\nB\n\rC"
    assert not Lines(b"", PLAIN_LINES) and list(Lines(b"", PLAIN_LINES)) == []


def test_a_masked_copy_masks_lazily():
    p = greeted(create("pop3"))
    p.command("RETR 1")
    body = b"".join(b"line %d secret\r\n" % i for i in range(20_000))
    (r,) = drain(p, b"+OK\r\n" + body + b".\r\n")
    assert isinstance(r.lines, Lines)
    masked = r.redacted(r.raw.replace(b"secret", b"****"), lambda s: s.replace("secret", "****"))
    assert masked.lines[5] == "line 4 ****" and masked.texts[-1] == "line 19999 ****"
    assert "secret" not in masked.text and masked.raw.count(b"****") == 20_000


# --- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "limit", "shown"),
    [
        ("smtp", 4 << 20, "4 MiB"),
        ("pop3", 256 << 20, "256 MiB"),
        ("imap", 256 << 20, "256 MiB"),
        ("line", 64 << 20, "64 MiB"),
    ],
)
def test_max_reply_defaults_by_protocol(protocol, limit, shown):
    p = create(protocol)
    assert p.max_reply == limit
    assert create(protocol, max_reply=1000).max_reply == 1000
    message = str(p.limit_error("reply"))
    assert message.startswith(f"reply exceeded max_reply {shown} (the {protocol.upper()} default); raise it")
    assert "(the" not in str(create(protocol, max_reply=limit).limit_error("reply"))


def test_an_smtp_reply_over_its_default_fails_with_the_limit_named():
    p = create("smtp")
    chunk = b"250-\r\n" * 100_000
    with pytest.raises(ProtocolError, match=r"^reply exceeded max_reply 4 MiB \(the SMTP default\)"):
        for _ in range(10):
            drain(p, chunk)


def test_a_big_reply_costs_about_its_bytes_in_process():
    """30 MB of 4-byte lines framed by POP3: the receive buffer and the raw bytes, nothing per
    line (it was a str per line, twice: 26x the body). tracemalloc sees every allocation of
    this test alone, whatever the test process did before."""
    size = 30_000_000
    tracemalloc.start()
    try:
        p = greeted(create("pop3"))
        p.command("RETR 1")
        p.receive_data(b"+OK\r\n")
        chunk = b"abcd\r\n" * 10_000
        for _ in range(size // len(chunk)):
            p.receive_data(chunk)
            assert p.next_reply() is None
        (r,) = drain(p, b".\r\n")
        framing = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        assert len(r.lines) == size // 6 + 1 and r.lines[-1] == "abcd" and r.texts[1] == "abcd"
        assert r.lines[1:3] == ("abcd", "abcd") and r.text.count("\n") == size // 6
        reading = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert framing < 2.3 * size, framing / size  # the receive buffer, then the reply's bytes
    assert reading < 3.0 * size, reading / size  # the bytes, and r.text's one str (no list of lines)
