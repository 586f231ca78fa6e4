"""The fault suite: a real `mailrun` child process against a loopback server that misbehaves
(tests.support.faultserver). Each case asserts the exit class, a time bound and a memory bound
(the child's own peak RSS, from os.wait4).

Bounds are loose on purpose (the machine running the suite may be busy): a time bound is the
step's timeout plus START seconds for the interpreter and the wind-down; a memory bound is
BASE MiB plus twice the bytes a reply may hold.
"""

from __future__ import annotations

import pytest

from tests.support.faultserver import (
    Close,
    Drip,
    Endless,
    Fault,
    Reset,
    Silence,
    StartTLS,
    Stream,
    run_mailrun,
    scenario,
)
from tests.support.servers import PKI

START = 15.0  # seconds: interpreter start and exit, under load
BASE = 100.0  # MiB: the interpreter, the loader, a few MB of buffers (measured: 20 to 60)


def held(size: int) -> float:
    """The memory bound of a reply of `size` bytes: 2.5x its bytes (the receive buffer, the raw
    bytes it becomes, a bytearray's spare room) plus 30 MiB for the interpreter. A str per line
    cost 26 to 48x."""
    return 30 + 2.5 * size / 2**20


SMTP_SESSION = "  - S: 220\n  - C: EHLO x\n    S: 250\n  - C: QUIT\n    S: 221\n"


def play(tmp_path, protocol, greeting, answers, steps, *, timeout=5.0, extra="", limit=None, tls=None):
    with Fault(greeting, answers, tls=tls) as srv:
        path = scenario(tmp_path / "s.yaml", protocol, srv.port, steps, timeout=timeout, extra=extra)
        return run_mailrun(["run", str(path)], timeout=limit or timeout * 4 + START * 2)


def bounded(r, status, seconds, mib=BASE):
    # the figures, for the README's reliability section (shown with pytest -s)
    print(f"\nFIGURE exit {r.status} in {r.seconds:.1f} s, peak {r.peak_mib:.0f} MiB")
    assert r.status == status, r.output
    assert r.seconds < seconds, (r.seconds, r.output)
    assert r.peak_mib < mib, (r.peak_mib, r.output)


# --- slow, endless, silent ---------------------------------------------------------------


def test_byte_drip_within_the_deadline_passes(tmp_path):
    greeting = [Drip(b"220 slowly but surely\r\n", interval=0.02)]
    r = play(tmp_path, "smtp", greeting, {b"*": b"250 ok\r\n", b"QUIT": b"221 bye\r\n"}, SMTP_SESSION)
    bounded(r, 0, 5 + START)


def test_byte_drip_slower_than_the_deadline_fails_at_the_deadline(tmp_path):
    greeting = [Drip(b"220 " + b"x" * 200 + b"\r\n", interval=0.05)]
    r = play(tmp_path, "smtp", greeting, {}, SMTP_SESSION, timeout=2)
    bounded(r, 3, 2 + START)
    assert "no complete reply within 2 s" in r.output


def test_silence_fails_at_the_deadline(tmp_path):
    r = play(tmp_path, "smtp", [Silence(30)], {}, SMTP_SESSION, timeout=2)
    bounded(r, 3, 2 + START)
    assert "nothing received" in r.output


def test_endless_line_stops_at_max_line(tmp_path):
    r = play(tmp_path, "smtp", [Endless(b"x", 60)], {}, SMTP_SESSION, timeout=30)
    bounded(r, 1, 30)
    assert "a line exceeded max_line 1 MiB" in r.output


# --- huge replies: bounded by max_reply, and memory about the bytes held ------------------


def test_huge_smtp_reply_stops_at_the_smtp_default(tmp_path):
    """200 MB of `250-` lines reached 6.3 GB and a MemoryError; SMTP now stops at 4 MiB."""
    answers = {b"EHLO": [Stream(b"250-\r\n", 50_000_000 // 6), b"250 ok\r\n"]}
    r = play(tmp_path, "smtp", b"220 hi\r\n", answers, SMTP_SESSION, timeout=60)
    bounded(r, 1, 60, BASE)
    assert "reply exceeded max_reply 4 MiB (the SMTP default); raise it with" in r.output
    assert "connect: {max_reply: BYTES}" in r.output


def test_huge_smtp_reply_within_a_raised_limit_costs_its_bytes(tmp_path):
    size = 20_000_000
    answers = {b"EHLO": [Stream(b"250-\r\n", size // 6), b"250 ok\r\n"], b"QUIT": b"221 bye\r\n"}
    r = play(
        tmp_path, "smtp", b"220 hi\r\n", answers, SMTP_SESSION, timeout=90, extra=", max_reply: 30000000"
    )
    bounded(r, 0, 90 + START, held(size))
    assert "(+3333333 lines)" in r.output


POP3_RETR = "  - S: +OK\n  - C: RETR 1\n    S: +OK\n  - C: QUIT\n    S: +OK\n"


@pytest.mark.parametrize("unit", [b"abcd\r\n", b"x" * 74 + b"\r\n"], ids=["4-byte lines", "76-byte lines"])
def test_huge_pop3_body_costs_its_bytes(tmp_path, unit):
    """A 20 MB body of 4-byte lines reached 510 MB (26x)."""
    size = 30_000_000
    answers = {
        b"RETR": [b"+OK message follows\r\n", Stream(unit, size // len(unit)), b".\r\n"],
        b"QUIT": [b"+OK bye\r\n", Close()],
    }
    r = play(tmp_path, "pop3", b"+OK pop3\r\n", answers, POP3_RETR, timeout=90)
    bounded(r, 0, 90 + START, held(size))


def test_huge_imap_literal_costs_its_bytes(tmp_path):
    """A 20 MB literal of 3-byte lines reached 930 MB (48x)."""
    n = 30_000_000
    answers = {
        b"FETCH": [b"* 1 FETCH (BODY[] {%d}\r\n" % n, Stream(b"abc\r\n", n // 5), b")\r\na1 OK done\r\n"],
    }
    steps = "  - S: OK\n  - C: FETCH 1 BODY[]\n    S: OK\n"
    r = play(tmp_path, "imap", b"* OK imap\r\n", answers, steps, timeout=90)
    bounded(r, 0, 90 + START, held(n))


def test_imap_literal_over_max_reply_fails_when_announced(tmp_path):
    """A literal announced larger than max_reply fails at once: nothing of it is waited for."""
    answers = {b"FETCH": [b"* 1 FETCH (BODY[] {900000000}\r\n", Silence(30)]}
    steps = "  - S: OK\n  - C: FETCH 1 BODY[]\n    S: OK\n"
    r = play(tmp_path, "imap", b"* OK imap\r\n", answers, steps, timeout=20)
    bounded(r, 1, START)
    assert (
        "reply exceeded max_reply 256 MiB (the IMAP default), a literal of 900000000 bytes was announced"
        in r.output
    )


# --- malformed bytes -----------------------------------------------------------------------


def test_garbage_fails_the_step(tmp_path):
    r = play(tmp_path, "smtp", bytes(range(256)) * 4 + b"\r\n", {}, SMTP_SESSION)
    bounded(r, 1, 5 + START)
    assert "malformed reply" in r.output


def test_nul_bytes_in_a_reply_are_text(tmp_path):
    answers = {b"EHLO": b"250-a\x00b\r\n250 \x00\r\n", b"QUIT": b"221 bye\r\n"}
    r = play(tmp_path, "smtp", b"220 nul\x00here\r\n", answers, SMTP_SESSION)
    bounded(r, 0, 5 + START)


@pytest.mark.parametrize(
    "reply", [b"250-bare LF\n250 end\n", b"250-bare\rCR inside\r\n250 end\r\n"], ids=["bare LF", "bare CR"]
)
def test_bare_line_ends(tmp_path, reply):
    answers = {b"EHLO": reply, b"QUIT": b"221 bye\r\n"}
    r = play(tmp_path, "smtp", b"220 hi\r\n", answers, SMTP_SESSION)
    bounded(r, 0, 5 + START)


def test_mixed_codes_fail_the_step(tmp_path):
    answers = {b"EHLO": b"250-a\r\n251-b\r\n250 c\r\n"}
    r = play(tmp_path, "smtp", b"220 hi\r\n", answers, SMTP_SESSION)
    bounded(r, 1, 5 + START)
    assert "line 2 has code 251, line 1 had 250" in r.output


@pytest.mark.parametrize("end", [Close(), Reset()], ids=["close", "RST"])
def test_connection_ends_mid_reply(tmp_path, end):
    answers = {b"EHLO": [b"250-first\r\n250-sec", end]}
    r = play(tmp_path, "smtp", b"220 hi\r\n", answers, SMTP_SESSION)
    bounded(r, 3, 5 + START)


# --- POP3 dots and IMAP literals at their edges --------------------------------------------


def test_pop3_dot_edges(tmp_path):
    body = b"..leading dot\r\n. \r\n..\r\n.x\r\n\r\n.\r\n"
    steps = (
        "  - S: +OK\n  - C: RETR 1\n    S: {lines: ['^\\.leading dot$', '^ $', '^\\.$', '^x$']}\n"
        "  - C: QUIT\n    S: +OK\n"
    )
    answers = {b"RETR": [b"+OK\r\n", body], b"QUIT": b"+OK bye\r\n"}
    r = play(tmp_path, "pop3", b"+OK pop3\r\n", answers, steps)
    bounded(r, 0, 5 + START)


def test_pop3_body_cut_before_its_dot(tmp_path):
    answers = {b"RETR": [b"+OK\r\nline\r\n..", Close()]}
    r = play(tmp_path, "pop3", b"+OK pop3\r\n", answers, POP3_RETR)
    bounded(r, 3, 5 + START)


def test_imap_literal_edges(tmp_path):
    """An empty literal, and one holding CRLF, a tagged-looking line and '{5}'."""
    inner = b"a1 OK not yet\r\n{5}\r\n)"
    answers = {
        b"FETCH": b"* 1 FETCH (A {0}\r\n B {%d}\r\n%s)\r\na1 OK done\r\n" % (len(inner), inner),
        b"LOGOUT": b"* BYE\r\na2 OK bye\r\n",
    }
    steps = (
        "  - S: OK\n  - C: FETCH 1 (A B)\n    S: {code: OK, lines: ['^a1 OK not yet$', '^\\{5\\}$']}\n"
        "  - C: LOGOUT\n    S: OK\n"
    )
    r = play(tmp_path, "imap", b"* OK imap\r\n", answers, steps)
    bounded(r, 0, 5 + START)


def test_imap_literal_cut_by_close(tmp_path):
    answers = {b"FETCH": [b"* 1 FETCH (BODY[] {100}\r\nonly this", Close()]}
    steps = "  - S: OK\n  - C: FETCH 1 BODY[]\n    S: OK\n"
    r = play(tmp_path, "imap", b"* OK imap\r\n", answers, steps)
    bounded(r, 3, 5 + START)


# --- the line protocol: linear, and held to its deadline ------------------------------------


@pytest.mark.parametrize(
    "pattern", ["'never matches'", "{re: 'never\\s+matches'}"], ids=["a line regex", "re: over all lines"]
)
def test_line_protocol_stops_at_its_deadline_while_lines_keep_coming(tmp_path, pattern):
    """A 3 s step ran 19.5 s: the wait for a match was O(n^2) and looked at the clock only
    between reads."""
    steps = f"  - S: {pattern}\n    timeout: 3\n"
    r = play(tmp_path, "line", [Endless(b"no match here\r\n", 30)], {}, steps, timeout=3)
    bounded(r, 1, 3 + START, BASE + 64)
    assert "no line matched" in r.output


@pytest.mark.parametrize(
    "pattern", ["'^wanted$'", "{re: '^wanted$'}"], ids=["a line regex", "re: over all lines"]
)
def test_line_protocol_finds_a_line_after_many(tmp_path, pattern):
    greeting = [Stream(b"chatter\r\n", 500_000), b"wanted\r\n", Silence(30)]
    steps = f"  - S: {pattern}\n"
    r = play(tmp_path, "line", greeting, {}, steps, timeout=20)
    bounded(r, 0, 20 + START)


def test_line_protocol_gathered_lines_stop_at_max_reply(tmp_path):
    steps = "  - S: 'never'\n"
    r = play(
        tmp_path,
        "line",
        [Endless(b"x" * 60 + b"\r\n", 60)],
        {},
        steps,
        timeout=60,
        extra=", max_reply: 2000000",
    )
    bounded(r, 1, 60 + START)
    assert "reply exceeded max_reply 2000000 bytes" in r.output


def test_work_after_the_last_byte_counts_against_the_deadline(tmp_path):
    """A 50 s step took 57.8 s: framing and matching after the last byte were not counted."""
    size = 30_000_000
    answers = {b"RETR": [b"+OK\r\n", Stream(b"ab\r\n", size // 4), b".\r\n"], b"QUIT": b"+OK bye\r\n"}
    steps = "  - S: +OK\n  - C: RETR 1\n    S: {re: 'nothing like this'}\n    timeout: 4\n"
    r = play(tmp_path, "pop3", b"+OK pop3\r\n", answers, steps, timeout=4)
    # whichever way it ends (the deadline during the read, framing or the match), the step ends
    # within its 4 s and a bounded wind-down
    assert r.status in (1, 3), r.output
    assert r.seconds < 4 + START, r.output
    # an `re:` pattern adds the reply's text (a str) and a transient copy for its line ends:
    # measured 120 MiB here (3.5x the body with the interpreter), against held()'s 2.5x
    assert r.peak_mib < held(size) + 1.5 * size / 2**20


# --- TLS: STARTTLS injection and a stalled handshake ----------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


STARTTLS_SESSION = (
    "  - S: 220\n  - C: EHLO x\n    S: 250\n  - C: STARTTLS\n    S: 220\n    starttls: true\n"
    "  - C: EHLO x\n    S: 250\n  - C: QUIT\n    S: 221\n"
)


def _starttls(pki, *inject, stall=0.0):
    ready = b"220 2.0.0 Ready to start TLS\r\n"
    then = StartTLS(stall=stall) if stall else StartTLS(pki.server_context())
    return {
        b"EHLO": b"250-x\r\n250 STARTTLS\r\n",
        b"STARTTLS": [ready, *inject, then],
        b"QUIT": b"221 bye\r\n",
    }


# The integrator may tighten these once STARTTLS injection closes the connection and runs no
# further step (another helper's part of the issue): here only the exit class, time and memory.
def test_fault_starttls_injection_in_the_same_segment(tmp_path, pki):
    answers = _starttls(pki)
    answers[b"STARTTLS"][0] += b"250 injected\r\n"
    extra = f", tls: starttls, ca: '{pki.ca_file}'"
    r = play(tmp_path, "smtp", b"220 hi\r\n", answers, STARTTLS_SESSION, extra=extra)
    bounded(r, 3, 5 + START)
    assert "data received before TLS handshake" in r.output


def test_fault_starttls_injection_later(tmp_path, pki):
    answers = _starttls(pki, Silence(0.3), b"250 injected later\r\n")
    extra = f", tls: starttls, ca: '{pki.ca_file}'"
    r = play(tmp_path, "smtp", b"220 hi\r\n", answers, STARTTLS_SESSION, extra=extra)
    bounded(r, 3, 5 + START)


def test_fault_stalled_tls_handshake(tmp_path, pki):
    answers = _starttls(pki, stall=30)
    extra = f", tls: starttls, ca: '{pki.ca_file}', connect_timeout: 2"
    r = play(tmp_path, "smtp", b"220 hi\r\n", answers, STARTTLS_SESSION, timeout=2, extra=extra)
    bounded(r, 3, 2 + START)
