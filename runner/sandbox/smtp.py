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
import base64
import collections
import logging
import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, auth_mechanism

from runner.sandbox.sasl import (
    MECHANISMS,
    SASL_LINE_LIMIT,
    SaslError,
    certificate_identity,
    decode_response,
    exchange,
    server_mechanism,
)

if TYPE_CHECKING:
    from runner.sandbox.state import SandboxState

log = logging.getLogger("runner.sandbox.smtp")

SIZE_LIMIT = 10240000
PROXY_TIMEOUT = 10.0  # seconds the PROXY listener waits for the header
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


_BDAT = re.compile(r"^\s*(\d{1,18})(?:\s+(LAST))?\s*$", re.I)
_NULL_SENDER = re.compile(r"^\s*FROM:\s*<>(\s.*)?$", re.I | re.S)
_NULL_PLACEHOLDER = "null-sender@mailrun-sandbox.invalid"


class NullSender(str):
    """The null reverse-path '<>' (bounces, RFC 5321 4.5.5): empty, yet a MAIL was given."""

    def __bool__(self) -> bool:
        return True


def extensions(*, lmtp: bool = False, starttls: bool) -> list[str]:
    """The EHLO (LHLO) keywords after the host name; the start banner shows the same list."""
    out = ["PIPELINING", f"SIZE {SIZE_LIMIT}"]
    if starttls:
        out.append("STARTTLS")
    if not lmtp:  # LMTP is local delivery: no AUTH, as with Dovecot's
        out.append("AUTH " + " ".join(MECHANISMS))
    return out + ["ENHANCEDSTATUSCODES", "8BITMIME", "CHUNKING"]


class SandboxSMTP(SMTP):
    lmtp = False  # LMTP (runner.sandbox.lmtp): one reply per recipient after the message

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
        if self.envelope is not None and self.envelope.mail_from and not self.session.authenticated:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")  # RFC 4954 section 4
            return
        await super().smtp_AUTH(arg)

    async def sasl(self, name: str, args: list[str]) -> AuthResult:
        """One AUTH exchange with the shared server mechanism (runner.sandbox.sasl)."""
        peercert = self.transport.get_extra_info("peercert") if self.tls_active and self.transport else None
        mech = server_mechanism(name, self.event_handler.state, certificate_identity(peercert))
        assert mech is not None  # aiosmtpd dispatched on a name of MECHANISMS
        initial = None
        if len(args) == 2:
            try:
                initial = decode_response(args[1])
            except SaslError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        outcome = await exchange(mech, initial, self._ask)
        if outcome is None:
            return AuthResult(success=False, handled=True)
        if outcome.malformed is not None:
            await self.push(f"501 5.5.2 Invalid {name} response: {outcome.malformed}")
            return AuthResult(success=False, handled=True)
        if outcome.mailbox is None:
            why = "invalid user or OAuth 2.0 token" if outcome.oauth else "authentication failure"
            return AuthResult(
                success=False, handled=False, message=f"535 5.7.8 Error: authentication failed: {why}"
            )
        return AuthResult(success=True, auth_data=outcome.mailbox)

    async def _ask(self, challenge: bytes, answer_ignored: bool) -> bytes | None:
        """'334 <base64>', then the client's answer decoded (None: '*', bad base64 or a line
        too long, already answered)."""
        await self.push(b"334 " + base64.b64encode(challenge))
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than the line limit: discarded by the stream
            await self.push("500 5.5.2 Error: authentication response too long")
            return None
        if answer_ignored:  # the answer to an OAuth error (empty, or ^A): the failure follows
            return b""
        if line.strip() == b"*":
            await self.push("501 5.7.0 Authentication aborted")
            return None
        try:
            return decode_response(line)
        except SaslError:
            await self.push("501 5.5.2 Can't decode base64")
            return None

    # --- BDAT (RFC 3030 CHUNKING) ----------------------------------------------------------
    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self._chunks: bytearray | None = None  # the message so far, once a BDAT was accepted
        self._chunks_over = False  # the chunks passed the size limit: refused at LAST

    async def smtp_BDAT(self, arg: str | None) -> None:
        m = _BDAT.match(arg or "")
        if not m:
            await self.push("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
            return
        size, last = int(m[1]), m[2] is not None
        # The chunk's bytes follow the command whatever the answer is: read them first.
        data = await self._read_chunk(size)
        if await self.check_helo_needed() or await self.check_auth_needed("BDAT"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if self._chunks is None:
            self._chunks = bytearray()
        if self._chunks_over or len(self._chunks) + size > self.data_size_limit:
            self._chunks_over, self._chunks = True, bytearray()
        else:
            self._chunks += data
        if not last:
            await self.push(f"250 2.0.0 Ok: {size} octets received")
            return
        if self._chunks_over:
            self._set_post_data_state()
            await self.push("552 5.3.4 Message size exceeds fixed limit")
            return
        self.envelope.content = self.envelope.original_content = bytes(self._chunks)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def _read_chunk(self, size: int) -> bytes:
        """Exactly `size` bytes from the stream; beyond the size limit they are read and dropped."""
        keep = size <= self.data_size_limit
        parts, left = [], size
        while left:
            piece = await self._reader.readexactly(min(left, 65536))
            left -= len(piece)
            if keep:
                parts.append(piece)
        return b"".join(parts)

    async def smtp_DATA(self, arg: str | None) -> None:
        if self._chunks is not None:  # RFC 3030 section 3: no DATA after BDAT in a transaction
            await self.push("503 5.5.1 Error: BDAT and DATA cannot be mixed in one transaction")
            return
        await super().smtp_DATA(arg)

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

    def refusal(self, name: str, rcpt: str) -> str | None:
        """The reply refusing delivery of the message to one recipient after it came (LMTP)."""
        return None

    def accepted(self, rcpt: str, queue_id: str) -> str:
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.state.smtp_protocols.discard(self)
        super().connection_lost(error)

    def close(self) -> None:
        """Used by Sandbox.stop()."""
        if self.transport is not None:
            self.transport.close()


def _sasl_method(name: str):
    @auth_mechanism(name)
    async def method(self: SandboxSMTP, _, args: list[str]) -> AuthResult:
        return await self.sasl(name, args)

    method.__name__ = "auth_" + name.replace("-", "_")
    return method


# aiosmtpd dispatches AUTH to the auth_* methods (auth_PLAIN and auth_LOGIN replace its own):
# every one plays the shared mechanism of runner.sandbox.sasl.
for _name in MECHANISMS:
    setattr(SandboxSMTP, "auth_" + _name.replace("-", "_"), _sasl_method(_name))


class SMTPHandler:
    def __init__(self, state: SandboxState):
        self.state = state

    async def handle_EHLO(self, server: SandboxSMTP, session, envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        starttls = server.tls_context is not None and not server.tls_active
        lines = [server.hostname, *extensions(lmtp=server.lmtp, starttls=starttls)]
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_PROXY(self, server, session, envelope, proxy_data) -> bool:
        """The PROXY listener: a valid header (aiosmtpd parsed it) is accepted; the source it
        names is the client in the Received header."""
        return bool(proxy_data.valid)

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
        """SMTP: one reply for the message. LMTP (RFC 2033): one per recipient, in RCPT order;
        all but the last pushed here, the last returned (aiosmtpd pushes it)."""
        statuses = self.deliver(server, session, envelope)
        for status in statuses[:-1]:
            await server.push(status)
        return statuses[-1]

    def deliver(self, server: SandboxSMTP, session, envelope) -> list[str]:
        queue_id = secrets.token_hex(6).upper()[:11]
        with_proto = "LMTP" if server.lmtp else "ESMTP" if session.extended_smtp else "SMTP"
        if server.tls_active:
            with_proto += "S"
        if session.authenticated:
            with_proto += "A"
        peer = session.peer[0] if session.peer else "unknown"
        client = f"localhost [{peer}]"
        proxied = session.proxy_data
        if proxied is not None and proxied.src_addr is not None:
            client = f"[{proxied.src_addr}]:{proxied.src_port} via PROXY v{proxied.version} from {peer}"
        statuses = []
        for rcpt in envelope.rcpt_tos:
            name = self.state.store_name(rcpt)
            assert name is not None  # checked at RCPT
            trace = (
                f"Return-Path: <{envelope.mail_from}>\r\n"
                f"Delivered-To: {rcpt}\r\n"
                f"Received: from {session.host_name} ({client})\r\n"
                f"\tby {server.hostname} (mailrun sandbox) with {with_proto} id {queue_id}\r\n"
                f"\tfor <{rcpt}>; {format_datetime(datetime.now(UTC))}\r\n"
            ).encode("utf-8", "surrogateescape")
            status = server.refusal(name, rcpt)
            if status is None:
                self.state.store.deliver(name, trace + envelope.original_content)
                status = server.accepted(rcpt, queue_id)
            statuses.append(status)
        return statuses if server.lmtp else [statuses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        log.error("sandbox SMTP session error: %s: %s", type(error).__name__, error)
        return "451 4.3.0 Error: internal sandbox error"


def smtp_factory(
    state: SandboxState, *, implicit_tls: bool, cls: type[SandboxSMTP] | None = None, proxy: bool = False
):
    """The protocol factory of one SMTP listener (or LMTP: `cls` runner.sandbox.lmtp.SandboxLMTP);
    `proxy`: each connection must start with a HAProxy PROXY header (v1 or v2), else it is closed."""
    handler = SMTPHandler(state)
    loop = asyncio.get_running_loop()
    cls = cls or SandboxSMTP
    lmtp = cls.lmtp

    def make() -> SandboxSMTP:
        return cls(
            handler,
            implicit_tls=implicit_tls,
            data_size_limit=SIZE_LIMIT,
            hostname=state.hostname,
            ident=f"{'LMTP' if lmtp else 'ESMTP'} mailrun sandbox",
            tls_context=None if implicit_tls else state.tls_context,
            auth_require_tls=False,
            timeout=state.idle_timeout,
            proxy_protocol_timeout=PROXY_TIMEOUT if proxy else None,
            loop=loop,
        )

    return make
