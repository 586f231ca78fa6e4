"""The byte-moving interface every transport implements.

A transport knows nothing of SMTP, POP3 or IMAP: it connects, writes bytes, reads whatever
bytes have arrived (with a deadline), upgrades to TLS when asked, and closes.

    t = SocketTransport(config)          # a runner.model.scenario.ConnectConfig
    info = t.connect()                   # ConnectInfo; raises ConnectError / TLSError
    t.check_sendable(b"EHLO x\\r\\n")  # None, or why these bytes cannot go out exactly
    t.send(b"EHLO x\\r\\n", deadline)  # all of it before deadline (a time.monotonic() value)
    data = t.recv(deadline)              # bytes (at least one), or b"" on EOF;
                                         # both raise DeadlineError when the deadline passes
    tls = t.start_tls()                  # TLSInfo; raises TLSError; refuses if the server
                                         # already sent bytes that are waiting unread
    t.close()

Errors come from runner.errors: ConnectError (nothing was sent yet), TLSError, DeadlineError,
ConnectionClosed, NetworkError. Messages never contain payload bytes (which could hold secrets).
"""

from __future__ import annotations

from collections.abc import Callable  # (no cost: re, which every run imports, loads collections)

from runner.records import Frozen

#: The most any transport reads at once.
CHUNK = 64 * 1024

#: Called by transports with human-facing notes: ('chatter', "Trying 127.0.0.1...") for what a
#: spawned program printed that is not the server's bytes, ('warning', ...) for trouble worth
#: saying. Never for connect or TLS: the engine announces those (Connected, TLSStarted).
NoteSink = Callable[[str, str], None]


class TLSInfo(Frozen):
    """One handshake's facts, gathered by the transport (never by the engine): what was
    negotiated, the server's certificate (`cert`, runner.transports.certinfo.CertFacts: names,
    dates, days left; None when no certificate could be read), whether it was verified, and the
    server name sent as SNI (None when none was sent: an IP address)."""

    __slots__ = ("version", "cipher", "peer_subject", "peer_issuer", "verified", "cert", "sni")

    def __init__(
        self,
        version: str,  # 'TLSv1.3'
        cipher: str,  # 'TLS_AES_256_GCM_SHA384'
        peer_subject: str | None,  # 'CN=localhost' (None when not available)
        peer_issuer: str | None = None,
        verified: bool = True,  # False when verification was switched off (said loudly in reports)
        cert=None,  # a runner.transports.certinfo.CertFacts (not imported here: no cycle)
        sni: str | None = None,
    ):
        init = object.__setattr__
        init(self, "version", version)
        init(self, "cipher", cipher)
        init(self, "peer_subject", peer_subject)
        init(self, "peer_issuer", peer_issuer)
        init(self, "verified", verified)
        init(self, "cert", cert)
        init(self, "sni", sni)

    def facts(self) -> dict:
        """The facts as plain data, as every report gives them (JSON `tls:`, JUnit properties):
        version, cipher, peer_subject, peer_issuer, sans, not_before, not_after, days_left,
        verified, sni (None for what is not known)."""
        cert = self.cert
        return {
            "version": self.version,
            "cipher": self.cipher,
            "peer_subject": self.peer_subject,
            "peer_issuer": self.peer_issuer,
            "sans": list(cert.sans) if cert else None,
            "not_before": cert.not_before if cert else None,
            "not_after": cert.not_after if cert else None,
            "days_left": cert.days_left if cert else None,
            "verified": self.verified,
            "sni": self.sni,
        }

    def describe(self) -> str:
        s = f"{self.version} {self.cipher}"
        if self.peer_subject:
            s += f", certificate {self.peer_subject}"
        if self.peer_issuer:
            s += f" issued by {self.peer_issuer}"
        s += "" if self.verified else " (NOT VERIFIED: tls_verify is off)"
        return s


class ConnectInfo(Frozen):
    __slots__ = ("peer", "transport", "tls", "note")

    def __init__(
        self,
        peer: str,  # '127.0.0.1:2525' or '[::1]:2525'
        transport: str,  # 'socket' | 'telnet' | 'openssl'
        tls: TLSInfo | None = None,  # set when the connection is already encrypted (implicit TLS)
        note: str | None = None,  # e.g. the command line of a spawned program
    ):
        init = object.__setattr__
        init(self, "peer", peer)
        init(self, "transport", transport)
        init(self, "tls", tls)
        init(self, "note", note)


class Transport:
    name = "base"
    #: The program that performs the plaintext STARTTLS exchange itself, as reports name it
    #: ('openssl s_client -starttls smtp'); None when the engine plays it. When set, the
    #: handshake has happened by the time connect() returns (start_tls() just returns its
    #: TLSInfo) and the engine does not play the steps up to `starttls: true`.
    performs_starttls: str | None = None

    def __init__(self, config, *, on_note: NoteSink | None = None):
        self.config = config
        self.on_note = on_note or (lambda kind, text: None)

    @property
    def encrypted(self) -> bool:
        raise NotImplementedError

    def connect(self) -> ConnectInfo:
        raise NotImplementedError

    def check_sendable(self, data: bytes) -> str | None:
        """Why this transport cannot deliver `data` byte for byte (None when it can). The engine
        asks before the protocol records the command and before anything is written, so a
        refused step changes nothing. The base (and socket, openssl) send every byte exactly."""
        return None

    def send(self, data: bytes, deadline: float) -> None:
        """All of data, before `deadline` (time.monotonic()); DeadlineError when it passes."""
        raise NotImplementedError

    def recv(self, deadline: float) -> bytes:
        raise NotImplementedError

    def start_tls(self) -> TLSInfo:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Called from another thread when the run is interrupted (runner.interrupt): a connect,
        send or recv blocked in this transport returns at once (failing, or reading EOF) instead
        of waiting for its deadline. close() still follows, on the transport's own thread."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_loopback(host: str) -> bool:
    """True for names and addresses that stay on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost", "::1", "[::1]"):
        return True
    parts = host.split(".")
    if len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts):
        return True
    import ipaddress  # only for hosts that are not obviously loopback

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
