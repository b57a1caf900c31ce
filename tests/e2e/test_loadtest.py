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
