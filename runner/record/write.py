"""Recorded sessions as a scenario file: YAML text a person reads and edits.

Each turn becomes a step; its `S:` is what the server answered, as a pattern that holds on the
next run: the reply code, plus the enhanced status code where there is one (`250 2.1.0`); POP3
`+OK`/`-ERR`/`+`; IMAP the tagged status (`OK`, `NO`, `BAD`) or `+`, the greeting's status;
the line protocol the first line, as an escaped regular expression. A server that closed is
`S: EOF`; a reply that never came is a comment. Strings are written double-quoted (JSON's
escapes are YAML's), message bodies as block scalars where they read as written.
"""

from __future__ import annotations

import json
import re

from runner.record.credentials import escape_template

HOST_PLACEHOLDER = "{{ env.MAIL_HOST }}"  # a transcript that does not name its server
#: the greeting a transcript that does not show one is taken to have had
USUAL_GREETING = {"smtp": "220", "lmtp": "220", "pop3": "+OK", "imap": "OK"}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.record.conversation import Conversation, Turn


class SessionOut:
    """One session to write: its name, protocol, `connect:` mapping and conversation."""

    __slots__ = ("name", "protocol", "connect", "conversation")

    def __init__(self, name: str, protocol: str, connect: dict, conversation: Conversation):
        self.name, self.protocol, self.connect, self.conversation = name, protocol, connect, conversation


def q(value) -> str:
    """A YAML value: numbers and booleans as they are, strings double-quoted, a mapping or a
    list of those in flow style."""
    if isinstance(value, list):
        return "[" + ", ".join(q(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {q(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def expectation(protocol: str, turn: Turn) -> str | dict | list | None:
    """The `S:` pattern for what the server answered (None: no reply came); a reply without a
    code (an untagged IMAP response nobody asked for) is matched by its first line."""
    if turn.eof:
        return "EOF"
    reply = turn.reply
    if reply is None:
        return None
    if protocol == "line":
        first = reply.lines[0] if reply.lines else ""
        return _whole_line(first)
    parts = getattr(reply, "parts", None)  # LMTP: one reply per accepted recipient
    if parts is not None and len(parts) > 1:
        each = [_code_pattern(protocol, part) for part in parts]
        return each if len(set(each)) > 1 else each[0]
    return _code_pattern(protocol, reply)


def _code_pattern(protocol: str, reply) -> str | dict:
    code = reply.code or ""
    if not code:
        first = reply.lines[0] if reply.lines else ""
        return {"re": _whole_line(first)}
    if protocol in ("smtp", "lmtp") and reply.enhanced:
        return f"{code} {reply.enhanced}"
    return code


def _whole_line(line: str) -> str:
    """A regular expression matching exactly this line (a `{{` kept out of the templates)."""
    return "^" + re.escape(line).replace("{{", "\\{\\{") + "$"


def scenario_text(name: str, sessions: list[SessionOut], header: list[str]) -> str:
    """The whole scenario file."""
    out = [f"# {line}" if line else "#" for line in header]
    out.append(f"name: {q(name)}")
    secrets: list[str] = []
    for s in sessions:
        secrets += [n for n in s.conversation.credentials.secrets if n not in secrets]
    if len(sessions) == 1:
        s = sessions[0]
        out.append(f"protocol: {s.protocol}")
        out += _connect(s.connect, "")
        if secrets:
            out.append(f"secrets: [{', '.join(secrets)}]")
        out.append("steps:")
        out += _steps(s, "  ")
    else:
        if secrets:
            out.append(f"secrets: [{', '.join(secrets)}]")
        out.append("sessions:")
        for s in sessions:
            out.append(f"  - name: {q(s.name)}")
            out.append(f"    protocol: {s.protocol}")
            out += _connect(s.connect, "    ")
            out.append("    steps:")
            out += _steps(s, "      ")
    return "\n".join(out) + "\n"


def _connect(connect: dict, indent: str) -> list[str]:
    """`connect:`: values from a transcript or the command line are literal (a `{{` in them
    escaped), but for the host placeholder mailrun writes itself."""
    lines = [f"{indent}connect:"]
    for key, value in connect.items():
        if value is None:
            continue
        if isinstance(value, str) and value != HOST_PLACEHOLDER:
            value = escape_template(value)
        lines.append(f"{indent}  {key}: {q(value)}")
    return lines


def _steps(session: SessionOut, indent: str) -> list[str]:
    lines: list[str] = []
    for turn in session.conversation.turns:
        if turn.merged:
            continue
        lines += _step(session.protocol, turn, indent)
    if not any(line.lstrip().startswith("- ") for line in lines):  # comments only: no step
        lines.append(f"{indent}[]")
    return lines


def _step(protocol: str, turn: Turn, indent: str) -> list[str]:
    lines = []
    if turn.note:
        lines.append(f"{indent}# {turn.note}")
    expect = expectation(protocol, turn)
    first = f"{indent}- "
    rest = f"{indent}  "
    if turn.kind == "greeting" and turn.assumed:
        return lines + [f"{first}S: {q(USUAL_GREETING.get(protocol, 'OK'))}"]
    if turn.kind in ("greeting", "read"):
        if expect is None:  # nothing came: the step still waits for it, and says so
            lines.append(f"{indent}# the server sent nothing (no {turn.kind} was received)")
            return lines
        return lines + [f"{first}S: {q(expect)}"]
    if turn.kind == "send":
        body = [f"{first}C: {q(turn.text)}"]
    elif turn.kind == "body":
        body = [f"{first}body: " + _block(turn.text, rest)]
    else:
        body = [f"{first}raw: {q(turn.text)}"]
    if expect is not None:
        body.append(f"{rest}S: {q(expect)}")
    if turn.starttls:
        body.append(f"{rest}starttls: true")
    return lines + body


def _block(text: str, indent: str) -> str:
    """A message body: a `|` block scalar when it reads as written, else a quoted string."""
    readable = (
        text.endswith("\n")
        and not text.startswith((" ", "\n"))
        and all(ch == "\t" or ch == "\n" or ch.isprintable() for ch in text)
        and not any(line != line.rstrip(" ") for line in text.split("\n"))
    )
    if not readable:
        return q(text)
    body = "".join(f"\n{indent}  {line}" if line else "\n" for line in text[:-1].split("\n"))
    return ("|+" if text.endswith("\n\n") else "|") + body  # |+ keeps the trailing empty lines
