"""The sandbox's POP3 server (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH with the
mechanisms of runner.sandbox.sasl: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/256, XOAUTH2 as Outlook
offers it, OAUTHBEARER).

States: AUTHORIZATION (USER/PASS, AUTH, STLS, CAPA, QUIT) -> TRANSACTION (STAT, LIST,
RETR, TOP, UIDL, DELE, RSET, NOOP, CAPA, QUIT) -> UPDATE on QUIT (deleted messages are removed,
retrieved ones marked seen). A maildrop is locked while a session has it (RFC 1939); a login
waits up to LOCK_WAIT seconds for another session's lock to go (so scenarios run in parallel
against one sandbox do not collide) before answering -ERR [IN-USE]. Multi-line replies are dot-stuffed and end with '.'. Commands sent
in one write are answered in order (PIPELINING). Replies follow Dovecot's wording.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import TYPE_CHECKING

from runner.sandbox.lines import ConnectionGone, LineConnection, LineTooLong
from runner.sandbox.sasl import (
    MECHANISMS,
    SASL_LINE_LIMIT,
    SaslError,
    certificate_identity,
    decode_response,
    exchange,
    server_mechanism,
)
from runner.sandbox.store import StoredMessage

if TYPE_CHECKING:
    from runner.sandbox.state import SandboxState

log = logging.getLogger("runner.sandbox.pop3")

MAX_LINE = 1024  # RFC 2449 allows 255 octets per command; be lenient
MAX_BAD_COMMANDS = 20
LOCK_WAIT = 3.0  # seconds a login waits for another POP3 session of the same mailbox to end


def dot_stuff(data: bytes) -> bytes:
    """CRLF message -> multi-line response body, including the terminating '.' line."""
    lines = data.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    return b"".join(ln + b"\r\n" for ln in out) + b".\r\n"


def top_of(data: bytes, n: int) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return data
    body_lines = body.split(b"\r\n")
    if body_lines and body_lines[-1] == b"":
        body_lines.pop()
    kept = body_lines[:n]
    return head + b"\r\n\r\n" + b"".join(ln + b"\r\n" for ln in kept)


def capabilities(*, tls: bool, logged_in: bool) -> list[str]:
    """The CAPA list (RFC 2449); the start banner shows the same list."""
    caps = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
    if not logged_in:
        if not tls:
            caps.append("STLS")
        caps += ["USER", "SASL " + " ".join(MECHANISMS)]
    return caps


class POP3Session:
    def __init__(self, state: SandboxState, conn: LineConnection):
        self.state = state
        self.conn = conn
        self.user: str | None = None  # given by USER
        self.mailbox: str | None = None  # set once authenticated
        self.messages: list[StoredMessage] = []
        self.deleted: set[int] = set()
        self.retrieved: set[int] = set()
        self.bad = 0
        self._mech_name = ""  # the SASL mechanism of the AUTH exchange under way

    async def reply(self, line: str, body: bytes | None = None) -> None:
        await self.conn.send(line.encode("utf-8") + b"\r\n" + (body or b""))

    async def run(self) -> None:
        try:
            await self.reply("+OK mailrun sandbox POP3 ready.")
            while True:
                try:
                    raw = await self.conn.readline()
                except LineTooLong:
                    await self.reply("-ERR Line too long.")
                    continue
                if not await self.command(raw):
                    break
        except ConnectionGone:
            pass
        finally:
            if self.mailbox is not None:
                self.state.store.locks.discard(self.mailbox)
            self.conn.close()

    async def command(self, raw: bytes) -> bool:
        """Handle one command line; False ends the session."""
        text = raw.decode("utf-8", "replace")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        args = arg.split()
        if self.mailbox is None:
            handler = {
                "USER": self.c_user,
                "PASS": self.c_pass,
                "AUTH": self.c_auth,
                "STLS": self.c_stls,
                "CAPA": self.c_capa,
                "QUIT": self.c_quit,
                "NOOP": None,
            }.get(verb)
        else:
            handler = {
                "STAT": self.c_stat,
                "LIST": self.c_list,
                "RETR": self.c_retr,
                "TOP": self.c_top,
                "UIDL": self.c_uidl,
                "DELE": self.c_dele,
                "RSET": self.c_rset,
                "NOOP": self.c_noop,
                "CAPA": self.c_capa,
                "QUIT": self.c_quit,
            }.get(verb)
        if handler is None:
            self.bad += 1
            if self.bad > MAX_BAD_COMMANDS:
                await self.reply("-ERR Too many bad commands.")
                return False
            if verb in ("STAT", "LIST", "RETR", "TOP", "UIDL", "DELE", "RSET", "NOOP"):
                await self.reply("-ERR Unknown command: not valid before login.")
            elif verb in ("USER", "PASS", "AUTH", "STLS"):
                await self.reply(f"-ERR {verb} is not valid after login.")
            else:
                await self.reply("-ERR Unknown command.")
            return True
        return await handler(args, arg)

    # --- AUTHORIZATION -------------------------------------------------------------------
    async def c_user(self, args: list[str], arg: str) -> bool:
        if len(args) != 1:
            await self.reply("-ERR USER needs exactly one argument.")
            return True
        self.user = args[0]
        await self.reply("+OK")
        return True

    async def c_pass(self, args: list[str], arg: str) -> bool:
        if self.user is None:
            await self.reply("-ERR No username given.")
            return True
        if not arg:
            await self.reply("-ERR PASS needs an argument.")
            return True
        user, self.user = self.user, None
        # RFC 1939: the password may contain spaces, so take the rest of the line.
        return await self.login(user, arg)

    async def login(self, user: str, password: str) -> bool:
        name = self.state.authenticate(user, password)
        if name is None:
            await self.reply("-ERR [AUTH] Authentication failed.")
            return True
        return await self.enter(name)

    async def enter(self, name: str) -> bool:
        """Logged in as `name`: lock the maildrop (waiting for another session's lock) and scan."""
        deadline = time.monotonic() + LOCK_WAIT
        while name in self.state.store.locks:
            if time.monotonic() >= deadline:
                await self.reply("-ERR [IN-USE] Mailbox is locked by another POP3 session.")
                return True
            await asyncio.sleep(0.05)
        self.state.store.locks.add(name)
        self.mailbox = name
        self.messages = self.state.store.scan(name)
        await self.reply("+OK Logged in.")
        return True

    async def _sasl_line(self) -> bytes | None:
        """The client's next SASL response line (up to 12288 octets, RFC 4954's figure), or None
        when it was too long (already answered)."""
        self.conn.max_line = SASL_LINE_LIMIT
        try:
            return await self.conn.readline()
        except LineTooLong:
            await self.reply("-ERR Authentication response too long.")
            return None
        finally:
            self.conn.max_line = MAX_LINE

    async def c_auth(self, args: list[str], arg: str) -> bool:
        """RFC 5034: AUTH alone lists the mechanisms; AUTH M [initial] plays the exchange (the
        shared server mechanisms of runner.sandbox.sasl) with '+ <base64>' challenges."""
        if not args:
            await self.reply("+OK", "".join(m + "\r\n" for m in MECHANISMS).encode() + b".\r\n")
            return True
        peercert = self.conn.writer.get_extra_info("peercert") if self.conn.tls else None
        mech = server_mechanism(args[0], self.state, certificate_identity(peercert))
        if mech is None or len(args) > 2:
            await self.reply("-ERR Unsupported authentication mechanism.")
            return True
        self._mech_name = mech.name
        initial = None
        if len(args) == 2:
            try:
                initial = decode_response(args[1])
            except SaslError as why:
                await self.reply(f"-ERR Invalid AUTH {mech.name} response: {why}.")
                return True
        outcome = await exchange(mech, initial, self._ask)
        if outcome is None:
            return True
        if outcome.malformed is not None:
            await self.reply(f"-ERR Invalid AUTH {mech.name} response: {outcome.malformed}.")
            return True
        if outcome.mailbox is None:
            await self.reply("-ERR [AUTH] Authentication failed.")
            return True
        return await self.enter(outcome.mailbox)

    async def _ask(self, challenge: bytes, answer_ignored: bool) -> bytes | None:
        await self.reply("+ " + base64.b64encode(challenge).decode("ascii"))
        line = await self._sasl_line()
        if line is None:
            return None
        if answer_ignored:  # the answer to an OAuth error: the failure follows whatever it is
            return b""
        if line.strip() == b"*":
            await self.reply("-ERR Authentication aborted by client.")
            return None
        try:
            return decode_response(line)
        except SaslError as why:
            await self.reply(f"-ERR Invalid AUTH {self._mech_name} response: {why}.")
            return None

    async def c_stls(self, args: list[str], arg: str) -> bool:
        if self.conn.tls:
            await self.reply("-ERR TLS is already active.")
            return True
        await self.conn.start_tls(self.state.tls_context, b"+OK Begin TLS negotiation now.\r\n")
        self.user = None
        return True

    async def c_capa(self, args: list[str], arg: str) -> bool:
        caps = capabilities(tls=self.conn.tls, logged_in=self.mailbox is not None)
        await self.reply("+OK", "".join(c + "\r\n" for c in caps).encode() + b".\r\n")
        return True

    async def c_quit(self, args: list[str], arg: str) -> bool:
        if self.mailbox is not None:
            try:
                store = self.state.store
                for i, msg in enumerate(self.messages, 1):
                    if i in self.deleted:
                        store.remove(self.mailbox, msg)
                    elif i in self.retrieved and "S" not in msg.flags:
                        store.set_flags(self.mailbox, msg, msg.flags + "S")
            except OSError as e:
                log.error("POP3 update of %s failed: %s", self.mailbox, e)
                await self.reply("-ERR [SYS/TEMP] Some deleted messages were not removed.")
                return False
        await self.reply("+OK Logging out.")
        return False

    # --- TRANSACTION ---------------------------------------------------------------------
    async def _msgno(self, args: list[str], count: int = 1) -> int | None:
        if len(args) != count:
            await self.reply("-ERR Wrong number of arguments.")
            return None
        try:
            n = int(args[0])
        except ValueError:
            await self.reply("-ERR Invalid message number: " + args[0][:20])
            return None
        if n < 1 or n > len(self.messages):
            await self.reply(f"-ERR There's no message {n}.")
            return None
        if n in self.deleted:
            await self.reply("-ERR Message is deleted.")
            return None
        return n

    def _live(self) -> list[tuple[int, StoredMessage]]:
        return [(i, m) for i, m in enumerate(self.messages, 1) if i not in self.deleted]

    async def c_stat(self, args: list[str], arg: str) -> bool:
        live = self._live()
        await self.reply(f"+OK {len(live)} {sum(m.size for _, m in live)}")
        return True

    async def c_list(self, args: list[str], arg: str) -> bool:
        if args:
            n = await self._msgno(args)
            if n is not None:
                await self.reply(f"+OK {n} {self.messages[n - 1].size}")
            return True
        live = self._live()
        body = "".join(f"{i} {m.size}\r\n" for i, m in live).encode() + b".\r\n"
        await self.reply(f"+OK {len(live)} messages:", body)
        return True

    async def c_uidl(self, args: list[str], arg: str) -> bool:
        if args:
            n = await self._msgno(args)
            if n is not None:
                await self.reply(f"+OK {n} {self.messages[n - 1].uidl}")
            return True
        body = "".join(f"{i} {m.uidl}\r\n" for i, m in self._live()).encode() + b".\r\n"
        await self.reply("+OK", body)
        return True

    async def c_retr(self, args: list[str], arg: str) -> bool:
        n = await self._msgno(args)
        if n is not None:
            msg = self.messages[n - 1]
            self.retrieved.add(n)
            await self.reply(f"+OK {msg.size} octets", dot_stuff(msg.data()))
        return True

    async def c_top(self, args: list[str], arg: str) -> bool:
        if len(args) != 2:
            await self.reply("-ERR TOP needs a message number and a line count.")
            return True
        try:
            lines = int(args[1])
            if lines < 0:
                raise ValueError
        except ValueError:
            await self.reply("-ERR Invalid number of lines: " + args[1][:20])
            return True
        n = await self._msgno(args[:1])
        if n is not None:
            await self.reply("+OK", dot_stuff(top_of(self.messages[n - 1].data(), lines)))
        return True

    async def c_dele(self, args: list[str], arg: str) -> bool:
        n = await self._msgno(args)
        if n is not None:
            self.deleted.add(n)
            await self.reply("+OK Marked to be deleted.")
        return True

    async def c_rset(self, args: list[str], arg: str) -> bool:
        self.deleted.clear()
        self.retrieved.clear()
        await self.reply("+OK")
        return True

    async def c_noop(self, args: list[str], arg: str) -> bool:
        await self.reply("+OK")
        return True


def pop3_handler(state: SandboxState):
    async def handle(reader, writer) -> None:
        conn = LineConnection(reader, writer, idle_timeout=state.idle_timeout, max_line=MAX_LINE)
        await state.run_session(POP3Session(state, conn).run(), conn)

    return handle
