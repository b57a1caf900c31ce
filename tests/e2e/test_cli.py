"""The varan command line: quickstart, user add/list/passwd/del, dump (secrets masked),
refusal of unknown config keys, first run without any config."""
import os
import shutil
import signal
import smtplib
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from lib.smtp import insecure_tls, smtp
from lib import varan as V
from lib.varan import run

DOMAIN = "bench.test"


@pytest.fixture(scope="module")
def qs(varan_bin, port_base, tmp_path_factory):
    """A quickstarted (not started) server directory, untouched by the harness."""
    d = tmp_path_factory.mktemp("qs")
    p = run([varan_bin, "quickstart", d, "--domain", DOMAIN, "--port-base", port_base])
    return d, p


def cfg_of(d: Path) -> dict:
    with open(d / "varan.toml", "rb") as f:
        return tomllib.load(f)


def users_of(config: Path) -> list[str]:
    out = run([V.varan_bin(), "user", "list", "--config", config]).stdout
    return [l.strip() for l in out.splitlines() if l.strip()]


def test_quickstart_writes_config_and_says_how_to_run(qs, port_base):
    d, p = qs
    out = p.stdout + p.stderr
    conf = d.resolve() / "varan.toml"
    assert str(conf) in out, f"quickstart output does not name {conf}:\n{out}"
    assert "--config" in out, f"quickstart output does not show the run command:\n{out}"
    cfg = cfg_of(d)
    smtp_cfg = cfg["smtp"]

    def ports(key):
        return {int(a.rsplit(":", 1)[1]) for a in smtp_cfg[key]}
    assert ports("listen") == {port_base + 25}
    assert ports("submission_listen") == {port_base + 587}
    assert ports("smtps_listen") == {port_base + 465}
    assert {int(a.rsplit(":", 1)[1]) for a in cfg["admin"]["listen"]} == {port_base + 9999}
    assert [x["name"] for x in cfg["domain"]] == [DOMAIN]
    [dr] = cfg["directory"]
    assert dr["type"] == "json" and dr["domain"] == DOMAIN
    root = Path(cfg["storage"]["maildir_root"])
    assert (root if root.is_absolute() else d / root).resolve().is_relative_to(d.resolve()), "Maildir not under DIR"
    for key in ("certificate", "private_key"):
        f = Path(cfg["tls"][key])
        f = f if f.is_absolute() else d / f
        assert f.is_file() and b"-----BEGIN" in f.read_bytes(), f"{key} {f} is not a PEM file"
    assert cfg["admin"].get("password"), "quickstart set no admin password"


def test_dump_masks_secrets(qs):
    d, _ = qs
    secret = cfg_of(d)["admin"]["password"]
    out = run([V.varan_bin(), "dump", "--config", d / "varan.toml"]).stdout
    assert "********" in out
    assert secret not in out, "dump shows the admin password"
    dumped = tomllib.loads(out)          # the dump is valid TOML ...
    assert dumped["admin"]["password"] == "********"
    assert dumped["smtp"]["listen"] == cfg_of(d)["smtp"]["listen"]   # ... of the same settings


def test_unknown_config_key_is_refused(qs, tmp_path):
    d, _ = qs
    bad = tmp_path / "bad.toml"
    bad.write_text((d / "varan.toml").read_text().replace("[smtp]", "[smtp]\nno_such_setting = 1", 1))
    p = run([V.varan_bin(), "dump", "--config", bad], check=False)
    assert p.returncode != 0, f"unknown key accepted:\n{p.stdout}"
    assert "no_such_setting" in p.stdout + p.stderr, p.stderr


def test_user_add_list_passwd_del(varan_factory):
    srv = varan_factory(users=[], start=False)
    conf = srv.config_path
    a, b = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    srv.add_user(a, "first-Passw0rd")
    srv.add_user(b, "bob-Passw0rd", quota_mb=50)
    assert set(users_of(conf)) >= {a, b}, users_of(conf)
    run([V.varan_bin(), "user", "passwd", a, "--password", "second-Passw0rd", "--config", conf])
    run([V.varan_bin(), "user", "del", b, "--config", conf])
    listed = users_of(conf)
    assert a in listed and b not in listed, listed

    srv.start()

    def login(user, pw):
        with smtp(srv.submission_port) as s:
            s.ehlo()
            s.starttls(context=insecure_tls())
            s.ehlo()
            try:
                s.login(user, pw)
                return True
            except smtplib.SMTPAuthenticationError:
                return False
    assert login(a, "second-Passw0rd"), "new password refused after `user passwd`"
    assert not login(a, "first-Passw0rd"), "old password still works after `user passwd`"
    assert not login(b, "bob-Passw0rd"), "deleted user can still log in"
    with smtp(srv.smtp_port) as s:
        s.ehlo()
        s.mail("sender@example.org")
        code, text = s.rcpt(b)
        assert code == 550 and text.startswith(b"5.1.1"), ("deleted user still receives", code, text)


def test_user_add_quota_recorded(varan_factory):
    srv = varan_factory(users=[], start=False, name="quota")
    srv.add_user(f"carol@{DOMAIN}", "carol-Passw0rd", quota_mb=50)
    assert srv.db_user(f"carol@{DOMAIN}").get("quota_mb") == 50


@pytest.mark.timeout(60)
def test_first_run_without_config_writes_home_config(varan_bin, tmp_path):
    if Path("/etc/varan/varan.toml").exists():
        pytest.skip("/etc/varan/varan.toml exists on this machine")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    log = tmp_path / "first-run.log"
    conf = home / "varan.toml"
    # the generated config uses the default data_dir; remove it afterwards if this test made it
    default_data = Path("/var/lib/varan")
    made_data = not default_data.exists()
    with open(log, "wb") as out:
        p = subprocess.Popen([str(varan_bin)], cwd=home, env=env, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if conf.is_file() and str(conf) in log.read_text(errors="replace"):
                break
            if p.poll() is not None and not conf.is_file():
                break
            time.sleep(0.1)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        if made_data and default_data.exists():
            shutil.rmtree(default_data, ignore_errors=True)
    text = log.read_text(errors="replace")
    assert conf.is_file(), f"no {conf} written; output:\n{text}"
    assert str(conf) in text, f"the output does not say where the config was written:\n{text}"
    cfg = cfg_of(home)
    pw = cfg.get("admin", {}).get("password", "")
    assert len(pw) >= 12, f"generated admin password {pw!r} is missing or short"
