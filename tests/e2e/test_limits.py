"""Session limits a peer cannot push past: overlong command lines, repeated errors,
connections per IP (connections_per_ip_max = 3 here)."""
import time

import pytest

from lib.smtp import Closed, RawSMTP

PER_IP = 3


@pytest.fixture(scope="module")
def srv(varan_factory):
    return varan_factory(edit=lambda s: s.set("smtp", connections_per_ip_max=PER_IP))


def test_100kb_command_line_500_556_and_session_goes_on(srv):
    with RawSMTP(srv.smtp_port) as c:
        c.greet()
        r = c.cmd(b"NOOP " + b"x" * 100_000)
        assert r.code == 500 and r.enhanced == "5.5.6", f"{r}\n{c.dump()}"
        c.expect("NOOP", 250)
        c.expect("MAIL FROM:<sender@example.org>", 250)
        c.expect("RCPT TO:<u1@bench.test>", 250)
        c.expect("RSET", 250)
        c.expect("QUIT", 221)


def test_eleven_bad_commands_421(srv):
    with RawSMTP(srv.smtp_port) as c:
        c.greet()
        for i in range(1, 11):
            r = c.cmd(f"XYZZY{i}")
            assert 500 <= r.code < 600, f"bad command {i} got {r}\n{c.dump()}"
        try:
            r = c.cmd("XYZZY11")
        except Closed:
            pytest.fail(f"closed without a 421 after 11 bad commands\n{c.dump()}")
        assert r.code == 421, f"bad command 11 got {r}, expected 421\n{c.dump()}"
        assert c.closed_within(3), f"connection still open after 421\n{c.dump()}"


def _open_with_banner(port: int, attempts_until: float) -> RawSMTP:
    """A connection that got its 220 (retries while earlier tests' sessions are still
    being counted by the server)."""
    while True:
        c = RawSMTP(port)
        try:
            r = c.reply()
        except Closed:
            r = None
        if r is not None and r.code == 220:
            return c
        c.close()
        if time.monotonic() > attempts_until:
            raise AssertionError(f"no 220 banner: {r}")
        time.sleep(0.2)


def test_connections_per_ip_limit(srv):
    conns = []
    try:
        deadline = time.monotonic() + 5
        for _ in range(PER_IP):
            conns.append(_open_with_banner(srv.smtp_port, deadline))
        extra = RawSMTP(srv.smtp_port)
        conns.append(extra)
        try:
            r = extra.reply()
            assert r.code == 421 and r.enhanced == "4.7.0", f"connection {PER_IP + 1} got {r}"
            assert extra.closed_within(3), "over-limit connection left open after 421"
        except Closed:
            pass        # closing without a banner is allowed too
        for c in conns[:PER_IP]:
            c.expect("EHLO client.e2e.test", 250)
            c.expect("NOOP", 250)
        # a slot freed by QUIT can be used again
        conns[0].expect("QUIT", 221)
        conns[0].close()
        again = _open_with_banner(srv.smtp_port, time.monotonic() + 5)
        conns.append(again)
        again.expect("EHLO client.e2e.test", 250)
    finally:
        for c in conns:
            c.close()
