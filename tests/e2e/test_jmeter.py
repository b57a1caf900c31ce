"""The JMeter sizing plans (loadtest/jmeter) against the real server, run through
loadtest/jmeter/run.sh as an operator would: every sample must succeed, every message
sent must land in the recipient's Maildir, and the IMAP/POP3 plans must read exactly
the messages the mailboxes hold. Each run is a few threads x a few loops with a hard
time limit. Needs Debian's jmeter and jmeter-mail packages (scripts/test.sh installs
them); the module is skipped when they are missing (failed in CI)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lib import maildir as M
from lib.smtp import make_message, send_plain
from lib.varan import REPO, password_for

JMETER_DIR = REPO / "loadtest" / "jmeter"
sys.path.insert(0, str(JMETER_DIR))
import jtl_summary  # noqa: E402

RUN_TIMEOUT = 120                      # seconds, one JMeter run (start-up included)
SENDERS = [f"s{i}@bench.test" for i in range(1, 4)]        # the SMTP plan's users
READERS = [f"r{i}@bench.test" for i in range(1, 4)]        # r1 holds 1 message, r2 2, r3 3
LOCAL = "p1@bench.test"                                    # recipient of the port-25 runs


def _jmeter_missing() -> str | None:
    if os.environ.get("JMETER"):
        return None
    debian = Path("/usr/share/jmeter/bin/ApacheJMeter.jar")
    if debian.is_file():
        if not Path("/usr/share/jmeter/lib/ext/ApacheJMeter_mail.jar").is_file():
            return "jmeter is installed without its mail samplers (Debian package jmeter-mail)"
        return None
    if shutil.which("jmeter"):
        return None
    return "jmeter is not installed (Debian packages jmeter and jmeter-mail; scripts/test.sh installs them)"


@pytest.fixture(scope="module", autouse=True)
def _need_jmeter():
    why = _jmeter_missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="module")
def srv(varan_factory):
    def edit(s):
        # The tls=none variants of the reader plans log in over plain text.
        s.set("imap", auth_without_tls=True)
        s.set("pop3", auth_without_tls=True)

    s = varan_factory(users=SENDERS + READERS + [LOCAL], edit=edit)
    for n, user in enumerate(READERS, start=1):
        for _ in range(n):
            mark = f"jmeter-seed-{uuid.uuid4().hex[:10]}"
            send_plain(s.smtp_port, "seed@example.org", [user], make_message(mark, to=user))
        M.wait_for(s.maildir(user), b"jmeter-seed", count=n)
    return s


def run_plan(plan: str, users: list[str], outdir: Path, *jargs: str) -> dict:
    """run.sh PLAN with a users CSV of `users` (the harness passwords); returns the
    .jtl summary after checking that JMeter finished and every sample succeeded."""
    local = users[0].split("@")[0].rstrip("0123456789")
    cmd = ["bash", str(JMETER_DIR / "run.sh"), plan, "-n", str(len(users)),
           "-u", f"{local}{{i}}@bench.test", "-p", f"pw-{local}{{i}}-Secret1", "-o", str(outdir),
           "-Jhost=127.0.0.1", "-Jduration=90", "-Jrampup=0",
           "-Jjmeterengine.nongui.port=0",          # no UDP shutdown listener on 4445+
           *jargs]
    assert users == [f"{local}{i}@bench.test" for i in range(1, len(users) + 1)]
    assert all(password_for(u) == f"pw-{u.split('@')[0]}-Secret1" for u in users)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{plan}: JMeter did not finish within {RUN_TIMEOUT} s\n{e.stdout}\n{e.stderr}")
    jtls = sorted(outdir.glob(f"{plan}-*.jtl"))
    logs = "\n".join(f.read_text(errors="replace")[-3000:] for f in outdir.glob("*.log"))
    assert jtls, f"{plan}: no .jtl written (exit {p.returncode})\n{p.stdout}\n{p.stderr}\n{logs}"
    summary = jtl_summary.summarize(jtl_summary.read(str(jtls[-1])))
    total = summary["total"]
    assert p.returncode == 0 and total["errors"] == 0, (
        f"{plan} {' '.join(jargs)}: exit {p.returncode}, errors {total['top_errors']}\n{p.stdout}\n{p.stderr}")
    return summary


@pytest.mark.timeout(150)
@pytest.mark.parametrize("tls,port,threads,loops", [
    ("starttls", "submission", 3, 3),
    ("ssl", "smtps", 2, 2),
], ids=["submission-starttls", "smtps"])
def test_smtp_plan_authenticated(srv, tmp_path, tls, port, threads, loops):
    """AUTH as each CSV user over STARTTLS (587) or implicit TLS (465), each message to
    the sender itself: threads x loops accepted and as many files in the Maildirs."""
    tag = f"jmeter-{tls}-{uuid.uuid4().hex[:10]}"
    s = run_plan("smtp", SENDERS, tmp_path, f"-Jtls={tls}", f"-Jport={srv.port(port)}",
                 f"-Jthreads={threads}", f"-Jloops={loops}", f"-Jsubject={tag}", "-Jsize=2048")
    sent = threads * loops
    assert s["total"]["samples"] == sent, s
    files = []
    for u in SENDERS:
        files += M.files_with(srv.maildir(u), f"Subject: {tag}")
    if len(files) < sent:
        files = M.wait_for(srv.maildir_root, f"Subject: {tag}", count=sent, root=True)
    assert len(files) == sent, f"{len(files)} of {sent} messages delivered"
    # CSV lines are handed out in turn: every sender sent some, each to itself.
    for u in SENDERS:
        assert M.files_with(srv.maildir(u), f"Subject: {tag}"), f"{u} received none of its own messages"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("tls", ["none", "starttls"])
def test_smtp_plan_port25_local_recipient(srv, tmp_path, tls):
    """Port 25 without AUTH (plain or STARTTLS) to a local recipient (-Jrcpt)."""
    tag = f"jmeter-mx-{tls}-{uuid.uuid4().hex[:10]}"
    s = run_plan("smtp", SENDERS, tmp_path, f"-Jtls={tls}", f"-Jport={srv.smtp_port}", "-Jauth=false",
                 f"-Jrcpt={LOCAL}", "-Jthreads=2", "-Jloops=3", f"-Jsubject={tag}")
    assert s["total"]["samples"] == 6, s
    assert len(M.wait_for(srv.maildir(LOCAL), f"Subject: {tag}", count=6)) == 6


SEEDED = sum(range(1, len(READERS) + 1))      # 1 + 2 + 3 messages in r1..r3


@pytest.mark.timeout(150)
@pytest.mark.parametrize("proto,tls,port,threads,loops", [
    ("imap", "starttls", "imap", 3, 2),
    ("imap", "ssl", "imaps", 2, 3),
    ("imap", "none", "imap", 1, 3),
    ("pop3", "starttls", "pop3", 3, 1),
    ("pop3", "ssl", "pop3s", 1, 3),
    ("pop3", "none", "pop3", 3, 1),
], ids=lambda v: str(v))
def test_reader_plans_read_every_message(srv, tmp_path, proto, tls, port, threads, loops):
    """The Mail Reader plans read r1..r3's INBOX (1, 2 and 3 messages); threads x loops
    reads hand out the CSV lines in turn, so the messages read add up exactly.
    POP3 runs keep one session per mailbox at a time (the maildrop is locked)."""
    s = run_plan(proto, READERS, tmp_path, f"-Jtls={tls}", f"-Jport={srv.port(port)}",
                 f"-Jthreads={threads}", f"-Jloops={loops}")
    reads = threads * loops
    assert s["total"]["samples"] == reads, s
    assert reads % len(READERS) == 0
    assert s["total"].get("messages_read") == SEEDED * reads // len(READERS), s
    assert s["total"]["bytes"] > 0
