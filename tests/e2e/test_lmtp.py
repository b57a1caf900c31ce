"""LMTP delivery (seed 002 §6.2.1.8–10): with [lmtp] enabled, mail for the served
domain is resolved and accepted by Varan, then handed through the queue to an
external store over LMTP (RFC 2033) — here a private Dovecot — instead of Varan's
own Maildir. A recipient the LMTP server refuses (5xx) bounces to the sender, whose
bounce in turn goes to Dovecot."""
import email
import re

import pytest

from lib import maildir as M
from lib.clients import Dovecot, files_containing
from lib.smtp import insecure_tls, make_message, marker, smtp
from lib.varan import password_for

U1, U2, U3 = "u1@bench.test", "u2@bench.test", "u3@bench.test"
LMTP_OFFSET = 24          # the module's port range: base+24 (LMTP's 24)
DOVECOT_IMAP_OFFSET = 996
DELIVERED_WITHIN = 20.0   # checkpoint hand-over (1 s) + runner scan + LMTP, on a loaded CI box


@pytest.fixture(scope="module")
def world(varan_factory, port_base):
    # u3 exists for Varan but not in Dovecot: the LMTP server refuses it.
    dovecot = Dovecot(port_base + DOVECOT_IMAP_OFFSET, {U1: "x", U2: "x"}, lmtp_port=port_base + LMTP_OFFSET)
    dovecot.start()
    srv = varan_factory(users=[U1, U2, U3],
                        edit=lambda s: s.set("lmtp", enabled=True, host="127.0.0.1", port=port_base + LMTP_OFFSET))
    yield srv, dovecot
    srv.stop()
    dovecot.cleanup()


def wait_in(md, mark):
    import time
    deadline = time.monotonic() + DELIVERED_WITHIN
    while time.monotonic() < deadline:
        found = files_containing(md, mark)
        if found:
            return found
        time.sleep(0.2)
    return []


def test_inbound_mail_goes_to_the_lmtp_store(world):
    srv, dovecot = world
    mark = marker("lmtp")
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        assert s.mail("someone@example.org")[0] == 250
        assert s.rcpt(U2)[0] == 250
        code, text = s.data(make_message(mark, sender="someone@example.org", to=U2))
        assert code == 250, (code, text)
    found = wait_in(dovecot.maildir(U2), mark)
    assert len(found) == 1, dovecot.log_text()
    data = found[0].read_bytes()
    assert b"Received: from " in data.split(b"\n\n")[0], data[:400]
    # Not in Varan's own store.
    assert not M.files_with(srv.maildir(U2), mark, root=True)


def test_refused_recipient_bounces_to_the_sender_through_lmtp(world):
    srv, dovecot = world
    mark = marker("lmtpbounce")
    with smtp(srv.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        s.login(U1, password_for(U1))
        assert s.mail(U1)[0] == 250
        assert s.rcpt(U3)[0] == 250
        code, text = s.data(make_message(mark, sender=U1, to=U3))
        assert code == 250, (code, text)
    found = wait_in(dovecot.maildir(U1), mark)
    assert found, f"no bounce for {U3} in {U1}'s Dovecot mailbox\n{dovecot.log_text()}"
    report = email.message_from_bytes(found[0].read_bytes())
    assert report.get_content_type() == "multipart/report", found[0].read_bytes()[:800]
    status = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"][0].as_string()
    assert re.search(r"Final-Recipient: rfc822;\s*u3@bench.test", status, re.I), status
    assert re.search(r"Action: failed", status, re.I) and re.search(r"Status: 5\.", status), status
