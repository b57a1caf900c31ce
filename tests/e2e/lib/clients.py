"""Real mail clients (mbsync, offlineimap, fetchmail, getmail, neomutt) and a private
Dovecot, for tests/e2e/test_imap_clients.py.

Every client runs with HOME pointing at a fresh directory of the test, its
configuration passed explicitly, stdin closed (or a pty for neomutt) and a time
limit, so nothing reads or writes a real user's configuration and a hung client
fails the test instead of the suite.
"""
from __future__ import annotations

import base64
import hashlib
import os
import pty
import pwd
import re
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from lib.varan import CLEANUPS, HOST, port_open

CLIENT_TIMEOUT = 45      # seconds for one client run


# ------------------------------------------------------------------ running clients
def client_env(home: Path, **extra) -> dict:
    """A minimal environment with HOME (and XDG dirs) inside the test's directory."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
    env.update(extra)
    return env


def run_client(cmd: list, home: Path, timeout: float = CLIENT_TIMEOUT, ok_codes=(0,),
               **env_extra) -> subprocess.CompletedProcess:
    """Runs a client with HOME=home; asserts its exit code is in ok_codes and shows both
    streams when it is not (or when it does not end within `timeout`)."""
    cmd = [str(c) for c in cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, env=client_env(home, **env_extra), cwd=home,
                           start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{cmd[0]} did not finish within {timeout} s: {' '.join(cmd)}\n"
                             f"--- stdout ---\n{e.stdout}\n--- stderr ---\n{e.stderr}") from None
    if p.returncode not in ok_codes:
        raise AssertionError(f"{cmd[0]} exited with {p.returncode} (expected {ok_codes}): {' '.join(cmd)}\n"
                             f"--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}")
    return p


_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|\([0-9A-B]|[=>])")


def screen_text(raw: bytes) -> str:
    """Terminal output with escape sequences removed (for failure messages)."""
    return _ANSI.sub(b"", raw).replace(b"\r", b"\n").decode("utf-8", "replace")


def run_in_pty(cmd: list, home: Path, timeout: float = CLIENT_TIMEOUT) -> tuple[int, bytes]:
    """Runs a full-screen program (neomutt) on a pseudo-terminal of 120x40 with nobody
    typing; returns (exit status, everything it drew). Killed (and an AssertionError
    raised) when it has not exited within `timeout`."""
    env = client_env(home, TERM="xterm", COLUMNS="120", LINES="40")
    pid, fd = pty.fork()
    if pid == 0:                                    # child
        try:
            os.chdir(home)
            os.execvpe(str(cmd[0]), [str(c) for c in cmd], env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout
    status = None
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:                     # EIO: the child closed the terminal
                    chunk = b""
                out += chunk
                if chunk:
                    continue
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"{cmd[0]} did not exit within {timeout} s; screen:\n"
                                     + screen_text(out)[-3000:])
    finally:
        os.close(fd)
    return status, out


def require_clean_output(p: subprocess.CompletedProcess, *, allow: tuple[str, ...] = ()) -> None:
    """No line of the client's output reports an error or a warning (except `allow`)."""
    bad = []
    for line in (p.stdout + "\n" + p.stderr).splitlines():
        if re.search(r"\b(error|warning|fail(ed|ure)?)\b", line, re.I) and not any(a in line for a in allow):
            bad.append(line)
    assert not bad, "client reported problems:\n" + "\n".join(bad) + f"\n--- full stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}"


# ------------------------------------------------------------------ helpers
def mutf7(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 5.1.3) of a mailbox name."""
    out, run = [], []

    def flush():
        if run:
            b = base64.b64encode("".join(run).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b.replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cert_sha512(cert_pem: Path) -> str:
    """SHA-512 of the DER certificate (offlineimap's cert_fingerprint)."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.read_text())
    return hashlib.sha512(der).hexdigest()


def maildir_files(md: Path) -> list[Path]:
    """Message files in new/ and cur/ of one Maildir folder (not its subfolders)."""
    out: list[Path] = []
    for sub in ("new", "cur"):
        d = md / sub
        if d.is_dir():
            out.extend(sorted(p for p in d.iterdir() if p.is_file()))
    return out


def maildir_flags(p: Path) -> str:
    """The flag letters of a Maildir file name ("" when it has no :2, info)."""
    _, sep, info = p.name.partition(":2,")
    return info if sep else ""


def files_containing(md: Path, needle: str) -> list[Path]:
    return [p for p in maildir_files(md) if needle.encode() in p.read_bytes()]


def write_local_message(folder: Path, mark: str, host: str = "client.e2e.test", body_lines: int = 0) -> Path:
    """A new message dropped into a client-side Maildir folder's new/ (LF line ends, as
    a local MUA writes them), with `body_lines` extra lines of 64 characters."""
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.P{os.getpid()}Q{time.monotonic_ns()}.{host}"
    data = (f"From: <local@client.e2e.test>\nTo: <someone@bench.test>\nSubject: {mark}\n"
            f"Message-ID: <{mark}@client.e2e.test>\nDate: Mon, 23 Nov 2026 11:00:00 +0000\n\n"
            f"written locally {mark}\n" + f"{mark} {'x' * (63 - len(mark))}\n" * body_lines)
    tmp = folder / "tmp" / name
    tmp.write_text(data)
    dest = folder / "new" / name
    tmp.rename(dest)
    return dest


# ------------------------------------------------------------------ a private Dovecot
class Dovecot:
    """A private Dovecot 2.3 on 127.0.0.1:port (IMAP only, no TLS, PLAIN login), its
    configuration, run and state directories and the Maildirs under one directory in
    /var/tmp (Dovecot's unprivileged processes must reach it, so not under pytest's
    0700 tmp dirs). Users come from a passwd-file; mail is stored as `nobody`,
    in <dir>/mail/<domain>/<local>/Maildir. Nothing of the system's /etc/dovecot is read."""

    def __init__(self, port: int, users: dict[str, str], lmtp_port: int | None = None):
        self.port = port
        self.lmtp_port = lmtp_port
        self.users = users
        self.dir = Path(tempfile.mkdtemp(prefix="varan-e2e-dovecot-", dir="/var/tmp"))
        os.chmod(self.dir, 0o755)
        self.mail = self.dir / "mail"
        self.conf = self.dir / "dovecot.conf"
        self.log = self.dir / "dovecot.log"
        self.pid: int | None = None

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.mail / domain / local / "Maildir"

    def write_config(self) -> None:
        self.mail.mkdir()
        shutil.chown(self.mail, "nobody", "nogroup")
        (self.dir / "users").write_text("".join(f"{u}:{{PLAIN}}{pw}::::::\n" for u, pw in self.users.items()))
        uid = pwd.getpwnam("nobody").pw_uid
        lmtp = "" if self.lmtp_port is None else f"""
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
"""
        self.conf.write_text(f"""\
instance_name = varan-e2e-dovecot-{self.port}
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.log}
protocols = imap{" lmtp" if self.lmtp_port is not None else ""}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = {uid}
last_valid_uid = {uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={self.mail}/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
{lmtp}""")

    def start(self, timeout: float = 15) -> None:
        exe = shutil.which("dovecot") or "/usr/sbin/dovecot"
        self.write_config()
        CLEANUPS.append(self.stop)
        # The master daemonizes; its output goes to a file, a pipe would stay open.
        with open(self.dir / "start.out", "wb") as out:
            code = subprocess.run([exe, "-c", str(self.conf)], stdout=out, stderr=out, timeout=30,
                                  stdin=subprocess.DEVNULL).returncode
        if code != 0:
            raise RuntimeError(f"dovecot did not start ({code}): "
                               f"{(self.dir / 'start.out').read_text(errors='replace')}\n{self.log_text()}")
        deadline = time.monotonic() + timeout
        pidfile = self.dir / "run" / "master.pid"
        while not (pidfile.exists() and port_open(self.port)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot not listening on {HOST}:{self.port} after {timeout} s\n{self.log_text()}")
            time.sleep(0.05)
        self.pid = int(pidfile.read_text().split()[0])

    def stop(self) -> None:
        """Stops the master (it ends its children) and waits until it is gone; the
        directory stays until cleanup()."""
        if self.stop in CLEANUPS:
            CLEANUPS.remove(self.stop)
            CLEANUPS.append(self.cleanup)
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def cleanup(self) -> None:
        self.stop()
        if self.cleanup in CLEANUPS:
            CLEANUPS.remove(self.cleanup)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return "(no dovecot.log)"


# ------------------------------------------------------------------ IMAP state (imaplib)
def _fetch_items(resp) -> list[tuple[bytes, bytes]]:
    """imaplib FETCH data -> [(the response's text outside the literal, the literal)].
    A tuple starts a response with a literal; a bytes part continues it (b")" or the
    items after the literal) or, with no literal open, is a response of its own."""
    items: list[list[bytes]] = []
    open_literal = False
    for part in resp:
        if isinstance(part, tuple):
            items.append([part[0], part[1]])
            open_literal = True
        elif part is None:
            continue
        elif open_literal:
            items[-1][0] += part
            open_literal = False
        else:
            items.append([part, b""])
    return [(a, b) for a, b in items]


def parse_flags(text: bytes) -> frozenset[str]:
    m = re.search(rb"FLAGS \(([^)]*)\)", text)
    assert m, text
    return frozenset(f for f in m.group(1).decode().split() if f != "\\Recent")


def folder_state(c, folder: str, body: bool = False) -> dict:
    """{"uidvalidity", "uidnext", "msgs": {uid: (flags, subject)}} of one folder (its
    Unicode name) and "bodies": {uid: bytes} when body=True; read with EXAMINE, so
    nothing changes (no \\Seen, no \\Recent taken)."""
    typ, data = c.select(quoted(mutf7(folder)), readonly=True)
    assert typ == "OK", f"EXAMINE {folder}: {typ} {data}"
    uidvalidity = int(c.untagged_responses["UIDVALIDITY"][-1])
    uidnext = int(c.untagged_responses["UIDNEXT"][-1])
    count = int(data[0])
    msgs, bodies = {}, {}
    if count:
        items = "(UID FLAGS BODY.PEEK[])" if body else "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
        typ, resp = c.uid("FETCH", "1:*", items)
        assert typ == "OK", resp
        for text, lit in _fetch_items(resp):
            uid = int(re.search(rb"UID (\d+)", text).group(1))
            m = re.search(rb"^Subject: *(.*?)\r?$", lit, re.M | re.I)
            msgs[uid] = (parse_flags(text), m.group(1).decode() if m else "")
            if body:
                bodies[uid] = lit
    assert len(msgs) == count, f"{folder}: EXISTS {count} but FETCH returned {len(msgs)}: {msgs}"
    out = {"uidvalidity": uidvalidity, "uidnext": uidnext, "msgs": msgs}
    if body:
        out["bodies"] = bodies
    return out


def by_subject(state: dict) -> dict[str, frozenset[str]]:
    """subject -> flags of a folder_state()."""
    return {subj: flags for flags, subj in state["msgs"].values()}


def wait_messages(c, folder: str, count: int, timeout: float = 10.0) -> dict:
    """folder_state() once the folder holds at least `count` messages (SMTP delivery
    reaches the Maildir shortly after the 250)."""
    deadline = time.monotonic() + timeout
    while True:
        st = folder_state(c, folder)
        if len(st["msgs"]) >= count or time.monotonic() > deadline:
            assert len(st["msgs"]) >= count, f"{folder}: {len(st['msgs'])} messages, expected {count}"
            return st
        time.sleep(0.05)
