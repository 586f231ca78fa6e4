"""What the sandbox's protocol servers share (the mail store, the users, TLS, the open
connections): made by runner.sandbox.server, used by the SMTP, POP3 and IMAP sessions. Its own
module so that the sessions and the server that starts them do not import each other."""

from __future__ import annotations

import asyncio
import hmac
import logging

from runner.sandbox.store import normalise

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

    from runner.sandbox.lines import LineConnection
    from runner.sandbox.store import MailStore

log = logging.getLogger("runner.sandbox")


class SandboxState:
    """What the protocol servers share. Lives in (and is only touched from) the loop thread."""

    def __init__(
        self,
        *,
        store: MailStore,
        users: dict[str, str],
        domain: str,
        accept_any_login: bool,
        tls_context: ssl.SSLContext,
        idle_timeout: float,
    ):
        self.store = store
        self.domain = domain
        self.users = {normalise(u, domain) or u: p for u, p in users.items()}
        self.accept_any_login = accept_any_login
        self.tls_context = tls_context
        self.idle_timeout = idle_timeout
        self.hostname = f"mail.{domain}"
        self.smtp_protocols: set = set()
        self.connections: set[LineConnection] = set()
        self.tasks: set[asyncio.Task] = set()

    def store_name(self, address: str) -> str | None:
        return normalise(address, self.domain)

    def authenticate(self, login: str, password: str) -> str | None:
        """The mailbox a login opens (created now if new), or None. An XOAUTH2 token is checked
        as the password. Never logs or returns the password."""
        name = normalise(login, self.domain)
        if name is None:
            return None
        if not self.accept_any_login:
            expected = self.users.get(name)
            if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
                return None
        self.store.ensure(name)
        return name

    def published(self, login: str) -> tuple[str, str] | None:
        """(mailbox name, password) of a published user, for the mechanisms that must know the
        password to check a proof (CRAM-MD5, SCRAM). None for anybody else, in either mode."""
        name = normalise(login, self.domain)
        if name is None or name not in self.users:
            return None
        return name, self.users[name]

    def open_mailbox(self, name: str) -> str:
        """A login proved by a challenge-response mechanism: its mailbox, created if new."""
        self.store.ensure(name)
        return name

    async def run_session(self, coro, conn: LineConnection) -> None:
        task = asyncio.current_task()
        self.connections.add(conn)
        if task is not None:
            self.tasks.add(task)
        try:
            await coro
        except asyncio.CancelledError:
            pass
        except Exception as e:  # a bug in a session must not take the server down
            log.error("sandbox session from %s failed: %s: %s", conn.peer, type(e).__name__, e)
        finally:
            conn.close()
            self.connections.discard(conn)
            if task is not None:
                self.tasks.discard(task)
