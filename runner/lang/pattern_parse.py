"""Parsing `S:` values into runner.lang.patterns' Pattern classes, with every problem listed.

parse_pattern never raises for bad input: the loader reports its Problems at their place in
the file (Problem.path is relative to the S value). The forms are described in
runner.lang.patterns.
"""

from __future__ import annotations

import re

from runner.lang.line_checks import ORDERS
from runner.lang.patterns import (
    AllPattern,
    AnyPattern,
    CodePattern,
    EOFPattern,
    LinePattern,
    Pattern,
    code_problem,
    split_code,
)
from runner.lang.recipients import RecipientsPattern
from runner.lang.templates import TemplateError, parse
from runner.protocols import NAMES as PROTOCOLS
from runner.records import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 9 ms at start)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAPPING_KEYS", "Problem", "parse_pattern", "regex_problem"]

MAPPING_KEYS = ("code", "text", "re", "lines", "order", "flags", "not")
_PLACEHOLDER = "X"


class Problem(Value):
    """path: relative to the S value: '', '.code', '[1]', '.not.re', '.lines[0]'."""

    __slots__ = ("path", "message")

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message


def regex_problem(source: str) -> str | None:
    """Check a regex template at parse time: template syntax, then the regex with each
    `{{ .. }}` replaced by a placeholder."""
    try:
        tpl = parse(source)
    except TemplateError as e:
        return str(e)
    if tpl.is_constant:
        probe = source
    else:
        out, pos = [], 0
        for s, e in tpl.spans():
            out.append(source[pos:s])
            out.append(_PLACEHOLDER)
            pos = e
        out.append(source[pos:])
        probe = "".join(out)
    try:
        re.compile(probe, re.MULTILINE)
    except re.error as e:
        return f"invalid regular expression '{source}': {e}"
    except (OverflowError, RecursionError, ValueError) as e:
        return f"invalid regular expression '{source}': {e}"
    return None


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return str(value)


def _bad_type_message(value: Any, protocol: str) -> str:
    if isinstance(value, bool):
        if protocol == "imap" and value is False:
            return "false is not a pattern; YAML reads an unquoted NO as false: write 'NO' in quotes"
        word = "true" if value else "false"
        return f"{word} is not a pattern (YAML reads yes/no/on/off/true/false as booleans: quote the text)"
    if value is None:
        return "empty pattern: give a reply code, EOF, a list or a mapping"
    if isinstance(value, float):
        return f"{value!r} is not a reply-code pattern (a number with a point: quote it if you meant text)"
    return f"a pattern is a string, an integer, a list or a mapping, not {type(value).__name__}"


def _parse_code_value(value: Any, protocol: str, path: str, problems: list[Problem]) -> str | None:
    """A `code:` value (mapping): the CODE alone."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.append(
            Problem(path, _bad_type_message(value, protocol) if value is not None else "code is empty")
        )
        return None
    if isinstance(value, int):
        if protocol != "smtp":
            problems.append(Problem(path, _int_message(value, protocol)))
            return None
        value = str(value)
    try:
        tpl = parse(value)
    except TemplateError as e:
        problems.append(Problem(path, str(e)))
        return None
    if protocol == "line":
        problems.append(Problem(path, code_problem(value, protocol) or ""))
        return None
    if tpl.is_constant:
        problem = code_problem(value.strip(), protocol)
        if problem:
            if len(value.split()) > 1:
                problem += "; put the text under `text:`"
            problems.append(Problem(path, problem))
            return None
        return value.strip()
    return value


def _int_message(value: int, protocol: str) -> str:
    if protocol == "pop3":
        return f"{value} is an SMTP reply code; a pop3 pattern wants +OK, -ERR or +"
    if protocol == "imap":
        return f"{value} is an SMTP reply code; an imap pattern wants OK, NO, BAD, PREAUTH, BYE or +"
    return f"{value} is not a reply-code pattern for smtp (want 3 chars of digits or x)"


def _parse_scalar(value: Any, protocol: str, path: str, problems: list[Problem]) -> Pattern | None:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        problems.append(Problem(path, _bad_type_message(value, protocol)))
        return None
    if isinstance(value, int):
        if protocol == "line":
            value = str(value)
        elif protocol != "smtp" or not (0 <= value <= 999) or len(str(value)) != 3:
            problems.append(Problem(path, _int_message(value, protocol)))
            return None
        else:
            value = str(value)
    if not isinstance(value, str):
        problems.append(Problem(path, _bad_type_message(value, protocol)))
        return None
    if not value.strip():
        problems.append(Problem(path, "empty pattern: give a reply code, EOF, a list or a mapping"))
        return None
    if value.strip() == "EOF":
        return EOFPattern()
    if protocol == "line":
        problem = regex_problem(value)
        if problem:
            problems.append(Problem(path, problem))
            return None
        return LinePattern(value)
    try:
        tpl = parse(value)
    except TemplateError as e:
        problems.append(Problem(path, str(e)))
        return None
    source = value.strip()
    tpl = parse(source)
    spans = tpl.spans()
    code, text = split_code(source, spans)
    if not any(start < len(code) for start, _ in spans):  # no {{ }} in the code: check it now
        problem = code_problem(code, protocol)
        if problem:
            problems.append(Problem(path, problem))
            return None
    return CodePattern(source, protocol, tpl, code, text)


def _parse(value: Any, protocol: str, path: str, problems: list[Problem], depth: int) -> Pattern | None:
    if depth > 50:
        problems.append(Problem(path, "pattern nested too deeply"))
        return None
    if isinstance(value, list | tuple):
        if not value:
            problems.append(Problem(path, "empty list: give at least one alternative"))
            return None
        alts = []
        for i, item in enumerate(value):
            p = _parse(item, protocol, f"{path}[{i}]", problems, depth + 1)
            if p is not None:
                alts.append(p)
        if len(alts) != len(value):
            return None
        return AnyPattern(alts)
    if isinstance(value, dict):
        return _parse_mapping(value, protocol, path, problems, depth)
    return _parse_scalar(value, protocol, path, problems)


def _parse_text(value: Any, protocol: str, path: str, problems: list[Problem]) -> str | None:
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
        problems.append(
            Problem(path, _bad_type_message(value, protocol) if value is not None else "text is empty")
        )
        return None
    value = value if isinstance(value, str) else str(value)
    try:
        parse(value)
    except TemplateError as e:
        problems.append(Problem(path, str(e)))
        return None
    return value


def _parse_regex(value: Any, protocol: str, path: str, problems: list[Problem]) -> str | None:
    if isinstance(value, bool) or value is None or not isinstance(value, str | int):
        what = "a regular expression is a string"
        problems.append(Problem(path, f"{what}, not {_shown(value) if value is not None else 'empty'}"))
        return None
    value = value if isinstance(value, str) else str(value)
    problem = regex_problem(value)
    if problem:
        problems.append(Problem(path, problem))
        return None
    return value


def _parse_mapping(
    value: dict, protocol: str, path: str, problems: list[Problem], depth: int
) -> Pattern | None:
    if not value:
        problems.append(Problem(path, f"empty mapping: give at least one of {', '.join(MAPPING_KEYS)}"))
        return None
    start = len(problems)
    fields: dict[str, Any] = {}
    for key, item in value.items():
        kpath = f"{path}.{key}"
        if key not in MAPPING_KEYS:
            problems.append(Problem(kpath, f"unknown key '{key}' (allowed: {', '.join(MAPPING_KEYS)})"))
            continue
        if key == "code":
            fields["code"] = _parse_code_value(item, protocol, kpath, problems)
        elif key == "text":
            fields["text"] = _parse_text(item, protocol, kpath, problems)
        elif key == "re":
            fields["regex"] = _parse_regex(item, protocol, kpath, problems)
        elif key == "lines":
            if not isinstance(item, list | tuple):
                item = [item] if isinstance(item, str) else item
            if not isinstance(item, list | tuple):
                problems.append(Problem(kpath, "lines is a list of regular expressions"))
                continue
            if not item:
                problems.append(Problem(kpath, "empty list: give at least one regular expression"))
                continue
            fields["lines"] = [
                _parse_regex(r, protocol, f"{kpath}[{i}]", problems) for i, r in enumerate(item)
            ]
        elif key == "order":
            if item not in ORDERS:
                problems.append(Problem(kpath, f"order is one of {', '.join(ORDERS)} (got {item!r})"))
            elif "lines" not in value:
                problems.append(Problem(kpath, "order goes with lines"))
            else:
                fields["order"] = item
        elif key == "flags":
            fields["flags"] = _parse_flags(item, protocol, kpath, problems)
        elif key == "not":
            fields["not_"] = _parse(item, protocol, kpath, problems, depth + 1)
    if len(problems) != start:
        return None
    return AllPattern(protocol, **fields)


def _parse_flags(item: Any, protocol: str, path: str, problems: list[Problem]) -> list[str] | None:
    if protocol != "imap":
        problems.append(Problem(path, f"flags is for imap (an IMAP flag list; this is {protocol})"))
        return None
    if not isinstance(item, list | tuple) or not all(isinstance(f, str) and f for f in item):
        problems.append(
            Problem(path, "flags is a list of IMAP flags, e.g. ['\\Seen', '\\Flagged'] ([] for none)")
        )
        return None
    return list(item)


def parse_pattern(value: Any, protocol: str) -> tuple[Pattern | None, list[Problem]]:
    """Parse an `S:` value. Never raises for bad input: returns (None, problems) instead."""
    problems: list[Problem] = []
    if protocol not in PROTOCOLS:
        return None, [Problem("", f"unknown protocol '{protocol}' (want {', '.join(PROTOCOLS)})")]
    if protocol == "lmtp":  # SMTP's codes, and per-recipient replies after a message
        whole, problems = parse_pattern(value, "smtp")
        if whole is None:
            return None, problems
        each = [parse_pattern(v, "smtp")[0] for v in value] if isinstance(value, list) else None
        return RecipientsPattern(whole, each), []
    try:
        pattern = _parse(value, protocol, "", problems, 0)
    except RecursionError:
        return None, [Problem("", "pattern nested too deeply")]
    if problems:
        return None, problems
    return pattern, []
