"""The sandbox's SMTP server: aiosmtpd, made to look and behave like a real submission server.

What aiosmtpd does not do by itself and is added here:
  * EHLO advertises PIPELINING (aiosmtpd already reads commands from its stream buffer one after
    another, so commands sent in one write are answered in order), ENHANCEDSTATUSCODES, and AUTH
    on the plain port (the classic telnet walk-through does AUTH LOGIN before any TLS).
  * Every reply after the greeting, except EHLO/HELO lines and 334/354 continuations, carries an
    RFC 3463 enhanced status code (RFC 2034), with Postfix's wording where Postfix has one.
  * AUTH LOGIN prompts are 'Username:' / 'Password:' (334 VXNlcm5hbWU6 / 334 UGFzc3dvcmQ6).
  * AUTH XOAUTH2 (initial response or after '334 '), failing like Gmail: '334 <base64 JSON>',
    the client's empty line, then 535 (runner.sandbox.sasl). Mechanism names are matched
    case-insensitively, and an AUTH line (or SASL response) may be 12288 octets (RFC 4954).
  * Delivery into one Maildir per normalised recipient, with Return-Path, Delivered-To and
    Received headers and a Postfix-style queue id.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from runner.sandbox.sasl import (
    SASL_LINE_LIMIT,
    XOAUTH2_ERROR_CHALLENGE,
    SaslError,
    decode_response,
    parse_xoauth2,
)

if TYPE_CHECKING:
    from runner.sandbox.state import SandboxState

log = logging.getLogger("runner.sandbox.smtp")

SIZE_LIMIT = 10240000
MAX_RECIPIENTS = 1000

_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}( |$)")
_REPLY = re.compile(r"^(\d{3})([ -])(.*)$", re.S)

# aiosmtpd's own reply texts -> (enhanced code, Postfix-like text). Matched on the text after the
# reply code; anything not listed gets a code derived from the reply code (_DEFAULT_ENHANCED).
_REWRITE: list[tuple[re.Pattern[str], str, str | None]] = [
    (re.compile(r"^OK$"), "2.0.0", "Ok"),
    (re.compile(r"^Bye$"), "2.0.0", "Bye"),
    (re.compile(r"^Ready to start TLS$"), "2.0.0", "Ready to start TLS"),
    (re.compile(r'^Error: command ".*" not recognized$'), "5.5.2", "Error: command not recognized"),
    (re.compile(r"^Error: bad syntax$"), "5.5.2", "Error: bad syntax"),
    (re.compile(r"^Command line too long$"), "5.5.2", "Error: command line too long"),
    (re.compile(r"^Error: need RCPT command$"), "5.5.1", None),
    (re.compile(r"^Error: need MAIL command$"), "5.5.1", None),
    (re.compile(r"^Error: nested MAIL command$"), "5.5.1", None),
    (re.compile(r"^Error: send (HELO|EHLO) first$"), "5.5.1", "Error: send HELO/EHLO first"),
    (re.compile(r"^Already authenticated$"), "5.5.1", "Error: already authenticated"),
    (re.compile(r"^Error: message size exceeds"), "5.3.4", "Message size exceeds fixed limit"),
    (re.compile(r"^Error: Too much mail data$"), "5.3.4", "Message size exceeds fixed limit"),
    (re.compile(r"^Line too long"), "5.5.2", "Error: line too long (RFC 5321 4.5.3.1.6)"),
    (re.compile(r"^Syntax: "), "5.5.4", None),
    (re.compile(r"^Error: command 'AUTH' not recognized$"), "5.5.1", "Error: send EHLO first"),
]
_DEFAULT_ENHANCED = {
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.0.0",
    "221": "2.0.0",
    "220": "2.0.0",
    "235": "2.7.0",
    "421": "4.7.0",
    "451": "4.3.0",
    "452": "4.5.3",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.1.1",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.1",
    "555": "5.5.4",
}


def enhance(status: str) -> str:
    """Give an SMTP reply line an enhanced status code (RFC 2034) unless it has one."""
    m = _REPLY.match(status)
    if not m:
        return status
    code, sep, text = m.groups()
    if code in ("334", "354") or _HAS_ENHANCED.match(text):
        return status
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    for pattern, enh, replacement in _REWRITE:
        if pattern.search(text):
            enhanced = enh
            text = replacement if replacement is not None else text
            break
    return f"{code}{sep}{enhanced} {text}"


_NULL_SENDER = re.compile(r"^\s*FROM:\s*<>(\s.*)?$", re.I | re.S)
_NULL_PLACEHOLDER = "null-sender@mailrun-sandbox.invalid"


class NullSender(str):
    """The null reverse-path '<>' (bounces, RFC 5321 4.5.5): empty, yet a MAIL was given."""

    def __bool__(self) -> bool:
        return True


class SandboxSMTP(SMTP):
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(self, handler: SMTPHandler, *, implicit_tls: bool, **kwargs: Any):
        self.implicit_tls = implicit_tls
        self._greeted = False
        self._raw_replies = False
        super().__init__(handler, **kwargs)
        # aiosmtpd keeps command_size_limits on the class (shared by every connection); give each
        # connection its own, with room for an AUTH line carrying an OAuth token.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.command_size_limits["AUTH"] = SASL_LINE_LIMIT
        handler.state.smtp_protocols.add(self)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The stream's line limit is aiosmtpd's 1001: raise it so AUTH lines and SASL responses of
        # up to 12288 octets can be read. Every other command stays limited by command_size_limits
        # and DATA lines by line_length_limit (both answer '500 ... too long' as before).
        reader._limit = SASL_LINE_LIMIT + 2  # type: ignore[attr-defined]
        super()._cb_client_connected(reader, writer)

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            if not self._greeted:
                self._greeted = True
            elif not self._raw_replies:
                status = enhance(status)
        await super().push(status)

    async def smtp_MAIL(self, arg: str | None) -> None:
        # aiosmtpd rejects 'MAIL FROM:<>' as a syntax error; real servers must accept it.
        m = _NULL_SENDER.match(arg or "")
        if m:
            arg = f"FROM:<{_NULL_PLACEHOLDER}>{m[1] or ''}"
        await super().smtp_MAIL(arg)

    async def smtp_AUTH(self, arg: str | None) -> None:
        # SASL mechanism names are case-insensitive for Postfix/Cyrus; aiosmtpd's lookup is not.
        if arg:
            mechanism, sep, rest = arg.strip().partition(" ")
            arg = mechanism.upper() + sep + rest
        await super().smtp_AUTH(arg)

    async def auth_XOAUTH2(self, _, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")  # '334 ', then the client's response, decoded
            if blob is MISSING:  # '*' or bad base64: already answered with a 501
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = decode_response(args[1])
            except SaslError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            user, token = parse_xoauth2(blob)
        except SaslError as e:
            await self.push(f"501 5.5.2 Invalid XOAUTH2 response: {e}")
            return AuthResult(success=False, handled=True)
        name = self.event_handler.state.authenticate(user, token)
        if name is None:
            # Gmail/Outlook: a JSON error as a challenge, the client's (empty) answer, then 535.
            await self.push(f"334 {XOAUTH2_ERROR_CHALLENGE}")
            try:
                await self._reader.readline()  # the client's answer (empty), ignored
            except ValueError:  # longer than the line limit: discarded by the stream
                pass
            return AuthResult(
                success=False,
                handled=False,
                message="535 5.7.8 Error: authentication failed: invalid user or OAuth 2.0 token",
            )
        return AuthResult(success=True, auth_data=name)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._raw_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._raw_replies = bool(hostname)
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._raw_replies = False

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.state.smtp_protocols.discard(self)
        super().connection_lost(error)

    def close(self) -> None:
        """Used by Sandbox.stop()."""
        if self.transport is not None:
            self.transport.close()


class SMTPHandler:
    def __init__(self, state: SandboxState):
        self.state = state

    def authenticator(self, server: SandboxSMTP, session, envelope, mechanism: str, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        name = self.state.authenticate(login, password)
        if name is None:
            return AuthResult(
                success=False,
                handled=False,
                message="535 5.7.8 Error: authentication failed: authentication failure",
            )
        return AuthResult(success=True, auth_data=name)

    async def handle_EHLO(self, server: SandboxSMTP, session, envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        lines = [
            f"{server.hostname}",
            "PIPELINING",
            f"SIZE {server.data_size_limit}",
        ]
        if server.tls_context is not None and not server.tls_active:
            lines.append("STARTTLS")
        lines += ["AUTH PLAIN LOGIN XOAUTH2", "ENHANCEDSTATUSCODES", "8BITMIME"]
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(self, server, session, envelope, address: str, mail_options: list[str]) -> str:
        envelope.mail_from = NullSender() if address == _NULL_PLACEHOLDER else address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        if self.state.store_name(address) is None:
            return f"501 5.1.3 <{address}>: Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Error: too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server, session, envelope) -> str:
        return "250 2.0.0 Ok"

    async def handle_NOOP(self, server, session, envelope, arg) -> str:
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server, session, envelope) -> str:
        return "221 2.0.0 Bye"

    async def handle_VRFY(self, server, session, envelope, address) -> str:
        return f"252 2.0.0 {address}"

    async def handle_DATA(self, server: SandboxSMTP, session, envelope) -> str:
        queue_id = secrets.token_hex(6).upper()[:11]
        with_proto = "ESMTP" if session.extended_smtp else "SMTP"
        if server.tls_active:
            with_proto += "S"
        if session.authenticated:
            with_proto += "A"
        peer = session.peer[0] if session.peer else "unknown"
        for rcpt in envelope.rcpt_tos:
            name = self.state.store_name(rcpt)
            assert name is not None  # checked at RCPT
            trace = (
                f"Return-Path: <{envelope.mail_from}>\r\n"
                f"Delivered-To: {rcpt}\r\n"
                f"Received: from {session.host_name} (localhost [{peer}])\r\n"
                f"\tby {server.hostname} (mailrun sandbox) with {with_proto} id {queue_id}\r\n"
                f"\tfor <{rcpt}>; {format_datetime(datetime.now(UTC))}\r\n"
            ).encode("utf-8", "surrogateescape")
            self.state.store.deliver(name, trace + envelope.original_content)
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("sandbox SMTP session error: %s: %s", type(error).__name__, error)
        return "451 4.3.0 Error: internal sandbox error"


def smtp_factory(state: SandboxState, *, implicit_tls: bool):
    handler = SMTPHandler(state)
    loop = asyncio.get_running_loop()

    def make() -> SandboxSMTP:
        return SandboxSMTP(
            handler,
            implicit_tls=implicit_tls,
            data_size_limit=SIZE_LIMIT,
            hostname=state.hostname,
            ident="ESMTP mailrun sandbox",
            tls_context=None if implicit_tls else state.tls_context,
            auth_require_tls=False,
            authenticator=handler.authenticator,
            timeout=state.idle_timeout,
            loop=loop,
        )

    return make
