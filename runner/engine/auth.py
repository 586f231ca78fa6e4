"""The `auth:` step: a whole SASL exchange (SMTP/LMTP `AUTH`, POP3 `AUTH`, IMAP `AUTHENTICATE`)
played with a client mechanism of runner.protocols.sasl.

Send `AUTH MECH [initial response]` (the initial response only where it fits the protocol's
command line: `COMMAND_LIMIT`); while the server answers with a challenge (334, or `+`),
decode it (shown, masked, as a note), answer it; the reply that is not a challenge is the step's
reply, matched against its `S:` (the protocol's success by default). The password or token, and
every response derived from them (a SCRAM proof, a CRAM-MD5 digest), are registered with the
redactor before they are sent, so no event, report or error shows them. A SCRAM exchange that
ends in success without the server's signature verified fails the step.
"""

from __future__ import annotations

import base64
import binascii

from runner.engine.receive import receive
from runner.engine.verdicts import StepFailure
from runner.errors import ExitClass
from runner.lang.render import render
from runner.protocols.base import decode
from runner.protocols.sasl import CHALLENGE, SUCCESS, VERBS, SASLError, client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.engine.plan import StepPlan
    from runner.lang.render import Context
    from runner.protocols.base import Reply
    from runner.results import StepResult


def send_auth(run, plan: StepPlan, ctx: Context, sr: StepResult, deadline: float) -> Reply | None:
    """Plays the exchange; returns the final reply for the step's `S:` (None: the server closed)."""
    step = plan.step
    spec = step.auth
    protocol = run.protocol.name
    values = {k: render(spec[k], ctx).value for k in ("user", "password", "token", "authzid") if k in spec}
    for key in ("password", "token"):
        if values.get(key):
            run.redactor.add(values[key])
    mechanism = spec["mechanism"].upper()
    offered = _offered(run)
    if offered is not None and mechanism not in offered:
        what = " ".join(sorted(offered)) or "no SASL mechanism"
        raise StepFailure(
            "failed", ExitClass.FAILED, f"the server does not offer {mechanism} (it offers {what})"
        )
    mech = client(mechanism, host=run.config.host, port=run.config.port, **values)
    run.check_outgoing(None, True)  # a credential: refused in the clear outside loopback
    line = _first_line(run, spec, mech, protocol)
    shown = [run.redactor.redact(line)]
    _send(run, step, line, deadline)
    challenges = 0
    while True:
        reply = receive(run, step, ctx, deadline)
        if reply is None or reply.code != CHALLENGE[protocol]:
            break
        challenges += 1
        if challenges > mech.max_challenges:  # never answer (and send the secret) on and on
            _send(run, step, "*", deadline)  # RFC 4954, 5034, 3501: the client cancels
            sr.sent = ", ".join(shown + ["*"])
            raise StepFailure(
                "failed",
                ExitClass.FAILED,
                f"{mechanism}: the server sent challenge {challenges}, but {mechanism} has at most "
                f"{mech.max_challenges}: the exchange was cancelled",
                reply,
            )
        challenge = _challenge(reply)
        if challenge:
            run.note("info", f"{mechanism} challenge: {_readable(challenge)}")
        try:
            answer = _encoded(run, mech.respond(challenge))
        except SASLError as exc:
            raise StepFailure(
                "failed", ExitClass.FAILED, run.redactor.redact(f"{mechanism}: {exc}"), reply
            ) from None
        for expected in mech.expected():  # what the server will prove with (SCRAM): masked on arrival
            run.redactor.add(expected.decode("ascii"))  # decoded (the note) and base64 (the wire)
        shown.append(run.redactor.redact(answer) if answer else "(empty)")
        _send(run, step, answer, deadline)
    sr.sent = ", ".join(shown)
    if reply is not None and reply.code == SUCCESS[protocol] and (problem := mech.finished()):
        raise StepFailure("failed", ExitClass.FAILED, f"{mechanism}: {problem}", reply)
    return reply


def _send(run, step, line: str, deadline: float) -> None:
    run.deliver(step, run.protocol.frame(line, tag=step.tag), deadline, line)


def _encoded(run, response: bytes) -> str:
    """A response as base64; registered with the redactor (it is derived from a secret)."""
    text = base64.b64encode(response).decode("ascii")
    if text:
        run.redactor.add(text)
    return text


#: RFC 4954 (section 4) and RFC 5034 (section 4): the AUTH command stays within the protocol's
#: command line limit, CRLF included (SMTP's 512 octets, RFC 5321 4.5.3.1.4; POP3's 255, RFC 2449
#: section 4); when the initial response would break it, it is not sent inline but as the answer
#: to the server's empty challenge. IMAP (SASL-IR, RFC 4959) has no such limit.
COMMAND_LIMIT = {"smtp": 512, "lmtp": 512, "pop3": 255}


def _first_line(run, spec, mech, protocol: str) -> str:
    """`AUTH M`, with the initial response (base64, `=` when empty) where it goes inline."""
    line = f"{VERBS[protocol]} {mech.name}"
    if not _initial_response(run, spec, mech, protocol):
        return line
    inline = f"{line} {_encoded(run, mech.initial() or b'') or '='}"
    limit = COMMAND_LIMIT.get(protocol)
    if spec.get("initial_response") is None and limit is not None and len(inline) + 2 > limit:
        return line  # too long for the command line: the server's empty challenge asks for it
    return inline


def _initial_response(run, spec, mech, protocol: str) -> bool:
    """An initial response goes inline where the protocol allows it: SMTP and POP3 (RFC 4954,
    5034) when the line fits (`_first_line`), IMAP when the server advertises SASL-IR (RFC
    4959); `initial_response: false` turns it off, true forces it (however long the line). Mechanisms where the server speaks first (LOGIN, CRAM-MD5)
    have none."""
    wanted = spec.get("initial_response")
    if wanted is not None:
        return bool(wanted) and mech.name != "CRAM-MD5"
    if not mech.client_first:
        return False
    if protocol == "imap":
        caps = _caps(run)
        return caps is not None and "SASL-IR" in caps
    return True


def _caps(run) -> dict[str, str] | None:
    tracker = getattr(run, "caps", None)
    return getattr(tracker, "current", None)


def _offered(run) -> set[str] | None:
    """The SASL mechanisms of the session's last capability list (None: none seen)."""
    caps = _caps(run)
    if caps is None:
        return None
    names = set()
    for key, value in caps.items():
        if key in ("AUTH", "SASL"):
            names.update(value.upper().split())
        elif key.startswith("AUTH="):
            names.add(key[5:].upper())
    return names if names or "AUTH" in caps or "SASL" in caps else set()


def _challenge(reply: Reply) -> bytes:
    line = reply.lines[-1] if reply.lines else ""
    text = line[4:] if line[:3].isdigit() else line[1:]
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StepFailure(
            "failed", ExitClass.FAILED, f"the challenge is not base64: {text[:60]!r}", reply
        ) from None


def _readable(challenge: bytes) -> str:
    text = decode(challenge)
    return text if text.isprintable() else repr(challenge)[2:-1]
