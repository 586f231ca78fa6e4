"""The sandbox's LMTP server (RFC 2033): the SMTP server's session with LHLO instead of
HELO/EHLO, no AUTH (local delivery, as Dovecot's LMTP), and after the message (DATA's final '.'
or BDAT ... LAST) one reply per accepted recipient, in RCPT order.

So that a per-recipient `S:` list can be tried, the mailbox `full` (full@mailrun.test) accepts
RCPT and then refuses the message: `452 4.2.2 <full@mailrun.test> Mailbox is full`.
"""

from __future__ import annotations

from runner.sandbox.smtp import SandboxSMTP

#: the mailbox that refuses every message after it came (a per-recipient failure to try)
FULL_MAILBOX = "full"


class SandboxLMTP(SandboxSMTP):
    lmtp = True

    async def smtp_LHLO(self, arg: str | None) -> None:
        await SandboxSMTP.smtp_EHLO(self, arg)

    async def smtp_EHLO(self, hostname: str) -> None:
        await self.push("500 5.5.1 Error: this is LMTP: use LHLO")

    async def smtp_HELO(self, hostname: str) -> None:
        await self.push("500 5.5.1 Error: this is LMTP: use LHLO")

    async def smtp_AUTH(self, arg: str | None) -> None:
        await self.push("502 5.5.1 Error: LMTP offers no AUTH (local delivery)")

    def refusal(self, name: str, rcpt: str) -> str | None:
        if name == FULL_MAILBOX:
            return f"452 4.2.2 <{rcpt}> Mailbox is full"
        return None

    def accepted(self, rcpt: str, queue_id: str) -> str:
        return f"250 2.0.0 <{rcpt}> Ok: delivered as {queue_id}"
