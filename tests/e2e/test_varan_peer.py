"""Varan relays to a second Varan: the sender's server (bench.test) finds remote.test's
MX in a private dnsmasq and delivers over opportunistic STARTTLS to another Varan
instance serving remote.test, which stores the message DKIM-signed in its Maildir. A
recipient the remote Varan does not know (550 5.1.1 at RCPT) comes back to the sender
as an RFC 3464 report naming the remote MTA and its reply."""
import email
import re

import pytest

from lib import maildir as M
from lib import varan as V
from lib.dns import Dnsmasq
from lib.smtp import insecure_tls, make_message, marker, smtp
from lib.varan import HOST, password_for

U1 = "u1@bench.test"
R1 = "r1@remote.test"
PEER_OFFSET = 500          # the remote Varan's port base within this module's range
DELIVERED_WITHIN = 20.0    # s: checkpoint hand-over + runner scan + delivery, on a loaded CI box


@pytest.fixture(scope="module")
def pair(varan_factory, port_base, tmp_path_factory):
    peer = V.Varan(tmp_path_factory.mktemp("remote"), port_base + PEER_OFFSET, domain="remote.test", name="remote")
    peer.quickstart()
    peer.add_user(R1)
    # Only its MX listener: the other services would need ports outside this module's range.
    cfg = peer.config
    cfg["smtp"]["submission_listen"] = []
    cfg["smtp"]["smtps_listen"] = []
    cfg["imap"]["listen"] = []
    cfg["imap"]["imaps_listen"] = []
    cfg["pop3"]["listen"] = []
    cfg["pop3"]["pop3s_listen"] = []
    cfg["admin"]["listen"] = []
    peer.config = cfg
    peer_mx = peer.smtp_port
    assert peer_mx < port_base + 1000

    def edit(srv):
        srv.cli("--config", srv.config_path, "dkim", "generate", "bench.test")
        srv.set("outbound", mx_port=peer_mx)
        srv.set("queue", retry_initial="1s", retry_max="2s")

    srv = varan_factory(edit=edit, start=False, name="sender")
    dns = Dnsmasq(tmp_path_factory.mktemp("dns"), srv.dns_port, [
        "host-record=mx.remote.test,127.0.0.1",
        "mx-host=remote.test,mx.remote.test,10",
    ]).start()
    peer.start()
    srv.start()
    yield srv, peer
    peer.stop(check=True)
    dns.stop()


def submit(srv, rcpt: str, mark: str):
    with smtp(srv.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        s.login(U1, password_for(U1))
        refused = s.sendmail(U1, [rcpt], make_message(mark, sender=U1, to=rcpt))
        assert not refused, refused


def test_relayed_to_a_second_varan_over_starttls(pair):
    srv, peer = pair
    mark = marker("peer")
    submit(srv, R1, mark)
    [path] = M.wait_for(peer.maildir(R1), mark, timeout=DELIVERED_WITHIN)
    data = path.read_bytes()
    received = M.header(data, "Received")
    # The remote's own trace line (topmost) says the hop was encrypted; the sender's
    # line below it says the submission was authenticated and encrypted.
    assert re.search(r"by \S+ \(Varan\) with ESMTPS id", received[0]), received
    assert any("with ESMTPSA" in r for r in received[1:]), received
    [sig] = M.header(data, "DKIM-Signature")
    assert "d=bench.test" in sig.replace("\r\n", "").replace("\n", ""), sig
    out = srv.cli("--config", srv.config_path, "queue", "summary").stdout
    assert out.startswith("total: 0"), out


def test_recipient_unknown_at_the_remote_varan_bounces(pair):
    srv, peer = pair
    mark = marker("peer-unknown")
    submit(srv, "nobody@remote.test", mark)
    [path] = M.wait_for(srv.maildir(U1), mark, timeout=DELIVERED_WITHIN)
    report = email.message_from_bytes(path.read_bytes())
    assert report.get_content_type() == "multipart/report"
    [status] = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    text = status.as_string()
    assert re.search(r"Final-Recipient: rfc822;\s*nobody@remote.test", text, re.I), text
    assert re.search(r"Action: failed", text, re.I) and re.search(r"Status: 5\.1\.1", text), text
    assert re.search(r"Remote-MTA: dns;\s*mx\.remote\.test", text, re.I), text
    assert re.search(r"Diagnostic-Code: smtp;\s*550", text, re.I), text
    assert not M.files_with(peer.maildir_root, mark, root=True)
