"""The start banner of `mailrun sandbox`: every listener with the very list it answers to
EHLO/LHLO, CAPA or CAPABILITY before login (computed from the functions the sessions use, so the
banner cannot drift from what the servers say), then users, delivery and certificates."""

from __future__ import annotations

import ipaddress

from runner.sandbox.store import WELCOME_SUBJECT


def offers(sb) -> list[tuple[str, str, str, str, list[str]]]:
    """`sb`: a started runner.sandbox.server.Sandbox. Per listener: (label, address, how, the command that lists what it offers, that list):
    the very lists EHLO/LHLO, CAPA and CAPABILITY answer before login."""
    from types import SimpleNamespace

    from runner.sandbox.imap import IMAPSession
    from runner.sandbox.pop3 import capabilities
    from runner.sandbox.smtp import extensions

    def imap(tls: bool) -> list[str]:
        return IMAPSession(sb._state, SimpleNamespace(tls=tls)).capabilities().split()

    at = {key: hostport(sb.host, port) for key, port in sb.ports.items()}
    lmtp = extensions(lmtp=True, starttls=True)
    pop3 = capabilities(tls=False, logged_in=False)
    return [
        ("SMTP", at["smtp"], "plain, STARTTLS; AUTH also before TLS", "EHLO", extensions(starttls=True)),
        ("SMTPS", at["smtps"], "implicit TLS", "EHLO", extensions(starttls=False)),
        (
            "PROXY",
            at["smtp_proxy"],
            "SMTP after a PROXY header (v1 or v2)",
            "EHLO",
            extensions(starttls=True),
        ),
        ("LMTP", at["lmtp"], "plain, STARTTLS; no AUTH", "LHLO", lmtp),
        ("LMTP", f"unix:{sb.lmtp_socket}", "plain, STARTTLS; no AUTH", "LHLO", lmtp),
        ("POP3", at["pop3"], "plain, STLS", "CAPA", pop3),
        ("POP3S", at["pop3s"], "implicit TLS", "CAPA", capabilities(tls=True, logged_in=False)),
        ("IMAP", at["imap"], "plain, STARTTLS", "CAPABILITY", imap(False)),
        ("IMAPS", at["imaps"], "implicit TLS", "CAPABILITY", imap(True)),
    ]


def describe(sb) -> str:
    """The start banner of `mailrun sandbox`: every listener and what it offers."""
    from runner.sandbox.lmtp import FULL_MAILBOX

    lines = [f"mailrun sandbox listening on {sb.host}:"]
    if sb._state is not None:
        for label, address, how, verb, offered in sb.offers():
            lines.append(f"  {label:<6} {address:<22} {how}")
            sep = " " if verb == "CAPABILITY" else ", "
            lines.append(f"  {'':<6} {verb}: {sep.join(offered)}")
    users = ", ".join(f"{u} / {p}" for u, p in sb.users.items())
    if sb.accept_any_login:
        lines.append(
            f"users: any login and any password or OAuth token are accepted (domain {sb.domain}); "
            f"CRAM-MD5 and SCRAM-SHA-* prove a password the server must know: {users}"
        )
    else:
        lines.append(f"users (login as NAME or NAME@{sb.domain}): {users}")
        lines.append("XOAUTH2 and OAUTHBEARER (OAuth 2.0) logins take the user's password as the token")
    lines.append(f"mail to any address is delivered; maildirs under {sb.maildir_root}")
    lines.append(
        f"LMTP: {FULL_MAILBOX}@{sb.domain} is accepted at RCPT, then refused after the message "
        "(452 4.2.2 Mailbox is full), for trying per-recipient replies"
    )
    if sb.welcome:
        lines.append(
            f"each new mailbox starts with one message from postmaster@{sb.domain}, "
            f"'Subject: {WELCOME_SUBJECT}'"
        )
    lines.append(f"CA certificate (trust it to verify TLS): {sb.ca_path}")
    for user, (cert, key) in sb.client_certs.items():
        lines.append(f"client certificate of {user} (SASL EXTERNAL over TLS): {cert}, key {key}")
    return "\n".join(lines)


def hostport(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"
