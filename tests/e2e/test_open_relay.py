"""Open-relay battery: without authentication, from 127.0.0.2 (not in
smtp.full_allowed_ips), the classic relay tricks are refused with a 5xx or resolved to
a local mailbox, and nothing is ever queued for remote delivery (`varan queue list`
empty, no file under <data_dir>/queue).

Decisions (docs/design/protection.md, "Open relay"):
- `user%remote.test@bench.test`, `remote.test!user@bench.test` and
  `"user@remote.test"@bench.test` are local parts of bench.test: no such user → 550 5.1.1
  (the `%` and `!` hacks are never interpreted as routing).
- `<@bench.test:user@remote.test>`: the source route is ignored (RFC 5321 §3.6.1, §C),
  leaving user@remote.test → 554 5.7.1 relay denied.
- `user@remote.test.` is remote.test → 554 5.7.1; `user@[127.0.0.9]`: an address
  literal we do not serve → 554 5.7.1; `user`, `remote.test!user`: no domain → 501.
- `<postmaster>` (RFC 5321 §4.5.1 MUST accept) is this server's postmaster: delivered
  to postmaster@bench.test (an alias of u1 here); `<postmaster@remote.test>` → 554.
"""
import time

import pytest

from lib.maildir import wait_for
from lib.smtp import RawSMTP, make_message, marker, dot_stuff

CLIENT = "127.0.0.2"

REFUSED = [
    "user%remote.test@bench.test",
    "remote.test!user@bench.test",
    "remote.test!user",
    "@bench.test:user@remote.test",
    '"user@remote.test"@bench.test',
    "user@remote.test.",
    "user@[127.0.0.9]",
    "user",
    "postmaster@remote.test",
    "u1%remote.test@bench.test",
    "u1@bench.test@remote.test",
]


def _setup(srv):
    db = srv.user_db()
    users = {u["login"].split("@")[0].lower(): u for u in db["users"]}
    users["u1"]["aliases"] = ["postmaster"]
    srv.write_user_db(db)


@pytest.fixture(scope="module")
def srv(varan_factory):
    return varan_factory(edit=_setup)


def queue_files(srv) -> list:
    root = srv.dir / "data" / "queue"
    assert root.is_dir(), f"no queue directory at {root}: the check would prove nothing"
    return [p for p in root.rglob("*") if p.is_file()]


def queue_list(srv) -> str:
    return srv.cli("--config", srv.config_path, "queue", "list").stdout


@pytest.mark.parametrize("rcpt", REFUSED)
def test_relay_trick_is_refused(srv, rcpt):
    with RawSMTP(srv.smtp_port, source=CLIENT) as c:
        c.greet()
        c.expect("MAIL FROM:<attacker@example.org>", 250)
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        assert 500 <= r.code < 600, f"{rcpt}: {r}\n{c.dump()}"
        # Trying to send anyway: no valid recipient, no message.
        r = c.cmd("DATA")
        assert r.code >= 500, f"DATA after refused {rcpt}: {r}\n{c.dump()}"
        c.cmd("QUIT")


def test_unqualified_postmaster_is_the_local_postmaster(srv):
    mark = marker("postmaster")
    with RawSMTP(srv.smtp_port, source=CLIENT) as c:
        c.greet()
        c.expect("MAIL FROM:<someone@example.org>", 250)
        for form in ("postmaster", "Postmaster", "POSTMASTER"):
            r = c.cmd(f"RCPT TO:<{form}>")
            assert r.code == 250, f"<{form}> must be accepted (RFC 5321 §4.5.1): {r}\n{c.dump()}"
        c.expect("DATA", 354)
        c.send(dot_stuff(make_message(mark, sender="someone@example.org", to="postmaster")) + b".\r\n")
        r = c.reply()
        assert r.code == 250, f"{r}\n{c.dump()}"
        c.cmd("QUIT")
    wait_for(srv.maildir("u1@bench.test"), mark)


def test_nothing_was_queued(srv):
    # Relayed mail reaches the queue within one checkpoint interval (1 s).
    time.sleep(2)
    assert queue_files(srv) == [], f"files in the queue: {queue_files(srv)}"
    assert queue_list(srv).strip() == "", queue_list(srv)
