"""IMAP/POP3 client helpers on Python's imaplib/poplib, plus SMTP delivery for the
tests that need mail in a mailbox first."""
from __future__ import annotations

import imaplib
import poplib
import re
import smtplib

from lib.smtp import insecure_tls, make_message, marker
from lib.varan import HOST, password_for


def imaps(srv, user: str = "u1@bench.test", password: str | None = None) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL(HOST, srv.imaps_port, ssl_context=insecure_tls(), timeout=15)
    c.login(user, password if password is not None else password_for(user))
    return c


def imap_starttls(srv, user: str = "u1@bench.test") -> imaplib.IMAP4:
    c = imaplib.IMAP4(HOST, srv.imap_port, timeout=15)
    c.starttls(ssl_context=insecure_tls())
    c.login(user, password_for(user))
    return c


def pop3s(srv, user: str = "u1@bench.test") -> poplib.POP3_SSL:
    c = poplib.POP3_SSL(HOST, srv.pop3s_port, context=insecure_tls(), timeout=15)
    c.user(user)
    c.pass_(password_for(user))
    return c


def deliver(srv, to: str = "u1@bench.test", subject: str | None = None, body: str | None = None) -> tuple[str, bytes]:
    """Sends one message over SMTP (port 25) and returns (marker, message bytes)."""
    mark = marker("imap")
    data = make_message(mark, to=to, subject=subject, body=body)
    with smtplib.SMTP(HOST, srv.smtp_port, timeout=15) as s:
        s.sendmail("sender@example.org", [to], data)
    return mark, data


def ok(typ_data, what: str = ""):
    typ, data = typ_data
    assert typ == "OK", f"{what}: {typ} {data}"
    return data


def exists(c: imaplib.IMAP4) -> int:
    """EXISTS count from the last SELECT/NOOP responses."""
    values = c.untagged_responses.get("EXISTS") or [b"0"]
    return int(values[-1])


def uid_of(fetch_line: bytes) -> int:
    m = re.search(rb"UID (\d+)", fetch_line)
    assert m, fetch_line
    return int(m.group(1))
