"""Server-side SASL for the sandbox's SMTP and POP3 (and the XOAUTH2 parsing IMAP uses):
one place for every mechanism, sans-IO. A session drives an exchange with `exchange()`, giving
it a way to send a challenge and read the answer in its own protocol (SMTP `334 `, POP3 `+ `).

    PLAIN (RFC 4616), LOGIN ('Username:' / 'Password:' prompts), CRAM-MD5 (RFC 2195),
    SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, 7677; no channel binding), XOAUTH2 (Google's),
    OAUTHBEARER (RFC 7628), EXTERNAL (RFC 4422: the TLS client certificate's identity),
    ANONYMOUS (RFC 4505: only when any login is accepted, into the mailbox `anonymous`).

Passwords: PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER hand the login and the password (or token) to
SandboxState.authenticate, so accept-any mode takes anything. CRAM-MD5 and SCRAM prove a password
the server must already know: "any password" cannot be proved, so they log in only the published
users with their published passwords, in both modes (an unknown user gets a fake salt and fails
at the proof like a wrong password, so the exchange does not say which users exist).

OAuth failures are answered as Gmail/Outlook do: a challenge carrying a base64 JSON error (SMTP
`334 <json>`, POP3/IMAP `+ <json>`), the client's answer (empty for XOAUTH2, ^A for OAUTHBEARER,
RFC 7628 3.2.3), then the failure reply. SCRAM's server-final `v=` message goes out as one more
challenge, answered empty (RFC 4954 has no data on success), as Dovecot does.

Nothing here returns, logs or puts into an exception message a password, token or proof.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.sandbox.state import SandboxState

#: RFC 4954 section 4: a server accepts SASL responses (and an AUTH line) of at least 12288 octets.
SASL_LINE_LIMIT = 12288
SCRAM_ITERATIONS = 4096


def _b64json(value: dict) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode("ascii")


_SCOPE = "https://mail.mailrun.test/"
#: The JSON error of a failed XOAUTH2 login, already base64-encoded (the shape Gmail sends).
XOAUTH2_ERROR_CHALLENGE = _b64json({"status": "401", "schemes": "Bearer", "scope": _SCOPE})
#: The JSON error of a failed OAUTHBEARER login (RFC 7628 3.2.2), base64-encoded.
OAUTHBEARER_ERROR_CHALLENGE = _b64json(
    {
        "status": "invalid_token",
        "scope": _SCOPE,
        "openid-configuration": _SCOPE + ".well-known/openid-configuration",
    }
)


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
    fields = _kv_fields(data, "XOAUTH2")
    user = fields.get("user", "")
    if not user:
        raise SaslError("XOAUTH2 response has no user=")
    return user, _bearer(fields, "XOAUTH2")


def parse_oauthbearer(data: bytes) -> tuple[str, str]:
    """RFC 7628: 'n,a=U,' ^A [host=H ^A] [port=P ^A] 'auth=Bearer T' ^A ^A -> (U, T)."""
    gs2, sep, rest = data.partition(b"\x01")
    if not sep:
        raise SaslError("OAUTHBEARER response has no ^A after the GS2 header")
    header = gs2.decode("utf-8", "replace").split(",")
    if len(header) != 3 or header[0] not in ("n", "y") or header[2]:
        raise SaslError("OAUTHBEARER response does not start with a GS2 header 'n,a=USER,'")
    user = _unsaslname(header[1][2:]) if header[1].startswith("a=") else ""
    if not user:
        raise SaslError("OAUTHBEARER response names no user (a=USER in its GS2 header)")
    return user, _bearer(_kv_fields(rest, "OAUTHBEARER"), "OAUTHBEARER")


def _kv_fields(data: bytes, mechanism: str) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{mechanism} response is not UTF-8") from None
    if not text.endswith("\x01\x01"):
        raise SaslError(f"{mechanism} response does not end with ^A^A")
    fields: dict[str, str] = {}
    for pair in text[:-2].split("\x01"):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SaslError(f"{mechanism} response holds a field that is not key=value")
        fields.setdefault(key.lower(), value)
    return fields


def _bearer(fields: dict[str, str], mechanism: str) -> str:
    scheme, _, token = fields.get("auth", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SaslError(f"{mechanism} response has no 'auth=Bearer TOKEN'")
    return token.strip()


def parse_credentials(mechanism: str, blob: str | bytes) -> tuple[str, str]:
    """(user, secret) from a base64 PLAIN (authzid NUL user NUL password) or XOAUTH2 response.
    SaslError says what is wrong with it."""
    decoded = decode_response(blob)
    if mechanism == "XOAUTH2":
        return parse_xoauth2(decoded)
    return _plain(decoded)


def _plain(decoded: bytes) -> tuple[str, str]:
    try:
        _authz, user_b, password_b = decoded.split(b"\x00")
    except ValueError:
        raise SaslError("not authzid NUL user NUL password") from None
    return user_b.decode("utf-8", "replace"), password_b.decode("utf-8", "replace")


# --- the mechanisms ------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What a mechanism says after each response: send `challenge` and wait for the next
    response; or done: `mailbox` logged in (None: refused). `error_challenge`: first send it
    (an OAuth JSON error) and read the client's answer, then refuse. `malformed`: the response
    broke the mechanism's syntax (the reply says how)."""

    challenge: bytes | None = None
    mailbox: str | None = None
    error_challenge: str | None = None
    malformed: str | None = None
    oauth: bool = False  # refused: an OAuth token (the failure reply says so)

    @property
    def done(self) -> bool:
        return self.challenge is None


REFUSED = Outcome()


class ServerMechanism:
    name = ""
    #: RFC 4422: may the client send an initial response with the command
    initial_allowed = True

    def __init__(self, state: SandboxState, identity: str | None = None):
        self.state = state
        self.identity = identity  # the email address of a verified TLS client certificate

    def start(self, initial: bytes | None) -> Outcome:
        """The exchange begins; `initial` is the initial response (None: there was none)."""
        return Outcome(challenge=b"") if initial is None else self.step(initial)

    def step(self, response: bytes) -> Outcome:
        raise NotImplementedError

    def login(self, user: str, secret: str) -> Outcome:
        return Outcome(mailbox=self.state.authenticate(user, secret))


class Plain(ServerMechanism):
    name = "PLAIN"

    def step(self, response: bytes) -> Outcome:
        try:
            return self.login(*_plain(response))
        except SaslError as why:
            return Outcome(malformed=str(why))


class Login(ServerMechanism):
    name = "LOGIN"

    def __init__(self, state: SandboxState, identity: str | None = None):
        super().__init__(state, identity)
        self.user: str | None = None

    def start(self, initial: bytes | None) -> Outcome:
        return Outcome(challenge=b"Username:") if initial is None else self.step(initial)

    def step(self, response: bytes) -> Outcome:
        text = response.decode("utf-8", "replace")
        if self.user is None:
            self.user = text
            return Outcome(challenge=b"Password:")
        return self.login(self.user, text)


class CramMD5(ServerMechanism):
    name = "CRAM-MD5"
    initial_allowed = False

    def start(self, initial: bytes | None) -> Outcome:
        stamp = f"<{int.from_bytes(os.urandom(4), 'big')}.{int(time.time())}@{self.state.hostname}>"
        self.challenge = stamp.encode()
        return Outcome(challenge=self.challenge)

    def step(self, response: bytes) -> Outcome:
        user, _, digest = response.decode("utf-8", "replace").rpartition(" ")
        if not user or len(digest) != 32:
            return Outcome(malformed="not 'user digest' (32 hex digits)")
        known = self.state.published(user)
        if known is None:
            return REFUSED
        expected = hmac.new(known[1].encode(), self.challenge, hashlib.md5).hexdigest()
        if not hmac.compare_digest(expected.encode(), digest.lower().encode("utf-8")):
            return REFUSED
        return Outcome(mailbox=self.state.open_mailbox(known[0]))


class Scram(ServerMechanism):
    """RFC 5802 server side, without channel binding: client-first -> server-first (nonce, salt,
    iterations) -> client-final (proof checked) -> server-final 'v=' (answered empty) -> done.

    Written apart from mailrun's client (runner.protocols.sasl) on purpose: the sandbox is what the
    client is tested against, so sharing the math would let one mistake hide itself; both are
    held to the RFC 5802 / 7677 vectors instead."""

    hash_name = "sha1"

    def __init__(self, state: SandboxState, identity: str | None = None):
        super().__init__(state, identity)
        self.stage = 0
        self.mailbox: str | None = None

    def step(self, response: bytes) -> Outcome:
        try:
            text = response.decode("utf-8")
        except UnicodeDecodeError:
            return Outcome(malformed=f"{self.name} message is not UTF-8")
        self.stage += 1
        if self.stage == 1:
            return self._server_first(text)
        if self.stage == 2:
            return self._server_final(text)
        # The client's answer to the server-final message: empty, then success.
        return (
            Outcome(mailbox=self.mailbox) if not response else Outcome(malformed="expected an empty answer")
        )

    def _server_first(self, client_first: str) -> Outcome:
        parts = client_first.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y") or (parts[1] and not parts[1].startswith("a=")):
            return Outcome(malformed=f"{self.name} client-first message has no GS2 header 'n,,'")
        self.gs2 = f"{parts[0]},{parts[1]},"
        self.client_first_bare = parts[2]
        fields = scram_fields(self.client_first_bare)
        if "m" in fields or not fields.get("n") or not fields.get("r"):
            return Outcome(malformed=f"{self.name} client-first message needs n=USER,r=NONCE")
        known = self.state.published(_unsaslname(fields["n"]))
        salt = os.urandom(16)
        if known is None:  # fail at the proof, as for a wrong password
            self.login_name, self.salted = None, os.urandom(hashlib.new(self.hash_name).digest_size)
        else:
            self.login_name = known[0]
            self.salted = salted_password(self.hash_name, known[1], salt, SCRAM_ITERATIONS)
        self.nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(salt).decode()},i={SCRAM_ITERATIONS}"
        return Outcome(challenge=self.server_first.encode())

    def _server_final(self, client_final: str) -> Outcome:
        without_proof, sep, proof_b64 = client_final.rpartition(",p=")
        fields = scram_fields(without_proof)
        if not sep or fields.get("r") != self.nonce:
            return Outcome(malformed=f"{self.name} client-final message has the wrong nonce or no proof")
        if fields.get("c") != base64.b64encode(self.gs2.encode()).decode():
            return Outcome(malformed=f"{self.name} channel binding does not match the GS2 header")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except (binascii.Error, ValueError):
            return Outcome(malformed=f"{self.name} proof is not base64")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        verify = scram_verify(self.hash_name, self.salted, auth_message, proof)
        if verify is None or self.login_name is None:
            return REFUSED
        self.mailbox = self.state.open_mailbox(self.login_name)
        return Outcome(challenge=b"v=" + base64.b64encode(verify))


def salted_password(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, iterations)


def scram_verify(hash_name: str, salted: bytes, auth_message: bytes, proof: bytes) -> bytes | None:
    """RFC 5802 section 3: the server signature when `proof` proves the salted password, else None."""
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    stored_key = hashlib.new(hash_name, client_key).digest()
    client_signature = hmac.new(stored_key, auth_message, hash_name).digest()
    if len(proof) != len(client_signature):
        return None
    recovered = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    if not hmac.compare_digest(hashlib.new(hash_name, recovered).digest(), stored_key):
        return None
    server_key = hmac.new(salted, b"Server Key", hash_name).digest()
    return hmac.new(server_key, auth_message, hash_name).digest()


class ScramSHA1(Scram):
    name = "SCRAM-SHA-1"
    hash_name = "sha1"


class ScramSHA256(Scram):
    name = "SCRAM-SHA-256"
    hash_name = "sha256"


class XOAuth2(ServerMechanism):
    name = "XOAUTH2"
    parse = staticmethod(parse_xoauth2)
    error_challenge = XOAUTH2_ERROR_CHALLENGE

    def step(self, response: bytes) -> Outcome:
        try:
            user, token = self.parse(response)
        except SaslError as why:
            return Outcome(malformed=str(why))
        outcome = self.login(user, token)
        if outcome.mailbox is None:
            return Outcome(error_challenge=self.error_challenge, oauth=True)
        return outcome


class OAuthBearer(XOAuth2):
    name = "OAUTHBEARER"
    parse = staticmethod(parse_oauthbearer)
    error_challenge = OAUTHBEARER_ERROR_CHALLENGE


class External(ServerMechanism):
    """RFC 4422 appendix A: the identity is the TLS client certificate's (verified against the
    sandbox's CA, Sandbox.client_cert); the response is empty or names that same identity."""

    name = "EXTERNAL"

    def step(self, response: bytes) -> Outcome:
        if self.identity is None:  # no TLS, or no certificate shown
            return REFUSED
        authzid = response.decode("utf-8", "replace")
        wanted = self.state.store_name(self.identity)
        if wanted is None or (authzid and self.state.store_name(authzid) != wanted):
            return REFUSED
        return Outcome(mailbox=self.state.open_mailbox(wanted))


class Anonymous(ServerMechanism):
    """RFC 4505: the response is trace information (up to 255 characters, often an email
    address), not an identity. Accepted only when the sandbox accepts any login, into the mailbox
    `anonymous`; refused otherwise."""

    name = "ANONYMOUS"

    def step(self, response: bytes) -> Outcome:
        try:
            trace = response.decode("utf-8")
        except UnicodeDecodeError:
            return Outcome(malformed="ANONYMOUS trace is not UTF-8")
        if len(trace) > 255:
            return Outcome(malformed="ANONYMOUS trace is longer than 255 characters")
        if not self.state.accept_any_login:
            return REFUSED
        return Outcome(mailbox=self.state.open_mailbox(ANONYMOUS_MAILBOX))


#: the mailbox an ANONYMOUS login opens (accept-any mode only)
ANONYMOUS_MAILBOX = "anonymous"


def certificate_identity(peercert: dict | None) -> str | None:
    """The email address of a verified client certificate (ssl's getpeercert() dict), or None."""
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind == "email":
            return value
    return None


_CLASSES = {
    c.name: c
    for c in (Plain, Login, CramMD5, ScramSHA1, ScramSHA256, XOAuth2, OAuthBearer, External, Anonymous)
}
#: what the SMTP and POP3 servers offer, in the order they advertise it
MECHANISMS = tuple(_CLASSES)


def server_mechanism(name: str, state: SandboxState, identity: str | None = None) -> ServerMechanism | None:
    """The mechanism's server side for one exchange (None: not offered). Any case. `identity`:
    the email address of the TLS client certificate the client showed (EXTERNAL)."""
    cls = _CLASSES.get(name.upper())
    return cls(state, identity) if cls is not None else None


#: ask(challenge, answer_ignored) sends the challenge (raw bytes; the session base64-encodes
#: and frames it) and returns the client's decoded answer, or None when the client aborted ('*'),
#: sent bad base64 or too long a line (the session has already replied).
Ask = Callable[[bytes, bool], Awaitable[bytes | None]]


async def exchange(mech: ServerMechanism, initial: bytes | None, ask: Ask) -> Outcome | None:
    """Plays one exchange to the end. None: the session already answered (an abort, bad base64);
    else the final Outcome (logged in, refused, or malformed)."""
    if initial is not None and not mech.initial_allowed:
        return Outcome(malformed=f"{mech.name} takes no initial response")
    outcome = mech.start(initial)
    while not outcome.done:
        assert outcome.challenge is not None
        response = await ask(outcome.challenge, False)
        if response is None:
            return None
        outcome = mech.step(response)
    challenge = outcome.error_challenge
    if challenge is not None and await ask(base64.b64decode(challenge), True) is None:
        return None
    return outcome


def scram_fields(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            out.setdefault(key, value)
    return out


def _unsaslname(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")
