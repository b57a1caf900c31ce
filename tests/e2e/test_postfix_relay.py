"""A real MTA relaying into varan: a private Postfix instance on loopback
(scripts/peers/postfix-relay.sh) with relayhost = [127.0.0.1]:<varan smtp port>.
Postfix speaks ESMTP with PIPELINING and, when offered, BDAT; the second case makes
it use STARTTLS (smtp_tls_security_level = encrypt)."""
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from lib import maildir as M
from lib.smtp import marker, send_plain
from lib.tools import require_tool
from lib.varan import CLEANUPS, REPO

SCRIPT = REPO / "scripts" / "peers" / "postfix-relay.sh"
U1 = "u1@bench.test"


class Postfix:
    def __init__(self, port: int, relay_port: int, tls: str):
        # the postfix user must reach the queue: not under pytest's 0700 tmp dirs
        self.dir = Path(tempfile.mkdtemp(prefix="varan-e2e-postfix-", dir="/var/tmp"))
        self.port, self.relay_port, self.tls = port, relay_port, tls

    def sh(self, *args, check=True, timeout=60):
        p = subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"postfix-relay.sh {' '.join(map(str, args))} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}\n{self.maillog()}")
        return p

    def start(self):
        CLEANUPS.append(self.stop)
        self.sh("start", self.dir, self.port, self.relay_port, self.tls)

    def stop(self):
        if self.stop in CLEANUPS:
            CLEANUPS.remove(self.stop)
        self.sh("stop", self.dir, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def maillog(self) -> str:
        try:
            return (self.dir / "maillog").read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return "(no maillog)"


@pytest.fixture(params=["none", "encrypt"], ids=["plain", "starttls"])
def postfix(request, varan):
    require_tool("postfix", "postfix")
    pf = Postfix(varan.port_base + 525 + (request.param_index), varan.smtp_port, request.param)
    try:
        pf.start()
    except Exception:
        pf.stop()
        raise
    yield pf
    pf.stop()


@pytest.mark.timeout(90)
def test_postfix_relays_into_varan_maildir(varan, postfix):
    mark = marker(f"postfix-{postfix.tls}")
    msg = (f"From: <sender@example.org>\r\nTo: <{U1}>\r\nSubject: {mark}\r\n"
           f"Message-ID: <{mark}@e2e.test>\r\n\r\nrelayed by postfix {mark}\r\n.dot line\r\n").encode()
    assert send_plain(postfix.port, "sender@example.org", [U1], msg) == {}
    deadline = time.monotonic() + 30
    found = []
    while time.monotonic() < deadline and not found:
        found = M.files_with(varan.maildir(U1), mark)
        time.sleep(0.2)
    assert found, (f"not delivered into {varan.maildir(U1)} within 30 s; postfix queue:\n"
                   f"{postfix.sh('queue', postfix.dir, check=False).stdout}\nmaillog:\n{postfix.maillog()}")
    assert len(found) == 1
    data = found[0].read_bytes()
    body = f"relayed by postfix {mark}\n.dot line\n".encode()
    assert data.endswith(b"\n\n" + body), f"body changed on the way:\n{data!r}"
    assert M.header(data, "Return-Path") == ["<sender@example.org>"]
    received = M.header(data, "Received")
    assert len(received) >= 2 and "relay.e2e.test" in " ".join(received), received
    assert "status=sent" in postfix.maillog()
    M.check_size_fields(found[0])
