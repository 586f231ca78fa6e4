"""SASL XOAUTH2 for the sandbox's SMTP, POP3 and IMAP servers (Google's and Microsoft's OAuth 2.0
mechanism, the predecessor of RFC 7628 OAUTHBEARER).

The client's response is base64 of  "user=" USER ^A "auth=Bearer " TOKEN ^A ^A  (^A = 0x01).
On a bad token the server does not fail at once: it sends a challenge carrying a base64 JSON
error (SMTP `334 <json>`, IMAP/POP3 `+ <json>`), the client answers with an empty line, and only
then comes the failure reply (SMTP 535, IMAP NO, POP3 -ERR). That is what Gmail and Outlook do.

Nothing here returns, logs or puts into an exception message the token or the blob.
"""

from __future__ import annotations

import base64
import binascii
import json

#: RFC 4954 section 4: a server accepts SASL responses (and an AUTH line) of at least 12288 octets.
SASL_LINE_LIMIT = 12288

#: The JSON error of a failed XOAUTH2 login, already base64-encoded (the shape Gmail sends).
XOAUTH2_ERROR_CHALLENGE = base64.b64encode(
    json.dumps(
        {"status": "401", "schemes": "Bearer", "scope": "https://mail.mailrun.test/"},
        separators=(",", ":"),
    ).encode()
).decode("ascii")


class SaslError(ValueError):
    """The client's response is malformed; the message says how, never what it held."""


def decode_response(blob: str | bytes) -> bytes:
    """A base64 SASL response -> bytes; '=' is the empty response (RFC 4954 section 4)."""
    if isinstance(blob, str):
        blob = blob.encode("ascii", "replace")
    blob = blob.strip()
    if blob == b"=":
        return b""
    try:
        return base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("invalid base64 data") from None


def parse_xoauth2(data: bytes) -> tuple[str, str]:
    """'user=U\\x01auth=Bearer T\\x01\\x01' -> (U, T). Other key=value fields are allowed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("XOAUTH2 response is not UTF-8") from None
    if not text.endswith("\x01\x01"):
        raise SaslError("XOAUTH2 response does not end with ^A^A")
    fields: dict[str, str] = {}
    for pair in text[:-2].split("\x01"):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SaslError("XOAUTH2 response holds a field that is not key=value")
        fields.setdefault(key.lower(), value)
    user = fields.get("user", "")
    scheme, _, token = fields.get("auth", "").partition(" ")
    if not user:
        raise SaslError("XOAUTH2 response has no user=")
    if scheme.lower() != "bearer" or not token.strip():
        raise SaslError("XOAUTH2 response has no 'auth=Bearer TOKEN'")
    return user, token.strip()


def parse_credentials(mechanism: str, blob: str | bytes) -> tuple[str, str]:
    """(user, secret) from a base64 PLAIN (authzid NUL user NUL password) or XOAUTH2 response.
    SaslError says what is wrong with it."""
    decoded = decode_response(blob)
    if mechanism == "XOAUTH2":
        return parse_xoauth2(decoded)
    try:
        _authz, user_b, password_b = decoded.split(b"\x00")
    except ValueError:
        raise SaslError("not authzid NUL user NUL password") from None
    return user_b.decode("utf-8", "replace"), password_b.decode("utf-8", "replace")
