"""Inbound protections without DNS (docs/design/protection.md): IP and sender
allow/deny lists, greylisting (451 then accepted after the delay, state kept across a
graceful restart and a kill -9), bans after failed logins on SMTP, IMAP and POP3 (also
counted across protocols), `varan ban list/add/del` on the running server, allow-listed
IPs never banned, and the per-IP connection rate limit.

Each loopback source address (127.0.0.x) is a distinct client."""
import base64
import signal
import socket
import time

import pytest

from lib.maildir import wait_for
from lib.smtp import Closed, RawSMTP, make_message, marker, dot_stuff
from lib.varan import HOST, password_for, port_open

ALLOWED = "127.0.0.2"
DENIED = "127.0.0.66"
RATE_IP = "127.0.0.50"
RATE = 8
DELAY = 3          # greylist delay, seconds


def configure(s):
    cfg = s.config
    cfg["smtp"]["auth_without_tls"] = True
    cfg["imap"]["auth_without_tls"] = True
    cfg["pop3"]["auth_without_tls"] = True
    cfg["protection"] = {
        "lists": {"enabled": True, "ip_allow": [ALLOWED], "ip_deny": [DENIED],
                  "sender_allow": ["@friend.test"], "sender_deny": ["spammer@bad.test", "@evil.test"]},
        "greylist": {"enabled": True, "delay": f"{DELAY}s", "record_lifetime": "1h", "allow_lifetime": "1h",
                     "cleanup_interval": "1s", "ignore_sender_domains": ["ignored.test"]},
        "auth": {"enabled": True, "failures_max": 3, "failure_lifetime": "60m", "ban_time": "60m"},
        "rate": {"connections_per_minute": RATE},
    }
    s.config = cfg


@pytest.fixture(scope="module")
def srv(varan_factory):
    return varan_factory(edit=configure)


# ------------------------------------------------------------------ helpers
def smtp_from(srv, source: str) -> RawSMTP:
    return RawSMTP(srv.smtp_port, source=source)


def rcpt_reply(srv, source: str, sender: str, rcpt: str = "u1@bench.test"):
    with smtp_from(srv, source) as c:
        c.greet()
        c.expect(f"MAIL FROM:<{sender}>", 250)
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        c.cmd("QUIT")
        return r


def send_one(srv, source: str, sender: str, rcpt: str = "u1@bench.test") -> str:
    """A whole transaction that must be accepted; returns its marker."""
    mark = marker("prot")
    with smtp_from(srv, source) as c:
        c.greet()
        c.expect(f"MAIL FROM:<{sender}>", 250)
        c.expect(f"RCPT TO:<{rcpt}>", 250)
        c.expect("DATA", 354)
        c.send(dot_stuff(make_message(mark, sender=sender, to=rcpt)) + b".\r\n")
        r = c.reply()
        assert r.code == 250, f"{r}\n{c.dump()}"
        c.cmd("QUIT")
    return mark


def smtp_auth_fail(srv, source: str, times: int = 1) -> None:
    with smtp_from(srv, source) as c:
        c.greet()
        for _ in range(times):
            token = base64.b64encode(b"\0u1@bench.test\0wrong-password").decode()
            try:
                r = c.cmd(f"AUTH PLAIN {token}")
            except Closed:
                return
            assert r.code in (535, 421), f"{r}\n{c.dump()}"
            if r.code == 421:
                return


def smtp_greeting(srv, source: str):
    """The first reply of a new SMTP connection from `source`."""
    with smtp_from(srv, source) as c:
        try:
            r = c.reply()
        except Closed:
            return None
        if r.code == 220:
            c.cmd("QUIT")
        return r


class Line:
    """A line-based client for IMAP/POP3 from a chosen source address."""

    def __init__(self, port: int, source: str):
        self.sock = socket.create_connection((HOST, port), timeout=10, source_address=(source, 0))
        self.buf = b""

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Closed("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def until_tagged(self, tag: str) -> str:
        while True:
            line = self.line()
            if line.startswith(tag + " "):
                return line

    def close(self):
        self.sock.close()


def greeting(port: int, source: str) -> str:
    """The first line a server sends to a client connecting from `source`."""
    c = Line(port, source)
    try:
        return c.line()
    finally:
        c.close()


def imap_login(srv, source: str, user: str, password: str) -> str:
    c = Line(srv.imap_port, source)
    try:
        greeting = c.line()
        if not greeting.startswith("* OK"):
            return greeting
        c.send(f'a1 LOGIN "{user}" "{password}"')
        return c.until_tagged("a1")
    finally:
        c.close()


def pop3_login(srv, source: str, user: str, password: str) -> str:
    c = Line(srv.pop3_port, source)
    try:
        greeting = c.line()
        if not greeting.startswith("+OK"):
            return greeting
        c.send(f"USER {user}")
        c.line()
        c.send(f"PASS {password}")
        reply = c.line()
        c.send("QUIT")
        return reply
    finally:
        c.close()


def restart(srv, kill: bool = False) -> None:
    """Stops (SIGTERM, or kill -9) and starts again once the old listeners are gone
    (the kernel releases io_uring-held sockets a moment after the process exits)."""
    if kill:
        srv.kill9()
    else:
        srv.stop()
    deadline = time.monotonic() + 10
    while any(port_open(p) for p in srv.listener_ports()) and time.monotonic() < deadline:
        time.sleep(0.1)
    srv.start()


def wait_until(check, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def assert_banned_everywhere(srv, source: str):
    r = smtp_greeting(srv, source)
    assert r is not None and r.code == 554 and r.enhanced == "5.7.1", f"SMTP greeting for banned {source}: {r}"
    assert greeting(srv.imap_port, source).startswith("* BYE"), f"IMAP greeting for banned {source}"
    assert greeting(srv.pop3_port, source).startswith("-ERR"), f"POP3 greeting for banned {source}"


# ------------------------------------------------------------------ lists
def test_ip_deny_list_refuses_at_connect(srv):
    with smtp_from(srv, DENIED) as c:
        r = c.reply()
        assert r.code == 554 and r.enhanced == "5.7.1", f"{r}\n{c.dump()}"
        assert c.closed_within(3)
    # IMAP and POP3 are not concerned by the SMTP lists.
    assert greeting(srv.imap_port, DENIED).startswith("* OK")


def test_sender_deny_list_refuses_at_mail_from(srv):
    with smtp_from(srv, "127.0.0.5") as c:
        c.greet()
        for sender in ("spammer@bad.test", "Spammer@BAD.test", "anyone@evil.test"):
            r = c.cmd(f"MAIL FROM:<{sender}>")
            assert r.code == 550 and r.enhanced == "5.7.1", f"{sender}: {r}\n{c.dump()}"
        # Other senders of the same domain, and other domains, are fine.
        c.expect("MAIL FROM:<someone@bad.test>", 250)
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<>", 250)


def test_allow_listed_ip_skips_greylisting(srv):
    mark = send_one(srv, ALLOWED, "first-contact@example.org")
    wait_for(srv.maildir("u1@bench.test"), mark)


def test_allow_listed_sender_and_ignored_domain_skip_greylisting(srv):
    r = rcpt_reply(srv, "127.0.0.6", "pal@friend.test")
    assert r.code == 250, str(r)
    r = rcpt_reply(srv, "127.0.0.6", "robot@ignored.test")
    assert r.code == 250, str(r)


# ------------------------------------------------------------------ greylisting
def test_greylisting_defers_then_accepts_after_the_delay(srv):
    sender = "grey1@example.org"
    r = rcpt_reply(srv, "127.0.0.3", sender)
    assert r.code == 451 and r.enhanced == "4.7.1" and "Greylisted" in r.text, str(r)
    r = rcpt_reply(srv, "127.0.0.3", sender)
    assert r.code == 451, f"an early retry is still deferred: {r}"
    # Another recipient is another triplet.
    assert rcpt_reply(srv, "127.0.0.3", sender, "u2@bench.test").code == 451
    time.sleep(DELAY + 0.5)
    mark = send_one(srv, "127.0.0.3", sender)
    wait_for(srv.maildir("u1@bench.test"), mark)
    # Allowed now, also from another address of the same /24.
    assert rcpt_reply(srv, "127.0.0.4", sender).code == 250


def test_greylist_state_survives_restart_and_kill9(srv):
    pending, allowed = "grey-pending@example.org", "grey-allowed@example.org"
    assert rcpt_reply(srv, "127.0.0.15", pending).code == 451
    assert rcpt_reply(srv, "127.0.0.15", allowed).code == 451
    time.sleep(DELAY + 0.5)
    assert rcpt_reply(srv, "127.0.0.15", allowed).code == 250
    restart(srv)
    # The pending triplet kept its first-seen time: the delay is over.
    assert rcpt_reply(srv, "127.0.0.15", pending).code == 250
    assert rcpt_reply(srv, "127.0.0.15", allowed).code == 250
    # A crash: the snapshot written at the (1 s) cleanup interval survives.
    crash = "grey-crash@example.org"
    assert rcpt_reply(srv, "127.0.0.15", crash).code == 451
    time.sleep(DELAY + 0.5)
    assert rcpt_reply(srv, "127.0.0.15", crash).code == 250
    time.sleep(2.5)
    restart(srv, kill=True)
    assert rcpt_reply(srv, "127.0.0.15", crash).code == 250
    assert rcpt_reply(srv, "127.0.0.15", "grey-new@example.org").code == 451, "greylisting still on"


# ------------------------------------------------------------------ bans
def test_smtp_failures_ban_on_every_protocol(srv):
    ip = "127.0.0.7"
    smtp_auth_fail(srv, ip, times=2)
    assert smtp_greeting(srv, ip).code == 220, "two failures are not a ban"
    smtp_auth_fail(srv, ip, times=1)
    assert_banned_everywhere(srv, ip)


def test_imap_failures_ban(srv):
    ip = "127.0.0.8"
    for _ in range(3):
        r = imap_login(srv, ip, "u1@bench.test", "wrong")
        assert r.startswith("a1 NO"), r
    assert_banned_everywhere(srv, ip)


def test_pop3_failures_ban(srv):
    ip = "127.0.0.9"
    for _ in range(3):
        r = pop3_login(srv, ip, "u1@bench.test", "wrong")
        assert r.startswith("-ERR"), r
    assert_banned_everywhere(srv, ip)


def test_failures_count_across_protocols(srv):
    ip = "127.0.0.10"
    smtp_auth_fail(srv, ip, times=1)
    assert imap_login(srv, ip, "u1@bench.test", "wrong").startswith("a1 NO")
    assert smtp_greeting(srv, ip).code == 220
    assert pop3_login(srv, ip, "u1@bench.test", "wrong").startswith("-ERR")
    assert_banned_everywhere(srv, ip)


def test_bans_survive_restart_and_cli_lists_and_lifts_them(srv):
    ip = "127.0.0.12"
    for _ in range(3):
        imap_login(srv, ip, "u2@bench.test", "wrong")
    assert_banned_everywhere(srv, ip)
    time.sleep(1.5)      # the main thread writes new bans to the log every second
    restart(srv)
    assert_banned_everywhere(srv, ip)
    listed = srv.cli("ban", "list", "--config", srv.config_path).stdout
    assert ip in listed and "failures" in listed, listed
    out = srv.cli("ban", "del", ip, "--config", srv.config_path).stdout
    assert "unbanned" in out, out
    wait_until(lambda: (r := smtp_greeting(srv, ip)) is not None and r.code == 220, what=f"{ip} unbanned")
    assert imap_login(srv, ip, "u2@bench.test", password_for("u2@bench.test")).startswith("a1 OK")
    assert ip not in srv.cli("ban", "list", "--config", srv.config_path).stdout


def test_cli_ban_add_on_running_server(srv):
    ip = "127.0.0.13"
    assert smtp_greeting(srv, ip).code == 220
    srv.cli("ban", "add", ip, "--minutes", "5", "--config", srv.config_path)
    wait_until(lambda: (r := smtp_greeting(srv, ip)) is not None and r.code == 554, what=f"{ip} banned")
    assert greeting(srv.pop3_port, ip).startswith("-ERR")
    assert "manual" in srv.cli("ban", "list", "--config", srv.config_path).stdout
    refused = srv.cli("ban", "add", ALLOWED, "--config", srv.config_path, check=False)
    assert refused.returncode != 0 and "never banned" in refused.stderr, refused.stderr
    srv.cli("ban", "del", ip, "--config", srv.config_path)
    wait_until(lambda: (r := smtp_greeting(srv, ip)) is not None and r.code == 220, what=f"{ip} unbanned")


def test_allow_listed_ip_is_never_banned(srv):
    for _ in range(2):
        smtp_auth_fail(srv, ALLOWED, times=3)
    for _ in range(3):
        assert imap_login(srv, ALLOWED, "u1@bench.test", "wrong").startswith("a1 NO")
    assert smtp_greeting(srv, ALLOWED).code == 220
    assert imap_login(srv, ALLOWED, "u1@bench.test", password_for("u1@bench.test")).startswith("a1 OK")


def test_banned_client_cannot_log_in_on_an_open_connection(srv):
    ip = "127.0.0.14"
    c = Line(srv.imap_port, ip)
    try:
        assert c.line().startswith("* OK")
        # Banned by failures on other connections while this one is open.
        for _ in range(3):
            assert imap_login(srv, ip, "u3@bench.test", "wrong").startswith("a1 NO")
        c.send(f'b9 LOGIN "u3@bench.test" "{password_for("u3@bench.test")}"')
        assert c.until_tagged("b9").startswith("b9 NO"), "a banned client's right password fails too"
    finally:
        c.close()


# ------------------------------------------------------------------ rate limit
def test_connection_rate_limit(srv):
    for i in range(RATE):
        r = smtp_greeting(srv, RATE_IP)
        assert r is not None and r.code == 220, f"connection {i + 1}: {r}"
    r = smtp_greeting(srv, RATE_IP)
    assert r is not None and r.code == 421 and r.enhanced == "4.7.0", f"connection {RATE + 1}: {r}"
    assert greeting(srv.imap_port, RATE_IP).startswith("* BYE"), "the limit covers every protocol"
    assert greeting(srv.pop3_port, RATE_IP).startswith("-ERR")
    # Other clients are not affected; allow-listed ones are never limited.
    assert smtp_greeting(srv, "127.0.0.51").code == 220
    for _ in range(RATE + 2):
        assert smtp_greeting(srv, ALLOWED).code == 220


# ------------------------------------------------------------------ reload
def test_lists_are_reloaded_on_sighup(srv):
    ip = "127.0.0.60"
    assert smtp_greeting(srv, ip).code == 220
    cfg = srv.config
    cfg["protection"]["lists"]["ip_deny"] = [DENIED, "127.0.0.60/32"]
    cfg["protection"]["lists"]["sender_deny"] = ["spammer@bad.test", "@evil.test", "@later.test"]
    srv.config = cfg
    srv._signal_group(signal.SIGHUP)
    wait_until(lambda: (r := smtp_greeting(srv, ip)) is not None and r.code == 554, what="ip_deny reloaded")
    with smtp_from(srv, "127.0.0.61") as c:
        c.greet()
        r = c.cmd("MAIL FROM:<x@later.test>")
        assert r.code == 550 and r.enhanced == "5.7.1", f"{r}\n{c.dump()}"
