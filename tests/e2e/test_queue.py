"""Outbound queue: an authenticated submission to a remote address is accepted (250),
shows up in `varan queue list/summary` within 2 s (once its journal segment is retired),
can be inspected and deleted with the CLI while the server runs, and survives a kill -9
right after the 250. The test servers' DNS (lib/varan.py DNS_OFFSET) does not answer,
so the runner's first attempt fails temporarily and the entry stays queued (deferred)
until deleted. Also: relaying without AUTH stays refused, and
DSN parameters are kept in the entry."""
import re
import time
from pathlib import Path

import pytest

from lib import maildir as M
from lib.smtp import insecure_tls, make_message, marker, smtp
from lib.varan import password_for, port_open

U1 = "u1@bench.test"
REMOTE = "someone@remote.example"
LISTED_WITHIN = 2.0          # seconds: one checkpoint interval (1 s) plus slack
ID = re.compile(r"^([0-9a-f]{16}) (new|deferred) (\d+) bytes from (\S+) ", re.M)


def submit(srv, rcpts, mark, mail_options=(), rcpt_options=()):
    msg = make_message(mark, sender=U1, to=rcpts[0])
    with smtp(srv.submission_port) as s:
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        assert "dsn" in s.esmtp_features
        s.login(U1, password_for(U1))
        code, text = s.mail(U1, list(mail_options))
        assert code == 250, (code, text)
        for r in rcpts:
            code, text = s.rcpt(r, list(rcpt_options))
            assert code == 250, (r, code, text)
        code, text = s.data(msg)
        assert code == 250, (code, text)
        s.quit()
    return msg, text.decode()


def queue(srv, *args, check=True):
    return srv.cli("--config", srv.config_path, "queue", *args, check=check)


def listed(srv):
    """{id: (state, size, sender)} of `varan queue list`."""
    out = queue(srv, "list").stdout
    return {m.group(1): (m.group(2), int(m.group(3)), m.group(4)) for m in ID.finditer(out)}, out


def wait_listed(srv, known=()):
    deadline = time.monotonic() + LISTED_WITHIN
    while True:
        entries, out = listed(srv)
        new = {k: v for k, v in entries.items() if k not in known}
        if new or time.monotonic() > deadline:
            return new, out
        time.sleep(0.1)


@pytest.fixture(scope="module")
def srv(varan_factory):
    return varan_factory()


def test_relay_without_auth_is_still_denied(srv):
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        assert s.mail("sender@example.org")[0] == 250
        code, text = s.rcpt(REMOTE)
        assert code == 554 and text.startswith(b"5.7.1"), (code, text)


def test_submission_to_remote_is_queued_listed_and_deleted(srv):
    before, _ = listed(srv)
    mark = marker("queue")
    msg, reply = submit(srv, [REMOTE, "u2@bench.test"], mark, mail_options=["RET=HDRS", "ENVID=env+2B1"],
                 rcpt_options=["NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;{REMOTE.replace('@', '+40')}"])
    new, out = wait_listed(srv, before)
    assert len(new) == 1, f"entry not listed within {LISTED_WITHIN} s:\n{out}"
    [(qid, (state, size, sender))] = new.items()
    assert state in ("new", "deferred") and sender == U1, out
    assert reply.endswith(f"queued as {qid}"), (reply, qid)
    assert size >= len(msg.replace(b"\r\n", b"\n")), (size, len(msg))
    block = out[out.index(qid):]
    assert f"    {REMOTE}" in block and "u2@bench.test" not in block.split("\n0")[0], out
    summary = queue(srv, "summary").stdout
    assert re.search(r"^total: [1-9]", summary, re.M), summary
    shown = queue(srv, "show", qid).stdout
    assert f"recipient: {REMOTE} pending" in shown and f"orcpt: rfc822;{REMOTE}" in shown, shown
    assert "envid: env+1" in shown and "submitter: u1@bench.test" in shown, shown
    # The local recipient of the same message got its copy as before.
    [path] = M.wait_for(srv.maildir("u2@bench.test"), mark)
    assert path.parent.name == "new"
    queue(srv, "retry", qid)
    queue(srv, "delete", qid)
    after, out = listed(srv)
    assert qid not in after, out
    gone = queue(srv, "delete", qid, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr, gone
    # The content went with the envelope.
    assert (queue_root(srv) / "active").is_dir()
    assert not (queue_root(srv) / "content" / qid).exists()


def queue_root(srv) -> Path:
    data_dir = Path(srv.config["server"]["data_dir"])
    return (data_dir if data_dir.is_absolute() else srv.dir / data_dir) / "queue"


def test_entry_survives_kill9_right_after_250(srv):
    before, _ = listed(srv)
    mark = marker("crash")
    submit(srv, [REMOTE], mark)
    srv.kill9()
    # The kernel may need a moment to tear down the dead process's listeners.
    deadline = time.monotonic() + 10
    while any(port_open(p) for p in srv.listener_ports()) and time.monotonic() < deadline:
        time.sleep(0.1)
    srv.start()
    new, out = wait_listed(srv, before)
    assert len(new) == 1, f"entry lost across kill -9:\n{out}"
    [qid] = new
    queue(srv, "delete", qid)
    assert qid not in listed(srv)[0]


def test_full_allowed_ip_relays_without_auth(varan_factory):
    srv = varan_factory(edit=lambda s: s.set("smtp", full_allowed_ips=["127.0.0.1/32"]), name="fullallowed")
    before, _ = listed(srv)
    mark = marker("fullallowed")
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        assert s.mail("app@example.org")[0] == 250
        code, text = s.rcpt(REMOTE)
        assert code == 250, (code, text)
        code, text = s.data(make_message(mark, sender="app@example.org", to=REMOTE))
        assert code == 250, (code, text)
    new, out = wait_listed(srv, before)
    assert len(new) == 1, out
    [(qid, (state, _, sender))] = new.items()
    assert state in ("new", "deferred") and sender == "app@example.org", out
    assert "submitter" not in queue(srv, "show", qid).stdout
    assert "1 entries deleted" in queue(srv, "delete", "--all").stdout
    assert "total: 0" in queue(srv, "summary").stdout


def test_journal_replay_queues_the_entry_after_kill9(varan_factory):
    """With a checkpoint far away, the kill comes before the entry was synced and
    handed over: only the journal has it, and the restart must queue it."""
    srv = varan_factory(edit=lambda s: s.set("storage", checkpoint_interval="60s"), name="slowcheckpoint")
    time.sleep(0.2)
    _, reply = submit(srv, [REMOTE], marker("replay"))
    qid = reply.rsplit(" ", 1)[-1]
    time.sleep(0.5)
    assert qid not in listed(srv)[0], "listed before its journal segment was retired"
    assert not (queue_root(srv) / "active" / qid).exists()
    srv.kill9()
    deadline = time.monotonic() + 10
    while any(port_open(p) for p in srv.listener_ports()) and time.monotonic() < deadline:
        time.sleep(0.1)
    srv.start()
    entries, out = listed(srv)
    assert qid in entries, f"{qid} not queued after replay:\n{out}"
    content = (queue_root(srv) / "content" / qid).read_bytes()
    assert content.startswith(b"Received: from "), content[:200]
    assert f"id {qid}".encode() in content.split(b"\n\n")[0], content[:300]
    queue(srv, "delete", qid)
