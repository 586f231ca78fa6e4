"""The engine against the real Postfix/Dovecot test bed (and small loopback servers): scenarios
written as YAML, loaded with the loader and played through runner.engine.run.Engine; the events and
results are inspected, and what Postfix delivered is read back from the Maildir."""

from __future__ import annotations

import base64
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path
from string import Template

import pytest

from runner import transports
from runner.engine.plan import SessionPlan
from runner.engine.preflight import first_refusal
from runner.engine.run import Engine, RunOptions
from runner.engine.session import SessionRunner
from runner.engine.verdicts import StepFailure
from runner.errors import ExitClass
from runner.events import Closed, Connected, Note, Received, Retrying, Sent, StepFinished, TLSStarted
from runner.load.api import load_scenario
from runner.model.config import resolve_connect
from runner.results import SessionResult
from runner.transports.base import is_loopback
from tests.support.servers import Server, record, scripted


def write(tmp_path: Path, text: str, name: str = "s.yaml", **subs) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Template(textwrap.dedent(text)).safe_substitute(**{k: str(v) for k, v in subs.items()}))
    return path


def play(path: Path, **options):
    """(ScenarioResult, events) of one engine run."""
    events: list = []
    variables = options.pop("variables", {})
    scenario = load_scenario(path, defined=variables.keys())
    opts = RunOptions(variables=variables, run_id=options.pop("run_id", uuid.uuid4().hex[:12]), **options)
    result = Engine(opts, events.append).run(scenario)
    return result, events


def sent_bytes(events) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Sent))


def received_bytes(events) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Received))


def bed_subs(bed, **more):
    return dict(host=bed.host, ca=bed.ca_path, **{k: v for k, v in bed.ports.items()}, **more)


def assert_passed(result):
    bad = [(s.index, s.location, s.status, s.reason) for s in result.steps if s.status != "passed"]
    assert result.exit_class == ExitClass.OK and not bad, (result.reason, bad)


# --------------------------------------------------------------------------- SMTP


SEND_LOGIN = """\
    name: send with AUTH LOGIN, pipelining, dot-stuffing and a captured queue id
    protocol: smtp
    connect: {host: $host, port: $smtp, timeout: 10}
    vars:
      user: alice@example.test
      password: wonderland
      to: bob@example.test
    secrets: [password]
    steps:
      - S: 220
      - C: EHLO client.example
        S: {code: 250, lines: ['^250-PIPELINING$$', '^250-AUTH .*LOGIN']}
      - C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
      - C: "{{ user | b64 }}"
        S: 334 UGFzc3dvcmQ6
      - C: "{{ password | b64 }}"
        S: 235 2.7.0
      - C: "MAIL FROM:<{{ user }}>"
      - C: "RCPT TO:<{{ to }}>"
      - C: DATA
      - S: 250 2.1.0
      - S: 250 2.1.5
      - S: 354
      - body: |
          Subject: engine $tag
          From: <{{ user }}>

          first line
          .a line starting with a dot
          ..two dots
          .
          last line
        S: 250 2.0.0
        capture: {queue_id: 'queued as ([0-9A-F]+)'}
      - C: "NOOP {{ queue_id }}"
        S: 250
    finally:
      - C: QUIT
        S: 221
      - S: EOF
    """


def test_smtp_auth_login_pipelining_dot_stuffing_and_capture(testbed, tmp_path):
    tag = uuid.uuid4().hex
    path = write(tmp_path, SEND_LOGIN, **bed_subs(testbed, tag=tag))
    result, events = play(path)
    assert_passed(result)
    assert len(result.steps) == 15

    wire = sent_bytes(events)
    # PIPELINING: the three commands went out before any of their replies was read
    i_mail = [i for i, e in enumerate(events) if isinstance(e, Sent) and e.data.startswith(b"MAIL FROM")][0]
    i_data = [i for i, e in enumerate(events) if isinstance(e, Sent) and e.data == b"DATA\r\n"][0]
    assert not any(isinstance(e, Received) for e in events[i_mail:i_data])
    # dot-stuffing on the wire, CRLF line ends, CRLF.CRLF at the end
    assert b"\r\n..a line starting with a dot\r\n...two dots\r\n..\r\nlast line\r\n.\r\n" in wire
    assert b"\n" not in wire.replace(b"\r\n", b"")

    # the capture: recorded (masked form = plain here), and used by a later step
    body_step = result.steps[11]
    queue_id = body_step.captures["queue_id"]
    assert len(queue_id) >= 6 and f"queued as {queue_id}" in body_step.reply.lines[0]
    assert f"NOOP {queue_id}\r\n".encode() in wire

    # what Postfix delivered: dots unstuffed, and its queue id is the one we captured
    msg = testbed.wait_for_message("bob", lambda raw: f"engine {tag}".encode() in raw)
    assert b"\n.a line starting with a dot\n..two dots\n.\nlast line\n" in msg
    assert f"id {queue_id}".encode() in msg

    # S: EOF after QUIT passed, and the server closed
    assert result.steps[-1].expected == "EOF" and result.steps[-1].status == "passed"
    assert [e.by for e in events if isinstance(e, Closed)] == ["server"]
    # the AUTH LOGIN password never appears, not even base64
    b64 = base64.b64encode(b"wonderland")
    assert all(
        b64 not in e.data and b"wonderland" not in e.data for e in events if isinstance(e, (Sent, Received))
    )
    assert b"****\r\n" in wire


def test_submission_starttls_then_auth_plain(testbed, tmp_path):
    path = write(
        tmp_path,
        """\
        name: submission with STARTTLS and AUTH PLAIN
        protocol: smtp
        connect: {host: localhost, port: $submission, tls: starttls, ca: $ca, server_name: mail.example.test}
        vars: {user: alice@example.test, password: wonderland}
        secrets: [password]
        steps:
          - S: 220
          - C: EHLO client.example
            S: {code: 250, text: STARTTLS, not: {text: AUTH}}
          - C: MAIL FROM:<alice@example.test>
            S: 530 5.7.0
          - C: STARTTLS
            S: 220 2.0.0
            starttls: true
          - C: EHLO client.example
            S: {code: 250, text: AUTH PLAIN, not: {text: STARTTLS}}
          - C: "AUTH PLAIN {{ auth_plain(user, password) }}"
            S: 235 2.7.0
          - C: MAIL FROM:<alice@example.test>
            S: 250
        finally:
          - C: QUIT
            S: 221
        """,
        **bed_subs(testbed),
    )
    result, events = play(path)
    assert_passed(result)
    tls = [e for e in events if isinstance(e, TLSStarted)]
    assert len(tls) == 1 and tls[0].info.version.startswith("TLSv1.")
    assert result.sessions[0].tls is not None and result.sessions[0].tls.verified
    # TLS began right after the STARTTLS reply, before the second EHLO
    order = [type(e).__name__ + (e.data[:8].decode() if isinstance(e, Sent) else "") for e in events]
    assert order.index("TLSStarted") < order.index("SentEHLO cli", order.index("SentSTARTTLS"))
    blob = base64.b64encode(b"\0alice@example.test\0wonderland")
    assert all(blob not in e.data for e in events if isinstance(e, Sent))
    assert result.steps[5].sent == "AUTH PLAIN ****"


def test_smtps_implicit_tls(testbed, tmp_path):
    path = write(
        tmp_path,
        """\
        name: smtps
        protocol: smtp
        connect: {host: 127.0.0.1, port: $smtps, tls: implicit, ca: $ca, server_name: mail.example.test}
        steps:
          - S: 220 ESMTP
          - C: EHLO client.example
            S: {code: 250, not: {text: STARTTLS}}
        finally:
          - C: QUIT
            S: 221
        """,
        **bed_subs(testbed),
    )
    result, events = play(path)
    assert_passed(result)
    connected = [e for e in events if isinstance(e, Connected)][0]
    assert connected.info.tls is not None and connected.info.tls.verified


def test_failing_expectation_is_a_failure_with_expected_and_received(testbed, tmp_path):
    path = write(
        tmp_path,
        """\
        name: wrong password
        protocol: smtp
        connect: {host: $host, port: $smtp}
        vars: {password: not-the-password}
        secrets: [password]
        steps:
          - S: 220
          - C: EHLO client.example
            S: 250
          - C: "AUTH PLAIN {{ auth_plain('alice@example.test', password) }}"
            S: 235
          - C: NOOP
            S: 250
        finally:
          - C: QUIT
            S: 221
        """,
        **bed_subs(testbed),
    )
    result, events = play(path)
    assert result.exit_class == ExitClass.FAILED and result.status == "failed"
    step = result.steps[2]
    assert step.status == "failed" and step.expected == "235"
    assert step.reply.code == "535" and "535" in step.reason
    assert step.location == f"{path}:10"
    assert result.steps[3].status == "skipped"
    assert result.steps[4].status == "passed"  # finally still ran
    assert b"not-the-password" not in sent_bytes(events)


def test_not_patterns(testbed, tmp_path):
    path = write(
        tmp_path,
        """\
        name: not
        protocol: smtp
        connect: {host: $host, port: $smtp}
        steps:
          - S: {code: 220, not: 5xx}
          - C: EHLO client.example
            S: {code: 250, not: {lines: ['^NOSUCHEXTENSION']}}
          - C: EHLO client.example
            S: {code: 250, not: {text: PIPELINING}}
        finally:
          - C: QUIT
            S: 221
        """,
        **bed_subs(testbed),
    )
    result, _ = play(path)
    assert [s.status for s in result.steps] == ["passed", "passed", "failed", "passed"]
    assert result.exit_class == ExitClass.FAILED
    assert "PIPELINING" in result.steps[2].reason


def test_eof_expected_but_server_stays(testbed, tmp_path):
    path = write(
        tmp_path,
        """\
        name: eof
        protocol: smtp
        connect: {host: $host, port: $smtp, timeout: 0.5}
        steps:
          - S: 220
          - C: NOOP
            S: EOF
        """,
        **bed_subs(testbed),
    )
    result, _ = play(path)
    step = result.steps[1]
    assert step.status == "failed" and "250" in step.reason and "close" in step.reason


# --------------------------------------------------------------------------- include fragments


def test_included_failure_names_fragment_and_including_step(testbed, tmp_path):
    write(
        tmp_path,
        """\
        vars: {user: nobody}
        steps:
          - C: EHLO client.example
            S: 250
          - C: "AUTH PLAIN {{ auth_plain(user, password) }}"
            S: 235
        """,
        name="lib/auth.yaml",
    )
    path = write(
        tmp_path,
        """\
        name: include
        protocol: smtp
        connect: {host: $host, port: $smtp}
        vars: {password: wrong}
        secrets: [password]
        steps:
          - S: 220
          - include: lib/auth.yaml
            vars: {user: alice@example.test, password: "{{ password }}"}
        finally:
          - C: QUIT
            S: 221
        """,
        **bed_subs(testbed),
    )
    result, events = play(path)
    assert result.exit_class == ExitClass.FAILED
    failed = result.steps[2]
    assert failed.status == "failed"
    assert failed.location.endswith("lib/auth.yaml:5")
    assert failed.via == f"{path}:8"
    assert result.steps[1].status == "passed" and result.steps[1].via == f"{path}:8"
    # the include var is secret too (derived from a secret)
    assert b"wrong" not in sent_bytes(events)


# --------------------------------------------------------------------------- POP3 and IMAP


def _deliver(bed, tmp_path, tag: str) -> None:
    """Put one known message into bob's (cleared) mailbox through the engine."""
    bed.clear_mailbox("bob")
    result, _ = play(write(tmp_path, SEND_LOGIN, name="send.yaml", **bed_subs(bed, tag=tag)))
    assert_passed(result)
    bed.wait_for_message("bob", lambda raw: f"engine {tag}".encode() in raw)


def test_pop3_stls_user_pass_stat_list_retr_top_uidl(testbed, tmp_path):
    tag = uuid.uuid4().hex
    _deliver(testbed, tmp_path, tag)
    path = write(
        tmp_path,
        """\
        name: pop3
        protocol: pop3
        connect: {host: 127.0.0.1, port: $pop3, tls: starttls, ca: $ca, server_name: mail.example.test}
        vars: {password: builder}
        secrets: [password]
        steps:
          - S: +OK
          - C: CAPA
            S: {code: +OK, lines: ['^STLS$$']}
          - C: STLS
            S: +OK
            starttls: true
          - C: USER bob
            S: +OK
          - C: "PASS {{ password }}"
            S: +OK
          - C: STAT
            S: {code: +OK, re: '^\\+OK 1 \\d+$$'}
            capture: {size: '\\+OK 1 (\\d+)'}
          - C: LIST
            S: {code: +OK, lines: ['^1 {{ size }}$$']}
          - C: LIST 1
            S: '+OK 1 {{ size }}'
          - C: UIDL
            S: {code: +OK, lines: ['^1 \\S+$$']}
          - C: RETR 1
            S:
              code: +OK
              lines: ['^Subject: engine $tag$$', '^\\.a line starting with a dot$$', '^\\.\\.two dots$$', '^\\.$$', '^last line$$']
          - C: TOP 1 0
            S: {code: +OK, lines: ['^Subject: engine $tag$$'], not: {lines: ['^last line$$']}}
          - C: DELE 1
            S: +OK
        finally:
          - C: QUIT
            S: +OK
          - S: EOF
        """,
        **bed_subs(testbed, tag=tag),
    )
    result, events = play(path)
    assert_passed(result)
    retr = result.steps[9].reply
    # the reply lines are unstuffed; the raw bytes are as received (stuffed)
    assert ".a line starting with a dot" in retr.lines and ".." in retr.raw.decode()
    assert b"\r\n..a line starting with a dot\r\n" in retr.raw
    assert retr.lines[-1] == "last line"
    assert b"builder" not in sent_bytes(events)


def test_imap_starttls_login_select_fetch_literals(testbed, tmp_path):
    tag = uuid.uuid4().hex
    _deliver(testbed, tmp_path, tag)
    path = write(
        tmp_path,
        """\
        name: imap
        protocol: imap
        connect: {host: 127.0.0.1, port: $imap, tls: starttls, ca: $ca, server_name: mail.example.test}
        vars: {password: builder}
        secrets: [password]
        steps:
          - S: OK
          - C: STARTTLS
            S: OK
            starttls: true
          - C: "LOGIN bob {7}"
            S: +
          - C: "{{ password }}"
            tag: false
            S: OK
          - C: SELECT INBOX
            S: {code: OK, lines: ['^\\* 1 EXISTS$$'], text: READ-WRITE}
          - C: FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT])
            S: {code: OK, re: 'Subject: engine $tag', lines: ['^\\.a line starting with a dot$$', '^last line$$']}
          - C: LOGOUT
            S: {code: OK, lines: ['^\\* BYE']}
          - S: EOF
        """,
        **bed_subs(testbed, tag=tag),
    )
    result, events = play(path)
    assert_passed(result)
    wire = sent_bytes(events)
    assert b"a2 LOGIN bob {7}\r\n****\r\n" in wire  # the literal's continuation carries no tag
    fetch = result.steps[5].reply
    assert b"{" in fetch.raw and fetch.code == "OK" and fetch.tag == "a4"
    assert fetch.lines[-1].startswith("a4 OK")


def test_imaps_login_and_fetch(testbed, tmp_path):
    tag = uuid.uuid4().hex
    _deliver(testbed, tmp_path, tag)
    path = write(
        tmp_path,
        """\
        name: imaps
        protocol: imap
        connect: {host: 127.0.0.1, port: $imaps, tls: implicit, ca: $ca, server_name: mail.example.test}
        steps:
          - S: OK
          - C: LOGIN bob builder
            S: OK
          - C: EXAMINE INBOX
            S: {code: OK, text: READ-ONLY}
          - C: FETCH 1 BODY.PEEK[]
            S: {code: OK, re: 'engine $tag'}
          - C: FETCH 9 BODY.PEEK[]
            S: [NO, BAD]
          - C: LOGOUT
            S: OK
        """,
        **bed_subs(testbed, tag=tag),
    )
    result, _ = play(path)
    assert_passed(result)


# --------------------------------------------------------------------------- two sessions


def test_two_sessions_share_a_capture_and_retry(testbed, tmp_path):
    testbed.clear_mailbox("alice")
    path = write(
        tmp_path,
        """\
        name: send then find by POP3
        vars: {password: wonderland}
        secrets: [password]
        sessions:
          - name: send
            protocol: smtp
            connect: {host: $host, port: $smtp}
            steps:
              - S: 220
              - C: EHLO client.example
                S: 250
              - C: MAIL FROM:<bob@example.test>
                S: 250
              - C: RCPT TO:<alice@example.test>
                S: 250
              - C: DATA
                S: 354
              - body: |
                  Subject: run {{ run_id }}

                  hello
                S: 250
                capture: {queue_id: 'queued as (\\w+)'}
            finally:
              - C: QUIT
                S: 221
          - name: find
            protocol: pop3
            connect: {host: $host, port: $pop3}
            retry: {attempts: 20, interval: 0.1}
            steps:
              - S: +OK
              - C: USER alice
                S: +OK
              - C: "PASS {{ password }}"
                S: +OK
              - C: RETR 1
                S: {code: +OK, lines: ['^Subject: run {{ run_id }}$$'], re: 'id {{ queue_id }}'}
            finally:
              - C: QUIT
                S: +OK
        """,
        **bed_subs(testbed),
    )
    run_id = uuid.uuid4().hex[:12]
    result, events = play(path, run_id=run_id)
    assert_passed(result)
    assert [s.name for s in result.sessions] == ["send", "find"]
    find = result.sessions[1]
    assert find.attempts == 20 and 1 <= find.attempt <= 20
    queue_id = result.sessions[0].steps[5].captures["queue_id"]
    assert f"id {queue_id}" in "\n".join(find.steps[3].reply.lines)
    assert f"Subject: run {run_id}" in find.steps[3].reply.lines


def _retried_session(tmp_path: Path, port: int) -> Path:
    """A POP3 session with three attempts whose STAT never shows the awaited message."""
    return write(
        tmp_path,
        """\
        name: retry
        sessions:
          - name: wait for mail
            protocol: pop3
            connect: {host: 127.0.0.1, port: $port}
            retry: {attempts: 3, interval: 0.05}
            steps:
              - S: +OK
              - C: STAT
                S: '+OK 1'
        """,
        port=port,
    )


def test_retry_shows_each_attempt_then_fails(tmp_path):
    with Server(scripted(b"+OK hi\r\n", {b"STAT": b"+OK 0 0\r\n"})) as srv:
        path = _retried_session(tmp_path, srv.port)
        result, events = play(path)
        assert result.exit_class == ExitClass.FAILED
        assert result.sessions[0].attempt == 3
        assert len([e for e in events if isinstance(e, Connected)]) == 3
        srv.wait_connection(2)


# --------------------------------------------------------------------------- refusals before sending


def test_crlf_from_a_var_is_refused_before_connecting(tmp_path):
    with Server(record()) as srv:
        path = write(
            tmp_path,
            """\
            name: inject
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port}
            vars: {who: postmaster}
            steps:
              - S: 220
              - C: "VRFY {{ who }}"
                S: 250
            """,
            port=srv.port,
        )
        result, events = play(path, variables={"who": "a\nDATA"})
        assert result.exit_class == ExitClass.INVALID
        assert not any(isinstance(e, (Connected, Sent)) for e in events)
        refused = [e.result for e in events if isinstance(e, StepFinished)]
        assert len(refused) == 1 and refused[0].index == 2 and "CR or LF" in refused[0].reason
        assert refused[0].location == f"{path}:7"
        assert srv.conns == []


def test_is_loopback():
    for host in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("192.0.2.1", "10.0.0.1", "::2", "mail.example.com", "localhost.example.com", "0.0.0.0"):
        assert not is_loopback(host), host


GUARDED = """\
    name: guard
    protocol: smtp
    connect: {host: '$host', port: 25, tls: $tls$extra}
    vars: {password: hunter2}
    secrets: [password]
    steps:
      - S: 220
      - C: EHLO client.example
        S: 250
      - C: STARTTLS
        S: 220
        starttls: $starttls
      - C: "AUTH PLAIN {{ auth_plain('u', password) }}"
        S: 235
    """


def _preflight(tmp_path, host, tls="none", starttls="false", extra="", allow=False):
    path = write(tmp_path, GUARDED, host=host, tls=tls, starttls=starttls, extra=extra)
    scenario = load_scenario(path)
    engine = Engine(RunOptions(allow_plaintext_secrets=allow), lambda e: None)
    ctx = engine.new_context(scenario)
    session = scenario.sessions[0]
    config = resolve_connect(session, ctx)
    problem = first_refusal(SessionPlan(session), ctx, config, allow)
    if problem is not None:
        sp, reason = problem
        problem = sp.step, sp.section, sp.index, reason
    return problem, (engine, session, ctx, config)


def test_plaintext_guard_refuses_secrets_to_non_loopback_hosts(tmp_path):
    # Never connects: preflight and the step-level guard are exercised without any traffic.
    problem, _ = _preflight(tmp_path, "192.0.2.1")
    assert problem is not None
    step, section, index, reason = problem
    assert (section, index) == ("steps", 4)
    assert "refusing to send a secret unencrypted to 192.0.2.1" in reason
    assert "allow_plaintext_secrets: true" in reason and "--allow-plaintext-secrets" in reason
    assert "hunter2" not in reason
    # each way out
    assert _preflight(tmp_path, "127.0.0.1")[0] is None
    assert _preflight(tmp_path, "::1")[0] is None
    assert _preflight(tmp_path, "192.0.2.1", allow=True)[0] is None
    assert _preflight(tmp_path, "192.0.2.1", extra=", allow_plaintext_secrets: true")[0] is None
    assert _preflight(tmp_path, "192.0.2.1", tls="implicit")[0] is None
    assert _preflight(tmp_path, "192.0.2.1", tls="starttls", starttls="true")[0] is None


def test_plaintext_guard_at_step_level(tmp_path):
    _, (engine, session, ctx, config) = _preflight(tmp_path, "192.0.2.1")
    result = SessionResult(name="guard", protocol="smtp", attempt=1, attempts=1)
    runner = SessionRunner(SessionPlan(session), ctx, config, result, engine.emit)
    runner.transport = transports.create(config)  # created, never connected
    assert runner.transport.encrypted is False
    runner.check_outgoing(None, False)  # nothing secret: allowed
    with pytest.raises(StepFailure) as info:
        runner.check_outgoing(None, True)
    assert info.value.exit_class == ExitClass.INVALID
    assert "192.0.2.1" in info.value.reason


def test_plaintext_guard_runs_before_connecting_in_the_engine(tmp_path):
    # A name under .invalid never resolves: were the guard late, the run would end in a DNS
    # error (exit 3) without any connection; it must end in the refusal (exit 2) instead.
    path = write(tmp_path, GUARDED, host="guard.invalid", tls="none", starttls="false", extra="")
    result, events = play(path)
    assert result.exit_class == ExitClass.INVALID, result.reason
    assert not any(isinstance(e, (Connected, Sent)) for e in events)
    assert "refusing to send a secret unencrypted to guard.invalid" in result.reason
    assert "nothing was sent" in result.reason


def test_a_captured_secret_is_masked_in_its_own_reply_and_wire_events(tmp_path):
    """The secret is known only once captured: the reply it came in, and the Received events
    (-v, transcripts), are masked too, not only later mentions."""
    token = "s3cr3tTOKEN-" + uuid.uuid4().hex[:6]
    replies = {b"TOKEN": b"250-here it is\r\n250 token=" + token.encode() + b"\r\n", b"*": b"250 ok\r\n"}
    with Server(scripted(b"220 hi\r\n", replies)) as srv:
        path = write(
            tmp_path,
            """\
            name: capture a secret
            connect: {host: 127.0.0.1, port: $port}
            vars: {token: "not yet"}
            secrets: [token]
            steps:
              - S: 220
              - C: TOKEN
                S: 250
                capture: {token: 'token=(\\S+)'}
              - C: "USE {{ token }}"
                S: 250
              - C: QUIT
                S: 250
            """,
            port=srv.port,
        )
        result, events = play(path)
        wire = srv.wait_connection(0, timeout=10).wait_closed(10)
    assert_passed(result)
    assert f"USE {token}\r\n".encode() in wire  # the real value went out
    step = result.steps[1]
    shown = [step.reply.raw.decode(), *step.reply.lines, *step.reply.texts, *step.captures.values()]
    assert all(token not in text for text in shown), shown
    assert step.captures["token"] == "****" and "token=****" in step.reply.lines[-1]
    assert token.encode() not in received_bytes(events) and b"token=****" in received_bytes(events)
    assert token.encode() not in sent_bytes(events)
    assert all(token not in repr(e) for e in events)
    # the held bytes are passed on before the step's verdict, in order
    kinds = [type(e).__name__ for e in events]
    finished = [i for i, k in enumerate(kinds) if k == "StepFinished"]
    received = [i for i, k in enumerate(kinds) if k == "Received"]
    assert finished[0] < received[1] < finished[1]


# --------------------------------------------------------------------------- announced once

TLS_RUN = """\
    name: tls announced once
    protocol: smtp
    connect: {host: 127.0.0.1, port: $port, tls: $tls, ca: $ca, server_name: mail.example.test, transport: $transport}
    steps:
      - S: 220
      - C: EHLO client.example
        S: 250
      - C: STARTTLS
        S: 220
        starttls: true
      - C: EHLO client.example
        S: 250
    finally:
      - C: QUIT
        S: 221
    """

TLS_IMPLICIT_RUN = """\
    name: tls announced once
    protocol: smtp
    connect: {host: 127.0.0.1, port: $port, tls: implicit, ca: $ca, server_name: mail.example.test, transport: $transport}
    steps:
      - S: 220
      - C: EHLO client.example
        S: 250
    finally:
      - C: QUIT
        S: 221
    """


@pytest.mark.parametrize(
    ("transport", "tls"),
    [("socket", "implicit"), ("socket", "starttls"), ("openssl", "implicit"), ("openssl", "starttls")],
)
def test_connect_and_tls_are_announced_once(testbed, tmp_path, transport, tls):
    """One Connected per connection, one TLSStarted per handshake, when it happened: right after
    Connected for implicit TLS and for openssl -starttls (whose handshake happens while it
    connects), after the STARTTLS reply for the socket transport. The transports announce
    neither: their notes are only a program's chatter and warnings."""
    port = testbed.ports["smtps" if tls == "implicit" else "submission"]
    text = TLS_IMPLICIT_RUN if tls == "implicit" else TLS_RUN
    path = write(tmp_path, text, port=port, tls=tls, ca=testbed.ca_path, transport=transport)
    result, events = play(path)
    assert result.exit_class == ExitClass.OK, [(s.index, s.status, s.reason) for s in result.steps]
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("Connected") == 1 and kinds.count("TLSStarted") == 1, kinds
    infos = [e for e in events if type(e).__name__ == "Note" and e.kind == "info"]
    assert infos == [], [n.text for n in infos]
    connected, started = kinds.index("Connected"), kinds.index("TLSStarted")
    if tls == "implicit" or transport == "openssl":
        assert started == connected + 1, kinds
    else:  # after the STARTTLS reply (a Received), before the next step's bytes
        starttls_sent = [i for i, e in enumerate(events) if isinstance(e, Sent) and e.data == b"STARTTLS\r\n"]
        assert starttls_sent[0] < started and kinds[started - 1] == "Received", kinds
        assert kinds[started + 1] == "StepFinished", kinds
    tls_event = events[started]
    assert result.sessions[0].tls == tls_event.info and tls_event.info.verified


def test_steps_openssl_performs_name_it_in_a_field(testbed, tmp_path):
    path = write(
        tmp_path,
        TLS_RUN,
        port=testbed.ports["submission"],
        tls="starttls",
        ca=testbed.ca_path,
        transport="openssl",
    )
    result, _ = play(path)
    assert result.exit_class == ExitClass.OK, [(s.index, s.status, s.reason) for s in result.steps]
    steps = result.steps
    assert [s.status for s in steps] == ["skipped", "skipped", "skipped", "passed", "passed"]
    assert [s.performed_by for s in steps] == ["openssl s_client -starttls smtp"] * 3 + [None, None]
    assert [s.reason for s in steps[:3]] == [
        "performed by openssl s_client -starttls smtp",
        "performed by openssl s_client -starttls smtp",
        "STARTTLS performed by openssl s_client -starttls smtp",
    ]


def test_a_session_retry_is_announced_once_per_retry(tmp_path):
    with Server(scripted(b"+OK hi\r\n", {b"STAT": b"+OK 0 0\r\n"})) as srv:
        path = _retried_session(tmp_path, srv.port)
        result, events = play(path)
    assert result.sessions[0].attempt == 3
    retrying = [e for e in events if isinstance(e, Retrying)]
    assert [(e.what, e.name, e.attempt, e.attempts, e.interval) for e in retrying] == [
        ("session", "wait for mail", 1, 3, 0.05),
        ("session", "wait for mail", 2, 3, 0.05),
    ]
    assert all(e.reason and "+OK 0 0" in e.reason for e in retrying), [e.reason for e in retrying]
    # each before the next attempt's SessionStarted, after the failed attempt's SessionFinished
    kinds = [type(e).__name__ for e in events]
    at = [i for i, k in enumerate(kinds) if k == "Retrying"]
    assert all(kinds[i - 1] == "SessionFinished" and kinds[i + 1] == "SessionStarted" for i in at), kinds
    assert not [e for e in events if isinstance(e, Note) and "retry" in e.text], "no Note for a retry"


def test_a_retry_reason_is_masked(tmp_path):
    with Server(scripted(b"+OK hi\r\n", {b"*": b"-ERR no hunter2 here\r\n"})) as srv:
        path = write(
            tmp_path,
            """\
            name: retry masked
            vars: {password: hunter2}
            secrets: [password]
            sessions:
              - name: login
                protocol: pop3
                connect: {host: 127.0.0.1, port: $port}
                retry: {attempts: 2, interval: 0}
                steps:
                  - S: +OK
                  - C: "PASS {{ password }}"
                    S: +OK
            """,
            port=srv.port,
        )
        _, events = play(path)
    (retrying,) = [e for e in events if isinstance(e, Retrying)]
    assert "hunter2" not in retrying.reason and "****" in retrying.reason


# --------------------------------------------------------------------------- a send's deadline


def test_a_steps_timeout_bounds_its_send(tmp_path):
    """A server that stops reading: the big body fills the socket buffers and the send blocks.
    The step's own timeout (0.5 s) ends it, not the session's (20 s)."""
    big = tmp_path / "big.eml"
    big.write_bytes(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 40_000)  # 40 MB
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.sendall(b"220 I will not read\r\n")
        held.append(conn)  # never read from

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        path = write(
            tmp_path,
            """\
            name: stalled send
            protocol: smtp
            connect: {host: 127.0.0.1, port: $port, timeout: 20}
            steps:
              - S: 220
              - body_file: big.eml
                timeout: 0.5
                S: 250
            """,
            port=listener.getsockname()[1],
        )
        started = time.monotonic()
        result, events = play(path)
        elapsed = time.monotonic() - started
    finally:
        for conn in held:
            conn.close()
        listener.close()
    step = result.steps[1]
    assert step.status == "error" and step.exit_class == ExitClass.NETWORK, step.reason
    assert step.reason == "deadline: sending did not complete within 0.5 s"
    assert elapsed < 5, elapsed
    assert not any(isinstance(e, Sent) and len(e.data) > 1000 for e in events)  # not announced as sent


def test_a_host_rendered_from_a_secret_is_masked_in_every_event(tmp_path):
    """connect.host from a secret variable: the session header, the connection and the result
    say **** (they showed the value; found in review)."""
    with Server(scripted(b"220 hi\r\n", {b"QUIT": b"221 bye\r\n"})) as srv:
        path = write(
            tmp_path,
            """\
            name: secret host
            vars: {h: "127.0.0.1"}
            secrets: [h]
            connect: {host: "{{ h }}", port: $port}
            steps:
              - S: 220
              - C: QUIT
                S: 221
            """,
            port=srv.port,
        )
        result, events = play(path)
    assert_passed(result)
    shown = [repr(ev) for ev in events if not isinstance(ev, Sent | Received)] + [repr(result)]
    assert [s for s in shown if "127.0.0.1" in s] == []
    (connected,) = [ev for ev in events if isinstance(ev, Connected)]
    assert connected.info.peer == f"****:{srv.port}" and result.sessions[0].peer == f"****:{srv.port}"
