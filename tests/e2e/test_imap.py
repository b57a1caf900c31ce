"""IMAP against the real server with Python's imaplib: login rules, delivery visible
in INBOX, FETCH of bodies and structure, flags, SEARCH, COPY/MOVE with UIDPLUS, APPEND,
folders with special-use and non-ASCII names, two sessions seeing each other's changes,
IDLE woken by an SMTP delivery, quota."""
import imaplib
import re
import socket
import time

import pytest

from lib import maildir as M
from lib.imap import deliver, exists, imaps, ok
from lib.smtp import insecure_tls
from lib.varan import HOST, password_for

U1, U2, U3, U4 = "u1@bench.test", "u2@bench.test", "u3@bench.test", "u4@bench.test"


def wait_exists(c, n: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        ok(c.noop(), "NOOP")
        have = exists(c)
        if have >= n or time.monotonic() > deadline:
            assert have >= n, f"EXISTS {have}, expected {n} within {timeout} s"
            return have
        time.sleep(0.05)


def test_cleartext_login_refused_starttls_works(varan):
    c = imaplib.IMAP4(HOST, varan.imap_port, timeout=15)
    caps = c.capabilities
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps, caps
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        c.login(U1, password_for(U1))
    c.starttls(ssl_context=insecure_tls())
    ok(c.login(U1, password_for(U1)), "LOGIN after STARTTLS")
    typ, data = c.capability()
    caps = data[0].decode()
    for cap in ["IMAP4rev2", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "CONDSTORE", "QRESYNC", "ESEARCH", "QUOTA", "APPENDLIMIT="]:
        assert cap in caps, f"{cap} missing from {caps}"
    c.logout()


def test_wrong_password_authenticationfailed(varan):
    c = imaplib.IMAP4_SSL(HOST, varan.imaps_port, ssl_context=insecure_tls(), timeout=15)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(U1, "not the password")
    c.shutdown()


def test_delivered_message_fetch_body_envelope_structure(varan):
    mark, data = deliver(varan, to=U2)
    c = imaps(varan, U2)
    ok(c.select("INBOX"))
    n = wait_exists(c, 1)
    typ, resp = c.fetch(str(n), "(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[])")
    assert typ == "OK", resp
    head, body = resp[0]
    assert mark.encode() in body
    assert body.endswith(data), "the message as sent must be the tail of what IMAP returns (added trace headers first)"
    assert b"\n" not in body.replace(b"\r\n", b""), "every line must end with CRLF"
    size = int(re.search(rb"RFC822.SIZE (\d+)", head).group(1))
    assert size == len(body)
    assert b"\\Seen" not in head, "BODY.PEEK must not set \\Seen"
    assert mark.encode() in head, "ENVELOPE carries the subject"
    assert b'("text" "plain"' in head.lower() or b'("TEXT" "PLAIN"' in head, head
    # Non-peek fetch sets \Seen and reports it.
    typ, resp = c.fetch(str(n), "(BODY[TEXT])")
    flags_seen = any(b"\\Seen" in (r[0] if isinstance(r, tuple) else r) for r in resp)
    assert flags_seen, resp
    typ, resp = c.fetch(str(n), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert resp[0][1].strip() == f"Subject: {mark}".encode(), resp
    c.logout()


def test_flags_search_copy_move_expunge(varan):
    marks = [deliver(varan, to=U3)[0] for _ in range(3)]
    c = imaps(varan, U3)
    ok(c.select("INBOX"))
    wait_exists(c, 3)
    typ, data = c.uid("SEARCH", None, "ALL")
    uids = [int(x) for x in data[0].split()]
    assert len(uids) == 3 and uids == sorted(uids)
    ok(c.uid("STORE", str(uids[0]), "+FLAGS", "(\\Flagged $Important)"))
    typ, data = c.uid("SEARCH", None, "FLAGGED")
    assert [int(x) for x in data[0].split()] == [uids[0]]
    typ, data = c.uid("SEARCH", None, "KEYWORD", "$Important")
    assert [int(x) for x in data[0].split()] == [uids[0]]
    typ, data = c.search(None, "SUBJECT", marks[1])
    assert data[0].split() == [b"2"], data
    typ, data = c.uid("SEARCH", None, "BODY", marks[2])
    assert [int(x) for x in data[0].split()] == [uids[2]]
    # COPY to Trash answers COPYUID.
    typ, data = c.uid("COPY", str(uids[1]), "Trash")
    assert typ == "OK"
    typ, code = c.response("COPYUID")
    uidvalidity, src, dst = code[-1].split()
    assert int(src) == uids[1] and int(dst) >= 1, code
    # MOVE to Archive removes it from INBOX.
    typ, data = c.uid("MOVE", str(uids[2]), "Archive")
    assert typ == "OK", data
    typ, data = c.uid("SEARCH", None, "ALL")
    assert [int(x) for x in data[0].split()] == uids[:2]
    # \Deleted + EXPUNGE removes the file.
    ok(c.uid("STORE", str(uids[0]), "+FLAGS.SILENT", "(\\Deleted)"))
    ok(c.expunge())
    typ, data = c.uid("SEARCH", None, "ALL")
    assert [int(x) for x in data[0].split()] == [uids[1]]
    ok(c.select("Archive"))
    typ, data = c.search(None, "SUBJECT", marks[2])
    assert data[0].split() == [b"1"]
    ok(c.select("Trash"))
    typ, data = c.search(None, "SUBJECT", marks[1])
    assert data[0].split() == [b"1"]
    c.logout()
    assert not M.files_with(varan.maildir(U3), marks[0]), "expunged message file still on disk"


def test_append_appenduid_and_flags_on_disk(varan):
    c = imaps(varan, U4)
    msg = b"From: <u4@bench.test>\r\nTo: <x@example.org>\r\nSubject: draft one\r\n\r\nDraft body\r\n"
    typ, data = c.append("Drafts", "(\\Draft \\Seen)", imaplib.Time2Internaldate(time.time()), msg)
    assert typ == "OK" and b"APPENDUID" in data[0], data
    uid = int(data[0].split(b"APPENDUID ")[1].split()[1].rstrip(b"]"))
    ok(c.select("Drafts"))
    typ, resp = c.uid("FETCH", str(uid), "(FLAGS BODY.PEEK[])")
    assert resp[0][1] == msg
    assert b"\\Draft" in resp[0][0] and b"\\Seen" in resp[0][0]
    files = M.files_with(varan.maildir(U4), b"Draft body")
    assert len(files) == 1 and files[0].name.endswith(":2,DS"), files
    assert b"\r\n" not in files[0].read_bytes(), "Maildir files are stored with LF line ends"
    typ, data = c.append('"No Such Folder"', None, None, msg)
    assert typ == "NO" and b"TRYCREATE" in data[0], data
    c.logout()


def test_folders_special_use_and_unicode_names(varan):
    c = imaps(varan, U1)
    typ, data = c.list()
    lines = [d.decode() for d in data]
    def attrs(name):
        for line in lines:
            if line.endswith(f'"{name}"') or line.endswith(f" {name}"):
                return line
        pytest.fail(f"{name} not in LIST: {lines}")
    assert "\\Sent" in attrs("Sent") and "\\Trash" in attrs("Trash") and "\\Drafts" in attrs("Drafts")
    assert "\\Junk" in attrs("Junk") and "\\Archive" in attrs("Archive")
    # Modified UTF-7 name (Russian "Отчёты") and a child folder.
    name = "&BB4EQgRHBFEEQgRL-"
    ok(c.create(name))
    ok(c.create(f"{name}/2026"))
    typ, data = c.list('""', f"{name}*")
    got = b" ".join(data)
    assert b"HasChildren" in got and f"{name}/2026".encode() in got, data
    ok(c.rename(f"{name}/2026", f"{name}/2025"))
    ok(c.delete(f"{name}/2025"))
    typ, data = c.list('""', f"{name}*")
    assert b"2025" not in b" ".join(x for x in data if x), data
    assert (varan.maildir(U1) / f".{name}").is_dir(), "folder stored as Maildir++ .<mUTF-7 name>"
    typ, data = c.delete("INBOX")
    assert typ == "NO"
    c.logout()


def test_two_sessions_see_each_others_changes(varan):
    mark, _ = deliver(varan, to=U1)
    a = imaps(varan, U1)
    b = imaps(varan, U1)
    ok(a.select("INBOX"))
    ok(b.select("INBOX"))
    n = wait_exists(a, 1)
    wait_exists(b, n)
    typ, data = a.search(None, "SUBJECT", mark)
    seq = data[0].split()[-1].decode()
    ok(a.store(seq, "+FLAGS", "(\\Flagged)"))
    ok(b.noop())
    fetches = b.untagged_responses.get("FETCH", [])
    assert any(b"\\Flagged" in (f if isinstance(f, bytes) else f[0]) for f in fetches), fetches
    ok(a.store(seq, "+FLAGS.SILENT", "(\\Deleted)"))
    ok(a.expunge())
    ok(b.noop())
    assert b.untagged_responses.get("EXPUNGE"), b.untagged_responses
    a.logout()
    b.logout()


def test_idle_woken_by_smtp_delivery(varan):
    c = imaps(varan, U2)
    ok(c.select("INBOX"))
    before = exists(c)
    sock = c.socket()
    tag = c._new_tag().decode()
    c.send(f"{tag} IDLE\r\n".encode())
    assert c.readline().startswith(b"+"), "no continuation for IDLE"
    started = time.monotonic()
    deliver(varan, to=U2)
    sock.settimeout(10)
    line = c.readline()
    waited = time.monotonic() - started
    assert re.match(rb"\* \d+ EXISTS", line), line
    assert int(line.split()[1]) == before + 1
    assert waited < 5, f"IDLE woke after {waited:.2f} s"
    c.send(b"DONE\r\n")
    while True:
        line = c.readline()
        if line.startswith(tag.encode()):
            assert b" OK " in line, line
            break
    c.logout()


def test_quota_reported(varan):
    c = imaps(varan, U1)
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK", data
    flat = b" ".join(x if isinstance(x, bytes) else b" ".join(x) for x in data if x)
    assert b"STORAGE" in flat, data
    c.logout()


def test_garbage_gets_bad_and_session_goes_on(varan):
    s = socket.create_connection((HOST, varan.imap_port), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    s.sendall(b"a1 FROB\r\n")
    assert f.readline().startswith(b"a1 BAD")
    s.sendall(b"a2 LOGIN {99999999}\r\n")
    line = f.readline()
    assert line.startswith(b"a2 ") and (b"BAD" in line or b"NO" in line), line
    s.sendall(b"a3 NOOP\r\n")
    assert f.readline().startswith(b"a3 OK")
    s.sendall(b"a4 LOGOUT\r\n")
    assert f.readline().startswith(b"* BYE")
    s.close()


def test_starttls_discards_pipelined_cleartext(varan):
    """Commands sent in cleartext after STARTTLS must not run inside TLS (CVE-2011-0411 class)."""
    s = socket.create_connection((HOST, varan.imap_port), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    s.sendall(b"a STARTTLS\r\nb LOGOUT\r\n")
    assert f.readline().startswith(b"a OK"), "STARTTLS refused"
    tls = insecure_tls().wrap_socket(s, server_hostname="localhost")
    tf = tls.makefile("rb")
    tls.sendall(b"c NOOP\r\n")
    line = tf.readline()
    assert line.startswith(b"c OK"), f"injected command ran inside TLS, got {line!r}"
    tls.close()


def test_master_user_opens_another_mailbox(varan):
    """seed §6.2.1.22: `user*master` with the master's password opens the user's mailbox
    (what imapsync uses to migrate without users' passwords)."""
    varan.add_user("admin1@bench.test")
    db = varan.user_db()
    groups = [g for g in db.get("groups", []) if g.get("name") != "masters"]
    groups.append({"name": "masters", "members": ["admin1"]})
    db["groups"] = groups
    varan.write_user_db(db)
    mark, _ = deliver(varan, to=U1)
    M.wait_for(varan.maildir(U1), mark)
    deadline = time.monotonic() + 10
    while True:          # the server reloads the user database within about a second
        c = imaplib.IMAP4_SSL(HOST, varan.imaps_port, ssl_context=insecure_tls(), timeout=15)
        try:
            # `*` is an atom-special: the login must be quoted (imaplib does not).
            c.login(f'"{U1}*admin1@bench.test"', password_for("admin1@bench.test"))
            break
        except imaplib.IMAP4.error:
            c.shutdown()
            assert time.monotonic() < deadline, "master login never accepted"
            time.sleep(0.2)
    ok(c.select("INBOX"))
    typ, data = c.search(None, "SUBJECT", mark)
    assert data[0].split(), "master login did not open u1's INBOX"
    c.logout()
    c = imaplib.IMAP4_SSL(HOST, varan.imaps_port, ssl_context=insecure_tls(), timeout=15)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(f'"{U1}*{U2}"', password_for(U2))   # not a master
    c.shutdown()
