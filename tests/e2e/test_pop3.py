"""POP3 against the real server with Python's poplib: STLS and implicit TLS, STAT/LIST/
UIDL/TOP/RETR, DELE committed only by QUIT, UIDLs stable and equal to the IMAP UIDs,
the maildrop lock, and login rules."""
import poplib

import pytest

from lib import maildir as M
from lib.imap import deliver, imaps
from lib.smtp import insecure_tls
from lib.varan import HOST, password_for

U5 = "u5@bench.test"


def wait_count(srv, user, n):
    M.wait_for(srv.maildir(user), b"e2e-imap", count=n)


def test_pop3_retr_top_uidl_and_dele_on_quit(varan):
    marks = [deliver(varan, to=U5)[0] for _ in range(2)]
    wait_count(varan, U5, 2)
    c = poplib.POP3_SSL(HOST, varan.pop3s_port, context=insecure_tls(), timeout=15)
    c.user(U5)
    c.pass_(password_for(U5))
    count, size = c.stat()
    assert count == 2 and size > 0
    resp, listing, _ = c.list()
    sizes = [int(x.split()[1]) for x in listing]
    resp, uidls, _ = c.uidl()
    uidls = [x.split()[1].decode() for x in uidls]
    assert len(set(uidls)) == 2 and all(len(u) == 16 for u in uidls), uidls
    resp, lines, octets = c.retr(1)
    body = b"\r\n".join(lines) + b"\r\n"
    assert marks[0].encode() in body
    assert len(body) == sizes[0], "LIST size must equal the RETR octets"
    resp, top, _ = c.top(2, 0)
    assert any(marks[1].encode() in line for line in top) and not any(b"Hello from the e2e suite" in line for line in top)
    c.dele(1)
    # A second session is refused while this one holds the maildrop.
    d = poplib.POP3_SSL(HOST, varan.pop3s_port, context=insecure_tls(), timeout=15)
    d.user(U5)
    with pytest.raises(poplib.error_proto, match="IN-USE"):
        d.pass_(password_for(U5))
    d.close()
    c.quit()
    assert not M.files_with(varan.maildir(U5), marks[0]), "DELE + QUIT must remove the message"
    # UIDLs are stable, and are the IMAP UIDs with the UIDVALIDITY.
    c = poplib.POP3(HOST, varan.pop3_port, timeout=15)
    c.stls(context=insecure_tls())
    c.user(U5)
    c.pass_(password_for(U5))
    resp, again, _ = c.uidl()
    assert [x.split()[1].decode() for x in again] == uidls[1:]
    c.quit()
    i = imaps(varan, U5)
    typ, data = i.select("INBOX")
    assert typ == "OK"
    typ, data = i.uid("SEARCH", None, "ALL")
    [uid] = [int(x) for x in data[0].split()]
    typ, st = i.status("INBOX", "(UIDVALIDITY)")
    uidvalidity = int(st[0].split(b"UIDVALIDITY ")[1].rstrip(b")"))
    assert uidls[1] == f"{uid:08x}{uidvalidity:08x}"
    i.logout()


def test_pop3_rset_and_disconnect_keep_messages(varan):
    mark, _ = deliver(varan, to=U5)
    M.wait_for(varan.maildir(U5), mark)
    c = poplib.POP3_SSL(HOST, varan.pop3s_port, context=insecure_tls(), timeout=15)
    c.user(U5)
    c.pass_(password_for(U5))
    n, _ = c.stat()
    for i in range(1, n + 1):
        c.dele(i)
    c.rset()
    c.quit()
    assert M.files_with(varan.maildir(U5), mark), "RSET must undo DELE"
    c = poplib.POP3_SSL(HOST, varan.pop3s_port, context=insecure_tls(), timeout=15)
    c.user(U5)
    c.pass_(password_for(U5))
    c.dele(1)
    c.sock.close()       # no QUIT: nothing is deleted (RFC 1939 §6)
    assert M.files_with(varan.maildir(U5), mark)


def test_pop3_cleartext_login_refused_and_wrong_password(varan):
    c = poplib.POP3(HOST, varan.pop3_port, timeout=15)
    caps = c.capa()
    assert "STLS" in caps and "UIDL" in caps and "TOP" in caps, caps
    with pytest.raises(poplib.error_proto):
        c.user(U5)
        c.pass_(password_for(U5))
    c.close()
    c = poplib.POP3_SSL(HOST, varan.pop3s_port, context=insecure_tls(), timeout=15)
    c.user(U5)
    with pytest.raises(poplib.error_proto, match="AUTH"):
        c.pass_("wrong")
    c.close()
