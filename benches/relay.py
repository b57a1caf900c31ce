"""The relay part of benches/compare.sh (issue 4): Varan and Postfix each
relay the same 4 KB messages from 100 client connections to Postfix's
`smtp-sink` on loopback, DKIM-signing every message (Varan itself, Postfix
through a private OpenDKIM milter with the same key and selector).

Per server:
  * fresh state (Varan: new data dir; Postfix: queue emptied), a fresh sink
    that writes every message it receives into a tmpfs directory,
  * `varan-loadtest smtp` sends --relay-messages messages to uN@remote.test
    from sender@bench.test (the client's address is in the relay networks of
    both servers: Varan `smtp.full_allowed_ips`, Postfix `mynetworks`),
  * wait (bounded) until the server's queue is empty and the sink holds every
    accepted message: relayed msgs/s = accepted / (time from the first
    connection until then),
  * server CPU seconds (Postfix: all its processes plus OpenDKIM),
  * a sample of the sink's messages is checked: DKIM-Signature present
    (d=bench.test) and, when the Python `dkim` module is installed, verified
    against the public key.

Not part of the module's public interface: called by compare.py's main with
the compare module itself as `c` (its helpers and classes).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import time

SINK_DIR = "/dev/shm/varan-relay-sink"
# OpenDKIM refuses a key or configuration below a world-writable directory (/var/tmp).
OPENDKIM_DIR = "/run/varan-relay-opendkim"
PEER_PF_ETC = "/var/tmp/peers/pfdc/postfix/etc"
PEER_SPOOL = "/var/tmp/peers/pfdc/postfix/spool"
RELAY_SIZE = 4096
RELAY_CONCURRENCY = 100
SELECTOR = "mail"
TARGET_RELAY_RATIO = 10.0
# Postfix main.cf keys the relay run changes, restored afterwards.
PEER_RELAY_KEYS = ("relayhost", "default_transport", "relay_transport", "smtpd_milters", "non_smtpd_milters",
                   "milter_default_action", "smtp_tls_security_level")


class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port, dumping each message into a
    file under SINK_DIR (tmpfs: the sink's writes cost no disk time)."""

    def __init__(self, c, port):
        self.c, self.port, self.proc = c, port, None

    def start(self):
        shutil.rmtree(SINK_DIR, ignore_errors=True)
        os.makedirs(SINK_DIR)
        os.chmod(SINK_DIR, 0o777)
        if self.c.port_open(self.port):
            raise self.c.Abort(f"127.0.0.1:{self.port} (sink) is already in use")
        cmd = ["smtp-sink"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        # -d: one file per message, named <template><random hex>.
        cmd += ["-d", os.path.join(SINK_DIR, "m."), f"127.0.0.1:{self.port}", "1000"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            if self.c.port_open(self.port):
                return
            time.sleep(0.05)
        raise self.c.Abort("smtp-sink did not start (is the postfix package installed?)")

    def count(self):
        try:
            return len(os.listdir(SINK_DIR))
        except OSError:
            return 0

    def sample(self, n):
        return sorted(glob.glob(os.path.join(SINK_DIR, "m.*")))[:n]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
        shutil.rmtree(SINK_DIR, ignore_errors=True)


def files_below(dirs):
    n = 0
    for d in dirs:
        for _, _, files in os.walk(d):
            n += len(files)
    return n


def dkim_txt_value(c, varan):
    """The TXT record's value from `varan dkim show` (its `Value:` line)."""
    _, out = c.run([varan.bin, "dkim", "show", "bench.test", "--config", varan.config], 60)
    m = re.search(r"(?m)^Value:\s*(v=DKIM1;.*\S)\s*$", out)
    if not m:
        raise c.Abort(f"no TXT value in `varan dkim show` output:\n{out[-500:]}")
    return m.group(1)


def check_signatures(sink, txt_value, n=5):
    """Checks n sink files: signed by d=bench.test, and verified when the
    `dkim` module (dkimpy) is available. Returns a summary dict."""
    files = sink.sample(n)
    res = {"checked": len(files), "signed": 0, "verified": None}
    try:
        import dkim  # dkimpy: scripts/test.sh installs it
    except ImportError:
        dkim = None
    record = txt_value.encode()
    ok = 0
    for path in files:
        with open(path, "rb") as f:
            raw = f.read()
        # smtp-sink's dump: its own X-Client-*/X-*-Args lines, then its
        # Received header and the message as received.
        m = re.search(rb"(?m)^Received: ", raw)
        msg = raw[m.start():] if m else raw
        if re.search(rb"(?mi)^DKIM-Signature:.*?\bd=bench\.test\b", msg, re.S):
            res["signed"] += 1
        if dkim is not None:
            msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            try:
                if dkim.verify(msg, dnsfunc=lambda name, timeout=5: record):
                    ok += 1
            except Exception:  # noqa: BLE001 - a failed verification is the result
                pass
    if dkim is not None:
        res["verified"] = ok
    return res


# ---------------------------------------------------------------- the servers

def varan_prepare(c, varan, sink_port):
    """Relay for 127.0.0.1 to the sink, DKIM key for bench.test."""
    text = c.read_first(varan.config)
    text, n1 = c.sub_in_sections(text, ("smtp",), "full_allowed_ips", '["127.0.0.1/32"]')
    text, n2 = c.sub_in_sections(text, ("outbound",), "smarthost", f'"127.0.0.1:{sink_port}"')
    text, n3 = c.sub_in_sections(text, ("outbound",), "smarthost_tls", '"none"')
    if min(n1, n2, n3) < 1:
        raise c.Abort(f"could not set full_allowed_ips/smarthost/smarthost_tls in {varan.config}")
    with open(varan.config, "w") as f:
        f.write(text)
    c.run([varan.bin, "dkim", "generate", "bench.test", "--selector", SELECTOR, "--config", varan.config], 60)
    varan.settings.update({"smarthost": f"127.0.0.1:{sink_port}", "dkim": f"rsa-2048 selector {SELECTOR}"})


def varan_queue_files(varan):
    q = os.path.join(varan.data_dir, "queue")
    return files_below([os.path.join(q, "incoming"), os.path.join(q, "active")])


def opendkim_start(c, key_file, port):
    """A private OpenDKIM signing for bench.test with the given key."""
    if not shutil.which("opendkim"):
        c.log("installing opendkim (Debian package) for the Postfix relay run")
        c.run(["apt-get", "install", "-y", "-q", "opendkim"], 900,
              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    shutil.rmtree(OPENDKIM_DIR, ignore_errors=True)
    os.makedirs(OPENDKIM_DIR)
    key = os.path.join(OPENDKIM_DIR, "bench.test.key")
    shutil.copy(key_file, key)
    conf = os.path.join(OPENDKIM_DIR, "opendkim.conf")
    with open(conf, "w") as f:
        f.write(f"""Syslog no
Background no
Domain bench.test
Selector {SELECTOR}
KeyFile {key}
Mode s
Canonicalization relaxed/simple
SignatureAlgorithm rsa-sha256
InternalHosts 127.0.0.0/8
Socket inet:{port}@127.0.0.1
PidFile {OPENDKIM_DIR}/opendkim.pid
UMask 007
""")
    # As root OpenDKIM keeps its privileges (no UserID): the key stays 0600 root.
    proc = subprocess.Popen(["opendkim", "-f", "-x", conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(OPENDKIM_DIR, "opendkim.log"), "w"),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        if c.port_open(port):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise c.Abort(f"opendkim did not start:\n{c.read_first(os.path.join(OPENDKIM_DIR, 'opendkim.log'))[-1000:]}")


def postconf(c, settings):
    c.run(["postconf", "-c", PEER_PF_ETC, "-e"] + [f"{k}={v}" for k, v in settings.items()], 60)
    c.run(["postfix", "-c", PEER_PF_ETC, "reload"], 60)


def peer_prepare(c, sink_port, milter_port):
    saved = {}
    for k in PEER_RELAY_KEYS:
        _, out = c.run(["postconf", "-c", PEER_PF_ETC, "-h", k], 60)
        saved[k] = out.strip()
    postconf(c, {"relayhost": f"[127.0.0.1]:{sink_port}", "default_transport": "smtp", "relay_transport": "relay",
                 "smtpd_milters": f"inet:127.0.0.1:{milter_port}", "non_smtpd_milters": f"inet:127.0.0.1:{milter_port}",
                 "milter_default_action": "tempfail", "smtp_tls_security_level": "none"})
    return saved


def peer_queue_files():
    return files_below([os.path.join(PEER_SPOOL, d) for d in ("maildrop", "incoming", "active", "deferred", "hold")])


# ---------------------------------------------------------------- one run

def one_relay(c, args, bin_dir, server, sink, queue_files, cpu_s, workdir, messages):
    tag = "relay-" + server.name.replace("+", "-")
    out_json = os.path.join(workdir, f"{tag}.json")
    out_txt = os.path.join(workdir, f"{tag}.txt")
    cmd = [os.path.join(bin_dir, "varan-loadtest"), "smtp", "--host", "127.0.0.1", "--port", str(server.port),
           "--messages", str(messages), "--size", str(RELAY_SIZE), "--concurrency", str(RELAY_CONCURRENCY),
           "--per-connection", str(args.per_connection), "--users", "1000", "--user-prefix", "u",
           "--domain", "remote.test", "--from", "sender@bench.test", "--threads", str(args.loadgen_threads),
           "--timeout", "30", "--seed", "42", "--quiet", "--json", out_json]
    busy, waited = c.quiet_wait(args.quiet_wait)
    if waited > 2:
        c.log(f"  waited {waited:.0f} s for other work on the machine to settle (now {busy:.2f} CPUs busy)")
    c.log(f"{server.name}: relaying {messages} x 4 KB from {RELAY_CONCURRENCY} connections to smtp-sink, DKIM-signed")
    cpu0 = cpu_s()
    m0 = c.machine_cpu()
    t0 = time.time()
    rc, ru, _ = c.run_bounded(cmd, out_txt, 600)
    t_sent = time.time()
    lt = json.loads(c.read_first(out_json) or "{}")
    accepted = int(lt.get("accepted", 0))
    deadline = t_sent + args.e2e_timeout
    while time.time() < deadline and (queue_files() > 0 or sink.count() < accepted):
        time.sleep(0.1)
    t_done = time.time()
    cpu1 = cpu_s()
    m1 = c.machine_cpu()
    got, left = sink.count(), queue_files()
    elapsed = t_done - t0
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    res = {
        "server": server.name, "messages": messages, "size": RELAY_SIZE, "concurrency": RELAY_CONCURRENCY,
        "command": " ".join(cmd), "loadtest_exit": rc, "accepted": accepted,
        "accepted_per_s": lt.get("throughput_msgs_per_s"), "latency_ms": lt.get("latency_ms"),
        "failures": lt.get("failures", []), "relayed": got, "left_in_queue": left,
        "timed_out": left > 0 or got < accepted, "elapsed_s": round(elapsed, 3),
        "relayed_per_s": round(got / elapsed, 1) if elapsed > 0 else None,
        "drain_after_last_accept_s": round(t_done - t_sent, 3),
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 2),
        "server_cpu_ms_per_msg": round(server_cpu * 1000 / got, 3) if server_cpu and got else None,
        "loadgen_cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "machine_busy_cpu_s": round(m1[0] - m0[0], 2),
        "cpus_busy_before": busy,
    }
    lat = res["latency_ms"] or {}
    c.log(f"  accepted {accepted} ({c.fmt(res['accepted_per_s'])}/s), relayed {got} in {elapsed:.1f} s = "
          f"{c.fmt(res['relayed_per_s'])}/s{' (TIMEOUT: ' + str(left) + ' left in the queue)' if res['timed_out'] else ''}; "
          f"p99 {c.fmt(c.pct(lat, 'p99'), 2)} ms; server cpu {c.fmt(server_cpu, 1)} s")
    return res


def relay_main(c, args, bin_dir, workdir, runs_dir, machine, started, out_dir):
    """Runs the relay comparison; writes relay-results-<date>.json and
    relay-latest.md into out_dir; returns the results."""
    t_start = time.time()
    messages = args.relay_messages
    sink_port = args.port_base + 900
    milter_port = args.port_base + 901
    sink = Sink(c, sink_port)
    res = {"schema": 1, "tool": "benches/compare.sh", "part": "relay", "started": started.isoformat(timespec="seconds"),
           "machine": machine, "varan_build": c.git_info(), "varan": None, "peer": None}
    varan = c.Varan(bin_dir, workdir, args.port_base)
    varan.setup(args.port_base)
    varan_prepare(c, varan, sink_port)
    txt_value = dkim_txt_value(c, varan)
    key_file = os.path.join(os.path.dirname(varan.config), "dkim", "bench.test", f"{SELECTOR}.key")
    m = re.search(r'(?ms)^\[dkim\].*?^directory\s*=\s*"([^"]+)"', c.read_first(varan.config))
    if m:
        key_file = os.path.join(m.group(1), "bench.test", f"{SELECTOR}.key")
    try:
        sink.start()
        varan.start()
        r = one_relay(c, args, bin_dir, varan, sink, lambda: varan_queue_files(varan), varan.cpu_s, runs_dir, messages)
        r["dkim"] = check_signatures(sink, txt_value)
        r["log_events"] = varan.log_events()
        res["varan"] = r
        res["varan_settings"] = varan.settings
    finally:
        varan.stop()
        sink.stop()

    if args.varan_only or os.geteuid() != 0 or not os.access(c.PEER_SCRIPT, os.X_OK):
        c.log("relay: skipping the Postfix peer (--varan-only, not root, or no peer script)")
    else:
        peer = c.Peer(c.PEER_SCRIPT)
        peer.start()
        dkim_proc = None
        saved = None
        try:
            dkim_proc = opendkim_start(c, key_file, milter_port)
            saved = peer_prepare(c, sink_port, milter_port)
            peer.reset()
            sink.start()

            def peer_cpu():
                base = peer.cpu_s()
                own = c.proc_cpu_s(dkim_proc.pid)
                return None if base is None or own is None else base + own

            r = one_relay(c, args, bin_dir, peer, sink, peer_queue_files, peer_cpu, runs_dir, messages)
            r["dkim"] = check_signatures(sink, txt_value)
            r["peer_settings"] = {"relayhost": f"[127.0.0.1]:{sink_port}", "milter": "OpenDKIM (same key)",
                                  "concurrency": "Postfix defaults (default_destination_concurrency_limit 20)"}
            res["peer"] = r
            res["peer_versions"] = c.peer_versions()
        finally:
            sink.stop()
            if saved is not None:
                c.run(["postconf", "-c", PEER_PF_ETC, "-X", "smtpd_milters", "non_smtpd_milters"], 60, check=False)
                postconf(c, {k: v for k, v in saved.items() if k not in ("smtpd_milters", "non_smtpd_milters")})
            if dkim_proc and dkim_proc.poll() is None:
                dkim_proc.terminate()
                dkim_proc.wait(10)
            peer.reset()
            peer.stop()

    v, p = res["varan"], res["peer"]
    ratio = c.ratio(v and v["relayed_per_s"], p and p["relayed_per_s"])
    res["ratio_relayed_per_s"] = None if ratio is None else round(ratio, 2)
    res["wall_s"] = round(time.time() - t_start, 1)
    stamp = started.strftime("%Y-%m-%d")
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, f"relay-results-{stamp}.json")
    with open(jpath, "w") as f:
        json.dump(res, f, indent=1)
    write_markdown(c, res, os.path.join(out_dir, "relay-latest.md"))
    c.log(f"wrote {jpath} and relay-latest.md ({res['wall_s']:.0f} s)")
    return res


def write_markdown(c, res, path):
    rows = []
    for key in ("varan", "peer"):
        r = res.get(key)
        if not r:
            continue
        lat = r.get("latency_ms") or {}
        d = r.get("dkim") or {}
        rows.append(f"| {r['server']} | {r['accepted']} | {c.fmt(r['accepted_per_s'])} | {c.fmt(r['relayed_per_s'])} | "
                    f"{c.fmt(c.pct(lat, 'p50'), 1)} / {c.fmt(c.pct(lat, 'p99'), 1)} | {c.fmt(r['server_cpu_ms_per_msg'], 3)} | "
                    f"{d.get('signed')}/{d.get('checked')} signed, {d.get('verified')} verified | "
                    f"{'TIMEOUT' if r['timed_out'] else 'all relayed'} |")
    ratio = res.get("ratio_relayed_per_s")
    with open(path, "w") as f:
        f.write(f"""# Relay: Varan vs Postfix (generated by benches/compare.sh, {res['started']})

{res['varan'] and res['varan']['messages']} messages of 4 KB from {RELAY_CONCURRENCY} connections, relayed to
Postfix's `smtp-sink` on loopback, DKIM-signed (rsa-sha256, 2048 bits; Postfix through OpenDKIM with the same key).
Relayed/s counts from the first connection until the queue is empty and the sink holds every message.
Build {res['varan_build']}; peer {res.get('peer_versions', 'not run')}.

| server | accepted | accepted/s | relayed/s | p50 / p99 ms (transaction) | server CPU ms/msg | DKIM sample | result |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Varan / Postfix relayed/s: **{ratio if ratio is not None else 'n/a'}** (target ≥ {TARGET_RELAY_RATIO:g}×).
""")
