"""The test bed: real Postfix and Dovecot on loopback, private to one test session.

`Testbed.start()` renders the templates beside this file into a temporary folder (config, queue,
state, Maildirs, logs, a throwaway CA and server certificate), starts Postfix and Dovecot from
there on free ports of 127.0.0.1, and waits until every port has sent its greeting. `stop()` ends
both with their own control commands and waits until none of their processes is left. Nothing
under /etc/postfix, /etc/dovecot or the system's mail spool is read for config or written.

Ports (keys of `Testbed.ports`):
  smtp        plain SMTP, STARTTLS offered, AUTH allowed without TLS
  submission  STARTTLS required before AUTH or MAIL (530 5.7.0 before it)
  smtps       implicit TLS (smtpd_tls_wrappermode)
  pop3, pop3s, imap, imaps   Dovecot, STLS/STARTTLS on the plain ones
  smtp_lean   plain SMTP whose EHLO leaves out AUTH and STARTTLS (smtpd_discard_ehlo_keywords):
              a server missing capabilities that scenarios `require`

SASL: Dovecot offers every mechanism mailrun's `auth:` step speaks. PLAIN, LOGIN, CRAM-MD5 and
SCRAM-SHA-1/256 check the users' passwords; XOAUTH2 and OAUTHBEARER check a bearer token
(`oauth_token(user)`) against a local introspection endpoint (tests/servers/oauth.py); EXTERNAL
takes the user from a TLS client certificate (`client_cert(user)`, issued by the bed's CA; one
from another CA, `foreign_client_cert(user)`, is refused); every TLS port, implicit or after
STARTTLS/STLS, asks for one and requires none; ANONYMOUS logs in as ANONYMOUS_USER.

TLS checks (tls_expect): on every Dovecot TLS port, the SNI names of `TLS_CHECK_NAMES`
(`tls_check_name('soon' | 'expired' | 'wrong')`) get a certificate from the bed's CA that
expires in 5 days, one that expired 3 days ago, one issued for OTHER_NAME only; `tls13_port` is
an IMAPS listener on ::1 that takes TLSv1.3 only (None without IPv6 loopback).

Needs root (Postfix's master and Dovecot drop privileges themselves) and the Debian packages
postfix, dovecot-core, dovecot-pop3d, dovecot-imapd: see `missing_requirements()`.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
DOMAIN = "example.test"
USERS = {"alice": "wonderland", "bob": "builder"}
ANONYMOUS_USER = "anonymous"  # Dovecot's auth_anonymous_username: who an ANONYMOUS login becomes
PORT_NAMES = (
    "smtp",
    "submission",
    "smtps",
    "pop3",
    "pop3s",
    "imap",
    "imaps",
    "smtp_proxy",
    "lmtp",
    "smtp_lean",
)
# smtp_proxy: Postfix behind a load balancer, expecting the HAProxy PROXY header first
# (smtpd_upstream_proxy_protocol = haproxy): its greeting comes only after one
PROXY_PORTS = frozenset({"smtp_proxy"})
TLS_PORTS = frozenset({"smtps", "pop3s", "imaps"})
START_DEADLINE = 30.0
STOP_DEADLINE = 15.0
STOP_GRACE = 2.0
COMMAND_TIMEOUT = 60.0
# The binaries the bed runs and the accounts the Debian packages create for them.
BINARIES = ("postfix", "postconf", "dovecot", "doveadm")
ACCOUNTS = ("postfix", "dovecot", "dovenull")
# Dovecot's protocol programs the bed's protocols need, and the packages that ship them
DOVECOT_PROGRAMS = (("/usr/lib/dovecot/lmtp", "dovecot-lmtpd"),)
GROUPS = ("postfix", "postdrop", "dovecot", "dovenull")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# TLS checks (tls_expect): certificates from the bed's CA that Dovecot presents when the client
# sends one of these names as SNI, on any of its TLS ports (its `local_name` blocks).
TLS_CHECK_NAMES = {
    "soon": "soon.example.test",  # expires in 5 days (and an hour, so days_left says 5)
    "expired": "expired.example.test",  # expired 3 days ago
    "wrong": "wrong.example.test",  # answered with a certificate for OTHER_NAME only
}
OTHER_NAME = "other.example.net"
TLS13_HOST = "::1"  # Dovecot's TLSv1.3-only IMAPS listener (Testbed.tls13_port) is on this address


class TestbedError(RuntimeError):
    """The bed could not be started or stopped; the message carries the servers' logs."""

    __test__ = False  # not a test class, whatever pytest thinks of the name


# --------------------------------------------------------------------------- helpers


def free_ports(count: int = 1, host: str = HOST) -> list[int]:
    """`count` distinct TCP ports on `host` that were free a moment ago.

    All sockets are held open together, so the ports are distinct; they are closed before
    returning, so another process may still take one (bind errors are then reported by whoever
    binds). Independent of mailrun's sandbox."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = HOST) -> int:
    """One TCP port on `host` that was free a moment ago (see `free_ports`)."""
    return free_ports(1, host)[0]


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def missing_requirements() -> str | None:
    """None when the bed can run on this machine, else one line saying why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the Postfix/Dovecot test bed needs root (run scripts/test as root)"
    missing = [b for b in BINARIES if _which(b) is None]
    missing += [f"{p} (package {pkg})" for p, pkg in DOVECOT_PROGRAMS if not os.path.exists(p)]
    if missing:
        return (
            f"the Postfix/Dovecot test bed needs {', '.join(missing)}: install the Debian packages "
            "postfix dovecot-core dovecot-pop3d dovecot-imapd dovecot-lmtpd (scripts/test does)"
        )
    for name in ACCOUNTS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return f"the Postfix/Dovecot test bed needs the system user {name!r} (made by its Debian package)"
    for name in GROUPS:
        try:
            grp.getgrnam(name)
        except KeyError:
            return (
                f"the Postfix/Dovecot test bed needs the system group {name!r} (made by its Debian package)"
            )
    return None


def _vmail_ids() -> tuple[int, int]:
    """uid/gid owning the Maildirs: an existing 'vmail' account, else the first id from 5000 up
    that no account or group uses (Postfix and Dovecot take numeric ids; no account is created)."""
    try:
        pw = pwd.getpwnam("vmail")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        pass
    used_uids = {p.pw_uid for p in pwd.getpwall()}
    used_gids = {g.gr_gid for g in grp.getgrall()}
    n = 5000
    while n in used_uids or n in used_gids:
        n += 1
    return n, n


def _render(template: Path, target: Path, values: dict[str, str]) -> None:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text:
        left = text[text.index("@@") : text.index("@@") + 40].splitlines()[0]
        raise TestbedError(f"{template}: placeholder left unfilled: {left}")
    target.write_text(text)


def _pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _descendants(roots: set[int]) -> set[int]:
    """`roots` and every live process below them (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [p for p in roots if _pid_alive(p)]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return {p for p in found if _pid_alive(p)}


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of `pids` is alive, at most `timeout` seconds; return those still alive."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if _pid_alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = {p for p in left if _pid_alive(p)}
    return left


def _proc_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- the bed


def _traversable_tmp() -> str:
    """A temporary directory the servers' own users (postfix, dovecot, the mail owner) can reach:
    TMPDIR when every directory above it lets others through (pytest's tmp_path does not: 0700),
    else /tmp."""
    base = Path(tempfile.gettempdir()).resolve()
    for d in (base, *base.parents):
        try:
            if not d.stat().st_mode & 0o001:
                return "/tmp"
        except OSError:
            return "/tmp"
    return str(base)


class Testbed:
    """Postfix + Dovecot on 127.0.0.1, configured and kept under one temporary folder."""

    __test__ = False

    def __init__(self, root: str | os.PathLike | None = None):
        self.host = HOST
        self.domain = DOMAIN
        self.users = dict(USERS)
        self.ports: dict[str, int] = {}
        self._own_root = root is None
        # Made at start() when not given, so a bed that never starts leaves no folder behind.
        self.root = Path(root) if root is not None else None
        self.vmail_uid, self.vmail_gid = _vmail_ids()
        self.startup_seconds: float | None = None
        self.tls13_port: int | None = None  # TLSv1.3-only IMAPS on TLS13_HOST (None: no IPv6 here)
        self._started = False
        self._command_output: list[str] = []
        self._masters: set[int] = set()
        self._watchdog: subprocess.Popen | None = None
        self._oauth = None  # the token introspection endpoint (tests/servers/oauth.py) while up

    # ----------------------------------------------------------------- paths (under root)

    @property
    def ca_path(self) -> str:
        return str(self.root / "ca.pem")

    @property
    def cert_path(self) -> Path:
        return self.root / "server.crt"

    @property
    def key_path(self) -> Path:
        return self.root / "server.key"

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    @property
    def postfix_conf(self) -> Path:
        return self.root / "postfix" / "etc"

    @property
    def postfix_queue(self) -> Path:
        return self.root / "postfix" / "queue"

    @property
    def postfix_data(self) -> Path:
        return self.root / "postfix" / "data"

    @property
    def dovecot_conf(self) -> Path:
        return self.root / "dovecot" / "dovecot.conf"

    @property
    def dovecot_base(self) -> Path:
        return self.root / "dovecot" / "run"

    @property
    def dovecot_state(self) -> Path:
        return self.root / "dovecot" / "state"

    # ----------------------------------------------------------------- public API

    @property
    def lmtp_socket(self) -> Path:
        """Dovecot's LMTP on a unix socket, the way it usually listens (also on ports['lmtp'])."""
        return self.root / "lmtp.sock"

    def address(self, user: str) -> str:
        """'alice' -> 'alice@example.test'."""
        self._check_user(user)
        return f"{user}@{self.domain}"

    def maildir(self, user: str) -> Path:
        """The user's Maildir (with cur/, new/, tmp/), shared by Postfix and Dovecot."""
        self._check_user(user)
        return self.mail_root / self.domain / user

    def client_cert(self, user: str) -> tuple[Path, Path]:
        """(certificate, key) of a TLS client certificate from the bed's CA whose commonName is
        the user's address: what Dovecot's EXTERNAL mechanism logs in as."""
        self._check_user(user)
        return self.root / f"client-{user}.crt", self.root / f"client-{user}.key"

    def foreign_client_cert(self, user: str) -> tuple[Path, Path]:
        """(certificate, key) like `client_cert(user)`, with the same commonName, but issued by
        another CA, one Dovecot does not trust: a wrong credential for EXTERNAL."""
        self._check_user(user)
        return self.root / f"foreign-{user}.crt", self.root / f"foreign-{user}.key"

    def oauth_token(self, user: str, long: bool = False) -> str:
        """The bearer token Dovecot's XOAUTH2/OAUTHBEARER accept for the user's address; `long`:
        another one, as long as a real identity provider's JWT (about 1600 characters)."""
        self._check_user(user)
        return (self._oauth.long_tokens if long else self._oauth.tokens)[self.address(user)]

    @property
    def introspections(self) -> int:
        """How many token introspections the endpoint has answered (Dovecot asks once per
        XOAUTH2/OAUTHBEARER login attempt: force_introspection, no cache)."""
        return self._oauth.requests

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the bed's CA, hostname checking on."""
        return ssl.create_default_context(cafile=self.ca_path)

    def messages(self, user: str) -> list[bytes]:
        """Every message now in the user's Maildir (new/ then cur/), oldest file first."""
        out = []
        for path in self._message_files(user):
            with contextlib.suppress(FileNotFoundError):  # Dovecot moved it new/ -> cur/ meanwhile
                out.append(path.read_bytes())
        return out

    def wait_for_message(
        self, user: str, predicate: Callable[[bytes], bool] = lambda data: True, timeout: float = 10
    ) -> bytes:
        """The first message in the user's Maildir for which `predicate(raw bytes)` is true,
        polling new/ and cur/ until `timeout` seconds have passed (then TimeoutError)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for path in self._message_files(user):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue  # renamed by Dovecot between listing and reading: seen on the next pass
                if predicate(data):
                    return data
            seen = len(self._message_files(user))
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no matching message for {user} in {self.maildir(user)} within {timeout:g} s "
                    f"({seen} message(s) there)\n--- last lines of the Postfix log ---\n"
                    + "\n".join(self._read_log("postfix.log").splitlines()[-20:])
                )
            time.sleep(0.02)

    def clear_mailbox(self, user: str) -> None:
        """Delete every message of the user (new/, cur/, tmp/) and Dovecot's index of them
        (rebuilt on its next sync: a deletion in the same second as the index's last update
        would otherwise go unseen, and the old messages would still be listed)."""
        root = self.maildir(user)
        for sub in ("new", "cur", "tmp"):
            folder = root / sub
            for path in folder.iterdir() if folder.is_dir() else ():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        for path in root.glob("dovecot*") if root.is_dir() else ():
            if path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def logs(self) -> str:
        """Postfix's and Dovecot's logs plus the output of the control commands, as one text."""
        if self.root is None:
            return "(the test bed was never started: no logs)"
        parts = []
        for name in ("postfix.log", "dovecot.log"):
            parts.append(f"===== {self.root / name}\n{self._read_log(name)}")
        if self._command_output:
            parts.append("===== control commands\n" + "\n".join(self._command_output))
        return "\n".join(parts)

    def pids(self) -> set[int]:
        """The live processes of this bed: both masters and everything below them."""
        roots = set(self._masters)
        if self.root is None:
            return _descendants(roots)
        for pidfile in (self.postfix_queue / "pid" / "master.pid", self.dovecot_base / "master.pid"):
            pid = _read_pid(pidfile)
            if pid is not None:
                roots.add(pid)
        return _descendants(roots)

    # ----------------------------------------------------------------- start / stop

    def start(self, ports: dict[str, int] | None = None) -> Testbed:
        """Configure and start both servers; return when every port has greeted.

        `ports` may fix some ports; the others are chosen free. Raises TestbedError (with the
        logs) when the bed cannot run or does not come up within START_DEADLINE seconds."""
        reason = missing_requirements()
        if reason:
            raise TestbedError(reason)
        t0 = time.monotonic()
        wanted = dict(ports or {})
        unknown = set(wanted) - set(PORT_NAMES)
        if unknown:
            raise TestbedError(f"unknown port name(s) {sorted(unknown)}; known: {', '.join(PORT_NAMES)}")
        chosen = iter(free_ports(len(PORT_NAMES) - len(wanted)))
        self.ports = {name: wanted[name] if name in wanted else next(chosen) for name in PORT_NAMES}
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mailrun-testbed-", dir=_traversable_tmp()))
        self._started = True
        try:
            self._start_watchdog()
            from tests.servers.oauth import IntrospectionServer

            self._oauth = IntrospectionServer([self.address(u) for u in self.users], self.host)
            self._prepare()
            self._run([_which("postfix"), "-c", str(self.postfix_conf), "check"], "postfix check")
            self._run([_which("postfix"), "-c", str(self.postfix_conf), "start"], "postfix start")
            self._run([_which("dovecot"), "-c", str(self.dovecot_conf)], "dovecot")
            self._remember_masters()
            self._wait_until_ready(t0 + START_DEADLINE)
            self._wait_tls13_ready(t0 + START_DEADLINE)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()  # the error message carries the logs; the folder goes if we made it
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self, remove: bool | None = None) -> None:
        """Stop both servers with their control commands and wait until none of their processes
        is left (SIGKILL after STOP_DEADLINE). Removes the temporary folder when the bed made it
        (unless `remove` says otherwise). Raises TestbedError if a process survives."""
        if self._oauth is not None:  # before the early return: start() may fail before _started
            self._oauth.close()
            self._oauth = None
        if not self._started:
            return
        self._remember_masters()
        left: set[int] = set()
        # Postfix first: its smtpd processes hold connections to Dovecot's auth service.
        master = _read_pid(self.postfix_queue / "pid" / "master.pid")
        procs = _descendants({master}) if master is not None else set()
        if procs:
            self._run(
                [_which("postfix") or "postfix", "-c", self.postfix_conf, "stop"], "postfix stop", False
            )
        left |= self._wait_or_terminate(procs)
        # Dovecot: SIGTERM to the master named in its pid file. That is what `doveadm stop` does,
        # less the 1.5 s doveadm spends as a stats client and polling.
        master = _read_pid(self.dovecot_base / "master.pid")
        procs = _descendants({master}) if master is not None else set()
        if procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(master, signal.SIGTERM)
            self._command_output.append(f"$ kill -TERM {master}  (Dovecot master, from its pid file)")
        left |= self._wait_or_terminate(procs)
        left |= {p for p in self._masters if _pid_alive(p)}
        killed = set(left)
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(killed, 2.0)
        self._started = False
        self._masters.clear()
        if remove is None:
            remove = self._own_root
        if killed:
            logs = self.logs()
            if remove:
                shutil.rmtree(self.root, ignore_errors=True)
            self._dismiss_watchdog()
            raise TestbedError(
                f"test bed processes {sorted(killed)} did not stop within {STOP_DEADLINE:g} s "
                f"and were killed\n{logs}"
            )
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
        self._dismiss_watchdog()

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- internals

    def _start_watchdog(self) -> None:
        """A small process in its own session that stops this bed if we die without stopping it
        (SIGKILL, a crashed interpreter): it waits for EOF on a pipe only we hold."""
        with open(self.root / "watchdog.log", "ab") as log:
            self._watchdog = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--watchdog", str(self.root)]
                + (["--remove"] if self._own_root else []),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _dismiss_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        with contextlib.suppress(OSError):
            watchdog.stdin.write(b"stopped\n")
            watchdog.stdin.close()
        try:
            watchdog.wait(5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def _wait_or_terminate(self, procs: set[int]) -> set[int]:
        """Wait for a stopped server's processes to end. Dovecot's login processes (and the
        auth/log/config processes they hold) outlive their master while a client is still
        connected: after STOP_GRACE seconds the stragglers get SIGTERM. Returns any still alive
        after STOP_DEADLINE more."""
        left = _wait_gone(procs, STOP_GRACE)
        if left:
            names = ", ".join(f"{p} {_proc_name(p)}" for p in sorted(left))
            self._command_output.append(
                f"$ kill -TERM {' '.join(map(str, sorted(left)))}  (outlived master: {names})"
            )
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        return _wait_gone(left, STOP_DEADLINE)

    def _check_user(self, user: str) -> None:
        if user not in self.users:
            raise KeyError(f"unknown test bed user {user!r}; known: {', '.join(self.users)}")

    def _message_files(self, user: str) -> list[Path]:
        files = []
        for sub in ("new", "cur"):
            folder = self.maildir(user) / sub
            with contextlib.suppress(FileNotFoundError):
                entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
                files.extend(sorted(entries, key=lambda p: p.name))
        return files

    def _read_log(self, name: str) -> str:
        try:
            return (self.root / name).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"

    def _run(self, argv: list, what: str, check: bool = True) -> None:
        # Output goes to a file, not a pipe: a daemon keeps inherited pipes open for its lifetime.
        out_path = self.root / "commands.out"
        with open(out_path, "w+b") as out:
            try:
                proc = subprocess.run(
                    [str(a) for a in argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=COMMAND_TIMEOUT,
                    env={**os.environ, "PATH": os.environ.get("PATH", "") + ":" + SBIN_PATH},
                )
            except subprocess.TimeoutExpired as exc:
                raise TestbedError(
                    f"{what} did not finish within {COMMAND_TIMEOUT:g} s\n{self.logs()}"
                ) from exc
            out.seek(0)
            text = out.read().decode(errors="replace").strip()
        self._command_output.append(f"$ {what} -> exit {proc.returncode}" + (f"\n{text}" if text else ""))
        if check and proc.returncode != 0:
            raise TestbedError(f"{what} failed (exit {proc.returncode})\n{self.logs()}")

    def _remember_masters(self) -> None:
        for pidfile in (self.postfix_queue / "pid" / "master.pid", self.dovecot_base / "master.pid"):
            pid = _read_pid(pidfile)
            if pid is not None and _pid_alive(pid):
                self._masters.add(pid)

    def _prepare(self) -> None:
        import trustme  # a project dependency; imported here so free_ports works without it

        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)  # postfix/dovecot/dovenull must reach their files below it

        ca = trustme.CA(organization_name="mailrun test bed CA")
        cert = ca.issue_cert("localhost", "127.0.0.1", "::1", "mail.example.test")
        ca.cert_pem.write_to_path(self.ca_path)
        self.cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(self.key_path))
        os.chmod(self.key_path, 0o600)
        os.chmod(self.ca_path, 0o644)
        os.chmod(self.cert_path, 0o644)

        for path in (self.postfix_conf, self.postfix_queue, self.postfix_data):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "postfix", 0o755)
        for path in (self.dovecot_base, self.dovecot_state):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)
        os.chmod(self.dovecot_conf.parent, 0o755)
        shutil.chown(self.postfix_data, "postfix", "postfix")
        os.chmod(self.postfix_data, 0o700)

        # Maildirs (and Dovecot homes) owned by the mail uid, so Postfix's virtual(8) and
        # Dovecot's mail processes, which run as that uid, can write them.
        for path in (self.mail_root, self.mail_root / self.domain, root / "home"):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)
        for user in self.users:
            for path in (self.maildir(user), root / "home" / user):
                for sub in ("", "cur", "new", "tmp") if path == self.maildir(user) else ("",):
                    (path / sub).mkdir(parents=True, exist_ok=True)
                    os.chown(path / sub, self.vmail_uid, self.vmail_gid)
                    os.chmod(path / sub, 0o700)

        values = {
            "ROOT": str(root),
            "HOST": self.host,
            "DOMAIN": self.domain,
            "INSTANCE": root.name,
            "MAIL": str(self.mail_root),
            "CERT": str(self.cert_path),
            "KEY": str(self.key_path),
            "VMAIL_UID": str(self.vmail_uid),
            "VMAIL_GID": str(self.vmail_gid),
            "POSTFIX_CONF": str(self.postfix_conf),
            "POSTFIX_QUEUE": str(self.postfix_queue),
            "POSTFIX_DATA": str(self.postfix_data),
            "DOVECOT_BASE": str(self.dovecot_base),
            "DOVECOT_STATE": str(self.dovecot_state),
            "DOVECOT_USERS": str(self.dovecot_conf.parent / "users"),
            "DOVECOT_OAUTH2": str(self.dovecot_conf.parent / "oauth2.conf.ext"),
            "CA": self.ca_path,
            "ANONYMOUS_USER": ANONYMOUS_USER,
            "SMTP_ADDR": f"{self.host}:{self.ports['smtp']}",
            "SUBMISSION_ADDR": f"{self.host}:{self.ports['submission']}",
            "SMTPS_ADDR": f"{self.host}:{self.ports['smtps']}",
            "SMTP_PROXY_ADDR": f"{self.host}:{self.ports['smtp_proxy']}",
            "IMAP_PORT": str(self.ports["imap"]),
            "LMTP_PORT": str(self.ports["lmtp"]),
            "LMTP_SOCKET": str(self.lmtp_socket),
            "IMAPS_PORT": str(self.ports["imaps"]),
            "POP3_PORT": str(self.ports["pop3"]),
            "POP3S_PORT": str(self.ports["pop3s"]),
            "SMTP_LEAN_ADDR": f"{self.host}:{self.ports['smtp_lean']}",  # capabilities left out
        }
        values.update(self._prepare_tls_checks(ca))
        _render(HERE / "postfix" / "main.cf.in", self.postfix_conf / "main.cf", values)
        _render(HERE / "postfix" / "master.cf.in", self.postfix_conf / "master.cf", values)
        _render(HERE / "dovecot" / "dovecot.conf.in", self.dovecot_conf, values)
        (self.postfix_conf / "vmailbox").write_text(
            "".join(f"{self.address(u)} {self.domain}/{u}/\n" for u in self.users)
        )
        # passwd-file: user:{PLAIN}password:uid:gid::home::extra  (login as 'alice' or 'alice@example.test')
        lines = []
        for user, password in self.users.items():
            for login in (user, self.address(user)):
                home = root / "home" / user
                # 'nodelay': a wrong password is answered at once, not at Dovecot's next failure
                # flush (every 0.5 s even with auth_failure_delay = 0).
                lines.append(
                    f"{login}:{{PLAIN}}{password}:{self.vmail_uid}:{self.vmail_gid}::{home}::nodelay\n"
                )
        # ANONYMOUS logs in as this user: a userdb entry and a mailbox, and a password nobody knows
        anon_home = root / "home" / ANONYMOUS_USER
        for path in (self.mail_root / self.domain / ANONYMOUS_USER, anon_home):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, self.vmail_uid, self.vmail_gid)
            os.chmod(path, 0o700)
        unknowable = secrets.token_urlsafe(24)
        lines.append(
            f"{ANONYMOUS_USER}:{{PLAIN}}{unknowable}:{self.vmail_uid}:{self.vmail_gid}::{anon_home}::\n"
        )
        users_file = self.dovecot_conf.parent / "users"
        users_file.write_text("".join(lines))
        # XOAUTH2/OAUTHBEARER: Dovecot asks the introspection endpoint about each bearer token
        oauth_conf = self.dovecot_conf.parent / "oauth2.conf.ext"
        oauth_conf.write_text(
            f"introspection_mode = post\nintrospection_url = {self._oauth.url}\n"
            "force_introspection = yes\nusername_attribute = username\n"
            "active_attribute = active\nactive_value = true\n"
        )
        os.chmod(oauth_conf, 0o644)
        # EXTERNAL: a client certificate per user, its commonName the address Dovecot logs in;
        # and the same from a CA Dovecot does not trust (ssl_ca is the bed's), which it refuses
        stranger = trustme.CA(organization_name="not the mailrun test bed CA")
        for user in self.users:
            for issuer, (crt, key) in (
                (ca, self.client_cert(user)),
                (stranger, self.foreign_client_cert(user)),
            ):
                client = issuer.issue_cert(self.address(user), common_name=self.address(user))
                crt.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
                client.private_key_pem.write_to_path(str(key))
                os.chmod(crt, 0o644)
                os.chmod(key, 0o644)  # read by the test's mailrun, which may run as another user
        os.chmod(users_file, 0o644)
        # Postfix re-reads a file whose mtime is this very second (300 ms naps until it is older:
        # "being modified?"), which cost every postfix/postconf call here up to 2 s. Backdate.
        past = time.time() - 60
        for path in (*self.postfix_conf.iterdir(), self.dovecot_conf, users_file, oauth_conf):
            os.utime(path, (past, past))

    # ----------------------------------------------------------------- TLS checks (tls_expect)

    def tls_check_name(self, kind: str) -> str:
        """The SNI name for which Dovecot presents that certificate: 'soon' (expires in 5 days),
        'expired', 'wrong' (a certificate for OTHER_NAME)."""
        return TLS_CHECK_NAMES[kind]

    def _prepare_tls_checks(self, ca) -> dict[str, str]:
        """The extra certificates (signed by the bed's CA) and the TLSv1.3-only listener: the
        placeholders of their block in dovecot.conf.in."""
        from datetime import UTC, datetime, timedelta

        now = datetime.now(UTC)
        issued = {
            "soon": ca.issue_cert(TLS_CHECK_NAMES["soon"], not_after=now + timedelta(days=5, hours=1)),
            "expired": ca.issue_cert(
                TLS_CHECK_NAMES["expired"],
                not_before=now - timedelta(days=30),
                not_after=now - timedelta(days=3),
            ),
            "wrong": ca.issue_cert(OTHER_NAME),
        }
        values = {}
        for kind, cert in issued.items():
            crt, key = self.root / f"{kind}.crt", self.root / f"{kind}.key"
            crt.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
            cert.private_key_pem.write_to_path(str(key))
            os.chmod(crt, 0o644)
            os.chmod(key, 0o600)
            upper = kind.upper()
            values |= {
                f"{upper}_NAME": TLS_CHECK_NAMES[kind],
                f"{upper}_CERT": str(crt),
                f"{upper}_KEY": str(key),
            }
        try:
            self.tls13_port = free_ports(1, TLS13_HOST)[0]
        except OSError:  # no IPv6 loopback: the listener is left out
            self.tls13_port = None
        if self.tls13_port is None:
            values["TLS13_LISTENER"] = values["TLS13_LOCAL"] = "# (no IPv6 loopback)"
        else:
            values["TLS13_LISTENER"] = (
                f"  inet_listener imaps_tls13 {{\n    address = {TLS13_HOST}\n"
                f"    port = {self.tls13_port}\n    ssl = yes\n  }}"
            )
            values["TLS13_LOCAL"] = f"local {TLS13_HOST} {{\n  ssl_min_protocol = TLSv1.3\n}}"
        return values

    def _wait_tls13_ready(self, deadline: float) -> None:
        """Until the TLSv1.3-only listener greets (nothing to wait for without one)."""
        while self.tls13_port is not None:
            try:
                ctx = self.ssl_context()
                with (
                    socket.create_connection((TLS13_HOST, self.tls13_port), timeout=2) as raw,
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls,
                ):
                    tls.settimeout(2)
                    if tls.recv(512).startswith(b"* OK"):
                        return
            except (OSError, ssl.SSLError) as exc:
                if time.monotonic() >= deadline:
                    raise TestbedError(
                        f"the TLSv1.3 listener [{TLS13_HOST}]:{self.tls13_port} did not greet: {exc}\n"
                        f"{self.logs()}"
                    ) from None
            time.sleep(0.05)

    def _wait_until_ready(self, deadline: float) -> None:
        pending = dict(self.ports)
        last_error: dict[str, str] = {}
        while pending:
            for name, port in list(pending.items()):
                try:
                    greeting = self._greeting(name, port, max(0.1, min(2.0, deadline - time.monotonic())))
                except (OSError, ssl.SSLError) as exc:
                    last_error[name] = f"{type(exc).__name__}: {exc}"
                    continue
                if greeting.startswith((b"220 ", b"+OK", b"* OK")):
                    del pending[name]
                else:
                    last_error[name] = f"unexpected greeting {greeting[:80]!r}"
            if not pending:
                return
            if time.monotonic() >= deadline:
                detail = "\n".join(
                    f"  {n} (127.0.0.1:{p}): {last_error.get(n, 'no answer')}" for n, p in pending.items()
                )
                raise TestbedError(
                    f"the test bed did not come up within {START_DEADLINE:g} s; ports not greeting:\n"
                    f"{detail}\n{self.logs()}"
                )
            time.sleep(0.05)

    def _greeting(self, name: str, port: int, timeout: float) -> bytes:
        with socket.create_connection((self.host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            if name in PROXY_PORTS:  # the client address a load balancer would pass on
                raw.sendall(f"PROXY TCP4 192.0.2.1 {self.host} 40000 {port}\r\n".encode())
            if name in TLS_PORTS:
                with self.ssl_context().wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.settimeout(timeout)
                    return tls.recv(512)
            return raw.recv(512)


class ChangedTestbed(Testbed):
    """A bed of its own, like Testbed, whose Postfix main.cf and Dovecot settings can be changed
    and the servers restarted with them (`restart(postfix=..., dovecot=...)`), on the same ports
    and Maildirs: the server after an upgrade or a config change. Never the shared session bed,
    which other tests rely on. Settings given are appended to the rendered main.cf /
    dovecot.conf, where the last value of a setting wins (Postfix: `postconf -n` shows it)."""

    __test__ = False

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        postfix: dict[str, str] | None = None,
        dovecot: dict[str, str] | None = None,
    ):
        super().__init__(root)
        self.postfix_settings = dict(postfix or {})
        self.dovecot_settings = dict(dovecot or {})

    def restart(
        self, postfix: dict[str, str] | None = None, dovecot: dict[str, str] | None = None
    ) -> ChangedTestbed:
        """Stop both servers, take these settings (instead of the earlier ones; {} for the stock
        configuration) and start again on the same ports, keeping the mailboxes."""
        self.stop(remove=False)
        self.postfix_settings = dict(postfix or {})
        self.dovecot_settings = dict(dovecot or {})
        return self.start(ports=dict(self.ports))

    def _prepare(self) -> None:
        super()._prepare()
        changed = []
        for path, settings in (
            (self.postfix_conf / "main.cf", self.postfix_settings),
            (self.dovecot_conf, self.dovecot_settings),
        ):
            if settings:
                with open(path, "a") as f:
                    f.write("\n# ChangedTestbed: settings changed for this start\n")
                    f.writelines(f"{key} = {value}\n" for key, value in settings.items())
            changed.append(path)
        past = time.time() - 60  # as Testbed._prepare does: Postfix naps on a file of this second
        for path in changed:
            os.utime(path, (past, past))


def _watchdog_main(argv: list[str]) -> int:
    """`python testbed.py --watchdog ROOT [--remove]`: wait for the owner to say it stopped the
    bed; if the pipe closes without that, the owner died: stop the bed from its pid files."""
    root = Path(argv[argv.index("--watchdog") + 1])
    said = sys.stdin.buffer.read()
    if said.startswith(b"stopped"):
        return 0
    print(f"owner gone without stopping the bed in {root}: stopping it", flush=True)
    bed = Testbed(root=root)
    bed._started = True
    try:
        bed.stop(remove="--remove" in argv)
    except TestbedError as exc:
        print(exc, flush=True)
        return 1
    return 0


if __name__ == "__main__" and "--watchdog" in sys.argv:
    sys.exit(_watchdog_main(sys.argv))
