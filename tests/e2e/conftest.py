"""End-to-end fixtures: the real `varan` binary on 127.0.0.1.

Nothing is built here: scripts/test.sh builds target/release/varan first (or set
VARAN_BIN). Each test module gets its own port range (VARAN_E2E_PORT_BASE, default
3000, plus 1000 per module: room for 28 modules below the ephemeral range at 32768),
so listeners never collide with another module's left-overs or with a developer's
server on the quickstart example's 20000.
Every server is stopped at the end of its module, even on failure; on a failed
test the stderr of the servers it used is attached to the report.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lib import varan as V  # noqa: E402

DEFAULT_TIMEOUT = 120            # seconds per test phase (setup, call, teardown)
PORT_BASE = int(os.environ.get("VARAN_E2E_PORT_BASE", "3000"))
PORT_STEP = 1000
USERS = [f"u{i}@{V.DOMAIN}" for i in range(1, 6)]   # u1..u5, created in every server


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): time limit of each phase of the test")
    # Servers run in their own sessions, so a signal to pytest's process group does not
    # reach them: kill whatever is still running when pytest ends or is terminated.
    atexit.register(V.kill_all)

    def on_sigterm(signum, frame):
        V.kill_all()
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)


# ------------------------------------------------------------------ time limits
class PhaseTimeout(Exception):
    pass


def _alarm(seconds: float, what: str):
    def handler(signum, frame):
        raise PhaseTimeout(f"{what} took longer than {seconds:.0f} s (test time limit)")
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _phase_limit(item) -> float:
    m = item.get_closest_marker("timeout")
    return float(m.args[0]) if m else DEFAULT_TIMEOUT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item.stash[_marks_key] = {id(s): s.log_size() for s in V.ALL_SERVERS}
    _alarm(_phase_limit(item) + 60, f"setup of {item.nodeid}")   # + server start, user creation
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _alarm(_phase_limit(item), item.nodeid)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    _alarm(_phase_limit(item) + 60, f"teardown of {item.nodeid}")
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# ------------------------------------------------------------------ failure reports
_marks_key = pytest.StashKey[dict]()


def _shorten(text: str, lines: int = 200, width: int = 400) -> str:
    """The end of a server log, each line cut to `width` characters."""
    rows = text.splitlines()
    cut = len(rows) > lines
    rows = [r if len(r) <= width else r[:width - 20] + f" ...(+{len(r) - width + 20} chars)" for r in rows[-lines:]]
    return ("...(earlier lines cut)...\n" if cut else "") + "\n".join(rows)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    marks = item.stash.get(_marks_key, {})
    for s in V.ALL_SERVERS:
        start = marks.get(id(s), 0)
        if s.log_size() <= start and not s.running:
            continue
        text = _shorten(s.log_text(start))
        report.sections.append((f"varan stderr: {s.name} ({s.dir})", text or "(empty)"))


# ------------------------------------------------------------------ binaries and tools
@pytest.fixture(scope="session")
def varan_bin() -> Path:
    p = V.varan_bin()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{p} is missing: build it with `cargo build --release --workspace` "
                    "(scripts/test.sh does) or point VARAN_BIN at a varan binary", pytrace=False)
    return p


# ------------------------------------------------------------------ servers
_module_index: dict[str, int] = {}


@pytest.fixture(scope="module")
def port_base(request) -> int:
    key = request.module.__name__
    k = _module_index.setdefault(key, len(_module_index))
    base = PORT_BASE + PORT_STEP * k
    if base >= 20000:           # 20000 is the quickstart example: a developer's own server may be there
        base += PORT_STEP
    assert base + PORT_STEP <= 32768, "port bases ran into the ephemeral port range; lower VARAN_E2E_PORT_BASE"
    return base


@pytest.fixture(scope="module")
def varan_factory(varan_bin, port_base, tmp_path_factory):
    """make(users=USERS, edit=None, start=True, name=...) -> Varan: quickstarts a server on
    this module's ports, creates the users (password lib.varan.password_for), applies
    edit(server) (config or user DB changes), and starts it. One running at a time per
    module (they share the ports). All are stopped (SIGTERM, exit 0 asserted) at the end."""
    made: list[V.Varan] = []

    def make(users=USERS, edit=None, start=True, name=None) -> V.Varan:
        for s in made:
            if s.running:
                s.stop()
        name = name or f"varan{len(made) + 1}"
        srv = V.Varan(tmp_path_factory.mktemp(name), port_base, name=name)
        made.append(srv)
        srv.quickstart()
        for u in users:
            srv.add_user(u)
        if edit is not None:
            edit(srv)
        if start:
            srv.start()
        return srv

    yield make

    problems = []
    for s in made:
        try:
            s.stop(check=True)
        except AssertionError as e:
            problems.append(f"{s.name}: {e}")
    if problems:
        pytest.fail("server shutdown problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def varan(varan_factory) -> V.Varan:
    """A started server with the quickstart defaults and users u1..u5@bench.test."""
    return varan_factory()
