"""The built-in sandbox mail service: SMTP and LMTP (aiosmtpd), POP3 and IMAP on loopback over Maildirs.

    from runner.sandbox.server import Sandbox
    with Sandbox() as sb:
        ...  # sb.host, sb.ports['smtp'|'smtps'|'lmtp'|'smtp_proxy'|'pop3'|...], sb.lmtp_socket, sb.ca_path

server.py: Sandbox (start, stop, ports) and `main(argv)`, which is `mailrun sandbox` (foreground
until Ctrl-C); banner.py: its start banner; state.py: what the protocol sessions share; smtp.py (with BDAT), lmtp.py, pop3.py,
imap*.py: the sessions; store.py: the Maildirs; lines.py: line-based connections; sasl.py: every
server-side SASL mechanism (and the XOAUTH2 parsing IMAP uses).
"""
