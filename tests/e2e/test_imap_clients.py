"""Real IMAP and POP3 clients from Debian against the real server, and a Maildir
written by Dovecot opened in place.

| client | covers |
| --- | --- |
| mbsync (isync) | IMAPS, two-way sync of all folders with a local Maildir: flags both ways, a local delete expunged on the server, local messages APPENDed (one of 1 MB into a folder mbsync creates on the server), a third run changes nothing |
| offlineimap | IMAPS (certificate pinned by fingerprint), a non-ASCII folder (modified UTF-7 on the wire, UTF-8 locally), server flag changes and an expunge reaching the local copy, a local message APPENDed into the non-ASCII folder |
| fetchmail | POP3S with `nokeep` (RETR + DELE: the files leave the Maildir), then nothing left; POP3 + STLS with `keep`: UIDLs stable across sessions, only a new message fetched later |
| getmail6 | POP3S into a Maildir with `delete = false`: everything retrieved, nothing removed, a second run (UIDL) retrieves nothing |
| neomutt | IMAPS in a pseudo-terminal, keys pushed from the command line: flag one message, save one into a folder it creates, sync (expunge), quit; a second run resyncs its header cache with CONDSTORE/QRESYNC (CHANGEDSINCE, VANISHED) and acts on a flag set meanwhile |
| Dovecot | a private Dovecot 2.3 writes a Maildir (flags, keywords, a UID gap, subfolders, subscriptions); Varan opens it in place with the same UIDVALIDITY, UIDs, UIDNEXT, flags, keywords and bytes |

Each client runs with HOME in the test's tmp dir and a time limit (lib/clients.py).
The Dovecot test is the last one of the module: it stops the shared server and
starts a fresh one on the copied Maildir.
"""
import imaplib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lib import clients as C
from lib.imap import deliver, imaps, ok
from lib.smtp import marker
from lib.tools import require_tool
from lib.varan import HOST, password_for

USERS = [f"u{i}@bench.test" for i in range(1, 9)]
U_MBSYNC, U_OFFLINEIMAP, U_FETCHMAIL, U_NEOMUTT, U_GETMAIL, U_FETCHMAIL_STLS = USERS[:6]
DOVECOT_PORT_OFFSET = 200        # inside this module's port range, clear of Varan's listeners


@pytest.fixture(scope="module")
def srv(varan_factory):
    return varan_factory(users=USERS)


def cert(srv):
    return srv.dir / "tls" / "cert.pem"


# ------------------------------------------------------------------ mbsync
MBSYNCRC = """\
IMAPAccount varan
Host {host}
Port {port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {cert}
AuthMechs LOGIN PLAIN
Timeout 15

IMAPStore far
Account varan

MaildirStore near
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel varan
Far :far:
Near :near:
Patterns *
Create Both
Remove None
Expunge Both
SyncState *
"""


def snapshot(local):
    """Relative paths of every message file under a local Maildir tree."""
    return sorted(str(p.relative_to(local)) for p in local.rglob("*")
                  if p.is_file() and p.parent.name in ("new", "cur"))


@pytest.mark.timeout(90)
def test_mbsync_two_way_sync(srv, tmp_path):
    exe = require_tool("mbsync", "isync")
    user = U_MBSYNC
    marks = [deliver(srv, to=user)[0] for _ in range(3)]
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 3)
    ok(c.create("Work"), "CREATE Work")
    on_server = marker("mbsync-work")
    ok(c.append("Work", "(\\Seen)", None, f"Subject: {on_server}\r\nMessage-ID: <{on_server}@e2e.test>\r\n\r\nwork\r\n".encode()))
    c.logout()

    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(MBSYNCRC.format(host=HOST, port=srv.imaps_port, user=user, password=password_for(user),
                                  cert=cert(srv), local=local))
    cmd = [exe, "-c", rc, "-a"]

    # 1. first sync: everything arrives locally
    C.require_clean_output(C.run_client(cmd, tmp_path))
    inbox, work = local / "INBOX", local / "Work"
    for m in marks:
        assert len(C.files_containing(inbox, m)) == 1, f"{m} not synced into {inbox}: {snapshot(local)}"
    [w] = C.files_containing(work, on_server)
    assert "S" in C.maildir_flags(w), w.name

    # 2. local changes: flag (and read) one, delete one, add one to Work;
    #    a server-side change: \Answered on the third
    [f0] = C.files_containing(inbox, marks[0])
    flagged = inbox / "cur" / (f0.name.split(":2,")[0] + ":2,FS")
    f0.rename(flagged)
    [f1] = C.files_containing(inbox, marks[1])
    f1.unlink()
    new_local = marker("mbsync-local")
    C.write_local_message(work, new_local)
    # a folder that exists only locally (created on the server) holding a 1 MB message
    big = marker("mbsync-big")
    big_file = C.write_local_message(local / "Projects" / "Local", big, body_lines=16000)
    big_wire = big_file.read_bytes().replace(b"\n", b"\r\n")
    c = imaps(srv, user)
    ok(c.select("INBOX"))
    typ, data = c.uid("SEARCH", None, "SUBJECT", marks[2])
    [uid2] = data[0].split()
    ok(c.uid("STORE", uid2.decode(), "+FLAGS", "(\\Answered)"))
    c.logout()

    C.require_clean_output(C.run_client(cmd, tmp_path))
    c = imaps(srv, user)
    inbox_state = C.by_subject(C.folder_state(c, "INBOX"))
    assert inbox_state.get(marks[0]) == {"\\Flagged", "\\Seen"}, inbox_state
    assert marks[1] not in inbox_state, f"locally deleted message still on the server: {inbox_state}"
    assert set(inbox_state) == {marks[0], marks[2]}, inbox_state
    work_state = C.by_subject(C.folder_state(c, "Work"))
    assert set(work_state) == {on_server, new_local}, work_state
    created = C.folder_state(c, "Projects/Local", body=True)
    # mbsync adds an X-TUID header to what it uploads (to find it again); otherwise byte for byte
    uploaded = [re.sub(rb"(?m)^X-TUID: [^\r\n]*\r\n", b"", b) for b in created["bodies"].values()]
    assert uploaded == [big_wire], "the 1 MB message must arrive byte for byte (CRLF on the wire)"
    c.logout()
    [f2] = C.files_containing(inbox, marks[2])
    assert "R" in C.maildir_flags(f2), f"server-side \\Answered not synced: {f2.name}"

    # 3. a third run is a no-op
    before_local = snapshot(local)
    c = imaps(srv, user)
    folders = ("INBOX", "Work", "Projects/Local", "Trash")
    before_server = {f: C.folder_state(c, f) for f in folders}
    c.logout()
    C.require_clean_output(C.run_client(cmd, tmp_path))
    assert snapshot(local) == before_local
    c = imaps(srv, user)
    assert {f: C.folder_state(c, f) for f in folders} == before_server
    c.logout()


# ------------------------------------------------------------------ offlineimap
OFFLINEIMAPRC = """\
[general]
accounts = varan
metadata = {meta}
ui = quiet
maxsyncaccounts = 1

[Account varan]
localrepository = local
remoterepository = remote
utf8foldernames = yes

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = {host}
remoteport = {port}
remoteuser = {user}
remotepass = {password}
# IMAPS: over STARTTLS, offlineimap 8.0 (imaplib2, a reader thread on the socket
# during the handshake) hung in a few of ten runs right after the handshake
ssl = yes
cert_fingerprint = {fingerprint}
timeout = 15
"""


@pytest.mark.timeout(90)
def test_offlineimap_unicode_folder_and_flags(srv, tmp_path):
    exe = require_tool("offlineimap", "offlineimap3")
    user = U_OFFLINEIMAP
    folder = "Отчёты"
    marks = [deliver(srv, to=user)[0] for _ in range(3)]
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 3)
    ok(c.create(C.quoted(C.mutf7(folder))), "CREATE Отчёты")
    ok(c.select("INBOX"))
    typ, data = c.uid("SEARCH", None, "SUBJECT", marks[0])
    ok(c.uid("COPY", data[0].decode(), C.quoted(C.mutf7(folder))))
    c.logout()

    local = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(OFFLINEIMAPRC.format(meta=tmp_path / "meta", local=local, host=HOST, port=srv.imaps_port,
                                       user=user, password=password_for(user), cert=cert(srv),
                                       fingerprint=C.cert_sha512(cert(srv))))
    cmd = [exe, "-c", rc, "-o", "-u", "quiet"]

    C.require_clean_output(C.run_client(cmd, tmp_path))
    inbox, reports = local / "INBOX", local / folder
    assert reports.is_dir(), f"no local folder {folder}: {sorted(p.name for p in local.iterdir())}"
    for m in marks:
        assert len(C.files_containing(inbox, m)) == 1, f"{m} missing in {inbox}"
    assert len(C.files_containing(reports, marks[0])) == 1

    # server-side changes: flags in INBOX and in the folder, one message expunged;
    # a local message added to the non-ASCII folder
    c = imaps(srv, user)
    ok(c.select("INBOX"))
    uid = {m: c.uid("SEARCH", None, "SUBJECT", m)[1][0].decode() for m in marks}
    ok(c.uid("STORE", uid[marks[0]], "+FLAGS", "(\\Flagged \\Seen)"))
    ok(c.uid("STORE", uid[marks[1]], "+FLAGS", "(\\Answered)"))
    ok(c.uid("STORE", uid[marks[2]], "+FLAGS", "(\\Deleted)"))
    ok(c.expunge())
    ok(c.select(C.quoted(C.mutf7(folder))))
    ok(c.store("1", "+FLAGS", "(\\Seen)"))
    c.logout()
    new_local = marker("offlineimap-local")
    C.write_local_message(reports, new_local)

    C.require_clean_output(C.run_client(cmd, tmp_path))
    [f0] = C.files_containing(inbox, marks[0])
    [f1] = C.files_containing(inbox, marks[1])
    assert set(C.maildir_flags(f0)) == {"F", "S"}, f0.name
    assert C.maildir_flags(f1) == "R", f1.name
    assert not C.files_containing(inbox, marks[2]), "expunged on the server but still local"
    [r0] = C.files_containing(reports, marks[0])
    assert C.maildir_flags(r0) == "S", r0.name
    c = imaps(srv, user)
    assert set(C.by_subject(C.folder_state(c, folder))) == {marks[0], new_local}
    c.logout()


# ------------------------------------------------------------------ fetchmail
FETCHMAILRC = """\
set no bouncemail
set no syslog
poll {host} with proto POP3 port {port} timeout 15
  user "{user}" there with password "{password}" is "{local_user}" here
  {tls}
  {keep}
  mda "/bin/sh -c 'cat > {out}/msg.$$'"
"""


def fetchmail(srv, tmp_path, user, port, tls, keep, ok_codes=(0,)):
    exe = require_tool("fetchmail", "fetchmail")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(FETCHMAILRC.format(host=HOST, port=port, user=user, password=password_for(user),
                                     local_user=os.environ.get("USER", "root"), tls=tls,
                                     keep="keep" if keep else "nokeep fetchall", out=out))
    rc.chmod(0o600)          # fetchmail refuses a readable rcfile with passwords
    p = C.run_client([exe, "-f", rc, "--idfile", tmp_path / "fetchids", "--pidfile", tmp_path / "fetchmail.pid",
                      "--nodetach", "--nosyslog", "-v"], tmp_path, ok_codes=ok_codes)
    return p, sorted(out.iterdir())


@pytest.mark.timeout(60)
def test_fetchmail_pop3s_nokeep_removes_messages(srv, tmp_path):
    user = U_FETCHMAIL
    marks = [deliver(srv, to=user)[0] for _ in range(3)]
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 3)
    c.logout()
    p, files = fetchmail(srv, tmp_path, user, srv.pop3s_port, "ssl no sslcertck", keep=False)
    assert "3 messages" in p.stdout + p.stderr, p.stdout + p.stderr
    got = [f.read_bytes() for f in files]
    for m in marks:
        assert sum(m.encode() in g for g in got) == 1, f"{m} not fetched exactly once: {files}"
    assert not C.maildir_files(srv.maildir(user)), "RETR + DELE + QUIT must remove the files"
    # nothing left: fetchmail exits 1 ("no mail")
    fetchmail(srv, tmp_path, user, srv.pop3s_port, "ssl no sslcertck", keep=False, ok_codes=(1,))


@pytest.mark.timeout(60)
def test_fetchmail_stls_keep_uidl(srv, tmp_path):
    user = U_FETCHMAIL_STLS
    marks = [deliver(srv, to=user)[0] for _ in range(2)]
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 2)
    c.logout()
    # POP3 on the plain port: sslproto makes fetchmail require STLS; `keep` without
    # `fetchall` makes it remember UIDLs and fetch only what it has not seen
    stls = "sslproto 'TLS1.2+' no sslcertck"
    p, files = fetchmail(srv, tmp_path, user, srv.pop3_port, stls, keep=True)
    assert "STLS" in p.stdout + p.stderr, p.stdout + p.stderr
    got = [f.read_bytes() for f in files]
    for m in marks:
        assert sum(m.encode() in g for g in got) == 1, f"{m} not fetched exactly once: {files}"
    assert len(C.maildir_files(srv.maildir(user))) == 2, "keep: the messages stay on the server"
    # same UIDLs next time: nothing new (exit 1)
    p, again = fetchmail(srv, tmp_path, user, srv.pop3_port, stls, keep=True, ok_codes=(1,))
    assert again == files
    third = deliver(srv, to=user)[0]
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 3)
    c.logout()
    p, files3 = fetchmail(srv, tmp_path, user, srv.pop3_port, stls, keep=True)
    new = [f for f in files3 if f not in files]
    assert len(new) == 1 and third.encode() in new[0].read_bytes(), f"expected only {third}: {new}"


# ------------------------------------------------------------------ getmail6
GETMAILRC = """\
[retriever]
type = SimplePOP3SSLRetriever
server = {host}
port = {port}
username = {user}
password = {password}
timeout = 15

[destination]
type = Maildir
path = {maildir}/
{as_user}

[options]
delete = false
read_all = false
verbose = 1
"""


@pytest.mark.timeout(60)
def test_getmail_pop3s_delete_false_leaves_messages(srv, tmp_path):
    exe = require_tool("getmail", "getmail6")
    user = U_GETMAIL
    marks = [deliver(srv, to=user)[0] for _ in range(2)]
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 2)
    c.logout()
    # getmail refuses to deliver as root: as root, deliver as nobody into a directory
    # nobody can reach (pytest's tmp dirs are 0700)
    base = tmp_path
    as_user = ""
    if os.geteuid() == 0:
        base = Path(tempfile.mkdtemp(prefix="varan-e2e-getmail-", dir="/var/tmp"))
        os.chmod(base, 0o755)
        as_user = "user = nobody"
    try:
        md = base / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (md / sub).mkdir(parents=True)
        if as_user:
            for d in [md, *(md / s for s in ("new", "cur", "tmp"))]:
                shutil.chown(d, "nobody", "nogroup")
        (tmp_path / "getmail").mkdir()
        rc = tmp_path / "getmailrc"
        rc.write_text(GETMAILRC.format(host=HOST, port=srv.pop3s_port, user=user, password=password_for(user),
                                       maildir=md, as_user=as_user))
        cmd = [exe, "--getmaildir", tmp_path / "getmail", "--rcfile", rc]
        p = C.run_client(cmd, tmp_path)
        assert "2 messages" in p.stdout, p.stdout
        got = [f.read_bytes() for f in C.maildir_files(md)]
        assert len(got) == 2
        for m in marks:
            assert sum(m.encode() in g for g in got) == 1, f"{m} not retrieved exactly once"
        assert len(C.maildir_files(srv.maildir(user))) == 2, "delete = false: the messages stay on the server"
        # read_all = false: getmail remembers the UIDLs; a second run retrieves nothing
        p = C.run_client(cmd, tmp_path)
        assert "0 messages" in p.stdout, p.stdout
        assert len(C.maildir_files(md)) == 2
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ neomutt
MUTTRC = """\
set imap_user = "{user}"
set imap_pass = "{password}"
set folder = "imaps://{host}:{port}/"
set spoolfile = "+INBOX"
set certificate_file = "{certfile}"
set ssl_verify_host = no
set ssl_verify_dates = no
set confirmappend = no
set confirmcreate = no
set move = no
set header_cache = "{hcache}"
set message_cachedir = ""
set imap_condstore = yes
set imap_qresync = yes
set imap_check_subscribed = no
set imap_passive = yes
set mail_check = 60
set timeout = 60
set sort = date
set quit = yes
set delete = yes
set mark_old = no
set wait_key = no
set beep = no
"""


@pytest.mark.timeout(60)
def test_neomutt_flag_save_expunge_then_condstore_resync(srv, tmp_path):
    exe = require_tool("neomutt", "neomutt")
    user = U_NEOMUTT
    keep, move, late = marker("neomutt-keep"), marker("neomutt-move"), marker("neomutt-late")
    for m in (keep, move):
        deliver(srv, to=user, subject=m)
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 2)
    c.logout()
    # neomutt accepts a certificate that is in certificate_file without asking
    certfile = tmp_path / "certificates"
    shutil.copy(cert(srv), certfile)
    rc = tmp_path / "muttrc"
    rc.write_text(MUTTRC.format(user=user, password=password_for(user), host=HOST, port=srv.imaps_port,
                                certfile=certfile, hcache=tmp_path / "hcache"))

    def neomutt(keys: str, run: int) -> str:
        log = tmp_path / f"neomutt{run}.log"
        status, screen = C.run_in_pty([exe, "-n", "-F", rc, "-d", "5", "-l", log, "-e", f'push "{keys}"'], tmp_path)
        text = C.screen_text(screen)
        assert status == 0, f"neomutt exited with {status}; screen:\n{text[-3000:]}"
        return "".join(p.read_text(errors="replace") for p in tmp_path.glob(f"neomutt{run}.log*"))

    # 1. flag one, save the other into a folder neomutt has to create, expunge, quit
    neomutt(f"<tag-pattern>~s {keep}<enter><tag-prefix><flag-message><untag-pattern>~A<enter>"
            f"<tag-pattern>~s {move}<enter><tag-prefix><save-message>=Projects/Neomutt<enter>"
            "<sync-mailbox><quit>", 1)
    c = imaps(srv, user)
    inbox = C.by_subject(C.folder_state(c, "INBOX"))
    assert inbox == {keep: {"\\Flagged"}}, f"INBOX after neomutt: {inbox}"
    saved = C.by_subject(C.folder_state(c, "Projects/Neomutt"))
    assert set(saved) == {move}, saved
    # 2. changes behind neomutt's back: \Answered on the cached message, a new one
    ok(c.select("INBOX"))
    ok(c.uid("STORE", c.uid("SEARCH", None, "SUBJECT", keep)[1][0].decode(), "+FLAGS", "(\\Answered)"))
    c.logout()
    deliver(srv, to=user, subject=late)
    c = imaps(srv, user)
    C.wait_messages(c, "INBOX", 2)
    c.logout()
    # neomutt resyncs from its header cache with CHANGEDSINCE; only if it learns of
    # \Answered does ~Q match and the message move to =Replied
    log = neomutt("<tag-pattern>~Q<enter><tag-prefix><save-message>=Replied<enter><sync-mailbox><quit>", 2)
    assert "CHANGEDSINCE" in log, "neomutt did not resync from its header cache with CONDSTORE"
    c = imaps(srv, user)
    inbox = C.by_subject(C.folder_state(c, "INBOX"))
    assert set(inbox) == {late}, f"INBOX after the second run: {inbox}"
    replied = C.by_subject(C.folder_state(c, "Replied"))
    assert replied == {keep: {"\\Flagged", "\\Answered"}}, replied
    c.logout()


# ------------------------------------------------------------------ Dovecot's Maildir
def _dovecot_message(mark: str, n: int) -> bytes:
    return (f"From: <someone@example.org>\r\nTo: <u1@bench.test>\r\nSubject: {mark}\r\n"
            f"Message-ID: <{mark}@dovecot.e2e.test>\r\nDate: Mon, 23 Nov 2026 0{n}:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"message {n} written through Dovecot\r\n").encode()


@pytest.mark.timeout(90)
def test_dovecot_maildir_opens_in_place(srv, varan_factory):
    require_tool("dovecot", "dovecot-imapd")
    user, pw = "u1@bench.test", "dovecot-pw"
    dove = C.Dovecot(srv.port_base + DOVECOT_PORT_OFFSET, {user: pw})
    try:
        dove.start()
    except Exception as e:                # only a Dovecot that cannot start is a skip
        dove.cleanup()
        msg = f"dovecot cannot be started here: {e}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    try:
        d = imaplib.IMAP4(HOST, dove.port, timeout=15)
        ok(d.login(user, pw))
        projects, reports = "Projects/2026", "Отчёты"
        for name in (projects, reports):
            ok(d.create(C.quoted(C.mutf7(name))), f"CREATE {name}")
            ok(d.subscribe(C.quoted(C.mutf7(name))), f"SUBSCRIBE {name}")
        marks = [marker(f"dovecot{i}") for i in range(6)]
        inbox_flags = ["(\\Seen)", "(\\Seen \\Answered $Label1)", "(\\Flagged Project-X)", "()", "(\\Draft)"]
        for i, flags in enumerate(inbox_flags):
            ok(d.append("INBOX", flags, None, _dovecot_message(marks[i], i)), f"APPEND {i}")
        ok(d.append(C.quoted(C.mutf7(projects)), "(\\Seen Project-X)", None, _dovecot_message(marks[5], 5)))
        ok(d.append(C.quoted(C.mutf7(reports)), "()", None, _dovecot_message(marks[0], 0)))
        ok(d.select("INBOX"))
        # a UID gap (UID 1 expunged) and flags changed after APPEND (a rename in Dovecot)
        ok(d.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)"))
        ok(d.expunge())
        ok(d.uid("STORE", "4", "+FLAGS", "(\\Seen $Label2)"))
        folders = ["INBOX", projects, reports]
        before = {f: C.folder_state(d, f, body=True) for f in folders}
        d.logout()
    finally:
        dove.stop()
    assert sorted(before["INBOX"]["msgs"]) == [2, 3, 4, 5], before["INBOX"]
    assert before["INBOX"]["msgs"][3][0] == {"\\Flagged", "Project-X"}

    try:
        # a fresh Varan on this module's ports (the shared one stops), the Maildir copied in
        fresh = varan_factory(users=[user], start=False, name="varan-dovecot")
        dest = fresh.maildir(user)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(dove.maildir(user), dest, symlinks=True)
        subprocess.run(["chown", "-R", f"{os.getuid()}:{os.getgid()}", str(dest)], check=True)
        fresh.start()
        c = imaps(fresh, user)
        typ, data = c.list()
        listed = b"\n".join(x for x in data if x).decode()
        for f in folders:
            assert f'"{C.mutf7(f)}"' in listed or f" {C.mutf7(f)}" in listed, listed
        typ, data = c.lsub('""', "*")
        subscribed = b"\n".join(x for x in data if x).decode()
        for f in (projects, reports):
            assert C.mutf7(f) in subscribed, f"{f} not subscribed: {subscribed}"
        after = {f: C.folder_state(c, f, body=True) for f in folders}
        for f in folders:
            b, a = before[f], after[f]
            assert a["uidvalidity"] == b["uidvalidity"], f"{f}: UIDVALIDITY {a['uidvalidity']} != Dovecot's {b['uidvalidity']}"
            assert a["uidnext"] == b["uidnext"], f"{f}: UIDNEXT {a['uidnext']} != Dovecot's {b['uidnext']}"
            assert a["msgs"] == b["msgs"], f"{f}: UIDs/flags differ\nDovecot: {b['msgs']}\nVaran:   {a['msgs']}"
            assert a["bodies"] == b["bodies"], f"{f}: message bytes differ"
        # Varan continues the UID sequence
        typ, data = c.append("INBOX", "(\\Seen)", None, _dovecot_message(marker("after"), 7))
        assert typ == "OK" and f"APPENDUID {before['INBOX']['uidvalidity']} {before['INBOX']['uidnext']}]".encode() in data[0], data
        c.logout()
    finally:
        dove.cleanup()
