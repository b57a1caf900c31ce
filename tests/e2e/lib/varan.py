"""Control of a real `varan` process: quickstart, config edits, users, start/stop.

Every server listens on 127.0.0.1 only (quickstart's wildcard listeners are rewritten)
and runs in its own process group, so a kill reaches everything it started.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOMAIN = "bench.test"
HOST = "127.0.0.1"

# Offsets of the listeners from --port-base (the quickstart contract).
PORT_OFFSETS = {
    "smtp": 25, "submission": 587, "smtps": 465,
    "imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "admin": 9999,
}
# The harness moves the admin listener to base+ADMIN_OFFSET so that every port stays
# below the kernel's ephemeral range (32768+), where a client socket could hold it.
ADMIN_OFFSET = 999
# [dns] servers of every test server: nothing listens there unless a test starts
# a DNS server (lib/dns.py) on it, so outbound lookups fail at once (a temporary
# error: the entry is deferred) and never leave loopback.
DNS_OFFSET = 998


def varan_bin() -> Path:
    return Path(os.environ.get("VARAN_BIN", REPO / "target" / "release" / "varan"))


def loadtest_bin() -> Path:
    return Path(os.environ.get("VARAN_LOADTEST_BIN", REPO / "target" / "release" / "varan-loadtest"))


def password_for(address: str) -> str:
    """The password the harness gives every user it creates."""
    return "pw-" + address.split("@")[0] + "-Secret1"


# ------------------------------------------------------------------ TOML writing
def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_dumps(data: dict, prefix: str = "") -> str:
    """Writes the subset of TOML that varan.toml uses (tables, arrays of tables,
    strings, numbers, booleans, arrays of scalars)."""
    out: list[str] = []
    for k, v in data.items():
        if not isinstance(v, dict) and not _is_table_array(v):
            out.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in data.items():
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        if isinstance(v, dict):
            out.append(f"\n[{name}]")
            body = toml_dumps(v, name)
            if body:
                out.append(body)
        elif _is_table_array(v):
            for item in v:
                out.append(f"\n[[{name}]]")
                body = toml_dumps(item, name)
                if body:
                    out.append(body)
    return "\n".join(out).strip("\n") + ("\n" if not prefix else "")


# ------------------------------------------------------------------ helpers
def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run(cmd: list, timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Runs a command, capturing text output; on failure the error shows both streams."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"command failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n"
                             f"--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}")
    return p


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", str(text))
    if not m:
        return 30.0
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


ALL_SERVERS: list["Varan"] = []   # every server of the session, for failure reports
CLEANUPS: list = []               # other things to stop at exit (peer MTAs)


def kill_all() -> None:
    """Last resort at interpreter exit or on SIGTERM: SIGKILL every server still
    running and run the registered cleanups."""
    for s in ALL_SERVERS:
        if s.proc is not None and s.proc.poll() is None:
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    while CLEANUPS:
        try:
            CLEANUPS.pop()()
        except Exception:
            pass


class Varan:
    """One varan instance in its own directory, on ports base+offset."""

    def __init__(self, workdir: Path, port_base: int, domain: str = DOMAIN, name: str = "varan"):
        self.dir = Path(workdir)
        self.port_base = port_base
        self.domain = domain
        self.name = name
        self.config_path = self.dir / "varan.toml"
        self.log_path = self.dir / "varan.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.exit_codes: list[int] = []
        ALL_SERVERS.append(self)

    # -------------------------------------------------------------- ports
    def port(self, what: str) -> int:
        if what == "admin":
            return self.port_base + ADMIN_OFFSET
        return self.port_base + PORT_OFFSETS[what]

    @property
    def dns_port(self) -> int:
        return self.port_base + DNS_OFFSET

    @property
    def smtp_port(self) -> int:
        return self.port("smtp")

    @property
    def submission_port(self) -> int:
        return self.port("submission")

    @property
    def smtps_port(self) -> int:
        return self.port("smtps")

    @property
    def imap_port(self) -> int:
        return self.port("imap")

    @property
    def imaps_port(self) -> int:
        return self.port("imaps")

    @property
    def pop3_port(self) -> int:
        return self.port("pop3")

    @property
    def pop3s_port(self) -> int:
        return self.port("pop3s")

    # -------------------------------------------------------------- CLI
    def cli(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run([varan_bin(), *args], check=check, timeout=timeout)

    def quickstart(self) -> subprocess.CompletedProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.cli("quickstart", self.dir, "--domain", self.domain, "--port-base", self.port_base)
        assert self.config_path.is_file(), f"quickstart wrote no {self.config_path}:\n{p.stdout}{p.stderr}"
        self._localize()
        return p

    def _localize(self) -> None:
        """Loopback-only listeners, admin port below the ephemeral range, a short
        shutdown grace and session logs for the failure reports."""
        def fix(v):
            if isinstance(v, str):
                m = re.fullmatch(r"(?:0\.0\.0\.0|\[::\]|::):(\d+)", v)
                return f"{HOST}:{m.group(1)}" if m else v
            if isinstance(v, list):
                return [fix(x) for x in v]
            if isinstance(v, dict):
                return {k: fix(x) for k, x in v.items()}
            return v

        cfg = fix(self.config)
        cfg.setdefault("admin", {})["listen"] = [f"{HOST}:{self.port('admin')}"]
        server = cfg.setdefault("server", {})
        server["shutdown_grace"] = "5s"
        server["log_sessions"] = True
        cfg.setdefault("dns", {})["servers"] = [f"{HOST}:{self.port_base + DNS_OFFSET}"]
        # Greylisting and authentication security are on by default (seed 002
        # §6.2.1). The modules send from 127.0.0.1 without AUTH and try wrong
        # passwords on purpose, so both are off unless a module turns them on
        # (test_protection.py, test_open_relay.py).
        protection = cfg.setdefault("protection", {})
        protection.setdefault("greylist", {})["enabled"] = False
        protection.setdefault("auth", {})["enabled"] = False
        # The inbound DNS checks (on by default) would wait for that silent DNS
        # port at every MAIL FROM and end of data: off here, and turned on by
        # test_auth_checks.py, which starts a dnsmasq there.
        cfg["checks"] = {"spf": False, "dkim": False, "dmarc": False, "arc": False, "fcrdns": False}
        self.config = cfg

    @property
    def config(self) -> dict:
        with open(self.config_path, "rb") as f:
            return tomllib.load(f)

    @config.setter
    def config(self, cfg: dict) -> None:
        self.config_path.write_text(toml_dumps(cfg))

    def set(self, section: str, **values) -> None:
        """Sets keys of one [section] of varan.toml."""
        cfg = self.config
        cfg.setdefault(section, {}).update(values)
        self.config = cfg

    @property
    def maildir_root(self) -> Path:
        root = Path(self.config["storage"]["maildir_root"])
        return root if root.is_absolute() else self.dir / root

    def maildir(self, address: str) -> Path:
        local, domain = address.rsplit("@", 1)
        return self.maildir_root / domain.lower() / local.lower()

    def user_db_path(self) -> Path:
        dirs = [d for d in self.config.get("directory", []) if d.get("type") == "json"]
        assert dirs, f"no [[directory]] type=\"json\" in {self.config_path}"
        p = Path(dirs[0]["path"])
        return p if p.is_absolute() else self.dir / p

    def user_db(self) -> dict:
        return json.loads(self.user_db_path().read_text())

    def write_user_db(self, db: dict) -> None:
        self.user_db_path().write_text(json.dumps(db, indent=2))

    def add_user(self, address: str, password: str | None = None, quota_mb: int | None = None):
        args = ["user", "add", address, "--password", password or password_for(address)]
        if quota_mb is not None:
            args += ["--quota", str(quota_mb)]
        return self.cli(*args, "--config", self.config_path)

    def db_user(self, address: str) -> dict:
        """The JSON user DB entry of `address` (its login may be stored with or
        without the domain)."""
        local = address.split("@")[0].lower()
        for u in self.user_db().get("users", []):
            if u.get("login", "").lower() in (local, address.lower()):
                return u
        raise AssertionError(f"{address} not in {self.user_db_path()}")

    # -------------------------------------------------------------- process
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, start: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def listener_ports(self) -> list[int]:
        ports = []
        smtp = self.config.get("smtp", {})
        for key in ("listen", "submission_listen", "smtps_listen"):
            for addr in smtp.get(key, []):
                ports.append(int(str(addr).rsplit(":", 1)[1]))
        return ports

    def start(self, ready_timeout: float = 10.0) -> None:
        assert not self.running, f"{self.name} is already running"
        ports = self.listener_ports()
        # A server just killed (or stopped) may hold its listeners a moment
        # longer: io_uring tears its sockets down after the process is gone.
        deadline = time.monotonic() + 10
        busy = [p for p in ports if port_open(p)]
        while busy and time.monotonic() < deadline:
            time.sleep(0.1)
            busy = [p for p in ports if port_open(p)]
        assert not busy, (f"ports {busy} already accept connections before {self.name} starts: "
                          "another process (a server left over from an earlier run?) holds them")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== harness: start #{self.starts} of {self.name} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            log_start = log.tell()
            self.proc = subprocess.Popen([str(varan_bin()), "--config", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.dir, start_new_session=True)
        self.wait_ready(ready_timeout, log_start)

    def wait_ready(self, timeout: float, log_start: int) -> None:
        """Waits for the server's own "Varan ready" line, logged once every shard has bound
        every listener. No probe connections: a probe the server has not yet reaped still
        counts against connections_per_ip_max and would make the first test flaky."""
        deadline = time.monotonic() + timeout
        while "Varan ready" not in self.log_text(log_start):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.exit_codes.append(code)
                self.proc = None
                raise AssertionError(f"{self.name} exited with {code} before it was ready; log:\n"
                                     + self.log_text()[-8000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: not ready after {timeout} s; log:\n" + self.log_text()[-8000:])
            time.sleep(0.02)

    @property
    def shutdown_grace(self) -> float:
        return parse_duration(self.config.get("server", {}).get("shutdown_grace", "30s"))

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """Sends SIGTERM (to the whole process group) without waiting."""
        assert self.proc is not None
        self._signal_group(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int | None:
        """Waits for the process to end; returns its exit code, or None (and kills the
        group) when it did not end in time."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
            code = None
        self.exit_codes.append(code)
        self.proc = None
        return code

    def stop(self, check: bool = True) -> int | None:
        """SIGTERM and wait (shutdown_grace + 10 s); asserts a clean exit (0)."""
        if not self.running:
            if self.proc is not None:          # died on its own
                code = self.proc.returncode
                self.exit_codes.append(code)
                self.proc = None
                if check:
                    raise AssertionError(f"{self.name} had already exited with {code}; log tail:\n"
                                         + self.log_text()[-4000:])
                return code
            return None
        grace = self.shutdown_grace
        self.terminate()
        code = self.wait_exit(grace + 10)
        if check:
            assert code is not None, f"{self.name} did not exit within {grace + 10:.0f} s of SIGTERM (killed)"
            assert code == 0, f"{self.name} exited with {code} after SIGTERM; log tail:\n" + self.log_text()[-4000:]
        return code

    def kill9(self) -> None:
        """SIGKILL to the process group, as a crash would."""
        assert self.running
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.exit_codes.append(self.proc.returncode)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __repr__(self) -> str:
        return f"<Varan {self.name} base={self.port_base} dir={self.dir}>"
