"""SMTP smuggling: a DATA section that contains a fake end of data (bare LF / bare CR
variants of <CRLF>.<CRLF>) followed by a second transaction must stay ONE message to
the first recipient; the smuggled recipient gets nothing."""
import time

import pytest

from lib import maildir as M
from lib.smtp import RawSMTP, marker

U1, U2 = "u1@bench.test", "u2@bench.test"

FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.CRLF": b"\r.\r\n",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
}


@pytest.mark.parametrize("name", list(FAKE_ENDS))
def test_fake_end_of_data_does_not_split_message(varan, name):
    fake_end = FAKE_ENDS[name]
    outer, inner = marker("outer"), marker("smuggled")
    data = (f"From: <a@example.org>\r\nTo: <{U1}>\r\nSubject: {outer}\r\n"
            f"Message-ID: <{outer}@e2e.test>\r\n\r\nfirst part {outer}").encode()
    data += fake_end
    data += (f"MAIL FROM:<x@y>\r\nRCPT TO:<{U2}>\r\nDATA\r\n"
             f"From: <x@y>\r\nTo: <{U2}>\r\nSubject: {inner}\r\n\r\nsmuggled body {inner}\r\n").encode()
    data += b"\r\n.\r\n"
    with RawSMTP(varan.smtp_port) as c:
        c.greet()
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect(f"RCPT TO:<{U1}>", 250)
        c.expect("DATA", 354)
        c.send(data)
        r = c.reply()
        # bare_newlines = "normalize" (the default) accepts the message as one
        assert r.code == 250, f"{r}\n{c.dump()}"
        c.send(b"QUIT\r\n")
        r = c.reply()
        assert r.code == 221, (f"after the one real end of data the next reply must answer QUIT; "
                               f"got {r} — the server saw a second transaction:\n{c.dump()}")
    [path] = M.wait_for(varan.maildir(U1), outer)
    stored = path.read_bytes()
    assert inner.encode() in stored, "the smuggled text must stay inside the first message"
    time.sleep(1.0)          # a smuggled second message would be delivered by now
    assert M.files_with(varan.maildir(U2), inner) == [], f"{U2} received the smuggled message"
    assert len(M.files_with(varan.maildir_root, inner, root=True)) == 1
    assert len(M.files_with(varan.maildir_root, outer, root=True)) == 1


def test_bare_newlines_reject_mode(varan_factory):
    """With bare_newlines = "reject" the same input is refused with 550 5.5.2 after its
    real end, the session goes on, and nothing is delivered. (Runs last: it replaces
    the module's server.)"""
    srv = varan_factory(edit=lambda s: s.set("smtp", bare_newlines="reject"), name="varan-reject")
    mark = marker("reject")
    data = (f"Subject: {mark}\r\n\r\nfirst\n.\nMAIL FROM:<x@y>\r\nRCPT TO:<{U2}>\r\nDATA\r\n"
            f"smuggled {mark}\r\n\r\n.\r\n").encode()
    with RawSMTP(srv.smtp_port) as c:
        c.greet()
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect(f"RCPT TO:<{U1}>", 250)
        c.expect("DATA", 354)
        c.send(data)
        r = c.reply()
        assert r.code == 550 and r.enhanced == "5.5.2", f"{r}\n{c.dump()}"
        c.expect("NOOP", 250)
        c.expect("QUIT", 221)
    time.sleep(1.0)
    assert M.files_with(srv.maildir_root, mark, root=True) == []
