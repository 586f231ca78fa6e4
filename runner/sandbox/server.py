"""The sandbox: SMTP, LMTP, POP3 and IMAP over shared Maildirs, on loopback, in a background thread.

    with Sandbox() as sb:                         # every port bound and listening on return
        smtplib.SMTP(sb.host, sb.ports["smtp"])
        sb.mailbox("alice")                       # mailbox.Maildir

Logins: USER/PASS, IMAP LOGIN, SMTP and POP3 AUTH with every mechanism of runner.sandbox.sasl,
IMAP AUTHENTICATE PLAIN and XOAUTH2 (an OAuth token counts as the password). `accept_any_login=True`
accepts every login and token (CRAM-MD5 and SCRAM still need a published user's password).
Listeners: ports smtp, smtps, lmtp, smtp_proxy (expects a PROXY header), pop3(s), imap(s), and
the LMTP unix socket `lmtp_socket`; `describe()` is the start banner, `offers()` what it lists.
`welcome=True` gives each new mailbox a welcome message; it defaults to `accept_any_login`.

`main()` is `mailrun sandbox`: the same service in the foreground until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.message
import email.policy
import logging
import mailbox
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

import trustme

from runner.sandbox import banner
from runner.sandbox.banner import hostport as _hostport
from runner.sandbox.state import SandboxState
from runner.sandbox.store import WELCOME_SUBJECT, MailStore, arrival_key, normalise
from runner.transports.base import is_loopback

log = logging.getLogger("runner.sandbox")

PORT_KEYS = ("smtp", "smtps", "pop3", "pop3s", "imap", "imaps", "lmtp", "smtp_proxy")
DEFAULT_USERS = {"alice": "wonderland", "bob": "builder"}
START_DEADLINE = 10.0
LMTP_SOCKET = "lmtp.sock"  # in the sandbox's work directory: Sandbox.lmtp_socket


class SandboxError(Exception):
    """The sandbox could not start (port in use, bad option); the message says which."""


class Sandbox:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
        users: dict[str, str] | None = None,
        domain: str = "mailrun.test",
        accept_any_login: bool = False,
        welcome: bool | None = None,
        maildir_root: str | Path | None = None,
        idle_timeout: float = 300.0,
    ):
        ports = dict(ports or {})
        unknown = sorted(set(ports) - set(PORT_KEYS))
        if unknown:
            raise ValueError(f"unknown sandbox port name(s) {', '.join(unknown)}; use {', '.join(PORT_KEYS)}")
        for key, port in ports.items():
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"sandbox port {key}={port!r} is not a port number (0-65535)")
        if not is_loopback(host):
            # plaintext AUTH with published passwords (and any login with accept_any_login) is
            # only safe where nobody else can connect
            raise ValueError(
                f"the sandbox listens on loopback only (127.0.0.0/8, ::1, localhost), not {host!r}"
            )
        self.host = host
        self._requested_ports = {k: ports.get(k, 0) or 0 for k in PORT_KEYS}
        self.ports: dict[str, int] = dict(self._requested_ports)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.domain = domain
        self.accept_any_login = accept_any_login
        self.welcome = accept_any_login if welcome is None else bool(welcome)
        self.idle_timeout = idle_timeout
        self._maildir_root = Path(maildir_root) if maildir_root is not None else None
        self.maildir_root: Path | None = None
        self.ca_path = ""
        self.lmtp_socket = ""  # the LMTP listener's unix socket, once started
        self.client_certs: dict[str, tuple[str, str]] = {}  # published user -> (cert, key) files
        self.startup_seconds: float | None = None
        self._workdir: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._state: SandboxState | None = None
        self._ca: trustme.CA | None = None

    # --- life cycle ----------------------------------------------------------------------
    def start(self) -> Sandbox:
        if self._thread is not None:
            raise RuntimeError("sandbox already started")
        began = time.monotonic()
        _quiet_library_logs()
        self._workdir = tempfile.mkdtemp(prefix="mailrun-sandbox-")
        try:
            self.maildir_root = self._maildir_root or Path(self._workdir) / "maildirs"
            tls_context = self._make_certs(Path(self._workdir))
            store = MailStore(self.maildir_root, self.domain, welcome=self.welcome)
            for user in self.users:
                name = normalise(user, self.domain)
                if name:
                    store.ensure(name)
            self._state = SandboxState(
                store=store,
                users=self.users,
                domain=self.domain,
                accept_any_login=self.accept_any_login,
                tls_context=tls_context,
                idle_timeout=self.idle_timeout,
            )
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._run_loop, name="mailrun-sandbox", daemon=True)
            self._thread.start()
            fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
            try:
                fut.result(timeout=START_DEADLINE)
            except TimeoutError:
                raise SandboxError(f"sandbox did not start listening within {START_DEADLINE:.0f} s") from None
        except BaseException:
            self.stop()
            raise
        self.client_certs = {u: self.client_cert(u) for u in self.users if normalise(u, self.domain)}
        self.startup_seconds = time.monotonic() - began
        return self

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _make_certs(self, workdir: Path) -> ssl.SSLContext:
        ca = trustme.CA(organization_name="mailrun sandbox", organization_unit_name="throwaway CA")
        names = ["localhost", "127.0.0.1", "::1"]
        if self.host not in names and self.host not in ("0.0.0.0", "::"):
            names.append(self.host)
        cert = ca.issue_cert(
            *names,
            common_name="localhost",
            organization_name="mailrun sandbox",
            organization_unit_name="server",
        )
        self.ca_path = str(workdir / "sandbox-ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        # SASL EXTERNAL: a client may show a certificate of this CA (client_cert()); none is fine
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self._ca = ca
        return ctx

    def client_cert(self, user: str) -> tuple[str, str]:
        """(certificate, key) PEM files of a client certificate for `user` (NAME@domain as its
        email identity), issued by the sandbox's CA: SASL EXTERNAL logs in as that mailbox over
        TLS (`connect: {client_cert, client_key}`)."""
        name = normalise(user, self.domain)
        if name is None or self._ca is None or self._workdir is None:
            raise ValueError(f"no client certificate for {user!r} (is the sandbox started?)")
        address = name if "@" in name else f"{name}@{self.domain}"
        leaf = self._ca.issue_cert(address, common_name=address, organization_name="mailrun sandbox client")
        base = Path(self._workdir) / f"client-{name}"
        leaf.cert_chain_pems[0].write_to_path(f"{base}.pem")
        leaf.private_key_pem.write_to_path(f"{base}.key")
        return f"{base}.pem", f"{base}.key"

    async def _listen(self) -> None:
        from runner.sandbox.imap import imap_handler
        from runner.sandbox.lmtp import SandboxLMTP
        from runner.sandbox.pop3 import pop3_handler
        from runner.sandbox.smtp import smtp_factory

        state = self._state
        assert state is not None and self._workdir is not None
        loop = asyncio.get_running_loop()
        for key in PORT_KEYS:
            implicit = key.endswith("s")
            ssl_ctx = state.tls_context if implicit else None
            port = self._requested_ports[key]
            try:
                if key.startswith(("smtp", "lmtp")):
                    cls = SandboxLMTP if key == "lmtp" else None
                    factory = smtp_factory(state, implicit_tls=implicit, cls=cls, proxy=key == "smtp_proxy")
                    server = await loop.create_server(factory, self.host, port, ssl=ssl_ctx)
                else:
                    handler = pop3_handler(state) if key.startswith("pop3") else imap_handler(state)
                    server = await asyncio.start_server(handler, self.host, port, ssl=ssl_ctx, limit=2**20)
            except OSError as e:
                raise SandboxError(
                    f"sandbox cannot listen for {key} on {_hostport(self.host, port)}: {e.strerror or e}"
                ) from None
            self._servers.append(server)
            self.ports[key] = server.sockets[0].getsockname()[1]
        # LMTP on a unix socket too, as Dovecot's usually is (connect: {unix: PATH})
        path = str(Path(self._workdir) / LMTP_SOCKET)
        server = await loop.create_unix_server(smtp_factory(state, implicit_tls=False, cls=SandboxLMTP), path)
        self._servers.append(server)
        self.lmtp_socket = path

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(timeout=5)
            except Exception as e:
                log.warning("sandbox shutdown: %s", e)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
        if loop is not None and not loop.is_running():
            loop.close()
        self._loop = self._thread = None
        self._servers = []
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        state = self._state
        if state is not None:
            for proto in list(state.smtp_protocols):
                proto.close()
            for conn in list(state.connections):
                conn.close()
            for task in list(state.tasks):
                task.cancel()
            if state.tasks:
                await asyncio.wait(list(state.tasks), timeout=2)
        # Let the SMTP protocols' connection_lost callbacks and cancelled tasks run.
        await asyncio.sleep(0)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- queries -------------------------------------------------------------------------
    def port_for(self, protocol: str, tls: str, *, proxy: bool = False) -> int:
        """The port for a session of `protocol` with TLS mode `tls`; `proxy`: it sends a PROXY
        header first (the SMTP listener that expects one)."""
        proto = protocol.lower()
        if proxy:
            if proto != "smtp" or tls.lower() not in ("none", "plain", "starttls"):
                raise ValueError("the sandbox expects a PROXY header only on SMTP without implicit TLS")
            return self.ports["smtp_proxy"]
        if proto not in ("smtp", "lmtp", "pop3", "imap"):
            raise ValueError(f"the sandbox serves smtp, lmtp, pop3 and imap, not {protocol!r}")
        mode = tls.lower()
        if proto == "lmtp" and mode in ("none", "plain", "starttls"):
            return self.ports["lmtp"]
        if mode in ("none", "plain", "starttls"):
            return self.ports[proto]
        if mode in ("implicit", "tls", "ssl"):
            if proto == "lmtp":
                raise ValueError("the sandbox's LMTP has no implicit-TLS port (use tls: starttls)")
            return self.ports[proto + "s"]
        raise ValueError(f"unknown TLS mode {tls!r}; use none, starttls or implicit")

    def unix_for(self, protocol: str, unix: str | Path | None) -> Path | None:
        """Where a session that names a unix socket goes instead: the sandbox's LMTP socket for
        LMTP, else None (the TCP port of port_for)."""
        if unix is None or protocol.lower() != "lmtp" or not self.lmtp_socket:
            return None
        return Path(self.lmtp_socket)

    def mailbox(self, user: str) -> mailbox.Maildir:
        name = normalise(user, self.domain)
        if name is None:
            raise ValueError(f"{user!r} is not a usable mailbox name")
        root = self.maildir_root or self._maildir_root
        if root is None:
            raise RuntimeError("the sandbox is not started")
        return mailbox.Maildir(root / name, factory=None, create=True)

    def messages(self, user: str, *, welcome: bool = False) -> list[email.message.EmailMessage]:
        """The messages delivered to `user`'s mailbox, oldest first, parsed (email.policy.default);
        the welcome message a new mailbox starts with is left out unless `welcome`."""
        box = self.mailbox(user)
        found = []
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            if welcome or not self._is_welcome(msg):
                found.append((arrival_key(key), msg))
        return [msg for _, msg in sorted(found, key=lambda pair: pair[0])]

    def _is_welcome(self, msg: email.message.Message) -> bool:
        return msg.get("Subject") == WELCOME_SUBJECT and msg.get("From", "").endswith(
            f"<postmaster@{self.domain}>"
        )

    def offers(self) -> list[tuple[str, str, str, str, list[str]]]:
        """Per listener: (label, address, how, the command that lists what it offers, that list)."""
        return banner.offers(self)

    def describe(self) -> str:
        """The start banner of `mailrun sandbox` (runner.sandbox.banner)."""
        return banner.describe(self)


# --- `mailrun sandbox` ---------------------------------------------------------------------
def _port(text: str) -> int:
    """A number; whether it is a port (0-65535) is Sandbox's check, for the API and this alike."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mailrun sandbox",
        description="Run a local SMTP/LMTP/POP3/IMAP mail service on loopback for trying scenarios, "
        "until Ctrl-C. Ports default to free ones (0).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    for key in PORT_KEYS:
        flag = key.replace("_", "-")
        p.add_argument(
            f"--{flag}-port", type=_port, default=0, metavar="N", help=f"{flag} port (0 = any free)"
        )
    p.add_argument("--maildir", metavar="DIR", help="keep the Maildirs here (default: a temporary directory)")
    p.add_argument(
        "--accept-any-login",
        action="store_true",
        help="accept every login and password or OAuth token (mailbox named after it); implies --welcome",
    )
    p.add_argument(
        "--welcome",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give each new mailbox a welcome message (default: on with --accept-any-login, else off)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the problem
        return 0 if e.code == 0 else 2
    ports = {key: getattr(args, f"{key}_port") for key in PORT_KEYS}
    try:
        sandbox = Sandbox(
            host=args.host,
            ports=ports,
            maildir_root=args.maildir,
            accept_any_login=args.accept_any_login,
            welcome=args.welcome,
        )
    except ValueError as e:
        print(f"mailrun sandbox: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except ValueError:  # not the main thread: Ctrl-C only
        previous = None
    try:
        try:
            sandbox.start()
        except SandboxError as e:
            print(f"mailrun sandbox: {e}", file=sys.stderr)
            return 3
        except OSError as e:
            print(f"mailrun sandbox: cannot start: {e}", file=sys.stderr)
            return 3
        print(sandbox.describe(), flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print("mailrun sandbox: stopped.", flush=True)
        return 0
    finally:
        sandbox.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet_library_logs() -> None:
    """aiosmtpd logs every unknown command as a warning; Python's last-resort handler would print
    those to stderr in the foreground. Keep the terminal for what the sandbox says itself."""
    lib = logging.getLogger("mail.log")
    if not lib.handlers:
        lib.addHandler(logging.NullHandler())
    if _not_login_data_notice not in lib.filters:
        # aiosmtpd warns about its own use of Session.login_data at every AUTH; pytest shows
        # that under each failing test that used the sandbox (the pytest plugin)
        lib.addFilter(_not_login_data_notice)


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    return "login_data is deprecated" not in record.getMessage()
