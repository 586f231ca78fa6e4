"""Text the reporters share: masking (`redact`), terminal- and XML-safe text (`safe_text`,
`visible`), wire lines (`split_lines`), times (`iso`), and the few phrases every report words the
same way (step labels, locations, captures, a decoded challenge, a retry).

`safe_text` is THE escaping of every text a report prints or writes (console, transcript, JUnit):
a server or a scenario value (a reply, a captured value, a host with CRLF in it) can neither
start a line of its own nor send the terminal an escape sequence."""

from __future__ import annotations

import re

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing at run time)
if TYPE_CHECKING:
    from runner.events import Retrying
    from runner.reporters.base import RedactorLike


def redact(redactor: RedactorLike | None, text: str) -> str:
    return redactor.redact(text) if redactor is not None and text else text


# C0 controls, DEL, C1 controls (NEL among them), the Unicode line and paragraph separators and
# the bidirectional overrides and isolates (which reorder what a terminal shows)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ESC = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _esc_control(m: re.Match) -> str:
    c = m.group()
    return _ESC.get(c) or (f"\\x{ord(c):02x}" if c < "\u0100" else f"\\u{ord(c):04x}")


def fmt_ms(seconds: float) -> str:
    """A step's time as shown: '12 ms', '<1 ms'."""
    ms = seconds * 1000
    return "<1 ms" if 0 < ms < 1 else f"{ms:.0f} ms"


def safe_text(text: str) -> str:
    """Text as one line that is safe for a terminal or an XML file: CR, LF and TAB shown as
    `\\r`, `\\n`, `\\t`, every other control character as `\\xNN` (ESC is `\\x1b`), the
    Unicode line separators and bidi controls as `\\uNNNN`. Everything else is kept."""
    return _CONTROL.sub(_esc_control, text)


def visible(data: bytes | str) -> str:
    """Wire bytes as one display string: UTF-8 with invalid bytes as `\\xNN`, then safe_text
    (the reference transcript style: `250 ok\\r\\n`)."""
    text = data.decode("utf-8", errors="backslashreplace") if isinstance(data, bytes) else data
    return safe_text(text)


_LINE = re.compile(r"[^\n]*\n|[^\n]+")


def split_lines(text: str) -> list[str]:
    """Split at LF only (a bare CR stays inside its line), keeping line ends; the last piece
    may lack one."""
    return _LINE.findall(text)


def iso(ts: float, *, timespec: str = "milliseconds") -> str:
    """time.time() as ISO 8601 UTC: '2026-11-28T14:57:09.123+00:00'."""
    from datetime import UTC, datetime  # only the file-writing reports need it

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec)


def step_label(index: int, section: str) -> str:
    if section == "tls":  # the TLS step (tls_expect), one per handshake
        return "TLS check"
    return f"step {index}" if section == "steps" else f"finally step {index}"


def tls_fact_lines(info) -> list[str]:
    """A handshake's certificate facts (a TLSInfo) as the text reports show them, one per line:
    'names: DNS:localhost, IP:127.0.0.1', 'valid: ... to ... (12 days left)', 'SNI sent: ...'."""
    f = info.facts()
    out = []
    if f["sans"] is not None:
        out.append(f"names: {', '.join(f['sans']) or '(no subjectAltName)'}")
    if f["not_after"] is not None:
        days = f["days_left"]
        left = f"{plural(days, 'day')} left" if days >= 0 else "EXPIRED"
        out.append(f"valid: {f['not_before']} to {f['not_after']} ({left})")
    out.append(f"verified: {'yes' if f['verified'] else 'NO'}; SNI sent: {f['sni'] or '(none)'}")
    return out


def where(location: str, via: str | None) -> str:
    """'lib/auth.yaml:4 (included from x.yaml:12)'"""
    return f"{location} (included from {via})" if via else location


def plural(n: int, word: str) -> str:
    """'1 line', '3 lines'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def with_note(text: str, note: str | None) -> str:
    """A reply line with the protocol's display aid (the decoded 334 challenge) after it:
    '334 VXNlcm5hbWU6 (Username:)'."""
    return f"{text} ({note})" if note else text


def captures_text(captures: dict[str, str]) -> str:
    """'queue_id=4F2B3C, uid=7' (values as the step recorded them: already masked)."""
    return ", ".join(f"{k}={v}" for k, v in captures.items())


def expects_eof(expected: str | None) -> bool:
    return expected == "EOF"


def retry_text(ev: Retrying) -> str:
    """One line for a Retrying event, the same in every report:
    'retrying session fetch (1/3 failed) in 0.5 s: connection closed by the server'
    'retrying scenario late (retry 1 of 2: attempt 1 failed before anything was sent) in 1 s:
    connect to 127.0.0.1:2525: connection refused'"""
    if ev.what == "scenario":  # the suite's --retries: attempts counts the first one too
        s = (
            f"retrying scenario {ev.name} (retry {ev.attempt} of {ev.attempts - 1}: "
            f"attempt {ev.attempt} failed before anything was sent)"
        )
    else:
        s = f"retrying {ev.what} {ev.name} ({ev.attempt}/{ev.attempts} failed)"
    if ev.interval > 0:
        s += f" in {ev.interval:g} s"
    return f"{s}: {ev.reason}" if ev.reason else s
