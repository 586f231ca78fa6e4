"""The server certificate as facts: DER in, plain data out, the same for every transport.

    facts = cert_facts(der)                 # CertFacts, or None when der is empty or unreadable
    facts = cert_facts(der, now=time.time())
    valid_for(facts, "mail.example.test")   # True/False: the verifier's name rules (below)
    der = leaf_from_msg_dump(text)          # the server's first certificate, from the lines
                                            # `openssl s_client -msg` writes
    verify_failed(peer, code, message)      # the words of a failed verification (below)

The socket transport hands in `getpeercert(binary_form=True)` (which Python gives with
verification on or off; the dict form is empty when it is off); the openssl transport the
certificate it read from its own `-msg` dump. One parser (the `cryptography` package, imported
on the first call: only a TLS connection pays for it).

Name rules (`valid_for`), those OpenSSL's X509_check_host / X509_check_ip apply for Python's
ssl module and for `openssl s_client -verify_hostname` (RFC 6125):
- an IP address matches only an iPAddress subjectAltName, never a DNS name or the CN;
- a host name (an IDN as its A-label) matches a dNSName subjectAltName, case-insensitively, a
  trailing dot ignored; a `*` is allowed only as the whole leftmost label with at least two
  labels after it (`*.example.com`), and stands for exactly one non-empty label (no partial
  `f*.example.com`: Python's ssl forbids those; `openssl s_client` alone would allow them);
- the subject's CN is used only when the certificate has no dNSName subjectAltName at all.

A failed verification is told in one wording whichever transport verified (`verify_failed`):
both hand in OpenSSL's verify code and message (Python's SSLCertVerificationError.verify_code
and .verify_message; `openssl s_client`'s `verify error:num=CODE:MESSAGE`), and an issuer that
is not trusted gets the hint of what to do about it.
"""

from __future__ import annotations

import ipaddress
import math
import time

from runner.records import Frozen

__all__ = ["CertFacts", "cert_facts", "is_ip", "leaf_from_msg_dump", "valid_for", "verify_failed"]

_DAY = 86400.0


class CertFacts(Frozen):
    """What a certificate says. subject, issuer: RFC 4514 names in the certificate's order
    ('O=mailrun test bed CA, CN=...'); sans: the subjectAltNames as openssl prints them
    ('DNS:mail.example.test', 'IP:127.0.0.1', 'email:...', 'URI:...'); common_names: the
    subject's CN values; not_before, not_after: ISO 8601 UTC ('2026-12-12T10:00:00Z');
    days_left: whole days from `now` to not_after, rounded down (negative once expired)."""

    __slots__ = ("subject", "issuer", "sans", "common_names", "not_before", "not_after", "days_left")

    def __init__(
        self,
        subject: str | None,
        issuer: str | None,
        sans: tuple[str, ...],
        common_names: tuple[str, ...],
        not_before: str,
        not_after: str,
        days_left: int,
    ):
        init = object.__setattr__
        init(self, "subject", subject)
        init(self, "issuer", issuer)
        init(self, "sans", sans)
        init(self, "common_names", common_names)
        init(self, "not_before", not_before)
        init(self, "not_after", not_after)
        init(self, "days_left", days_left)


def _iso(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(name) -> str | None:
    return ", ".join(attr.rfc4514_string() for attr in name) or None


def _sans(cert) -> tuple[str, ...]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out = []
    for gn in ext:
        if isinstance(gn, x509.DNSName):
            out.append(f"DNS:{gn.value}")
        elif isinstance(gn, x509.IPAddress):
            out.append(f"IP:{gn.value}")
        elif isinstance(gn, x509.RFC822Name):
            out.append(f"email:{gn.value}")
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(f"URI:{gn.value}")
    return tuple(out)


def cert_facts(der: bytes | None, now: float | None = None) -> CertFacts | None:
    """The facts of one DER certificate (None when there is none, or it cannot be parsed: the
    handshake accepted it, so the report says what it can rather than fail the run)."""
    if not der:
        return None
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_der_x509_certificate(der)
        not_after = cert.not_valid_after_utc
        not_before = cert.not_valid_before_utc
        sans = _sans(cert)
        cns = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
        subject, issuer = _name(cert.subject), _name(cert.issuer)
    except Exception:  # noqa: BLE001 - a certificate cryptography cannot read: no facts
        return None
    now = time.time() if now is None else now
    return CertFacts(
        subject=subject,
        issuer=issuer,
        sans=sans,
        common_names=cns,
        not_before=_iso(not_before),
        not_after=_iso(not_after),
        days_left=math.floor((not_after.timestamp() - now) / _DAY),
    )


# --------------------------------------------------------------------------- names


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def is_ip(name: str) -> bool:
    """Is this an IP address (v4, v6, v6 in brackets) rather than a host name?"""
    return _ip(name) is not None


def _dns_match(pattern: str, host: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern == host:
        return True
    labels = pattern.split(".")
    if labels[0] != "*" or len(labels) < 3 or "*" in ".".join(labels[1:]):
        return False  # a wildcard only as the whole leftmost label, over at least two labels
    first, _, rest = host.partition(".")
    return bool(first) and rest == ".".join(labels[1:])


def valid_for(facts: CertFacts, name: str) -> bool:
    """Is the certificate valid for this host name or IP address (the rules in the module's
    docstring)?"""
    ip = _ip(name)
    if ip is not None:
        return any(s.startswith("IP:") and _ip(s[3:]) == ip for s in facts.sans)
    host = name.lower().rstrip(".")
    if not host:
        return False
    if not host.isascii():  # certificates hold A-labels, as the verifier is given them
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    dns = [s[4:] for s in facts.sans if s.startswith("DNS:")]
    candidates = dns if dns else list(facts.common_names)
    return any(_dns_match(p, host) for p in candidates)


# --------------------------------------------------------------------------- verification

#: OpenSSL verify codes (X509_V_ERR_*) that mean "the issuer is not trusted", not a name, date or
#: usage problem: 2 unable to get issuer certificate, 18 self-signed certificate, 19 self-signed
#: certificate in chain, 20 unable to get local issuer certificate, 21 unable to verify the first
#: certificate
_UNTRUSTED_ISSUER = frozenset({2, 18, 19, 20, 21})


def verify_failed(peer: str, code: int | None, message: str) -> str:
    """The error of a handshake whose certificate verification failed, for every transport:
    OpenSSL's verify `code` and `message`; when the issuer is not trusted, what to do about it
    (the server has its own CA, as `mailrun sandbox` has: it prints its CA's path when it starts)."""
    text = f"TLS handshake with {peer} failed: certificate verify failed: {message}"
    if code in _UNTRUSTED_ISSUER:
        text += (
            "; the server's CA is not trusted: give its CA certificate with --ca FILE (or connect: ca:)."
            " For `mailrun sandbox`, that is the path it printed as 'CA certificate (trust it to verify"
            " TLS): ...' (or run with --sandbox, which needs none)"
        )
    return text


# --------------------------------------------------------------------------- openssl -msg


def leaf_from_msg_dump(text: str) -> bytes | None:
    """The server's leaf certificate (DER) from what `openssl s_client -msg` writes: the hex
    dump of the first handshake message received ('<<< TLS 1.3, Handshake [length 0244],
    Certificate'). Its body: 1 byte type 11, 3 bytes length, (TLS 1.3: a 1-byte context length and
    the context), 3 bytes list length, then per certificate 3 bytes length and the DER (TLS
    1.3: then 2 bytes of extensions length and the extensions). None when there is none."""
    data = bytearray()
    inside = tls13 = False
    for line in text.splitlines():
        if line.startswith(("<<<", ">>>")):
            if inside:
                break
            inside = (
                line.startswith("<<<") and "Handshake" in line and line.rstrip().endswith(", Certificate")
            )
            tls13 = inside and "TLS 1.3" in line
            continue
        if inside:
            try:
                data += bytes.fromhex(line.strip())
            except ValueError:
                return None
    if len(data) < 7 or data[0] != 11:
        return None
    pos = 4
    if tls13:
        pos += 1 + data[4]
    pos += 3  # the list's length
    if pos + 3 > len(data):
        return None
    size = int.from_bytes(data[pos : pos + 3], "big")
    der = bytes(data[pos + 3 : pos + 3 + size])
    return der if size and len(der) == size else None
