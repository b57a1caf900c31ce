"""Inbound DNS checks end to end (docs/design/auth-checks.md): SPF at MAIL FROM,
DKIM/DMARC at the end of DATA, DNSBL zones, FCrDNS in Received, and the
Authentication-Results header. A private dnsmasq serves every record; clients connect
from distinct loopback addresses (127.0.0.5, .6, ...) so each is its own "external"
client. Messages are signed with dkimpy."""
import base64
import smtplib
import subprocess

import dkim
import pytest

from lib import maildir as M
from lib.dns import Dnsmasq, txt_record
from lib.smtp import make_message, marker
from lib.varan import HOST

U1 = "u1@bench.test"
SELECTOR = "e2e"
ZONES = ["bl1.test", "bl2.test", "bl3.test"]


def rsa_key() -> tuple[bytes, str]:
    """(PEM private key, base64 public key for the DKIM record)."""
    pem = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True, timeout=60).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True,
                         check=True, timeout=60).stdout
    return pem, base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def key():
    return rsa_key()


def dns_lines(public: str) -> list[str]:
    dkim_value = f"v=DKIM1; k=rsa; p={public}"
    return [
        # FCrDNS: 127.0.0.5 <-> client.good.test (host-record makes A and PTR).
        "host-record=client.good.test,127.0.0.5",
        txt_record("spf-pass.test", "v=spf1 ip4:127.0.0.5 ip4:127.0.0.7 -all"),
        txt_record("spf-fail.test", "v=spf1 ip4:192.0.2.1 -all"),
        txt_record("spf-soft.test", "v=spf1 ip4:192.0.2.1 ~all"),
        txt_record("signed.test", "v=spf1 ip4:127.0.0.5 -all"),
        txt_record(f"{SELECTOR}._domainkey.signed.test", dkim_value),
        txt_record("_dmarc.signed.test", "v=DMARC1; p=reject"),
        txt_record(f"{SELECTOR}._domainkey.dkimonly.test", dkim_value),
        txt_record("_dmarc.rej.test", "v=DMARC1; p=reject"),
        txt_record("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
        txt_record("_dmarc.none.test", "v=DMARC1; p=none"),
        # DNSBL: 127.0.0.7 in one zone, 127.0.0.8 in all three (RFC 5782: 127.0.0.2).
        "address=/7.0.0.127.bl1.test/127.0.0.2",
        *[f"address=/8.0.0.127.{z}/127.0.0.2" for z in ZONES],
    ]


@pytest.fixture(scope="module")
def world(varan_factory, tmp_path_factory, key):
    _, public = key
    servers = {}

    def edit(srv):
        # The harness turns the checks off (its DNS port is silent); on here.
        srv.set("checks", spf=True, dkim=True, dmarc=True, arc=True, fcrdns=True,
                dnsbl_zones=ZONES, dnsbl_threshold=3, timeout="5s")

    srv = varan_factory(edit=edit, start=False, name="checks")
    dns = Dnsmasq(tmp_path_factory.mktemp("dns"), srv.dns_port, dns_lines(public)).start()
    srv.start()
    servers["srv"] = srv
    yield srv
    dns.stop()


def client(srv, source: str) -> smtplib.SMTP:
    s = smtplib.SMTP(HOST, srv.smtp_port, timeout=20, source_address=(source, 0))
    s.ehlo("client.good.test")
    return s


def sign(msg: bytes, domain: str, pem: bytes) -> bytes:
    sig = dkim.sign(msg, SELECTOR.encode(), domain.encode(), pem, include_headers=[b"from", b"to", b"subject", b"message-id"])
    return sig + msg


def send(srv, source, mail_from, msg, rcpt=U1):
    """(MAIL reply, DATA reply or None)."""
    with client(srv, source) as s:
        mail = s.mail(mail_from)
        if mail[0] != 250:
            return mail, None
        code, text = s.rcpt(rcpt)
        assert code == 250, (code, text)
        try:
            return mail, s.data(msg)
        except smtplib.SMTPResponseException as e:
            return mail, (e.smtp_code, e.smtp_error)


def delivered(srv, mark, folder=None):
    root = srv.maildir(U1)
    path = M.wait_for(root, mark)[0]
    if folder is not None:
        assert path.parent.parent.name == folder, f"{path} is not in {folder}"
    return path, path.read_bytes()


def auth_results(data: bytes) -> str:
    values = M.header(data, "Authentication-Results")
    assert len(values) == 1, values
    return values[0]


@pytest.mark.timeout(60)
def test_spf_pass_with_fcrdns_name_in_received(world):
    mark = marker("spfpass")
    mail, data = send(world, "127.0.0.5", "a@spf-pass.test", make_message(mark, sender="a@spf-pass.test"))
    assert mail[0] == 250 and data[0] == 250, (mail, data)
    path, text = delivered(world, mark, folder=world.maildir(U1).name)
    ar = auth_results(text)
    assert ar.startswith(world.config["server"]["hostname"] + ";"), ar
    assert "spf=pass" in ar and "smtp.mailfrom=" in ar, ar
    rspf = M.header(text, "Received-SPF")
    assert len(rspf) == 1 and rspf[0].lower().startswith("pass") and "client-ip=127.0.0.5" in rspf[0], rspf
    received = M.header(text, "Received")[0]
    assert "(client.good.test [127.0.0.5])" in received, received
    assert not M.header(text, "X-Blacklisted")


@pytest.mark.timeout(60)
def test_spf_fail_refused_at_mail_from(world):
    mail, data = send(world, "127.0.0.6", "a@spf-fail.test", make_message(marker("spffail")))
    assert mail[0] == 550 and b"5.7.23" in mail[1], mail
    assert data is None


@pytest.mark.timeout(60)
def test_spf_softfail_and_none_are_recorded(world):
    for domain, result in (("spf-soft.test", "softfail"), ("nospf.test", "none")):
        mark = marker("spf" + result)
        mail, data = send(world, "127.0.0.6", f"a@{domain}", make_message(mark, sender=f"a@{domain}"))
        assert mail[0] == 250 and data[0] == 250, (domain, mail, data)
        _, text = delivered(world, mark)
        ar = auth_results(text)
        assert f"spf={result}" in ar, ar
        # 127.0.0.6 has no PTR: no name in Received.
        assert "([127.0.0.6])" in M.header(text, "Received")[0]


@pytest.mark.timeout(60)
def test_dkim_good_passes_dmarc_reject_domain(world, key):
    pem, _ = key
    mark = marker("dkimgood")
    msg = sign(make_message(mark, sender="a@signed.test"), "signed.test", pem)
    mail, data = send(world, "127.0.0.5", "bounce@spf-pass.test", msg)
    assert data[0] == 250, data
    _, text = delivered(world, mark)
    ar = auth_results(text)
    # dkimpy signs with i=@signed.test, so mail-auth reports header.i.
    assert "dkim=pass" in ar and ("header.d=signed.test" in ar or "header.i=@signed.test" in ar), ar
    assert "dmarc=pass" in ar, ar


@pytest.mark.timeout(60)
def test_dkim_bad_body_and_missing(world, key):
    pem, _ = key
    mark = marker("dkimbad")
    msg = sign(make_message(mark, sender="a@dkimonly.test"), "dkimonly.test", pem)
    msg = msg.replace(b"last line", b"last line, altered")
    _, data = send(world, "127.0.0.6", "a@nospf.test", msg)
    assert data[0] == 250, data
    _, text = delivered(world, mark)
    ar = auth_results(text)
    assert "dkim=fail" in ar or "dkim=neutral" in ar, ar
    assert "dkim=pass" not in ar, ar
    mark = marker("dkimnone")
    _, data = send(world, "127.0.0.6", "a@nospf.test", make_message(mark, sender="a@nospf.test"))
    assert data[0] == 250, data
    _, text = delivered(world, mark)
    assert "dkim=none" in auth_results(text)


@pytest.mark.timeout(60)
def test_dmarc_reject_is_refused(world):
    mark = marker("dmarcrej")
    _, data = send(world, "127.0.0.5", "bounce@spf-pass.test", make_message(mark, sender="a@rej.test"))
    assert data[0] == 550 and b"5.7.1" in data[1] and b"rej.test" in data[1], data
    assert not M.files_with(world.maildir(U1), mark)


@pytest.mark.timeout(60)
def test_dmarc_quarantine_goes_to_junk_and_none_to_inbox(world):
    mark = marker("dmarcquar")
    _, data = send(world, "127.0.0.5", "bounce@spf-pass.test", make_message(mark, sender="a@quar.test"))
    assert data[0] == 250, data
    path, text = delivered(world, mark)
    assert path.parent.parent.name == ".Junk", path
    assert "dmarc=fail" in auth_results(text) and "policy.dmarc=quarantine" in auth_results(text)
    mark = marker("dmarcnone")
    _, data = send(world, "127.0.0.5", "bounce@spf-pass.test", make_message(mark, sender="a@none.test"))
    assert data[0] == 250, data
    path, text = delivered(world, mark)
    assert path.parent.parent == world.maildir(U1), path
    assert "dmarc=fail" in auth_results(text), auth_results(text)


@pytest.mark.timeout(60)
def test_forged_authentication_results_renamed(world):
    mark = marker("forged")
    host = world.config["server"]["hostname"]
    msg = f"Authentication-Results: {host}; dkim=pass header.d=bank.example\r\n".encode() + make_message(mark)
    _, data = send(world, "127.0.0.6", "a@nospf.test", msg)
    assert data[0] == 250, data
    _, text = delivered(world, mark)
    assert len(M.header(text, "Authentication-Results")) == 1
    assert "header.d=bank.example" in M.header(text, "X-Untrusted-AuthResult")[0]


@pytest.mark.timeout(60)
def test_dnsbl_one_zone_marks_three_zones_refuse(world):
    mark = marker("dnsbl1")
    mail, data = send(world, "127.0.0.7", "a@spf-pass.test", make_message(mark, sender="a@spf-pass.test"))
    assert mail[0] == 250 and data[0] == 250, (mail, data)
    _, text = delivered(world, mark)
    assert M.header(text, "X-Blacklisted") == ["bl1.test"], M.headers(text)
    mail, data = send(world, "127.0.0.8", "a@spf-pass.test", make_message(marker("dnsbl3")))
    assert mail[0] == 554 and b"5.7.1" in mail[1], mail
    for z in ZONES:
        assert z.encode() in mail[1], mail


@pytest.mark.timeout(90)
def test_spf_fail_accepted_when_blocking_is_off_and_strict_helo(world, varan_factory):
    world.stop()
    world.set("checks", spf_block_fail=False, helo_strict=True)
    world.start()
    with smtplib.SMTP(HOST, world.smtp_port, timeout=20, source_address=("127.0.0.6", 0)) as s:
        s.ehlo("localhost")
        code, text = s.mail("a@spf-pass.test")
        assert code == 550 and b"5.7.1" in text, (code, text)
    mark = marker("spfoff")
    mail, data = send(world, "127.0.0.6", "a@spf-fail.test", make_message(mark, sender="a@spf-fail.test"))
    assert mail[0] == 250 and data[0] == 250, (mail, data)
    _, text = delivered(world, mark)
    assert "spf=fail" in auth_results(text)
