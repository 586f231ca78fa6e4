"""The built-in sandbox mail service: SMTP (aiosmtpd), POP3 and IMAP on loopback over Maildirs.

    from runner.sandbox import Sandbox
    with Sandbox() as sb:
        ...  # sb.host, sb.ports['smtp'|'smtps'|'pop3'|'pop3s'|'imap'|'imaps'], sb.ca_path

`main(argv)` is `mailrun sandbox` (foreground until Ctrl-C).
"""

from runner.sandbox.server import DEFAULT_USERS, PORT_KEYS, Sandbox, SandboxError, main

__all__ = ["DEFAULT_USERS", "PORT_KEYS", "Sandbox", "SandboxError", "main"]
