"""The language of `tls_expect:`: what each key takes, parsed once at load, and the comparisons.

    version:   ">= TLSv1.2" | "TLSv1.3"          versions in order SSLv3 < TLSv1 < TLSv1.1 < TLSv1.2 < TLSv1.3
    days_left: ">= 21" | 30                      whole days until the certificate's notAfter
    cipher, issuer, subject: REGEX               searched (re.search) in the negotiated cipher
                                                 suite / the certificate's issuer / subject
    name:      "{{ connect.host }}"              a template: the certificate must be valid for it
    verified:  true | false                      was the certificate verified

A comparison is `OP VALUE` with OP one of >=, >, <=, <, == (a bare VALUE means ==).
`parse_check(key, value)` -> (op, value) or raises ValueError with the message the loader puts
at the key's file:line:col; `holds(op, got, wanted)` compares. The engine
(runner.engine.tls_check) evaluates the parsed checks against a handshake's facts.
"""

from __future__ import annotations

import re

__all__ = ["CONNECT_NAMES", "KEYS", "VERSIONS", "holds", "parse_check", "version_rank"]

VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
KEYS = ("version", "cipher", "days_left", "name", "issuer", "subject", "verified")
#: The names a `name:` template may use besides the scenario's variables (the session's
#: connect values after rendering): `{{ connect.host }}`.
CONNECT_NAMES = ("connect.host", "connect.port", "connect.server_name")
_REGEX_KEYS = ("cipher", "issuer", "subject")
_COMPARISON = re.compile(r"\s*(>=|<=|==|>|<)?\s*(\S.*?)\s*\Z", re.S)


def version_rank(name: str) -> int | None:
    """TLSv1.2 -> its place in VERSIONS (case-insensitive; 'TLSv1.0' is TLSv1), else None."""
    wanted = name.strip().lower()
    if wanted == "tlsv1.0":
        wanted = "tlsv1"
    for i, v in enumerate(VERSIONS):
        if v.lower() == wanted:
            return i
    return None


def _comparison(text: str, what: str) -> tuple[str, str]:
    m = _COMPARISON.match(text)
    if m is None:
        raise ValueError(f"expected a comparison such as '>= {what}' (got {text!r})")
    return m.group(1) or "==", m.group(2)


def parse_check(key: str, value) -> tuple[str, object]:
    """One tls_expect key's value -> (op, wanted): ('>=', 'TLSv1.2'), ('>=', 21), ('search',
    regex source), ('valid_for', template source), ('==', True). ValueError says what is wrong."""
    if key == "version":
        op, text = _comparison(str(value), "TLSv1.2")
        rank = version_rank(text)
        if rank is None:
            raise ValueError(f"unknown TLS version {text!r}: use one of {', '.join(VERSIONS)}")
        return op, VERSIONS[rank]
    if key == "days_left":
        if isinstance(value, bool):
            raise ValueError("expected a number of days or a comparison such as '>= 21'")
        if isinstance(value, int):
            return "==", value
        op, text = _comparison(str(value), "21")
        try:
            return op, int(text)
        except ValueError:
            raise ValueError(
                f"expected a whole number of days, or a comparison such as '>= 21' (got {value!r})"
            ) from None
    if key in _REGEX_KEYS:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"invalid regular expression {value!r}: {e}") from None
        return "search", value
    if key == "name":
        return "valid_for", value
    if key == "verified":
        return "==", bool(value)
    raise ValueError(f"unknown tls_expect key '{key}': use {', '.join(KEYS)}")


def holds(op: str, got, wanted) -> bool:
    """`got OP wanted` for the comparison operators (versions are compared by rank)."""
    if isinstance(wanted, str) and version_rank(wanted) is not None:
        got, wanted = version_rank(got), version_rank(wanted)
        if got is None:
            return False
    if op == ">=":
        return got >= wanted
    if op == ">":
        return got > wanted
    if op == "<=":
        return got <= wanted
    if op == "<":
        return got < wanted
    return got == wanted
