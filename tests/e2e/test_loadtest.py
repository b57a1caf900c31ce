"""varan-loadtest against varan: a small bounded run must be fully accepted and every
message delivered into the Maildirs of u0..u9."""
import json
import time

import pytest

from lib import maildir as M
from lib.varan import loadtest_bin, run

MESSAGES = 300
USERS = [f"u{i}@bench.test" for i in range(10)]


def _find(obj, key):
    """Every value of `key` anywhere in a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and isinstance(v, int):
                yield v
            yield from _find(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find(v, key)


@pytest.mark.timeout(120)
def test_loadtest_smtp_small_run(varan_factory, tmp_path):
    exe = loadtest_bin()
    if not exe.is_file():
        pytest.fail(f"{exe} is missing (cargo build --release --workspace builds it)", pytrace=False)
    srv = varan_factory(users=USERS)
    out = tmp_path / "out.json"
    p = run([exe, "smtp", "--host", "127.0.0.1", "--port", srv.smtp_port, "--messages", MESSAGES,
             "--size", "4k", "--concurrency", 10, "--per-connection", 5, "--users", len(USERS),
             "--domain", "bench.test", "--quiet", "--json", out], timeout=90)
    report = json.loads(out.read_text())
    assert isinstance(report, dict) and report, f"empty JSON report: {out.read_text()!r}"
    accepted = list(_find(report, "accepted"))
    assert accepted and all(a == MESSAGES for a in accepted), f"accepted counts {accepted} in {out}"
    deadline = time.monotonic() + 20
    while True:
        files = M.files_with(srv.maildir_root, b"Subject: varan-loadtest message", root=True)
        if len(files) >= MESSAGES or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(files) == MESSAGES, (f"{len(files)} of {MESSAGES} loadtest messages delivered "
                                    f"(loadtest said:\n{p.stdout}\n{p.stderr})")


IMAP_USERS = 4
IMAP_SEEDED = 6


def _imap_users(srv):
    for i in range(IMAP_USERS):
        srv.add_user(f"u{i}@bench.test", password="pw")


@pytest.mark.timeout(180)
def test_loadtest_imap_pop3_over_tls(varan_factory, tmp_path):
    """seed, the mixed IMAP workload, IDLE and POP3 against varan over implicit TLS
    (IMAPS/POP3S): every run must end with exit 0 and no protocol errors."""
    exe = loadtest_bin()
    if not exe.is_file():
        pytest.fail(f"{exe} is missing (cargo build --release --workspace builds it)", pytrace=False)
    srv = varan_factory(users=[], edit=_imap_users)
    common = ["--host", "127.0.0.1", "--tls", "--users", IMAP_USERS, "--domain", "bench.test", "--password", "pw",
              "--timeout", 20, "--seed", 7, "--quiet"]

    def go(args, name, timeout=60):
        out = tmp_path / f"{name}.json"
        p = run([exe, *args, *common, "--json", out], timeout=timeout, check=False)
        report = json.loads(out.read_text()) if out.is_file() and out.stat().st_size else {}
        assert p.returncode == 0, f"{name}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        assert report.get("protocol_errors") == 0 and report.get("ops", 0) > 0, report
        return report

    seed = go(["seed", "--port", srv.imaps_port, "--messages", IMAP_SEEDED, "--size", "3k"], "seed")
    assert seed["extra"]["appended"] == IMAP_USERS * IMAP_SEEDED
    # Seeding again appends nothing: only missing messages are added.
    assert go(["seed", "--port", srv.imaps_port, "--messages", IMAP_SEEDED], "seed2")["extra"]["appended"] == 0
    mixed = go(["imap", "--port", srv.imaps_port, "--clients", 6, "--duration", 3, "--seeded", IMAP_SEEDED,
                "--session-min", 5, "--session-max", 15], "imap")
    for cmd in ("LOGIN", "SELECT", "FETCH_META", "FETCH_BODY", "STORE", "APPEND", "EXPUNGE", "LOGOUT"):
        assert mixed["commands"].get(cmd, {}).get("ok", 0) > 0, f"{cmd} never succeeded: {mixed['commands']}"
    assert mixed["bytes_fetched"] > 0
    plain = go(["imap", "--port", srv.imaps_port, "--clients", 2, "--duration", 10, "--max-ops", 40, "--seeded",
                IMAP_SEEDED, "--auth-plain"], "imap-plain")
    assert plain["commands"]["LOGIN"]["ok"] >= 2 and plain["ops"] >= 40
    idle = go(["imap", "--port", srv.imaps_port, "--idle", 20, "--duration", 1], "idle")
    assert idle["extra"]["idle"]["held"] == 20
    pop = go(["pop3", "--port", srv.pop3s_port, "--clients", 3, "--duration", 2], "pop3")
    assert pop["commands"]["RETR"]["ok"] > 0
