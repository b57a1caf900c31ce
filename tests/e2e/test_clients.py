"""Real SMTP clients against varan: swaks (plain, pipelined, STARTTLS + AUTH, implicit
TLS) and msmtp (STARTTLS + AUTH on 587, implicit TLS on 465)."""
import os
import subprocess

import pytest

from lib import maildir as M
from lib.tools import require_tool
from lib.smtp import marker
from lib.varan import password_for

U1, U2, U3 = "u1@bench.test", "u2@bench.test", "u3@bench.test"


def swaks(srv, port, *extra, to=U1, sender="sender@example.org"):
    exe = require_tool("swaks", "swaks")
    mark = marker("swaks")
    cmd = [exe, "--server", "127.0.0.1", "--port", str(port), "--helo", "client.e2e.test",
           "--from", sender, "--to", to, "--header", f"Subject: {mark}",
           "--body", f"swaks body {mark}", "--timeout", "15", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"swaks exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    [path] = M.wait_for(srv.maildir(to), mark)
    data = path.read_bytes()
    assert f"swaks body {mark}".encode() in data
    assert M.header(data, "Return-Path") == [f"<{sender}>"]
    M.check_size_fields(path)
    return p.stdout


def test_swaks_plain(varan):
    swaks(varan, varan.smtp_port)


def test_swaks_pipelined(varan):
    out = swaks(varan, varan.smtp_port, "--pipeline", to=U2)
    assert "PIPELINING" in out


def test_swaks_starttls_auth_plain_submission(varan):
    out = swaks(varan, varan.submission_port, "--tls", "--auth", "PLAIN",
                "--auth-user", U1, "--auth-password", password_for(U1), sender=U1, to=U3)
    assert "235" in out


def test_swaks_implicit_tls_auth_login(varan):
    swaks(varan, varan.smtps_port, "--tlsc", "--auth", "LOGIN",
          "--auth-user", U2, "--auth-password", password_for(U2), sender=U2, to=U1)


def test_swaks_wrong_password_fails(varan):
    exe = require_tool("swaks", "swaks")
    p = subprocess.run([exe, "--server", "127.0.0.1", "--port", str(varan.submission_port), "--tls",
                        "--auth", "PLAIN", "--auth-user", U1, "--auth-password", "wrong",
                        "--from", U1, "--to", U2, "--timeout", "15"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "535" in p.stdout, p.stdout


MSMTPRC = """\
defaults
logfile {log}
timeout 15

account varan
host 127.0.0.1
port {port}
protocol smtp
domain client.e2e.test
tls on
tls_starttls {starttls}
tls_certcheck off
auth {auth}
user {user}
password {password}
from {user}

account default : varan
"""


@pytest.mark.parametrize("port_name,starttls,auth", [
    ("submission", "on", "plain"),
    ("submission", "on", "login"),
    ("smtps", "off", "plain"),
])
def test_msmtp(varan, tmp_path, port_name, starttls, auth):
    exe = require_tool("msmtp", "msmtp")
    rc = tmp_path / "msmtprc"
    rc.write_text(MSMTPRC.format(log=tmp_path / "msmtp.log", port=varan.port(port_name), starttls=starttls,
                                 auth=auth, user=U3, password=password_for(U3)))
    os.chmod(rc, 0o600)       # msmtp refuses a password file others can read
    mark = marker("msmtp")
    msg = (f"From: {U3}\nTo: {U1}\nSubject: {mark}\nMessage-ID: <{mark}@e2e.test>\n"
           f"Date: Mon, 23 Nov 2026 10:00:00 +0000\n\n"
           f"msmtp body {mark}\n.leading dot\n").encode()
    p = subprocess.run([exe, "-C", str(rc), "-a", "default", U1], input=msg,
                       capture_output=True, timeout=60)
    log = (tmp_path / "msmtp.log").read_text() if (tmp_path / "msmtp.log").exists() else ""
    assert p.returncode == 0, f"msmtp exit {p.returncode}\n{p.stdout!r}\n{p.stderr!r}\n{log}"
    [path] = M.wait_for(varan.maildir(U1), mark)
    data = path.read_bytes()
    assert data.endswith(msg), f"stored:\n{data!r}"      # msmtp sends CRLF; stored LF = what we gave it
    assert M.header(data, "Return-Path") == [f"<{U3}>"]
    M.check_size_fields(path)
