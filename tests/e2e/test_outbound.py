"""Outbound delivery end to end: an authenticated user submits to a remote domain;
Varan finds the MX in a private dnsmasq, delivers to Postfix's smtp-sink over SMTP,
DKIM-signs the message (verified by dkimpy and by OpenDKIM's opendkim-testmsg
against the published key), and an
unroutable recipient (NXDOMAIN) comes back to the sender's own mailbox as an
RFC 3464 bounce."""
import email
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lib import maildir as M
from lib.dns import Dnsmasq, txt_record
from lib.smtp import insecure_tls, make_message, marker, smtp
from lib.varan import HOST, password_for

U1 = "u1@bench.test"
DELIVERED_WITHIN = 20.0   # s: checkpoint hand-over (1 s) + runner scan + delivery, on a loaded CI box
SINK_OFFSET = 997         # smtp-sink port (the module's range; the MX port is set to it)


def submit(srv, rcpt, mark):
    msg = make_message(mark, sender=U1, to=rcpt)
    with smtp(srv.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        s.login(U1, password_for(U1))
        code, text = s.mail(U1)
        assert code == 250, (code, text)
        code, text = s.rcpt(rcpt)
        assert code == 250, (rcpt, code, text)
        code, text = s.data(msg)
        assert code == 250, (code, text)
    return msg


@pytest.fixture(scope="module")
def world(varan_factory, tmp_path_factory):
    """dnsmasq + smtp-sink + varan with a DKIM key for bench.test."""
    holder = {}

    def edit(srv):
        out = srv.cli("--config", srv.config_path, "dkim", "generate", "bench.test").stdout
        name = re.search(r"^Name:\s+(\S+)", out, re.M).group(1)
        value = re.search(r"^Value:\s+(.+)$", out, re.M).group(1).strip()
        holder["dkim"] = (name, value)
        srv.set("outbound", mx_port=srv.port_base + SINK_OFFSET)
        srv.set("queue", retry_initial="1s", retry_max="2s")

    srv = varan_factory(edit=edit, start=False, name="sender")
    dkim_name, dkim_value = holder["dkim"]
    dns = Dnsmasq(tmp_path_factory.mktemp("dns"), srv.dns_port, [
        "host-record=mx.remote.test,127.0.0.1",
        "mx-host=remote.test,mx.remote.test,10",
        txt_record(dkim_name, dkim_value),
    ]).start()
    # smtp-sink drops to nobody before it writes its dump: its directory must be
    # reachable for nobody, which pytest's 0700 temp tree is not.
    sink_dir = Path(tempfile.mkdtemp(prefix="varan-e2e-sink-", dir="/tmp"))
    sink_dir.chmod(0o777)
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-c", "-u", "nobody", "-D", str(sink_dir / "dump"),
                             f"{HOST}:{srv.port_base + SINK_OFFSET}", "16"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.start()
    yield srv, sink_dir, (dkim_name, dkim_value)
    sink.terminate()
    sink.wait(timeout=10)
    dns.stop()
    shutil.rmtree(sink_dir, ignore_errors=True)


def wait_dump(sink_dir: Path, mark: str) -> bytes:
    deadline = time.monotonic() + DELIVERED_WITHIN
    while time.monotonic() < deadline:
        for f in sink_dir.glob("dump*"):
            data = f.read_bytes()
            if mark.encode() in data:
                return data
        time.sleep(0.2)
    pytest.fail(f"{mark} not delivered to smtp-sink within {DELIVERED_WITHIN} s")


def test_relayed_mail_reaches_the_mx_dkim_signed(world):
    import dkim  # dkimpy, installed by scripts/test.sh
    srv, sink_dir, (dkim_name, dkim_value) = world
    mark = marker("outbound")
    submit(srv, "bob@remote.test", mark)
    dump = wait_dump(sink_dir, mark)
    # smtp-sink's dump: its own header lines, then the message as received.
    start = dump.index(b"Received: from ")
    message = dump[start:]
    assert b"DKIM-Signature:" in message.split(b"\r\n\r\n")[0] or b"DKIM-Signature:" in message.split(b"\n\n")[0], message[:600]
    if b"\r\n" not in message:
        message = message.replace(b"\n", b"\r\n")

    def dnsfunc(name, timeout=5):
        n = name.decode() if isinstance(name, bytes) else name
        return dkim_value.encode() if n.rstrip(".") == dkim_name else b""

    assert dkim.verify(message, dnsfunc=dnsfunc), message[:800]
    tampered = message.replace(mark.encode(), b"changed", 1)
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)
    assert srv.cli("--config", srv.config_path, "queue", "summary").stdout.startswith("total: 0")
    opendkim_verify(message, tampered, (dkim_name, dkim_value))


# opendkim-testmsg resolves through /etc/resolv.conf (port 53 only): it runs in a
# private mount namespace whose resolv.conf names a dnsmasq on this loopback address.
OPENDKIM_DNS = "127.0.0.153"


def opendkim_verify(message: bytes, tampered: bytes, record: tuple[str, str]):
    """OpenDKIM's verifier accepts the signature and rejects the tampered copy
    ("Bad signature" proves the key was fetched and used)."""
    exe = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"
    if not Path(exe).exists() or os.geteuid() != 0 or not shutil.which("unshare"):
        why = "opendkim-testmsg (Debian opendkim-tools), root and unshare are needed"
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    work = Path(tempfile.mkdtemp(prefix="varan-e2e-opendkim-"))
    dns = Dnsmasq(work / "dns", 53, [txt_record(*record)], address=OPENDKIM_DNS).start()
    try:
        (work / "resolv.conf").write_text(f"nameserver {OPENDKIM_DNS}\n")
        results = []
        for name, data in (("good.eml", message), ("tampered.eml", tampered)):
            (work / name).write_bytes(data.replace(b"\r\n", b"\n"))
            script = f"mount --bind {work / 'resolv.conf'} /etc/resolv.conf && exec {exe} < {work / name}"
            p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                               capture_output=True, text=True, timeout=30)
            results.append((p.returncode, p.stdout + p.stderr))
        assert results[0][0] == 0, f"opendkim-testmsg rejected Varan's signature: {results[0]}"
        assert results[1][0] != 0 and "Bad signature" in results[1][1], results[1]
    finally:
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_unroutable_recipient_bounces_to_the_local_sender(world):
    srv, _, _ = world
    mark = marker("bounce")
    submit(srv, "nobody@unknown-domain.test", mark)
    [path] = M.wait_for(srv.maildir(U1), mark, timeout=DELIVERED_WITHIN)
    found = path.read_bytes()
    report = email.message_from_bytes(found)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    assert status, found[:1000]
    text = status[0].as_string()
    assert re.search(r"Final-Recipient: rfc822;\s*nobody@unknown-domain.test", text, re.I), text
    assert re.search(r"Action: failed", text, re.I) and re.search(r"Status: 5\.1\.2", text), text


KILL_AFTER_ACKED = 40     # messages acknowledged before the kill -9
SEND_MAX = 400            # the sender stops here (or at the first error after the kill)
DRAINED_WITHIN = 60.0     # s after the restart until every acknowledged message is at the sink


def test_kill9_while_relaying_loses_nothing(world):
    """kill -9 while relayed mail is being accepted and delivered: after the restart
    every message that got its 250 reaches the next hop (a duplicate is allowed, a
    loss is not)."""
    srv, sink_dir, _ = world
    acked: list[str] = []
    errors: list[str] = []

    def sender():
        try:
            with smtp(srv.submission_port) as s:
                s.ehlo()
                s.starttls(context=insecure_tls())
                s.ehlo()
                s.login(U1, password_for(U1))
                for i in range(SEND_MAX):
                    mark = marker(f"crash{i}")
                    s.sendmail(U1, [f"r{i}@remote.test"], make_message(mark, sender=U1, to=f"r{i}@remote.test"))
                    acked.append(mark)
        except Exception as e:  # the kill ends the session: expected
            errors.append(repr(e))

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while len(acked) < KILL_AFTER_ACKED and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked) >= KILL_AFTER_ACKED, (len(acked), errors)
    srv.kill9()
    t.join(30)
    assert not t.is_alive()
    srv.start()
    want = set(acked)
    seen: set[str] = set()
    deadline = time.monotonic() + DRAINED_WITHIN
    while time.monotonic() < deadline:
        data = b"".join(f.read_bytes() for f in sink_dir.glob("dump*")).decode("utf-8", "replace")
        seen = {m for m in want if m in data}
        if seen == want:
            break
        time.sleep(0.25)
    lost = sorted(want - seen)
    assert len(want) < SEND_MAX, "the kill came after the last message"
    assert not lost, f"{len(lost)} of {len(want)} acknowledged messages never reached the sink: {lost[:5]}"
    # Messages journaled whose 250 the kill cut off are delivered too (not
    # counted above: the client never learnt they were accepted).
    out = ""
    while time.monotonic() < deadline:
        out = srv.cli("--config", srv.config_path, "queue", "summary").stdout
        if out.startswith("total: 0"):
            break
        time.sleep(0.25)
    assert out.startswith("total: 0"), out


def test_internationalized_bounce_is_a_global_report(world):
    """RFC 6533: an SMTPUTF8 message to a non-ASCII address that cannot be routed
    comes back as message/global-delivery-status with a utf-8 address type."""
    srv, _, _ = world
    mark = marker("utf8-bounce")
    rcpt = "пользователь@unknown-domain.test"
    body = (f"From: {U1}\r\nTo: {rcpt}\r\nSubject: {mark} привет\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nтело {mark}\r\n").encode()
    with smtp(srv.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        s.login(U1, password_for(U1))
        refused = s.sendmail(U1, [rcpt], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert not refused, refused
    [path] = M.wait_for(srv.maildir(U1), mark, timeout=DELIVERED_WITHIN)
    raw = path.read_bytes()
    report = email.message_from_bytes(raw)
    assert report.get_content_type() == "multipart/report"
    assert [p for p in report.walk() if p.get_content_type() == "message/global-delivery-status"], raw[:1500]
    assert any(p.get_content_type() in ("message/global", "message/global-headers") for p in report.walk())
    # The UTF-8 address as raw bytes (Python's email API replaces 8-bit text).
    assert re.search(r"Final-Recipient: utf-8;\s*пользователь@unknown-domain\.test".encode(), raw), raw[:1500]
    assert re.search(rb"Status: 5\.1\.2", raw), raw[:1500]
