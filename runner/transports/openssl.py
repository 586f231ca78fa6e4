"""The openssl transport: `openssl s_client` under a pty, the way people test TLS mail servers by hand.

    openssl s_client -quiet -brief -connect HOST:PORT [-4|-6] -min_protocol TLSv1.2|TLSv1.3
        [-servername NAME -verify_hostname NAME | -verify_ip IP] [-verify_return_error]
        [-CAfile CA] [-cert CERT [-key KEY]] [-starttls smtp|pop3|imap] -msg -msgfile FILE

Measured on this machine (OpenSSL 3.0, tests/test_transport_openssl.py keeps measuring it):
- The pty is raw from before exec, so neither direction is translated: every byte 0x00-0xff,
  bare CR/LF and 10 kB lines reach the server exactly as the socket transport sends them, and the
  server's bytes come back unchanged (so check_sendable is the base's: everything goes). No
  `-crlf` (we send CR LF ourselves).
- `-quiet` (implied by `-brief`) also means `-ign_eof` and no interactive commands: lines starting
  with `R`, `Q` or `k` (`RCPT TO`, `QUIT`) go to the server.
- openssl's stderr (the `-brief` connection summary, `depth=0 ...`, `verify error:num=20:...`,
  error stacks) goes to a private FIFO instead of the pty: it never mixes with the data. It is
  parsed for TLSInfo and verification errors and handed to on_note('chatter', line).
- With `tls: starttls`, openssl itself reads the greeting, sends `EHLO mail.example.com` (SMTP) /
  `STLS` / `. STARTTLS`, and upgrades before connect() returns; `performs_starttls` names the
  program ('openssl s_client -starttls smtp') and start_tls() just returns the TLSInfo. What
  openssl read during that exchange is not shown to us (it prints some of it to stderr, which
  becomes chatter). openssl reads the STARTTLS reply with a single read and discards anything
  that came with it, so pre-handshake injection (CVE-2011-0411) cannot be detected here; when
  the session does not come up, the error says what can be told (`_stalled`: the TCP connection
  was up, so the server stalled the exchange; 'wrong version number': plaintext where TLS was
  due).
- The server's certificate comes from `-msg` (hex dumps of the handshake messages, written to
  a private file): its Certificate message gives the DER that runner.transports.certinfo reads,
  as for the socket transport, so both report the same facts (names, dates, SNI).
- `tls: none` is refused (use transport: socket or transport: telnet).
- With `tls_verify: false`, -verify_return_error is dropped: the session is set up whatever the
  certificate, and TLSInfo.verified is False.
- A connect deadline is enforced by killing openssl; it cannot tell TCP connect from handshake
  apart, so a stall in either is a ConnectError (no application data was sent).
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import tempfile
import time
import tty

import pexpect

from runner.errors import ConnectError, ConnectionClosed, DeadlineError, NetworkError, TLSError, UsageError
from runner.transports.base import CHUNK, ConnectInfo, NoteSink, TLSInfo, Transport
from runner.transports.certinfo import cert_facts, is_ip, leaf_from_msg_dump, verify_failed
from runner.transports.socket import format_peer
from runner.transports.spawned import kill, spawn, stop, write_all

_STARTTLS = {"smtp": "smtp", "lmtp": "lmtp", "pop3": "pop3", "imap": "imap"}


def _socket_established(pid: int) -> bool | None:
    """Whether process `pid` holds an established TCP connection (Linux /proc; None when it
    cannot be told)."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as fh:
                for row in fh.read().splitlines()[1:]:
                    fields = row.split()
                    if len(fields) > 9 and fields[9] in inodes and fields[3] == "01":
                        return True
        return False
    except OSError:
        return None


def _dn(text: str) -> str:
    """openssl's 'O = x, CN = localhost' -> 'O=x, CN=localhost'."""
    return re.sub(r"\s*=\s*", "=", text.strip())


class OpensslTransport(Transport):
    name = "openssl"

    def __init__(self, config, *, on_note: NoteSink | None = None):
        super().__init__(config, on_note=on_note)
        if config.tls == "none":
            raise UsageError(
                "transport: openssl needs TLS (tls: implicit or tls: starttls); for a plaintext "
                "connection use transport: socket or transport: telnet"
            )
        if config.tls == "starttls" and config.protocol not in _STARTTLS:
            raise UsageError(
                f"transport: openssl cannot do STARTTLS for protocol '{config.protocol}' "
                "(openssl s_client -starttls knows smtp, pop3 and imap); use transport: socket"
            )
        if config.tls == "starttls":
            self.performs_starttls = f"openssl s_client -starttls {_STARTTLS[config.protocol]}"
        self.child: pexpect.spawn | None = None
        self.fd: int | None = None
        self.err_fd: int | None = None
        self._tmpdir: str | None = None
        self._err_keep: int | None = None
        self._pending = b""  # pty bytes that arrived during the handshake wait
        self._err_buf = b""
        self._stderr_lines: list[str] = []
        self._eof = False
        self._tls: TLSInfo | None = None
        self.peer = format_peer(config.host, config.port)

    @property
    def encrypted(self) -> bool:
        return self._tls is not None

    def command(self) -> list[str]:
        cfg = self.config
        argv = ["openssl", "s_client", "-quiet", "-brief", "-connect", format_peer(cfg.host, cfg.port)]
        if cfg.family in (4, 6):
            argv.append(f"-{cfg.family}")
        argv += ["-min_protocol", "TLSv1.3" if cfg.tls_min_version == "1.3" else "TLSv1.2"]
        name = cfg.server_name or cfg.host
        if is_ip(name):
            argv += ["-noservername"]
            if cfg.tls_verify:
                argv += ["-verify_ip", name]
        else:
            argv += ["-servername", name]
            if cfg.tls_verify:
                argv += ["-verify_hostname", name]
        if cfg.tls_verify:
            argv.append("-verify_return_error")
        if cfg.ca:
            argv += ["-CAfile", str(cfg.ca)]
        if cfg.client_cert:
            argv += ["-cert", str(cfg.client_cert)]
            if cfg.client_key:
                argv += ["-key", str(cfg.client_key)]
        if cfg.tls == "starttls":
            argv += ["-starttls", _STARTTLS[cfg.protocol]]
        return argv

    # -- connect ---------------------------------------------------------------------------------
    def connect(self) -> ConnectInfo:
        cfg = self.config
        exe = shutil.which("openssl")
        if exe is None:
            raise UsageError("openssl not found: install the Debian package 'openssl'")
        for path, what in (
            (cfg.ca, "CA file"),
            (cfg.client_cert, "client certificate"),
            (cfg.client_key, "key"),
        ):
            if path is not None and not os.path.isfile(path):
                raise TLSError(f"cannot load {what} '{path}': No such file or directory")
        self._tmpdir = tempfile.mkdtemp(prefix="mailrun-openssl-")
        # -msg: the handshake messages, hex, to a private file: the server's certificate for
        # TLSInfo (-brief prints only its subject). Record headers only, never application data.
        argv = self.command() + ["-msg", "-msgfile", os.path.join(self._tmpdir, "msg")]
        fifo = os.path.join(self._tmpdir, "stderr")
        os.mkfifo(fifo, 0o600)
        self.err_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        # Our own write end keeps the FIFO from ever signalling EOF/HUP (select would spin).
        self._err_keep = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)

        def prepare() -> None:  # in the child, before exec: raw pty, stderr to the FIFO
            tty.setraw(0)
            fd = os.open(fifo, os.O_WRONLY)
            os.dup2(fd, 2)
            os.close(fd)

        try:
            self.child = spawn(exe, argv, prepare)
        except ConnectError:
            self._cleanup()
            raise
        self.fd = self.child.child_fd
        deadline = time.monotonic() + cfg.connect_timeout
        try:
            self._tls = self._await_handshake(deadline)
        except BaseException:
            self.close()
            raise
        return ConnectInfo(
            peer=self.peer,
            transport=self.name,
            tls=None if self.performs_starttls else self._tls,
            note=" ".join(argv),
        )

    def _await_handshake(self, deadline: float) -> TLSInfo:
        fields: dict[str, str] = {}
        established = False
        while True:
            for line in self._drain_stderr():
                if line == "CONNECTION ESTABLISHED":
                    established = True
                elif ":" in line and established:
                    k, _, v = line.partition(":")
                    fields.setdefault(k.strip(), v.strip())
            if established and ("Verification" in fields or "Verification error" in fields):
                return self._info(fields)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectError(self._stalled())
            assert self.fd is not None and self.err_fd is not None
            r, _, _ = select.select([self.fd, self.err_fd], [], [], remaining)
            if self.fd in r and self._pty_dead():
                # openssl exited: collect the rest of stderr, then explain.
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    if not self._drain_stderr(wait=0.05):
                        break
                raise self._failure()

    def _stalled(self) -> str:
        """Why no TLS session came within the connect deadline, as far as can be told: with
        -starttls, a TCP connection that is up means the server stalled the exchange openssl
        performs itself (greeting, EHLO, STARTTLS, handshake), e.g. after injecting data."""
        t = f"{self.config.connect_timeout:g}s"
        if self.performs_starttls and self.child is not None and _socket_established(self.child.pid):
            return (
                f"{self.performs_starttls} connected to {self.peer}, but no TLS session was "
                f"established within {t}: the server did not complete the STARTTLS exchange and "
                "handshake that openssl performs itself. A server that sends more data after its "
                "STARTTLS reply (STARTTLS injection, CVE-2011-0411) ends this way too: openssl "
                "reads and discards that data, so transport: openssl cannot check for it "
                "(transport: socket refuses it)"
            )
        return f"connect to {self.peer} timed out after {t} (no TLS session established)"

    def _pty_dead(self) -> bool:
        """True when the pty reports EOF (openssl exited). Data on it before the handshake is
        kept for recv (it cannot happen with -quiet, but is not thrown away)."""
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno == errno.EIO:
                return True
            raise
        if not data:
            return True
        self._pending += data
        return False

    def _failure(self) -> NetworkError:
        lines = self._stderr_lines
        text = "\n".join(lines)
        for line in lines:
            m = re.match(r"verify error:num=(\d+):(.*)", line)
            if m:
                return TLSError(verify_failed(self.peer, int(m.group(1)), m.group(2)))
        if "Connection refused" in text:
            return ConnectError(f"connection to {self.peer} refused")
        m = re.search(r"BIO_lookup_ex:[^\n]*:\d+:(.*)", text)
        if m:
            return ConnectError(f"cannot resolve '{self.config.host}': {m.group(1).strip()}")
        m = re.search(r"connect:errno=(\d+)", text)
        if m and m.group(1) != "0":
            return ConnectError(f"connect to {self.peer} failed: {os.strerror(int(m.group(1)))}")
        for line in lines:
            m = re.search(r":error:[0-9A-F]+:SSL routines:[^:]*:([^:]+):", line)
            if m:
                why = m.group(1)
                if self.performs_starttls and why == "wrong version number":
                    why += (
                        " (after its STARTTLS reply the server sent something that is not TLS: "
                        "plaintext injected before the handshake is read this way)"
                    )
                return TLSError(f"TLS handshake with {self.peer} failed: {why}")
        for line in lines:
            m = re.search(r":error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):", line)
            if m:
                return TLSError(f"openssl s_client failed: {m.group(1)}")
        if lines:
            return TLSError(f"openssl s_client failed: {lines[-1]}")
        return TLSError(f"openssl s_client exited before a TLS session with {self.peer} was established")

    def _info(self, f: dict[str, str]) -> TLSInfo:
        subject = f.get("Peer certificate")
        facts = cert_facts(leaf_from_msg_dump(self._read_msg()))
        name = self.config.server_name or self.config.host
        return TLSInfo(
            version=f.get("Protocol version", "?"),
            cipher=f.get("Ciphersuite", "?"),
            peer_subject=facts.subject if facts else (_dn(subject) if subject else None),
            peer_issuer=facts.issuer if facts else None,
            verified=self.config.tls_verify and "Verification" in f and f["Verification"].startswith("OK"),
            cert=facts,
            sni=None if is_ip(name) else name,
        )

    def _read_msg(self) -> str:
        """What -msg wrote so far (openssl flushes it after each message): the handshake is
        over when this is read, so the server's Certificate message is in it."""
        try:
            with open(os.path.join(self._tmpdir or "", "msg"), encoding="ascii", errors="replace") as fh:
                return fh.read(1 << 20)  # the handshake's part; later records only add headers
        except OSError:
            return ""

    # -- stderr ----------------------------------------------------------------------------------
    def _drain_stderr(self, wait: float = 0.0) -> list[str]:
        """Complete stderr lines that have arrived (handed to on_note as chatter)."""
        if self.err_fd is None:
            return []
        if wait:
            r, _, _ = select.select([self.err_fd], [], [], wait)
            if not r:
                return []
        while True:
            try:
                data = os.read(self.err_fd, CHUNK)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            self._err_buf += data
        lines = []
        while b"\n" in self._err_buf:
            raw, _, self._err_buf = self._err_buf.partition(b"\n")
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            lines.append(line)
            self._stderr_lines.append(line)
            self.on_note("chatter", line)
        return lines

    # -- data ------------------------------------------------------------------------------------
    def start_tls(self) -> TLSInfo:
        if self._tls is None:
            raise TLSError("start_tls: no TLS session (not connected)")
        return self._tls

    def send(self, data: bytes, deadline: float) -> None:
        if self.fd is None or self._eof:
            raise ConnectionClosed(f"connection to {self.peer} is closed (openssl exited)")
        write_all(self.fd, data, peer=self.peer, deadline=deadline, program="openssl")

    def recv(self, deadline: float) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while True:
            if self._eof or self.fd is None:
                return b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._drain_stderr()
                raise DeadlineError(f"no data from {self.peer} before the deadline")
            fds = [self.fd] if self.err_fd is None else [self.fd, self.err_fd]
            r, _, _ = select.select(fds, [], [], remaining)
            if self.err_fd is not None and self.err_fd in r:
                self._drain_stderr()  # openssl's stderr lines become chatter as they arrive
            if self.fd not in r:
                continue
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno != errno.EIO:
                    raise NetworkError(f"reading from openssl failed: {e.strerror}") from None
                data = b""
            if not data:
                self._eof = True
                self._drain_stderr(wait=0.05)
                return b""
            return data

    def abort(self) -> None:
        kill(self.child)

    def close(self) -> None:
        child, self.child = self.child, None
        self.fd = None
        self._eof = True
        if child is not None:
            stop(child)
        self._drain_stderr()
        self._cleanup()

    def _cleanup(self) -> None:
        for attr in ("err_fd", "_err_keep"):
            fd = getattr(self, attr)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, None)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
