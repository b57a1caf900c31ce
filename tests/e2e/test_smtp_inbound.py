"""Inbound SMTP on port 25 with smtplib and a raw client: extensions, delivery into
Maildir, recipient checks, relay refusal, size and recipient limits, groups, aliases,
BDAT."""
import pytest

from lib import maildir as M
from lib.smtp import RawSMTP, make_message, marker, send_plain, smtp

ALIASES_OF_U2 = [f"r{i}" for i in range(110)]   # distinct valid addresses for the RCPT limit
RECIPIENTS_MAX = 100


def _setup(srv):
    srv.set("smtp", recipients_max=RECIPIENTS_MAX)
    db = srv.user_db()
    users = {u["login"].split("@")[0].lower(): u for u in db["users"]}
    users["u1"]["aliases"] = ["info"]
    users["u2"]["aliases"] = ALIASES_OF_U2
    db.setdefault("groups", []).append(
        {"name": "staff", "address": "staff", "members": [users["u4"]["login"], users["u5"]["login"]], "groups": []})
    srv.write_user_db(db)


@pytest.fixture(scope="module")
def srv(varan_factory):
    return varan_factory(edit=_setup)


def test_ehlo_advertises_extensions(srv):
    with smtp(srv.smtp_port) as s:
        code, _ = s.ehlo()
        assert code == 250
        f = s.esmtp_features
        for ext in ("pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking", "dsn", "starttls"):
            assert ext in f, f"EHLO lacks {ext.upper()}: {f}"
        assert f.get("size") == "30000000", f"SIZE is {f.get('size')!r}"
        assert "auth" not in f, f"AUTH offered on port 25 before TLS: {f['auth']!r}"


def test_delivery_into_maildir_with_exact_body(srv):
    mark = marker("deliver")
    msg = make_message(mark, to="u1@bench.test")
    assert send_plain(srv.smtp_port, "sender@example.org", ["u1@bench.test"], msg) == {}
    [path] = M.wait_for(srv.maildir("u1@bench.test"), mark)
    assert path.parent.name == "new", f"delivered into {path.parent}, expected new/"
    for d in ("cur", "new", "tmp"):
        assert (srv.maildir("u1@bench.test") / d).is_dir()
    M.check_delivered(path, msg, "sender@example.org", "u1@bench.test")


def test_8bitmime_utf8_body_stored_byte_for_byte(srv):
    mark = marker("utf8")
    body = f"Grüße aus Köln, ☃ — {mark}\r\nzweite Zeile\r\n".encode()
    msg = make_message(mark, to="u3@bench.test", body="").replace(b"charset=utf-8\r\n\r\n", b"charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n") + body
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        assert s.sendmail("sender@example.org", ["u3@bench.test"], msg, mail_options=["BODY=8BITMIME"]) == {}
    [path] = M.wait_for(srv.maildir("u3@bench.test"), mark)
    M.check_delivered(path, msg, "sender@example.org", "u3@bench.test")


def test_unknown_user_550_511(srv):
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        assert s.mail("sender@example.org")[0] == 250
        code, text = s.rcpt("nobody-here@bench.test")
        assert code == 550 and text.startswith(b"5.1.1"), (code, text)


@pytest.mark.parametrize("sender", ["sender@example.org", "u1@bench.test", ""])
def test_relay_denied_without_auth_even_from_loopback(srv, sender):
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        code, text = s.mail(sender)
        if code != 250:      # an empty or spoofed local sender may be refused already
            assert 500 <= code < 600, (code, text)
            return
        code, text = s.rcpt("someone@example.com")
        assert code in (550, 554) and text.startswith(b"5.7.1"), (code, text)
        s.rset()


def test_size_parameter_over_limit_552(srv):
    with RawSMTP(srv.smtp_port) as c:
        c.greet()
        r = c.cmd("MAIL FROM:<sender@example.org> SIZE=30000001")
        assert r.code == 552, f"{r}\n{c.dump()}"
        c.expect("MAIL FROM:<sender@example.org> SIZE=30000000", 250)
        c.expect("QUIT", 221)


def test_oversized_data_552_and_not_delivered(srv):
    mark = marker("big")
    head = make_message(mark, to="u3@bench.test", body="")
    line = b"x" * 998 + b"\r\n"
    n = 30_000_000 // len(line) + 2
    with RawSMTP(srv.smtp_port, timeout=30) as c:
        c.greet()
        c.expect("MAIL FROM:<sender@example.org>", 250)
        c.expect("RCPT TO:<u3@bench.test>", 250)
        c.expect("DATA", 354)
        try:
            c.send(head)
            chunk = line * 1000
            for _ in range(n // 1000):
                c.sock.sendall(chunk)
            c.sock.sendall(line * (n % 1000) + b".\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass      # the server may refuse early; its reply is read below
        r = c.reply()
        assert r.code == 552, f"{r}\n{c.dump()}"
        assert r.enhanced and r.enhanced.startswith("5.3."), r
    assert M.files_with(srv.maildir("u3@bench.test"), mark) == []


def test_too_many_recipients_452(srv):
    with RawSMTP(srv.smtp_port) as c:
        c.greet()
        c.expect("MAIL FROM:<sender@example.org>", 250)
        for i in range(RECIPIENTS_MAX):
            c.expect(f"RCPT TO:<{ALIASES_OF_U2[i]}@bench.test>", 250)
        r = c.cmd(f"RCPT TO:<{ALIASES_OF_U2[RECIPIENTS_MAX]}@bench.test>")
        assert r.code == 452, f"recipient {RECIPIENTS_MAX + 1} got:\n{r}"
        c.expect("RSET", 250)
        c.expect("QUIT", 221)


def test_multi_recipient_one_file_per_mailbox(srv):
    mark = marker("multi")
    rcpts = ["u1@bench.test", "u2@bench.test", "u3@bench.test"]
    msg = make_message(mark, to="u1@bench.test")
    assert send_plain(srv.smtp_port, "sender@example.org", rcpts, msg) == {}
    for r in rcpts:
        files = M.wait_for(srv.maildir(r), mark)
        assert len(files) == 1, f"{r} got {len(files)} copies"
        M.check_delivered(files[0], msg, "sender@example.org", r)
    assert len(M.files_with(srv.maildir_root, mark, root=True)) == 3


def test_group_address_reaches_every_member(srv):
    mark = marker("group")
    msg = make_message(mark, to="staff@bench.test")
    assert send_plain(srv.smtp_port, "sender@example.org", ["staff@bench.test"], msg) == {}
    for r in ("u4@bench.test", "u5@bench.test"):
        [path] = M.wait_for(srv.maildir(r), mark)
        data = path.read_bytes()
        assert data.endswith(msg.replace(b"\r\n", b"\n"))
        assert M.header(data, "Delivered-To"), f"{path} lacks Delivered-To"
    assert len(M.files_with(srv.maildir_root, mark, root=True)) == 2, "a member got more than one copy"


def test_alias_reaches_its_user(srv):
    mark = marker("alias")
    msg = make_message(mark, to="info@bench.test")
    assert send_plain(srv.smtp_port, "sender@example.org", ["info@bench.test"], msg) == {}
    [path] = M.wait_for(srv.maildir("u1@bench.test"), mark)
    assert path.read_bytes().endswith(msg.replace(b"\r\n", b"\n"))
    assert len(M.files_with(srv.maildir_root, mark, root=True)) == 1


def test_bdat_chunks_stored_without_dot_unstuffing(srv):
    mark = marker("bdat")
    msg = make_message(mark, to="u2@bench.test",
                       body=f"chunked {mark}\r\n.one dot stays\r\n..two dots stay\r\n.\r\nend\r\n")
    c1, c2 = msg[:57], msg[57:]
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        assert "chunking" in s.esmtp_features
        assert s.mail("sender@example.org")[0] == 250
        assert s.rcpt("u2@bench.test")[0] == 250
        s.send(b"BDAT %d\r\n" % len(c1) + c1)
        code, text = s.getreply()
        assert code == 250, (code, text)
        s.send(b"BDAT %d LAST\r\n" % len(c2) + c2)
        code, text = s.getreply()
        assert code == 250, (code, text)
        assert s.noop()[0] == 250
    [path] = M.wait_for(srv.maildir("u2@bench.test"), mark)
    M.check_delivered(path, msg, "sender@example.org", "u2@bench.test")
