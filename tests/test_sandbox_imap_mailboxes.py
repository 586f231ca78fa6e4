"""The sandbox's IMAP APPEND (synchronizing and LITERAL+), mailboxes (CREATE, DELETE, LIST,
STATUS), COPY, MOVE and the UID commands, against imaplib and raw sockets."""

from __future__ import annotations

import imaplib
import re
import time

import pytest

from runner.sandbox.server import Sandbox
from tests.test_sandbox_imap import Raw as RawSocket

MESSAGE = b"From: Alice <alice@mailrun.test>\r\nSubject: appended\r\n\r\nline one\r\n.dot line\r\n"


class Raw(RawSocket):
    """test_sandbox_imap's line client, connected to the sandbox's IMAP port and logged in."""

    def __init__(self, sb: Sandbox, login: bool = True):
        super().__init__(sb.host, sb.ports["imap"])
        assert self.line().startswith(b"* OK ")
        if login:
            assert self.cmd(b"L LOGIN bob builder")[-1].startswith(b"L OK")


@pytest.fixture
def sb():
    with Sandbox() as s:
        yield s


@pytest.fixture
def imap(sb: Sandbox):
    m = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
    m.login("bob", "builder")
    yield m
    try:
        m.logout()
    except (imaplib.IMAP4.error, OSError, EOFError):
        pass


def code(data: list) -> bytes:
    return re.match(rb"\[([^\]]*)\]", data[0])[1]


def test_capabilities_advertise_what_is_implemented(imap: imaplib.IMAP4):
    typ, data = imap.capability()
    caps = data[0].split()
    # exactly what the session implements (each has its tests in these files)
    assert caps == [b"IMAP4rev1", b"SASL-IR", b"LITERAL+", b"IDLE", b"MOVE", b"UIDPLUS", b"UNSELECT"]
    assert b"STARTTLS" not in caps and not any(c.startswith(b"AUTH=") for c in caps)


def test_append_with_imaplib_keeps_bytes_flags_and_date(sb: Sandbox, imap: imaplib.IMAP4):
    when = time.mktime((2024, 2, 29, 13, 14, 15, 0, 0, -1))
    eight_bit = MESSAGE + "caf\u00e9\r\n".encode()
    typ, data = imap.append("INBOX", "(\\Seen \\Flagged)", imaplib.Time2Internaldate(when), eight_bit)
    assert typ == "OK"
    validity, uid = code(data).split()[1:]
    assert imap.select("INBOX") == ("OK", [b"1"])
    assert imap.untagged_responses["UIDVALIDITY"] == [validity]
    _, data = imap.uid("FETCH", uid.decode(), "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    head, body = data[0]
    assert body == eight_bit  # exactly the bytes sent: no dot-stuffing, 8-bit kept
    assert b"FLAGS (\\Flagged \\Seen)" in head and f"RFC822.SIZE {len(eight_bit)}".encode() in head
    stamp = imaplib.Internaldate2tuple(head)
    assert stamp is not None and time.mktime(stamp) == when
    (stored,) = sb.messages("bob", welcome=True)
    assert stored["Subject"] == "appended"


def test_append_synchronizing_and_literal_plus_on_the_wire(sb: Sandbox):
    c = Raw(sb)
    c.sock.sendall(b"a1 APPEND INBOX {%d}\r\n" % len(MESSAGE))
    assert c.line().startswith(b"+ ")  # the go-ahead before the literal
    c.sock.sendall(MESSAGE + b"\r\n")
    assert re.fullmatch(rb"a1 OK \[APPENDUID \d+ 1\] Append completed\.", c.line())
    # LITERAL+: no go-ahead; the message follows at once, and so does the next command
    c.sock.sendall(b"a2 APPEND INBOX (\\Draft) {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\na3 NOOP\r\n")
    assert re.fullmatch(rb"a2 OK \[APPENDUID \d+ 2\] Append completed\.", c.line())
    assert c.line() == b"a3 OK NOOP completed."
    lines = c.cmd(b"a4 SELECT INBOX")
    assert b"* 2 EXISTS" in lines
    assert c.cmd(b"a5 FETCH 2 (FLAGS)")[0] == b"* 2 FETCH (FLAGS (\\Draft))"


def test_append_refusals(sb: Sandbox):
    c = Raw(sb)
    assert c.cmd(b"b1 APPEND Nope {1+}\r\nx")[0].startswith(b"b1 NO [TRYCREATE] ")
    assert c.cmd(b"b2 APPEND INBOX {0+}\r\n")[0].startswith(b"b2 NO ")
    assert c.cmd(b"b3 APPEND INBOX (\\Recent) {1+}\r\nx")[0].startswith(b"b3 BAD ")
    assert c.cmd(b'b4 APPEND INBOX "32-Jan-2026 00:00:00 +0000" {1+}\r\nx')[0].startswith(
        b"b4 BAD Invalid date"
    )
    assert c.cmd(b"b5 APPEND INBOX hello")[0].startswith(b"b5 BAD APPEND needs the message as a literal")
    c.sock.sendall(b"b6 APPEND INBOX {99999999}\r\n")  # synchronizing: refused before it is sent
    assert c.line() == b"b6 BAD [TOOBIG] Literal too large."
    # a non-synchronizing one too large is read and thrown away in chunks, then refused
    big = 10 * 1024 * 1024 + 1
    c.sock.sendall(b"b7 APPEND INBOX {%d+}\r\n" % big)
    chunk = b"x" * 65536
    for _ in range(big // len(chunk)):
        c.sock.sendall(chunk)
    c.sock.sendall(b"x" * (big % len(chunk)) + b"\r\n")
    assert c.line() == b"b7 BAD [TOOBIG] Literal too large."
    assert c.cmd(b"b8 STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 0)"


def test_create_list_status_delete(imap: imaplib.IMAP4):
    assert imap.create("Archive")[0] == "OK"
    assert imap.create("Work/Projects/2026")[0] == "OK"  # superiors made too
    assert imap.create('"My Folder/"')[0] == "OK"  # the trailing delimiter is dropped
    typ, data = imap.create("Archive")
    assert typ == "NO" and code(data) == b"ALREADYEXISTS"
    assert imap.create("INBOX")[0] == "NO"
    typ, data = imap.create("bad.name")
    assert typ == "NO" and code(data) == b"CANNOT"
    _, data = imap.list()
    assert data == [
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasNoChildren) "/" Archive',
        b'(\\HasNoChildren) "/" "My Folder"',
        b'(\\HasChildren) "/" Work',
        b'(\\HasChildren) "/" Work/Projects',
        b'(\\HasNoChildren) "/" Work/Projects/2026',
    ]
    assert imap.list('""', "%")[1] == data[:4]
    assert imap.list("Work/", "%")[1] == [b'(\\HasChildren) "/" Work/Projects']
    assert imap.list('""', "inbox")[1] == [b'(\\HasNoChildren) "/" INBOX']
    assert imap.list('""', '""')[1] == [b'(\\Noselect) "/" ""']
    typ, data = imap.status('"My Folder"', "(MESSAGES UIDNEXT UNSEEN)")
    assert data == [b'"My Folder" (MESSAGES 0 UIDNEXT 1 UNSEEN 0)']
    typ, data = imap.delete("Work/Projects")
    assert typ == "NO" and b"children" in data[0]
    assert imap.delete("INBOX")[0] == "NO"
    typ, data = imap.delete("Nope")
    assert typ == "NO" and code(data) == b"NONEXISTENT"
    assert imap.delete("Work/Projects/2026")[0] == "OK"
    assert b'"/" Work/Projects/2026' not in b"".join(imap.list()[1])


def test_a_deleted_and_recreated_mailbox_has_a_new_uidvalidity(imap: imaplib.IMAP4):
    imap.create("Box")
    imap.append("Box", None, None, MESSAGE)
    imap.select("Box")
    before = imap.untagged_responses["UIDVALIDITY"][0]
    imap.unselect()
    assert imap.delete("Box")[0] == "OK"
    imap.create("Box")
    assert imap.select("Box") == ("OK", [b"0"])
    assert int(imap.untagged_responses["UIDVALIDITY"][0]) > int(before)


def test_copy_and_uid_copy_keep_flags_and_answer_copyuid(sb: Sandbox, imap: imaplib.IMAP4):
    imap.create("Archive")
    for n in range(3):
        imap.append(
            "INBOX", "(\\Flagged)" if n == 1 else None, None, MESSAGE.replace(b"appended", b"m%d" % n)
        )
    imap.select("INBOX")
    typ, data = imap.copy("1:2", "Archive")
    assert typ == "OK" and re.fullmatch(rb"COPYUID \d+ 1:2 1:2", code(data))
    imap.response("COPYUID")  # (imaplib keeps response codes; UID COPY's is read from there)
    typ, _ = imap.uid("COPY", "3", "Archive")
    assert typ == "OK" and imap.response("COPYUID")[1][0].endswith(b" 3 3")
    typ, data = imap.copy("1", "Missing")
    assert typ == "NO" and code(data) == b"TRYCREATE"
    assert imap.uid("COPY", "99", "Archive")[0] == "OK"
    assert imap.response("COPYUID") == ("COPYUID", [None])  # nothing copied: no COPYUID
    assert imap.select("INBOX") == ("OK", [b"3"])  # the source is untouched
    imap.select("Archive", readonly=True)
    _, data = imap.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [d[1] for d in data if isinstance(d, tuple)]
    assert subjects == [b"Subject: m%d\r\n\r\n" % n for n in range(3)]
    assert b"UID 2 FLAGS (\\Flagged)" in data[2][0]


def test_copy_to_the_selected_mailbox_reports_exists(imap: imaplib.IMAP4):
    imap.append("INBOX", None, None, MESSAGE)
    imap.select("INBOX")
    typ, data = imap.copy("1", "INBOX")
    assert typ == "OK" and code(data).endswith(b" 1 2")
    assert imap.untagged_responses.get("EXISTS") == [b"1", b"2"]


def test_move_and_uid_move_rfc6851_order(sb: Sandbox, imap: imaplib.IMAP4):
    imap.create("Trash")
    for n in range(4):
        imap.append("INBOX", None, None, MESSAGE.replace(b"appended", b"m%d" % n))
    c = Raw(sb)
    c.cmd(b"s1 SELECT INBOX")
    lines = c.cmd(b"m1 MOVE 2:3 Trash")
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 2:3 1:2\] Moved\.", lines[0])
    assert lines[1:] == [b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"m1 OK Move completed."]
    lines = c.cmd(b"m2 UID MOVE 4 Trash")
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 4 3\] Moved\.", lines[0])
    assert lines[1:] == [b"* 2 EXPUNGE", b"m2 OK Move completed."]
    assert c.cmd(b"m3 UID SEARCH ALL")[0] == b"* SEARCH 1"
    assert c.cmd(b"m4 MOVE 1 Nowhere")[0].startswith(b"m4 NO [TRYCREATE]")
    assert c.cmd(b"m5 MOVE 5 Trash")[0].startswith(b"m5 BAD Invalid message set")
    assert imap.status("Trash", "(MESSAGES)")[1] == [b"Trash (MESSAGES 3)"]
    c.cmd(b"e1 EXAMINE Trash")
    assert c.cmd(b"m6 MOVE 1 INBOX")[0].startswith(b"m6 NO [CANNOT]")
    assert c.cmd(b"m7 COPY 1 INBOX")[0].startswith(b"m7 OK [COPYUID ")  # copying out is fine


def test_uid_search_store_and_uid_expunge(sb: Sandbox, imap: imaplib.IMAP4):
    for n in range(4):
        imap.append("INBOX", None, None, MESSAGE.replace(b"appended", b"m%d" % n))
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")  # UID 1
    imap.expunge()
    assert imap.uid("SEARCH", "ALL") == ("OK", [b"2 3 4"])
    assert imap.uid("SEARCH", "UID", "3:*") == ("OK", [b"3 4"])
    typ, data = imap.uid("STORE", "2:3", "+FLAGS", "(\\Deleted)")
    assert data == [b"1 (UID 2 FLAGS (\\Deleted \\Recent))", b"2 (UID 3 FLAGS (\\Deleted \\Recent))"]
    c = Raw(sb)
    c.cmd(b"s SELECT INBOX")
    # only UID 3 goes, though UID 2 is \Deleted too (RFC 4315 2.1)
    assert c.cmd(b"x1 UID EXPUNGE 3:4") == [b"* 2 EXPUNGE", b"x1 OK Expunge completed."]
    assert c.cmd(b"x2 UID EXPUNGE")[0].startswith(b"x2 BAD UID EXPUNGE takes a UID set")
    assert c.cmd(b"x3 UID FROB 1")[0].startswith(b"x3 BAD UID FROB is not supported")
    assert c.cmd(b"x4 UID SEARCH ALL")[0] == b"* SEARCH 2 4"
    size = len(MESSAGE.replace(b"appended", b"m3"))
    assert c.cmd(b"x5 UID FETCH 4 (UID RFC822.SIZE)")[0] == b"* 2 FETCH (UID 4 RFC822.SIZE %d)" % size


def test_rename_moves_the_mailbox_its_children_and_their_messages(imap: imaplib.IMAP4):
    imap.create("Work/Old")
    imap.append("Work", "(\\Flagged)", None, MESSAGE)
    imap.append("Work/Old", None, None, MESSAGE.replace(b"appended", b"child"))
    imap.select("Work")
    typ, data = imap.rename("Work", "Work2")
    assert typ == "NO" and code(data) == b"INUSE"  # not while selected here
    imap.unselect()
    assert imap.rename("Work", "Projects/Work")[0] == "OK"  # superiors made
    _, data = imap.list()
    assert data == [
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasChildren) "/" Projects',
        b'(\\HasChildren) "/" Projects/Work',
        b'(\\HasNoChildren) "/" Projects/Work/Old',
    ]
    imap.select("Projects/Work")
    assert imap.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Flagged))"]
    imap.unselect()
    assert imap.status("Projects/Work/Old", "(MESSAGES)")[1] == [b"Projects/Work/Old (MESSAGES 1)"]
    for old, new, why in [
        ("Nope", "X", b"NONEXISTENT"),
        ("Projects", "INBOX", b"ALREADYEXISTS"),
        ("Projects", "Projects/Work", b"ALREADYEXISTS"),
        ("Projects", "Projects/Deeper", b"CANNOT"),
        ("Projects", "bad.name", b"CANNOT"),
    ]:
        typ, data = imap.rename(old, new)
        assert typ == "NO" and code(data) == why, (old, new, data)


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(sb: Sandbox, imap: imaplib.IMAP4):
    imap.append("INBOX", "(\\Seen)", None, MESSAGE)
    assert imap.rename("INBOX", '"Old Mail"')[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"0"])
    assert imap.select('"Old Mail"') == ("OK", [b"1"])
    assert imap.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Seen))"]
    assert sb.messages("bob", welcome=True) == []


def test_subscribe_lsub_unsubscribe_are_shared_by_sessions(sb: Sandbox, imap: imaplib.IMAP4):
    imap.create("Archive")
    assert imap.subscribe("Archive")[0] == "OK"
    assert imap.subscribe("inbox")[0] == "OK"
    assert imap.subscribe("Later")[0] == "OK"  # a name that is not there (yet) may be subscribed
    other = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
    other.login("bob", "builder")
    assert other.lsub()[1] == [
        b'(\\HasNoChildren) "/" Archive',
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\Noselect) "/" Later',
    ]
    assert other.lsub('""', "A*")[1] == [b'(\\HasNoChildren) "/" Archive']
    assert other.unsubscribe("Archive")[0] == "OK"
    typ, data = other.unsubscribe("Archive")
    assert typ == "NO" and code(data) == b"NONEXISTENT"
    typ, data = other.subscribe("bad.name")
    assert typ == "NO" and code(data) == b"CANNOT"
    other.logout()
    assert imap.lsub('""', "*")[1] == [b'(\\HasNoChildren) "/" INBOX', b'(\\Noselect) "/" Later']
    assert imap.list()[1] == [b'(\\HasNoChildren) "/" INBOX', b'(\\HasNoChildren) "/" Archive']


def test_recent_belongs_to_the_first_session_that_selects(sb: Sandbox, imap: imaplib.IMAP4):
    imap.append("INBOX", None, None, MESSAGE)
    imap.append("INBOX", "(\\Seen)", None, MESSAGE)  # stored in cur/ with its flags: not new
    assert imap.status("INBOX", "(RECENT MESSAGES)")[1] == [b"INBOX (RECENT 1 MESSAGES 2)"]
    peek = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
    peek.login("bob", "builder")
    peek.select("INBOX", readonly=True)  # EXAMINE shows it recent, and leaves it so
    assert peek.untagged_responses["RECENT"] == [b"1"]
    assert imap.select("INBOX")[0] == "OK"
    assert imap.untagged_responses["RECENT"] == [b"1"]
    assert imap.fetch("1:2", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))", b"2 (FLAGS (\\Seen))"]
    assert imap.search(None, "RECENT") == ("OK", [b"1"])
    assert imap.search(None, "NEW") == ("OK", [b"1"])
    assert imap.search(None, "OLD") == ("OK", [b"2"])
    other = imaplib.IMAP4(sb.host, sb.ports["imap"], timeout=5)
    other.login("bob", "builder")
    other.select("INBOX")  # the first session has taken it: recent nowhere else
    assert other.untagged_responses["RECENT"] == [b"0"]
    assert other.search(None, "RECENT") == ("OK", [b""])
    assert other.status("INBOX", "(RECENT)")[1] == [b"INBOX (RECENT 0)"]
    imap.store("1", "+FLAGS", "(\\Seen)")
    assert imap.search(None, "NEW") == ("OK", [b""])  # NEW is recent and unseen
    other.logout()
    peek.logout()
