"""The snapshot masks (runner/snapshot/rules.py), each on real text: the replies of the reference
transcripts (Postfix 3.7 / Dovecot 2.3, /work/shared/reference/transcripts, copied here line by
line) and replies of Exim, Sendmail, Gmail, Microsoft 365 and GMX as those servers write them.
What must stay visible (a banner, EHLO keywords, SIZE's limit, a CAPABILITY list, enhanced
status codes) is checked too: a mask that hid it would hide exactly what a snapshot is for."""

from __future__ import annotations

import pytest

from runner.snapshot.rules import NAMES, RULES, Masker, ignore_problem, unknown_rule_problem

RUN_ID = "3f9a1c0e7b2d"


def mask(line: str, protocol: str = "smtp", command: str | None = None, **kw) -> str:
    return Masker(run_id=RUN_ID, **kw).mask([line], protocol, command)[0]


# (rule, protocol, command, real reply line, masked)
CASES = [
    # queue-id
    ("queue-id", "smtp", None, "250 2.0.0 Ok: queued as 15FB551052A", "250 2.0.0 Ok: queued as <queue-id>"),
    (
        "queue-id",
        "smtp",
        None,
        "250 2.0.0 Ok: queued as 4XkQ1Z0mG8z9sLq",
        "250 2.0.0 Ok: queued as <queue-id>",
    ),
    (
        "queue-id",
        "pop3",
        "RETR",
        "\tby mail.example.test (Postfix) with ESMTPA id 15FB551052A",
        "\tby mail.example.test (Postfix) with ESMTPA id <queue-id>",
    ),
    ("queue-id", "smtp", None, "250 OK id=1tRZbX-000Abc-2x", "250 OK id=<queue-id>"),
    (
        "queue-id",
        "smtp",
        None,
        "250 Requested mail action okay, completed: id=1MKbnH-1t2hAr0Ack-00LhBd",
        "250 Requested mail action okay, completed: id=<queue-id>",
    ),
    (
        "queue-id",
        "smtp",
        None,
        "250 2.0.0 4B7A1p2m012345 Message accepted for delivery",
        "250 2.0.0 <queue-id> Message accepted for delivery",
    ),
    (
        "queue-id",
        "smtp",
        None,
        "250 2.0.0 <bob@example.test> 8Ee1Ar0tZWHSOgAA0J78UA Saved",
        "250 2.0.0 <bob@example.test> <queue-id> Saved",
    ),
    (
        "queue-id",
        "lmtp",
        None,
        "250 2.0.0 <bob@example.test> OGzDJKgbFmsPLwAAg+zDdQ:R2 Saved",
        "250 2.0.0 <bob@example.test> <queue-id> Saved",
    ),
    (
        "queue-id",
        "lmtp",
        None,
        "250 2.0.0 <bob@mailrun.test> delivered as E40F15B7734",
        "250 2.0.0 <bob@mailrun.test> delivered as <queue-id>",
    ),
    # date
    (
        "date",
        "imap",
        None,
        "\tfor <bob@example.test>; Sat, 28 Nov 2026 14:57:09 +0000 (UTC)",
        "\tfor <bob@example.test>; <date>",
    ),
    ("date", "imap", None, "Date: Sat, 01 Jan 2022 12:00:00 +0000", "Date: <date>"),
    (
        "date",
        "smtp",
        None,
        "220 mx.example.com ESMTP Exim 4.96 Mon, 07 Dec 2026 01:02:32 +0000",
        "220 mx.example.com ESMTP Exim 4.96 <date>",
    ),
    (
        "date",
        "smtp",
        None,
        "220 mail.example.org ESMTP Sendmail 8.17.1.9/8.17.1.9; Mon, 7 Dec 2026 02:02:32 +0100 (CET)",
        "220 mail.example.org ESMTP Sendmail 8.17.1.9/8.17.1.9; <date>",
    ),
    (
        "date",
        "imap",
        None,
        '* 1 FETCH (INTERNALDATE "28-Nov-2026 14:57:09 +0000")',
        '* <n> FETCH (INTERNALDATE "<date>")',
    ),
    (
        "date",
        "imap",
        None,
        "a1 NO [SERVERBUG] Internal error occurred. Refer to server log for more information. [2026-11-28 14:57:09]",
        "a1 NO [SERVERBUG] Internal error occurred. Refer to server log for more information. [<date>]",
    ),
    ("date", "line", None, "ready at 2026-12-07T01:02:32.123Z", "ready at <date>"),
    ("date", "line", None, "Mon Dec  7 01:02:32 2026 server up", "<date> server up"),
    ("date", "line", None, "uptime check 01:02:32 ok", "uptime check <time> ok"),
    # message-id
    ("message-id", "imap", None, "Message-ID: <seed@client.example.test>", "Message-ID: <message-id>"),
    (
        "message-id",
        "pop3",
        "RETR",
        "Message-Id: <20261207011437.D23B020DCE5@mail.example.test>",
        "Message-Id: <message-id>",
    ),
    # session-id
    (
        "session-id",
        "smtp",
        None,
        "220 smtp.gmail.com ESMTP a640c23a62f3a-a9a0f1f6b8bsm123456766b.42 - gsmtp",
        "220 smtp.gmail.com ESMTP <session-id> - gsmtp",
    ),
    (
        "session-id",
        "smtp",
        None,
        "250 2.0.0 OK  1701234567 a640c23a62f3a-a9a0f1f6b8bsm123456766b.42 - gsmtp",
        "250 2.0.0 OK  <date> <session-id> - gsmtp",
    ),
    (
        "session-id",
        "imap",
        None,
        "* OK Gimap ready for requests from 203.0.113.5 a1mb12345678abc",
        "* OK Gimap ready for requests from <ip> <session-id>",
    ),
    (
        "session-id",
        "pop3",
        None,
        "+OK Dovecot ready. <4f1a.2.6571f0a3.Qk9v8w==@mail.example.test>",
        "+OK Dovecot ready. <session-id>",
    ),
    (
        "session-id",
        "imap",
        None,
        "* OK The Microsoft Exchange IMAP4 service is ready. [TQBBADAAUABSADAANABDAEEAMAAwADEAMQAuAA==]",
        "* OK The Microsoft Exchange IMAP4 service is ready. [<session-id>]",
    ),
    # server-node
    (
        "server-node",
        "smtp",
        None,
        "220 AM0PR02CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready at Mon, 7 Dec 2026 01:02:32 +0000",
        "220 <server-node> Microsoft ESMTP MAIL Service ready at <date>",
    ),
    (
        "server-node",
        "smtp",
        None,
        "220 gmx.net (mrgmx005) Nemesis ESMTP Service ready",
        "220 gmx.net (<server-node>) Nemesis ESMTP Service ready",
    ),
    # mailbox-state
    (
        "mailbox-state",
        "imap",
        None,
        "* OK [UIDVALIDITY 1795877602] UIDs valid",
        "* OK [UIDVALIDITY <uidvalidity>] UIDs valid",
    ),
    (
        "mailbox-state",
        "imap",
        None,
        "* OK [UIDNEXT 5] Predicted next UID",
        "* OK [UIDNEXT <uidnext>] Predicted next UID",
    ),
    (
        "mailbox-state",
        "imap",
        None,
        "* OK [HIGHESTMODSEQ 12] Highest",
        "* OK [HIGHESTMODSEQ <modseq>] Highest",
    ),
    (
        "mailbox-state",
        "imap",
        None,
        "a3 OK [APPENDUID 1795877602 7] Append completed.",
        "a3 OK [APPENDUID <uids>] Append completed.",
    ),
    (
        "mailbox-state",
        "imap",
        None,
        "* 9 FETCH (UID 9 FLAGS (\\Recent) RFC822.SIZE 529",
        "* <n> FETCH (UID <uid> FLAGS () RFC822.SIZE <size>",
    ),
    ("mailbox-state", "imap", None, "* 3 FETCH (FLAGS (\\Recent \\Seen))", "* <n> FETCH (FLAGS (\\Seen))"),
    ("mailbox-state", "imap", None, "* 3 FETCH (FLAGS (\\Seen \\Recent))", "* <n> FETCH (FLAGS (\\Seen))"),
    # message-count
    ("message-count", "imap", None, "* 2 EXISTS", "* <n> EXISTS"),
    ("message-count", "imap", None, "* 0 RECENT", "* <n> RECENT"),
    ("message-count", "imap", None, "* OK [UNSEEN 1] First unseen.", "* OK [UNSEEN <n>] First unseen."),
    ("message-count", "imap", None, "* SEARCH 3 4 17", "* SEARCH <ids>"),
    (
        "message-count",
        "imap",
        None,
        "* STATUS INBOX (MESSAGES 2 UIDNEXT 5 UNSEEN 1)",
        "* STATUS INBOX (MESSAGES <n> UIDNEXT <uidnext> UNSEEN <n>)",
    ),
    ("message-count", "pop3", "STAT", "+OK 2 1006", "+OK <n> <size>"),
    ("message-count", "pop3", "LIST", "+OK 2 messages:", "+OK <n> messages:"),
    ("message-count", "pop3", "LIST", "1 458", "<n> <size>"),
    ("message-count", "pop3", "UIDL", "2 00000002575d2d1f", "<n> <uid>"),
    ("message-count", "pop3", "UIDL", "+OK 1 a94a44cf0b3c26bf", "+OK <n> <uid>"),  # `UIDL 1`
    ("message-count", "pop3", "LIST", "+OK 1 120", "+OK <n> <size>"),  # `LIST 1`
    # message-size
    (
        "message-size",
        "imap",
        None,
        "* 2 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE 548)",
        "* <n> FETCH (UID <uid> FLAGS (\\Seen) RFC822.SIZE <size>)",
    ),
    (
        "message-size",
        "imap",
        None,
        "* 1 FETCH (FLAGS (\\Seen) BODY[] {458}",
        "* <n> FETCH (FLAGS (\\Seen) BODY[] {<size>}",
    ),
    ("message-size", "pop3", "RETR", "+OK 548 octets", "+OK <size> octets"),
    # timing
    (
        "timing",
        "imap",
        None,
        "a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).",
        "a2 OK [READ-WRITE] Select completed (<timing>).",
    ),
    (
        "timing",
        "imap",
        None,
        "a5 OK Fetch completed (0.003 + 0.000 + 0.002 secs).",
        "a5 OK Fetch completed (<timing>).",
    ),
    (
        "timing",
        "smtp",
        None,
        "250 2.6.0 <AM0PR10MB1234@AM0PR10MB1234.EURPRD10.PROD.OUTLOOK.COM> [InternalId=12345678, "
        "Hostname=AM0PR10MB1234.EURPRD10.PROD.OUTLOOK.COM] 1234 bytes in 0.123, 9.8 KB/sec Queued mail for delivery",
        "250 2.6.0 <message-id> [InternalId=<queue-id>, Hostname=<server-node>] <size> bytes in <timing> "
        "Queued mail for delivery",
    ),
    # ip-address
    (
        "ip-address",
        "smtp",
        None,
        "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied",
        "554 5.7.1 <unknown[<ip>]>: Client host rejected: Access denied",
    ),
    (
        "ip-address",
        "smtp",
        None,
        "250-mx.example.com Hello client.example [192.0.2.1]",
        "250-mx.example.com Hello client.example [<ip>]",
    ),
    (
        "ip-address",
        "smtp",
        None,
        "250-smtp.gmail.com at your service, [2001:db8::5]",
        "250-smtp.gmail.com at your service, [<ip>]",
    ),
    (
        "ip-address",
        "pop3",
        "RETR",
        "Received: from [127.0.0.1] (unknown [127.0.0.1])",
        "Received: from [<ip>] (unknown [<ip>])",
    ),
    (
        "ip-address",
        "line",
        None,
        "peer 198.51.100.7:50123 accepted, [::1]:2525 too",
        "peer <ip>:<port> accepted, [<ip>]:<port> too",
    ),
    # run-id
    ("run-id", "pop3", "RETR", f"Subject: mailrun send {RUN_ID}", "Subject: mailrun send <run_id>"),
]


@pytest.mark.parametrize(
    ("rule", "protocol", "command", "line", "masked"), CASES, ids=[f"{c[0]}:{c[3][:40]}" for c in CASES]
)
def test_each_rule_masks_real_text(rule, protocol, command, line, masked):
    assert mask(line, protocol, command) == masked
    off = mask(line, protocol, command, off=[rule])  # with the rule off, its part stays as written
    assert off != masked, (rule, off)


def test_every_rule_has_a_case_and_an_about_line():
    assert {c[0] for c in CASES} == set(NAMES)
    assert all(r.about for r in RULES)
    assert len(NAMES) == len(set(NAMES))


# what a snapshot exists to catch: none of it may be masked
STAYS = [
    ("smtp", "220 mail.example.test ESMTP Postfix"),
    ("smtp", "250-SIZE 10240000"),
    ("smtp", "250-DSN"),
    ("smtp", "250-AUTH PLAIN LOGIN"),
    ("smtp", "530 5.7.0 Must issue a STARTTLS command first"),
    ("smtp", "552 5.3.4 Message size exceeds fixed limit"),
    (
        "smtp",
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in virtual mailbox table",
    ),
    ("smtp", "235 2.7.0 Authentication successful"),
    ("smtp", "334 VXNlcm5hbWU6"),
    ("pop3", "+OK Dovecot (Debian) ready."),
    ("pop3", "SASL PLAIN LOGIN"),
    ("pop3", "-ERR [AUTH] Authentication failed."),
    (
        "imap",
        "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN] "
        "Dovecot (Debian) ready.",
    ),
    (
        "imap",
        "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY STATUS=SIZE I18NLEVEL=1",
    ),
    ("imap", "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"),
    ("imap", "a1 NO [AUTHENTICATIONFAILED] Authentication failed."),
    ("smtp", "220 smtp.mail.yahoo.com ESMTP ready"),
]


@pytest.mark.parametrize(("protocol", "line"), STAYS)
def test_what_a_snapshot_is_for_stays_visible(protocol, line):
    assert mask(line, protocol) == line


def test_a_retr_body_line_is_not_taken_for_a_listing():
    # the POP3 LIST/UIDL/STAT masks apply only after those commands
    assert mask("2 apples", "pop3", "RETR") == "2 apples"
    assert mask("2 apples", "pop3", "UIDL") == "<n> <uid>"
    assert mask("+OK 2 1006", "smtp") == "+OK 2 1006"  # nor outside POP3


def test_a_whole_reference_reply_masks_to_the_same_text_with_other_volatile_values():
    # the same IMAP SELECT two runs apart: other counts, uids, timings; one text after masking
    first = [
        "* 2 EXISTS",
        "* 0 RECENT",
        "* OK [UNSEEN 1] First unseen.",
        "* OK [UIDVALIDITY 1795877602] UIDs valid",
        "* OK [UIDNEXT 5] Predicted next UID",
        "a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).",
    ]
    later = [
        "* 21 EXISTS",
        "* 1 RECENT",
        "* OK [UNSEEN 20] First unseen.",
        "* OK [UIDVALIDITY 1795877999] UIDs valid",
        "* OK [UIDNEXT 24] Predicted next UID",
        "a2 OK [READ-WRITE] Select completed (0.012 + 0.000 + 0.011 secs).",
    ]
    m = Masker()
    assert m.mask(first, "imap", "SELECT") == m.mask(later, "imap", "SELECT")
    assert m.mask(first, "imap", "SELECT") != first


def test_ignore_regexes_mask_their_match_or_their_groups():
    m = Masker(ignore=[r"build \d+", r"ready \((\w+)\) at (\w+)"])
    assert m.mask(["220 x build 1234 ok"], "smtp") == ["220 x <ignored> ok"]
    assert m.mask(["ready (node7) at rack3 now"], "smtp") == ["ready (<ignored>) at <ignored> now"]


def test_the_run_id_rule_can_be_turned_off():
    assert mask(f"Subject: {RUN_ID}", off=["run-id"]) == f"Subject: {RUN_ID}"


def test_rule_names_are_checked_with_a_did_you_mean():
    assert unknown_rule_problem("queue-id") is None
    problem = unknown_rule_problem("queue_id")
    assert "did you mean 'queue-id'" in problem
    assert "rules: run-id, message-id" in problem
    assert "did you mean" not in unknown_rule_problem("zzzzzz")
    assert ignore_problem("a(") is not None and ignore_problem(r"a\d+") is None


def test_the_readme_table_names_every_rule_in_order():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### What is masked") :]
    rows = [line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")]
    assert rows[: len(NAMES)] == list(NAMES)
