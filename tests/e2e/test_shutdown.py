"""Graceful shutdown: SIGTERM closes idle sessions (421 or close) and exits 0 within
shutdown_grace; a transaction in flight may finish and is delivered."""
import time

import pytest

from lib import maildir as M
from lib.smtp import Closed, RawSMTP, dot_stuff, make_message, marker

GRACE = 2.0
SLACK = 2.0     # process exit and scheduling on a loaded 2-core machine


def _grace(srv):
    srv.set("server", shutdown_grace=f"{GRACE:g}s")


def _new_connection_refused_or_421(port: int) -> str:
    try:
        c = RawSMTP(port, timeout=3)
    except OSError:
        return "refused"
    with c:
        try:
            r = c.reply()
        except (Closed, OSError):
            return "closed"
        return str(r.code)


@pytest.mark.timeout(60)
def test_sigterm_with_idle_session_exits_0_within_grace(varan_factory):
    srv = varan_factory(edit=_grace)
    c = RawSMTP(srv.smtp_port, timeout=GRACE + SLACK + 5)
    c.greet()
    t0 = time.monotonic()
    srv.terminate()
    time.sleep(0.5)
    late = _new_connection_refused_or_421(srv.smtp_port)
    code = srv.wait_exit(GRACE + SLACK + 10)
    elapsed = time.monotonic() - t0
    assert code is not None, f"not exited {GRACE + SLACK + 10:.0f} s after SIGTERM (killed)"
    assert code == 0, f"exit code {code} after SIGTERM"
    assert elapsed <= GRACE + SLACK, f"exited {elapsed:.1f} s after SIGTERM; shutdown_grace is {GRACE} s"
    try:
        r = c.reply()
        assert r.code == 421, f"idle session got {r} on shutdown, expected 421 or close\n{c.dump()}"
        assert c.closed_within(2), "connection left open after 421"
    except Closed:
        pass
    finally:
        c.close()
    assert late in ("refused", "closed", "421"), f"a new connection after SIGTERM got {late}"


@pytest.mark.timeout(60)
def test_sigterm_lets_transaction_in_flight_finish(varan_factory):
    srv = varan_factory(edit=_grace)
    mark = marker("inflight")
    msg = make_message(mark, to="u1@bench.test")
    wire = dot_stuff(msg)
    half = len(wire) // 2
    with RawSMTP(srv.smtp_port, timeout=GRACE + SLACK + 5) as c:
        c.greet()
        c.expect("MAIL FROM:<sender@example.org>", 250)
        c.expect("RCPT TO:<u1@bench.test>", 250)
        c.expect("DATA", 354)
        c.send(wire[:half])
        srv.terminate()
        time.sleep(0.3)
        c.send(wire[half:] + b".\r\n")
        r = c.reply()
        assert r.code == 250, f"a transaction finishing within the grace period got {r}\n{c.dump()}"
        try:
            r = c.cmd("QUIT")
            assert r.code in (221, 421), r
        except (Closed, OSError):
            pass
    code = srv.wait_exit(GRACE + SLACK + 10)
    assert code == 0, f"exit code {code} after SIGTERM"
    # a clean stop leaves every acknowledged message in the Maildir (no replay needed)
    [path] = M.wait_for(srv.maildir("u1@bench.test"), mark, timeout=0.5)
    M.check_delivered(path, msg, "sender@example.org", "u1@bench.test")
