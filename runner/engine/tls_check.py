"""The `TLS` step: a session's `tls_expect:` checked against one handshake's facts.

    sr = tls_step(expect, info, config, ctx)   # a StepResult (section 'tls', action 'tls',
                                               # name 'TLS', the facts in sr.tls)

Every check is made; the reason names each one that failed in a sentence, e.g.
`certificate for mail.example.test expires in 9 days (2026-12-12 10:00 UTC); scenario wants >= 21`.
A failed check is an expectation that failed (exit class 1), not a network error. The facts
were gathered by the transport (runner.transports.base.TLSInfo); the name rules are the
verifier's (runner.transports.certinfo.valid_for); the comparisons are the language's
(runner.lang.tls_expect).
"""

from __future__ import annotations

import re

from runner.errors import ExitClass, MailrunError
from runner.lang.render import render
from runner.lang.tls_expect import holds
from runner.results import StepResult
from runner.transports.certinfo import valid_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from runner.lang.render import Context
    from runner.model.config import ConnectConfig
    from runner.model.scenario import TLSCheck, TLSExpect
    from runner.transports.base import TLSInfo

__all__ = ["tls_step"]


def _when(iso: str) -> str:
    """'2026-12-12T10:00:00Z' -> '2026-12-12 10:00 UTC'."""
    return f"{iso[:10]} {iso[11:16]} UTC"


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _wanted(check: TLSCheck, name: str | None) -> str:
    """How the step shows a check: 'version >= TLSv1.2', 'cipher ~ GCM', 'name mail.example.test'."""
    if check.op == "search":
        return f"{check.key} ~ {check.wanted}"
    if check.op == "valid_for":
        return f"name {name}"
    if check.key == "verified":
        return f"verified {'true' if check.wanted else 'false'}"
    return f"{check.key} {check.op} {check.wanted}"


def _failure(check: TLSCheck, info: TLSInfo, target: str, name: str | None) -> str | None:
    """The sentence for a check that does not hold, or None when it holds."""
    cert = info.cert
    want = f"scenario wants {_wanted(check, name)}"
    if check.key == "version":
        if holds(check.op, info.version, check.wanted):
            return None
        return f"TLS version {info.version} was negotiated with {target}; {want}"
    if check.key == "cipher":
        if re.search(check.wanted, info.cipher):
            return None
        return f"cipher {info.cipher} does not match {check.wanted!r}; {want}"
    if check.key == "verified":
        if info.verified == check.wanted:
            return None
        said = "was verified" if info.verified else "was not verified (tls_verify is off / --insecure)"
        return f"certificate for {target} {said}; {want}"
    if cert is None:
        return f"no certificate facts from the handshake with {target}; {want}"
    if check.key == "days_left":
        if holds(check.op, cert.days_left, check.wanted):
            return None
        if cert.days_left >= 0:
            when = f"expires in {_days(cert.days_left)}"
        else:
            ago = -cert.days_left - 1  # rounded down, like days_left: -1 is 'less than a day ago'
            when = "expired today" if ago == 0 else f"expired {_days(ago)} ago"
        return f"certificate for {target} {when} ({_when(cert.not_after)}); scenario wants {check.op} {check.wanted}"
    if check.key == "name":
        if name is not None and valid_for(cert, name):
            return None
        names = ", ".join(cert.sans) or ", ".join(f"CN={cn}" for cn in cert.common_names) or "no names"
        return f"certificate for {target} names {names}, not {name}; {want}"
    text = cert.issuer if check.key == "issuer" else cert.subject
    if text is not None and re.search(check.wanted, text):
        return None
    return f"certificate {check.key} {text!r} does not match {check.wanted!r}; {want}"


def no_handshake_step(expect: TLSExpect) -> StepResult:
    """The TLS step of a session with `tls_expect` whose connection was never encrypted (a
    STARTTLS step that `when:` found not needed, say): failed, since nothing was checked."""
    sr = StepResult(1, "tls", str(expect.location), None, "tls", "failed", "TLS", exit_class=ExitClass.FAILED)
    sr.reason = "no TLS handshake happened in this session, so tls_expect checked nothing"
    return sr


def tls_step(expect: TLSExpect, info: TLSInfo, config: ConnectConfig, ctx: Context) -> StepResult:
    """The TLS step's result: passed, or failed (exit class 1) with every failed check's
    sentence; an error (exit class 2) when `name` cannot be rendered."""
    target = config.server_name or config.host
    sr = StepResult(1, "tls", str(expect.location), None, "tls", "passed", "TLS", tls=info)
    name = None
    named = ctx.with_values(
        {"connect.host": config.host, "connect.port": str(config.port), "connect.server_name": target}
    )
    for check in expect.checks:
        if check.key == "name":
            try:
                name = render(check.wanted, named).value
            except MailrunError as e:
                sr.status, sr.exit_class = "error", ExitClass.INVALID
                sr.reason = ctx.redactor.redact(f"tls_expect name: {e}")
                return sr
    sr.expected = ctx.redactor.redact(", ".join(_wanted(c, name) for c in expect.checks))
    failures = [f for f in (_failure(c, info, target, name) for c in expect.checks) if f is not None]
    if failures:
        sr.status, sr.exit_class = "failed", ExitClass.FAILED
        sr.reason = ctx.redactor.redact(". ".join(failures))
    return sr
