"""TLS and authenticated submission with smtplib: STARTTLS on 25 and 587, AUTH PLAIN
and LOGIN on 587, implicit TLS on 465, refusals without or with wrong credentials.
(Outbound delivery does not exist yet, so submissions go to local users.)"""
import smtplib

import pytest

from lib import maildir as M
from lib.smtp import RawSMTP, insecure_tls, make_message, marker, smtp, smtp_ssl
from lib.varan import password_for

U1, U2, U3 = "u1@bench.test", "u2@bench.test", "u3@bench.test"


def test_starttls_on_port_25_then_delivery(varan):
    mark = marker("tls25")
    msg = make_message(mark, to=U1)
    with smtp(varan.smtp_port) as s:
        s.ehlo()
        assert "starttls" in s.esmtp_features
        code, _ = s.starttls(context=insecure_tls())
        assert code == 220
        s.ehlo()
        assert "starttls" not in s.esmtp_features, "STARTTLS offered again inside TLS"
        assert s.sendmail("sender@example.org", [U1], msg) == {}
    [path] = M.wait_for(varan.maildir(U1), mark)
    M.check_delivered(path, msg, "sender@example.org", U1)


def test_submission_refuses_mail_before_tls_and_hides_auth(varan):
    with smtp(varan.submission_port) as s:
        s.ehlo()
        assert "starttls" in s.esmtp_features
        assert "auth" not in s.esmtp_features, "AUTH offered on 587 before TLS"
        code, text = s.mail(U1)
        assert code == 530 and text.startswith(b"5.7.0"), (code, text)


def test_submission_refuses_mail_without_auth_after_tls(varan):
    with smtp(varan.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        code, text = s.mail(U1)
        assert code == 530 and text.startswith(b"5.7.0"), (code, text)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_submission_auth_after_starttls_delivers(varan, mech):
    mark = marker(f"sub-{mech.lower()}")
    msg = make_message(mark, sender=U2, to=U3)
    with smtp(varan.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        mechs = s.esmtp_features.get("auth", "").upper().split()
        assert "PLAIN" in mechs and "LOGIN" in mechs, f"AUTH mechanisms after TLS: {mechs}"
        s.user, s.password = U2, password_for(U2)
        code, text = s.auth(mech, getattr(s, f"auth_{mech.lower()}"))
        assert code == 235, (code, text)
        assert s.sendmail(U2, [U3], msg) == {}
    [path] = M.wait_for(varan.maildir(U3), mark)
    M.check_delivered(path, msg, U2, U3)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_submission_wrong_password_535(varan, mech):
    with smtp(varan.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        s.user, s.password = U2, "not-the-password"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth(mech, getattr(s, f"auth_{mech.lower()}"))
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8"), e.value
        code, text = s.mail(U2)
        assert code == 530, ("MAIL accepted after a failed AUTH", code, text)


def test_auth_of_unknown_user_535(varan):
    with smtp(varan.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("ghost@bench.test", "whatever")
        assert e.value.smtp_code == 535, e.value


def test_starttls_with_pipelined_garbage_is_not_carried_into_tls(varan):
    """STARTTLS command injection (CVE-2011-0411 class): bytes sent after STARTTLS in
    the same packet must be discarded, not answered inside the TLS session."""
    with RawSMTP(varan.submission_port) as c:
        c.greet()
        c.send(b"STARTTLS\r\nNOOP\r\n")
        r = c.reply()
        assert r.code == 220, f"{r}\n{c.dump()}"
        if c.buf:
            pytest.fail(f"plaintext after STARTTLS answered before TLS: {c.buf!r}")
        c.sock = insecure_tls().wrap_socket(c.sock, server_hostname="localhost")
        c.send(b"EHLO client.e2e.test\r\n")
        r = c.reply()
        assert r.code == 250 and len(r.lines) > 1, (
            f"first reply inside TLS should be the EHLO reply, got (a NOOP reply = injection):\n{r}\n{c.dump()}")
        c.expect("QUIT", 221)


def test_implicit_tls_465_auth_and_delivery(varan):
    mark = marker("smtps")
    msg = make_message(mark, sender=U1, to=U2)
    with smtp_ssl(varan.smtps_port) as s:
        s.ehlo()
        assert "starttls" not in s.esmtp_features, "STARTTLS offered on implicit TLS"
        assert "auth" in s.esmtp_features
        s.login(U1, password_for(U1))
        assert s.sendmail(U1, [U2], msg) == {}
    [path] = M.wait_for(varan.maildir(U2), mark)
    M.check_delivered(path, msg, U1, U2)
