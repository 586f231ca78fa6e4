"""SASL client mechanisms, sans-IO: challenges in, responses out (bytes, before base64).

    mech = client("SCRAM-SHA-256", user="alice", password="wonderland")
    first = mech.initial()          # the initial response (bytes), or None if the mechanism has none
    answer = mech.respond(challenge) # for each server challenge (decoded from base64)
    mech.finished()                 # None when the exchange is complete as the mechanism requires
                                    # (SCRAM: the server's signature was verified), else why not

PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, 7677: the
server signature is verified), XOAUTH2 (Google's), OAUTHBEARER (RFC 7628), EXTERNAL and
ANONYMOUS (RFC 4422, 4505). A challenge the mechanism cannot answer raises SASLError. Passwords
are used as UTF-8 bytes (no SASLprep normalisation beyond what the user typed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

MECHANISMS = (
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "XOAUTH2",
    "OAUTHBEARER",
    "EXTERNAL",
    "ANONYMOUS",
)
#: what each mechanism needs besides the mechanism's name ('password' or 'token')
NEEDS = {
    "PLAIN": ("user", "password"),
    "LOGIN": ("user", "password"),
    "CRAM-MD5": ("user", "password"),
    "SCRAM-SHA-1": ("user", "password"),
    "SCRAM-SHA-256": ("user", "password"),
    "XOAUTH2": ("user", "token"),
    "OAUTHBEARER": ("user", "token"),
    "EXTERNAL": (),
    "ANONYMOUS": (),
}


#: per protocol: the command that starts an exchange, a challenge's code, success's code
VERBS = {"smtp": "AUTH", "lmtp": "AUTH", "pop3": "AUTH", "imap": "AUTHENTICATE"}
CHALLENGE = {"smtp": "334", "lmtp": "334", "pop3": "+", "imap": "+"}
SUCCESS = {"smtp": "235", "lmtp": "235", "pop3": "+OK", "imap": "OK"}


class SASLError(Exception):
    """The server's challenge cannot be answered, or its proof is wrong."""


class Mechanism:
    name = ""
    #: RFC 4422: the mechanism sends first (an initial response is natural)
    client_first = True
    #: the most challenges an exchange can bring (an empty one asking for the initial response
    #: included): a server that sends more is answered `*` (cancelled), never again and again
    max_challenges = 1

    def __init__(
        self,
        user: str = "",
        password: str = "",
        token: str = "",
        authzid: str = "",
        host: str = "",
        port: int = 0,
    ):
        self.user, self.password, self.token, self.authzid = user, password, token, authzid
        self.host, self.port = host, port

    def initial(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        raise SASLError(f"{self.name} expects no challenge here (got {challenge[:40]!r})")

    def finished(self) -> str | None:
        return None

    def expected(self) -> list[bytes]:
        """Messages the server will send that are derived from the password (to be masked
        when they arrive): SCRAM's server-final message."""
        return []


class Plain(Mechanism):
    name = "PLAIN"

    def initial(self) -> bytes:
        return f"{self.authzid}\0{self.user}\0{self.password}".encode()

    def respond(self, challenge: bytes) -> bytes:
        if challenge:
            return super().respond(challenge)
        return self.initial()  # an empty challenge: the server asks for the initial response


class Login(Mechanism):
    name = "LOGIN"
    client_first = False
    max_challenges = 2

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._answers = 0

    def initial(self) -> bytes:
        self._answers = 1
        return self.user.encode()

    def respond(self, challenge: bytes) -> bytes:
        asks = challenge.lower()
        self._answers += 1
        if b"user" in asks or (not asks.startswith(b"pass") and self._answers == 1):
            return self.user.encode()
        return self.password.encode()


class CramMD5(Mechanism):
    name = "CRAM-MD5"
    client_first = False

    def respond(self, challenge: bytes) -> bytes:
        digest = hmac.new(self.password.encode(), challenge, hashlib.md5).hexdigest()
        return f"{self.user} {digest}".encode()


class Scram(Mechanism):
    """RFC 5802 without channel binding (gs2 header `n,,`)."""

    hash_name = "sha1"
    max_challenges = 3  # (an empty one asking for client-first,) server-first, server-final

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._nonce = base64.b64encode(os.urandom(18)).decode()
        self._first_bare = f"n={_saslname(self.user)},r={self._nonce}"
        self._server_signature: bytes | None = None
        self._verified = False

    @property
    def _gs2(self) -> str:
        return f"n,{'a=' + _saslname(self.authzid) if self.authzid else ''},"

    def initial(self) -> bytes:
        return (self._gs2 + self._first_bare).encode()

    def respond(self, challenge: bytes) -> bytes:
        if self._server_signature is None:
            if not challenge:
                return self.initial()
            return self._client_final(challenge)
        fields = _fields(challenge)
        if "e" in fields:
            raise SASLError(f"the server refused the proof: e={fields['e']}")
        signature = base64.b64decode(fields.get("v", ""))
        if not hmac.compare_digest(signature, self._server_signature):
            raise SASLError(
                "the server's signature is wrong: it does not know the password (or it is not the server)"
            )
        self._verified = True
        return b""

    def _client_final(self, server_first: bytes) -> bytes:
        fields = _fields(server_first)
        try:
            nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        except (KeyError, ValueError) as exc:
            raise SASLError(f"not a SCRAM server-first message ({exc})") from None
        if not nonce.startswith(self._nonce) or iterations < 1:
            raise SASLError("the server's nonce does not extend ours (or the iteration count is invalid)")
        channel = base64.b64encode(self._gs2.encode()).decode()
        without_proof = f"c={channel},r={nonce}"
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash_name).digest()
        stored = hashlib.new(self.hash_name, client_key).digest()
        auth_message = f"{self._first_bare},{server_first.decode()},{without_proof}".encode()
        client_signature = hmac.new(stored, auth_message, self.hash_name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash_name).digest()
        self._server_signature = hmac.new(server_key, auth_message, self.hash_name).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def expected(self) -> list[bytes]:
        if self._server_signature is None or self._verified:
            return []
        return [b"v=" + base64.b64encode(self._server_signature)]

    def finished(self) -> str | None:
        if not self._verified:
            return (
                "the server did not send its signature (SCRAM's server-final message), so it was not verified"
            )
        return None


class ScramSHA1(Scram):
    name = "SCRAM-SHA-1"
    hash_name = "sha1"


class ScramSHA256(Scram):
    name = "SCRAM-SHA-256"
    hash_name = "sha256"


class XOAuth2(Mechanism):
    name = "XOAUTH2"
    max_challenges = 2  # an empty one, and the JSON error

    def initial(self) -> bytes:
        return f"user={self.user}\x01auth=Bearer {self.token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        return b"" if challenge else self.initial()  # an error (JSON) is acknowledged empty


class OAuthBearer(Mechanism):
    name = "OAUTHBEARER"
    max_challenges = 2

    def initial(self) -> bytes:
        authz = f"a={_saslname(self.user)}" if self.user else ""
        host = f"host={self.host}\x01" if self.host else ""
        port = f"port={self.port}\x01" if self.port else ""
        return f"n,{authz},\x01{host}{port}auth=Bearer {self.token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        return b"\x01" if challenge else self.initial()  # RFC 7628 3.2.3: an error is answered ^A


class External(Mechanism):
    name = "EXTERNAL"

    def initial(self) -> bytes:
        return (self.authzid or self.user).encode()

    def respond(self, challenge: bytes) -> bytes:
        return self.initial()


class Anonymous(Mechanism):
    name = "ANONYMOUS"

    def initial(self) -> bytes:
        return (self.user or "anonymous").encode()

    def respond(self, challenge: bytes) -> bytes:
        return self.initial()


_CLASSES = {
    c.name: c
    for c in (Plain, Login, CramMD5, ScramSHA1, ScramSHA256, XOAuth2, OAuthBearer, External, Anonymous)
}


def client(mechanism: str, **credentials) -> Mechanism:
    """A new client for the mechanism (a name from MECHANISMS, any case)."""
    try:
        cls = _CLASSES[mechanism.upper()]
    except KeyError:
        raise ValueError(f"unknown SASL mechanism {mechanism!r} (use {', '.join(MECHANISMS)})") from None
    return cls(**credentials)


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _fields(message: bytes) -> dict[str, str]:
    out = {}
    for part in message.decode("utf-8", "replace").split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out
