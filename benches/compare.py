#!/usr/bin/env python3
"""Varan vs Postfix+Dovecot on one machine: the comparison runner behind
benches/compare.sh. Python 3 standard library only.

Per workload (4 KB at 1/10/100 connections, 64 KB at 100; closed loop,
each run lasting --duration seconds), against Varan and then the
Postfix -> LMTP -> Dovecot peer:
  * state reset (Varan: stop, empty mail/ and data/, start; peer: reset),
  * varan-loadtest smtp, the same command line except --port,
  * wait (bounded) until every accepted message is a file under the
    Maildir root's {new,cur}/: end-to-end delivered msgs/s,
  * server CPU seconds and RSS (peak of samples), load generator CPU,
    whole-machine busy CPU (so interference from other processes shows).
Then Varan open loop at half its closed-loop 4 KB/100 delivered rate for
the latency target (and the peer at half of its own rate, for reference).
A probe measures the disk and loopback limits in the same run.

Then (unless --no-imap; --imap runs only this part) IMAP and POP3: both
servers seeded with the same users, password form and messages
(varan-loadtest seed), the mixed IMAP workload at 10/100/1000 clients,
POP3 at 10, IDLE sessions (10,000 on Varan, 1,000 on Dovecot), server
CPU and RSS sampled.

Then (unless --no-relay; --relay runs only this part) relaying: both
servers relay the same 4 KB messages from 100 connections to Postfix's
smtp-sink, DKIM-signed (Postfix through OpenDKIM); benches/relay.py.

Outputs: results-<date>.json, latest.md, throughput.svg, latency.svg,
relay-results-<date>.json, relay-latest.md,
imap-results-<date>.json, imap-latest.md, imap.svg in --out (default
docs/performance; with --quick target/compare-quick).
"""

import argparse
import datetime
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SCRIPT = os.path.normpath(os.path.join(REPO, "..", "shared", "peers", "postfix-dovecot.sh"))
PEER_MAIL = "/var/tmp/peers/mail"
PEER_PORT = 2525
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

WORKLOADS = [  # (label, message size in bytes, connections)
    ("4KB c1", 4096, 1),
    ("4KB c10", 4096, 10),
    ("4KB c100", 4096, 100),
    ("64KB c100", 65536, 100),
]
HALF_RATE_BASE = "4KB c100"

# Targets of the issue (see docs/performance.md).
TARGET_RATIO = 20.0
TARGET_P99_MS = 20.0
TARGET_RSS_MIB = 100.0


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Abort(Exception):
    pass


# ---------------------------------------------------------------- helpers

def run(cmd, timeout, env=None, cwd=None, check=True):
    """Runs cmd with stdout/stderr to a temporary file (never a pipe: the
    peer script leaves daemons holding inherited descriptors, and a pipe
    would then never reach EOF). Returns (rc, output)."""
    import tempfile
    with tempfile.TemporaryFile(mode="w+") as f:
        try:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout,
                               env=env, cwd=cwd)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = None
        f.seek(0)
        out = f.read()
    if check and rc != 0:
        raise Abort(f"{' '.join(cmd)} failed ({'timeout' if rc is None else 'exit ' + str(rc)}):\n{out[-2000:]}")
    return rc, out


def read_first(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def proc_cpu_s(pid):
    """utime+stime (+ reaped children) of a process, in seconds."""
    s = read_first(f"/proc/{pid}/stat")
    if not s:
        return None
    f = s[s.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK_TCK


def proc_rss_mib(pid):
    rss = hwm = None
    for line in read_first(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine from /proc/stat."""
    f = read_first("/proc/stat").splitlines()[0].split()[1:]
    v = [int(x) for x in f[:8]]
    idle = v[3] + v[4]
    return (sum(v) - idle) / CLK_TCK, sum(v) / CLK_TCK


def proc_table():
    """{pid: (comm, ppid, cumulative CPU s incl. reaped children, start time)} of every process."""
    t = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        s = read_first(f"/proc/{e}/stat")
        if not s or ")" not in s:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        f = s[s.rindex(")") + 2:].split()
        # identity = (pid, start time): kworker names change with their work item
        t[int(e)] = (comm, int(f[1]), (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK_TCK, f[19])
    return t


def descendants(table, roots):
    out = set(r for r in roots if r in table)
    changed = True
    while changed:
        changed = False
        for pid, (_, ppid, _, _) in table.items():
            if pid not in out and ppid in out:
                out.add(pid)
                changed = True
    return out


def attribute(before, after, exclude):
    """CPU used during a run by processes other than `exclude` (the server,
    the load generator, this script): user processes by command name, and
    kernel threads (writeback, kworkers, softirq: partly the servers' own
    I/O and network work)."""
    other, kernel = {}, 0.0
    for pid, (comm, ppid, cpu, start) in after.items():
        if pid in exclude:
            continue
        d = cpu - before[pid][2] if pid in before and before[pid][3] == start else cpu
        if d <= 0:
            continue
        if pid == 2 or ppid == 2:
            kernel += d
        else:
            key = re.sub(r"[-/:].*$", "", comm) if comm.startswith("kworker") else comm
            other[key] = other.get(key, 0.0) + d
    top = sorted(other.items(), key=lambda kv: -kv[1])[:5]
    return round(sum(other.values()), 2), round(kernel, 2), [[k, round(v, 2)] for k, v in top]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def count_mail(root, inbox_only=True):
    """Files in every new/ and cur/ below root. inbox_only skips Maildir++
    subfolders (names starting with '.'): the benchmark delivers to INBOX
    only, and walking 5 empty folders per user would cost the servers CPU
    while we poll. The final count of every run walks everything."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        base = os.path.basename(dirpath)
        if base in ("new", "cur"):
            n += len(filenames)
            dirnames[:] = []
            continue
        if inbox_only:
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "tmp"]
    return n


def pct(d, key):
    v = (d or {}).get(key)
    return None if v is None else float(v)


def fmt(v, digits=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "–"
    if digits == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{digits}f}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def raise_limits():
    """Child setup for the server and the load generator: what the
    shipped systemd unit sets (LimitMEMLOCK=infinity, many files)."""
    inf = resource.RLIM_INFINITY
    for res, want in ((resource.RLIMIT_MEMLOCK, inf), (resource.RLIMIT_NOFILE, 65536)):
        try:
            resource.setrlimit(res, (want, want))
        except (ValueError, OSError):
            try:
                _, hard = resource.getrlimit(res)
                resource.setrlimit(res, (hard, hard))
            except (ValueError, OSError):
                pass


class Graveyard:
    """Old mailboxes are renamed into here between runs and deleted only
    after the last measurement. On ext4 without a journal (this machine
    kind) the kernel skips inodes freed in the last 60-360 s when it
    allocates new ones (fs/ext4/ialloc.c: recently_deleted), and with tens
    of thousands just freed every mkdir/creat scans past them: deleting a
    run's mail right before the next run made both servers several times
    slower (perf: find_get_block_common under __ext4_new_inode)."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "graveyard")
        self.n = 0

    def bury(self, path):
        if not os.path.lexists(path):
            return
        os.makedirs(self.dir, exist_ok=True)
        self.n += 1
        try:
            os.rename(path, os.path.join(self.dir, f"{self.n}-{os.path.basename(path.rstrip('/'))}"))
        except OSError:  # another file system: delete after all
            run(["rm", "-rf", "--one-file-system", path], 600)

    def clear(self):
        if os.path.isdir(self.dir):
            run(["rm", "-rf", "--one-file-system", self.dir], 1800, check=False)


GRAVEYARD = None


# ---------------------------------------------------------------- machine and probe

def machine_info(workdir):
    info = {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0))}
    for line in read_first("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
            break
    for line in read_first("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            info["mem_total_mib"] = round(int(line.split()[1]) / 1024)
        if line.startswith("MemAvailable:"):
            info["mem_available_mib"] = round(int(line.split()[1]) / 1024)
    u = os.uname()
    info["kernel"] = f"{u.sysname} {u.release} {u.machine}"
    info["loadavg_at_start"] = read_first("/proc/loadavg").split()[:3]
    # File system and disk holding the work directory (Varan's journal and
    # Maildirs) and the peer's mail.
    best = ("", "", "")
    for line in read_first("/proc/mounts").splitlines():
        dev, mnt, fstype = line.split()[:3]
        if (workdir + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[1]):
            best = (dev, mnt, fstype)
    info["fs"] = {"device": best[0], "mount": best[1], "type": best[2]}
    name = os.path.basename(os.path.realpath(best[0])) if best[0].startswith("/dev/") else ""
    if best[2] == "ext4" and name:
        jbd = os.path.isdir("/proc/fs/jbd2") and any(e.startswith(name + "-") for e in os.listdir("/proc/fs/jbd2"))
        info["fs"]["ext4_journal"] = jbd
        opts = read_first(f"/proc/fs/ext4/{name}/options").split()
        info["fs"]["options"] = " ".join(o for o in opts if o in ("barrier", "nobarrier", "delalloc", "discard")
                                         or o.startswith(("commit=", "data=")))
    blk = f"/sys/class/block/{name}"
    if name and os.path.exists(blk):
        if not os.path.exists(f"{blk}/queue") and os.path.exists(f"{blk}/../queue"):
            blk = f"{blk}/.."
        info["disk"] = {
            "name": name,
            "rotational": read_first(f"{blk}/queue/rotational").strip(),
            "scheduler": read_first(f"{blk}/queue/scheduler").strip(),
            "size_gib": round(int(read_first(f"{blk}/size", "0").strip() or 0) * 512 / 2**30),
            "model": read_first(f"{blk}/device/model").strip() or read_first(f"{blk}/device/vendor").strip() or None,
            "write_cache": read_first(f"{blk}/queue/write_cache").strip(),
        }
    return info


def probe(workdir, seconds):
    """Physical limits: what the disk and loopback can do at all."""
    d = os.path.join(workdir, "probe")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    res = {"seconds_per_test": seconds, "dir": d}
    buf = os.urandom(4096)

    def appends(per_sync):
        path = os.path.join(d, f"append-{per_sync}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        block = buf * per_sync
        n = 0
        lat = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            os.write(fd, block)
            s = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - s)
            n += 1
        el = time.perf_counter() - t0
        os.close(fd)
        os.unlink(path)
        lat.sort()
        return {"syncs_per_s": round(n / el, 1), "records_per_s": round(n * per_sync / el, 1),
                "mb_per_s": round(n * per_sync * 4096 / el / 1e6, 1),
                "fdatasync_ms_p50": round(lat[len(lat) // 2] * 1000, 3)}

    res["fdatasync_4KB_x1"] = appends(1)
    res["fdatasync_4KB_x16"] = appends(16)
    res["fdatasync_4KB_x64"] = appends(64)

    def create_files(tag, workers):
        sub = os.path.join(d, f"files-{tag}")
        os.makedirs(sub)
        stop = time.perf_counter() + seconds
        counter = [0]
        lock = threading.Lock()

        def one_worker(w):
            i = 0
            while time.perf_counter() < stop:
                p = os.path.join(sub, f"{w}-{i}")
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, buf)
                os.fsync(fd)
                os.close(fd)
                i += 1
            with lock:
                counter[0] += i

        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(one_worker, range(workers)))
        el = time.perf_counter() - t0
        GRAVEYARD.bury(sub)
        return {"files_per_s": round(counter[0] / el, 1), "in_flight": workers}

    # Inode allocation alone (no data, no fsync): sensitive to recently
    # freed inodes on ext4 without a journal (see Graveyard).
    sub = os.path.join(d, "empty")
    os.makedirs(sub)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min(seconds, 1.0) and n < 20000:
        os.close(os.open(os.path.join(sub, str(n)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        n += 1
    res["create_empty_file"] = {"files_per_s": round(n / (time.perf_counter() - t0), 1)}
    GRAVEYARD.bury(sub)

    res["create_write4KB_fsync_serial"] = create_files("serial", 1)
    res["create_write4KB_fsync_32"] = create_files("32", 32)

    # A Maildir delivery done by the book (Dovecot's default): tmp/ file,
    # write, fsync, rename into new/, fsync new/.
    md = os.path.join(d, "maildir")
    for s in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, s))
    dfd = os.open(os.path.join(md, "new"), os.O_RDONLY | os.O_DIRECTORY)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tmp = os.path.join(md, "tmp", str(n))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, buf)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, os.path.join(md, "new", str(n)))
        os.fsync(dfd)
        n += 1
    el = time.perf_counter() - t0
    os.close(dfd)
    res["maildir_fsync_by_the_book_serial"] = {"msgs_per_s": round(n / el, 1)}

    # Loopback TCP bandwidth: one connection, 1 MiB writes.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    chunk = os.urandom(1 << 20)
    done = threading.Event()

    def sender():
        try:
            while not done.is_set():
                cli.sendall(chunk)
        except OSError:
            pass
        finally:
            cli.close()

    th = threading.Thread(target=sender, daemon=True)
    got = 0
    rbuf = bytearray(1 << 20)
    th.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        k = conn.recv_into(rbuf)
        if k == 0:
            break
        got += k
    el = time.perf_counter() - t0
    done.set()
    conn.close()
    srv.close()
    th.join(5)
    res["loopback_tcp_one_stream"] = {"mb_per_s": round(got / el / 1e6, 1), "gbit_per_s": round(got * 8 / el / 1e9, 2)}

    # One core's raw speed, comparable across machines.
    import hashlib
    data = os.urandom(1 << 20)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min(seconds, 1.0):
        hashlib.sha256(data).digest()
        n += 1
    res["sha256_one_core_mb_per_s"] = round(n * len(data) / (time.perf_counter() - t0) / 1e6, 1)
    GRAVEYARD.bury(d)
    return res


# ---------------------------------------------------------------- servers

class Varan:
    name = "varan"

    def __init__(self, bin_dir, workdir, port_base):
        self.bin = os.path.join(bin_dir, "varan")
        self.dir = os.path.join(workdir, "varan")
        self.port = port_base + 25
        self.config = os.path.join(self.dir, "varan.toml")
        self.proc = None
        self.log_path = None
        self.log_offset = 0
        self.mail_root = os.path.join(self.dir, "mail")
        self.data_dir = os.path.join(self.dir, "data")
        self.starts = 0
        self.settings = {}

    def setup(self, port_base):
        GRAVEYARD.bury(self.dir)
        os.makedirs(os.path.dirname(self.dir), exist_ok=True)
        for p in range(port_base + 25, port_base + 26):
            if port_open(p):
                raise Abort(f"127.0.0.1:{p} is already in use (another Varan, e.g. scripts/run-demo.sh?); "
                            f"stop it or pass --port-base")
        run([self.bin, "quickstart", self.dir, "--domain", "bench.test", "--port-base", str(port_base),
             "--listen", "127.0.0.1"], 60)
        text = read_first(self.config)
        # The load generator opens up to --concurrency connections from one
        # IP (and, with one message per connection, briefly more while
        # closed ones are released); the defaults 100/20 would refuse it.
        text, n1 = sub_in_sections(text, ("smtp", "imap", "pop3"), "connections_max", 2000)
        text, n2 = sub_in_sections(text, ("smtp", "imap", "pop3"), "connections_per_ip_max", 2000)
        # Every service's limits ([smtp], [imap], [pop3]) get the same room.
        if n1 < 1 or n2 < 1:
            raise Abort(f"could not find connections_max/connections_per_ip_max in {self.config}")
        # Greylisting (on by default, seed 002) would answer every unauthenticated
        # load-generator RCPT with 451; the comparison measures delivery, not it.
        text, n3 = sub_in_sections(text, (r"protection\.greylist",), "enabled", "false")
        if n3 < 1:
            raise Abort(f"could not find [protection.greylist] enabled in {self.config}")
        # The inbound DNS checks (SPF/DKIM/DMARC/ARC/FCrDNS, on by default) would
        # ask the system resolver about the load generator's sender domain at
        # every MAIL FROM; the peer runs none either. Measuring Varan with them
        # on and answers cached is a separate workload (issue 5).
        n4 = 0
        for key in ("spf", "dkim", "dmarc", "arc", "fcrdns"):
            text, n = sub_in_sections(text, ("checks",), key, "false")
            n4 += n
        if n4 < 5:
            raise Abort(f"could not turn the [checks] off in {self.config}")
        with open(self.config, "w") as f:
            f.write(text)
        m = re.search(r'(?ms)^\[\[directory\]\].*?^path\s*=\s*"([^"]+)"', text)
        if not m:
            raise Abort(f"no [[directory]] path in {self.config}")
        users_path = m.group(1)
        m = re.search(r'(?m)^maildir_root\s*=\s*"([^"]+)"', text)
        self.mail_root = m.group(1) if m else self.mail_root
        m = re.search(r'(?m)^data_dir\s*=\s*"([^"]+)"', text)
        self.data_dir = m.group(1) if m else self.data_dir
        # One real Argon2id hash from `varan user add`, reused for all 1,000
        # users (each `user add` would rewrite the whole file).
        run([self.bin, "user", "add", "u0@bench.test", "--password", "pw", "--config", self.config], 60)
        db = json.loads(read_first(users_path))
        pw_hash = db["users"][0]["password"]
        db = {"users": [{"login": f"u{i}", "password": pw_hash} for i in range(1000)], "groups": []}
        tmp = users_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(db, f)
        os.replace(tmp, users_path)
        for key in ("connections_max", "connections_per_ip_max", "checkpoint_interval", "spool_memory_max",
                    "io_memory", "log_level", "shards"):
            m = re.search(rf'(?m)^{key}\s*=\s*(.+)$', text)
            if m:
                self.settings[key] = m.group(1).strip().strip('"')
        self.settings["users"] = 1000

    def start(self):
        t0 = time.time()
        for d in (self.mail_root, self.data_dir):
            GRAVEYARD.bury(d)
            os.makedirs(d)
        # Write back the previous run's data now, not during the next run.
        os.sync()
        self.cleanup_s = round(time.time() - t0, 2)
        self.starts += 1
        self.log_path = os.path.join(self.dir, f"varan-{self.starts}.log")
        logf = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.bin, "--config", self.config], stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=raise_limits, start_new_session=True)
        logf.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Abort(f"varan exited at start (rc {self.proc.returncode}):\n{read_first(self.log_path)[-2000:]}")
            if "Varan ready" in read_first(self.log_path) and port_open(self.port):
                return
            time.sleep(0.05)
        raise Abort(f"varan not ready within 20 s:\n{read_first(self.log_path)[-2000:]}")

    def stop(self):
        """SIGTERM, wait up to 20 s, then SIGKILL. Returns (seconds, how)."""
        if self.proc is None:
            return 0.0, "not running"
        p, self.proc = self.proc, None
        if p.poll() is not None:
            return 0.0, f"had exited (rc {p.returncode})"
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
            return time.time() - t0, "sigterm"
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            return time.time() - t0, "sigkill after 20 s"

    def reset(self):
        self.stop_info = self.stop()
        self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self, table):
        return {self.proc.pid} if self.alive() else set()

    def limits(self):
        out = {}
        if self.alive():
            for line in read_first(f"/proc/{self.proc.pid}/limits").splitlines():
                if line.startswith(("Max locked memory", "Max open files")):
                    parts = line.split()
                    out[" ".join(parts[:3])] = parts[3]
        return out

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid) if self.alive() else None

    def rss(self):
        if not self.alive():
            return None
        rss, hwm = proc_rss_mib(self.proc.pid)
        return {"rss_mib": rss, "hwm_mib": hwm, "procs": 1}

    def log_events(self):
        """WARN/ERROR/panic lines of the current log (first 20, with counts)."""
        text = read_first(self.log_path) if self.log_path else ""
        counts = {}
        for line in text.splitlines():
            if re.search(r"\b(WARN|ERROR)\b|panick|overflow|fatal|abort", line) and "RLIMIT_MEMLOCK" not in line:
                key = re.sub(r"^\S+Z\s+", "", line)  # drop the timestamp
                key = re.sub(r"\d+", "N", key)[:300]
                counts[key] = counts.get(key, 0) + 1
        return [{"line": k, "count": v} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:20]]


class Peer:
    name = "postfix+dovecot"

    def __init__(self, script):
        self.script = script
        self.port = PEER_PORT
        self.mail_root = PEER_MAIL
        self.started_by_us = False
        self.env = dict(os.environ, DOVECOT_PERF="1")

    def sh(self, cmd, timeout=120):
        return run([self.script, cmd], timeout, env=self.env)[1]

    def start(self):
        status = self.sh("status", 60)
        if "postfix: running" in status and "dovecot: running (DOVECOT_PERF=1)" in status:
            log("peer already running in performance mode; reusing it (it is left running at the end)")
            return
        if "running" in status.replace("stopped", ""):
            log("peer running in another mode; restarting it with DOVECOT_PERF=1")
            self.sh("stop", 120)
        log("starting Postfix+Dovecot (DOVECOT_PERF=1; installs packages on first use)")
        out = self.sh("start", 900)
        self.started_by_us = True
        log(out.strip().splitlines()[-1] if out.strip() else "peer started")

    def stop(self):
        if self.started_by_us:
            self.sh("stop", 120)
            self.started_by_us = False

    def reset(self):
        t0 = time.time()
        if os.path.isdir(self.mail_root):
            for e in os.listdir(self.mail_root):
                GRAVEYARD.bury(os.path.join(self.mail_root, e))
        self.sh("reset", 300)
        self.stop_info = (0.0, "reset")
        os.sync()
        self.cleanup_s = round(time.time() - t0, 2)
        # Let Postfix notice the emptied queue before the next run.
        time.sleep(1)

    def alive(self):
        return port_open(self.port)

    def cpu_s(self):
        try:
            return float(self.sh("cpu", 60).strip().splitlines()[-1])
        except (ValueError, IndexError, Abort):
            return None

    def rss(self):
        try:
            line = self.sh("rss", 60).strip().splitlines()[-1]
        except (IndexError, Abort):
            return None
        m = re.search(r"procs=(\d+) rss_mib=([\d.]+) pss_mib=([\d.]+)", line)
        if not m:
            return None
        return {"procs": int(m.group(1)), "rss_mib": float(m.group(2)), "pss_mib": float(m.group(3)),
                "detail": line.split("|", 1)[-1].strip()}

    def log_events(self):
        return []

    def pids(self, table):
        roots = []
        for f in ("/var/tmp/peers/pfdc/postfix/spool/pid/master.pid", "/var/tmp/peers/pfdc/dovecot/run/master.pid"):
            try:
                roots.append(int(read_first(f).split()[0]))
            except (ValueError, IndexError):
                pass
        return descendants(table, roots)


# ---------------------------------------------------------------- one run

class Sampler(threading.Thread):
    """Samples the server's RSS every `every` seconds while a run lasts."""

    def __init__(self, server, every):
        super().__init__(daemon=True)
        self.server, self.every = server, every
        self.samples = []
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            r = self.server.rss()
            if r:
                t0 = getattr(self, "t0", None)
                if t0 is not None:
                    r["t"] = round(time.time() - t0, 2)
                self.samples.append(r)
            self.stop_ev.wait(self.every)

    def finish(self):
        self.stop_ev.set()
        self.join(30)
        return self.samples


def loadtest(args, bin_dir, out_json, port, size, conc, rate=None, duration=None):
    cmd = [os.path.join(bin_dir, "varan-loadtest"), "smtp", "--host", "127.0.0.1", "--port", str(port),
           "--messages", str(10_000_000), "--duration", str(duration or args.duration), "--size", str(size),
           "--concurrency", str(conc), "--per-connection", str(args.per_connection),
           "--users", "1000", "--user-prefix", "u", "--domain", "bench.test",
           "--threads", str(args.loadgen_threads), "--timeout", "30", "--seed", "42",
           "--quiet", "--json", out_json]
    if rate:
        cmd += ["--rate", f"{rate:.1f}"]
    return cmd


def quiet_wait(max_wait, threshold=0.25):
    """Waits (at most max_wait s) until the machine's other work uses less
    than `threshold` of one CPU over a 1 s sample; returns the last sample
    (CPUs busy) and the seconds waited."""
    t0 = time.time()
    while True:
        b0 = machine_cpu()[0]
        time.sleep(1.0)
        busy = machine_cpu()[0] - b0
        if busy < threshold or time.time() - t0 >= max_wait:
            return round(busy, 2), round(time.time() - t0, 1)


WARMUP_MESSAGES = 2


def warm_up(args, bin_dir, server, workdir):
    """Two messages, one after the other, each to all 1,000 users, so every
    mailbox exists before the measurement, as on a server with 1,000
    existing users (Varan creates INBOX + 5 special folders per user on
    first delivery, Dovecot its Maildir). The second message makes Varan
    write each user's maildirsize: its quota recalculation during the first
    one sees the folders change under it and does not write the file.
    Returns seconds taken."""
    t0 = time.time()
    out = os.path.join(workdir, f"warmup-{server.name.replace('+', '-')}.json")
    cmd = [os.path.join(bin_dir, "varan-loadtest"), "smtp", "--port", str(server.port), "--messages", str(WARMUP_MESSAGES),
           "--concurrency", "1", "--rcpts-per-message", "1000", "--users", "1000", "--domain", "bench.test",
           "--size", "4096", "--seed", "1", "--quiet", "--json", out]
    rc, text = run(cmd, 120, check=False)
    lt = json.loads(read_first(out) or "{}")
    want = WARMUP_MESSAGES * 1000
    if lt.get("accepted") != WARMUP_MESSAGES:
        raise Abort(f"{server.name}: warm-up messages to 1,000 recipients not accepted (rc {rc}):\n{text[-1500:]}")
    deadline = time.time() + 120
    while count_mail(server.mail_root) < want and time.time() < deadline:
        time.sleep(0.25)
    n = count_mail(server.mail_root, inbox_only=False)
    if n < want:
        raise Abort(f"{server.name}: warm-up delivered only {n} of {want} copies within 120 s")
    return round(time.time() - t0, 2)


def one_run(args, bin_dir, server, label, size, conc, rate=None, workdir=".", duration=None):
    duration = duration or args.duration
    server.reset()
    warm = None if args.no_warmup else warm_up(args, bin_dir, server, workdir)
    os.sync()
    busy_before, waited = quiet_wait(args.quiet_wait)
    if waited > 2:
        log(f"  waited {waited:.0f} s for other work on the machine to settle (now {busy_before:.2f} CPUs busy)")
    if not server.alive():
        raise Abort(f"{server.name} is not accepting connections on port {server.port}")
    tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{server.name}-{label}{'-rate' if rate else ''}").strip("-")
    out_json = os.path.join(workdir, f"{tag}.json")
    out_txt = os.path.join(workdir, f"{tag}.txt")
    cmd = loadtest(args, bin_dir, out_json, server.port, size, conc, rate, duration)
    log(f"{server.name}: {label}{f' open loop at {rate:.0f}/s' if rate else ''} for {duration:g} s")
    base = count_mail(server.mail_root, inbox_only=False)
    cpu0 = server.cpu_s()
    pt0 = proc_table()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    m0 = machine_cpu()
    sampler = Sampler(server, 2.0 if isinstance(server, Peer) else 0.5)
    sampler.start()
    t0 = time.time()
    # Bounded: the run stops starting messages after --duration, every
    # in-flight step is bounded by --timeout 30.
    loadtest_exit, ru, loadtest_pid = run_bounded(cmd, out_txt, duration + 120)
    t_sent = time.time()
    lt = json.loads(read_first(out_json) or "{}")
    accepted = int(lt.get("accepted", 0))
    # End to end: until every accepted message is a file in new/ or cur/.
    want = base + accepted
    got = count_mail(server.mail_root)
    e2e_deadline = t_sent + args.e2e_timeout
    while got < want and time.time() < e2e_deadline:
        time.sleep(0.25)
        got = count_mail(server.mail_root)
    t_done = time.time()
    got_all = count_mail(server.mail_root, inbox_only=False)
    cpu1 = server.cpu_s()
    m1 = machine_cpu()
    pt1 = proc_table()
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    harness = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    exclude = server.pids(pt1) | server.pids(pt0) | {os.getpid(), loadtest_pid}
    other_cpu, kernel_cpu, top_other = attribute(pt0, pt1, exclude)
    samples = sampler.finish()
    rss_end = server.rss()
    delivered = got_all - base
    timed_out = got < want
    e2e_s = t_done - t0
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    loadgen_cpu = ru.ru_utime + ru.ru_stime
    machine_busy = m1[0] - m0[0]
    peak = max((s["rss_mib"] for s in samples if s.get("rss_mib") is not None), default=None)
    res = {
        "label": label, "server": server.name, "size": size, "concurrency": conc,
        "per_connection": args.per_connection, "open_loop_rate": rate, "duration_target_s": duration,
        "command": " ".join(cmd),
        "loadtest_exit": loadtest_exit,
        "accepted": accepted, "tempfail": lt.get("tempfail"), "permfail": lt.get("permfail"),
        "errors": lt.get("errors"), "timeouts": lt.get("timeouts"), "failures": lt.get("failures", []),
        "accept_elapsed_s": lt.get("elapsed_s"), "accepted_per_s": lt.get("throughput_msgs_per_s"),
        "e2e_s": round(e2e_s, 3), "delivered": delivered, "e2e_timed_out": timed_out,
        "delivered_per_s": round(delivered / e2e_s, 1) if e2e_s > 0 else None,
        "drain_after_last_accept_s": round(t_done - t_sent, 3),
        "latency_ms": lt.get("latency_ms"), "connect_latency_ms": lt.get("connect_latency_ms"),
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 2),
        "server_cpu_ms_per_msg": round(server_cpu * 1000 / delivered, 3) if server_cpu and delivered else None,
        "loadgen_cpu_s": round(loadgen_cpu, 2),
        "machine_busy_cpu_s": round(machine_busy, 2),
        "machine_cpu_s_available": round(e2e_s * len(os.sched_getaffinity(0)), 2),
        "other_cpu_s": None if server_cpu is None else round(machine_busy - server_cpu - loadgen_cpu, 2),
        "other_processes_cpu_s": other_cpu, "other_processes_top": top_other,
        "kernel_threads_cpu_s": kernel_cpu, "harness_cpu_s": round(harness, 2),
        "rss_peak_mib": None if peak is None else round(peak, 1),
        "rss_end": rss_end,
        "server_alive_after": server.alive(),
        "reset": getattr(server, "stop_info", None),
        "cleanup_s": getattr(server, "cleanup_s", None), "warmup_s": warm,
        "cpus_busy_before": busy_before, "quiet_wait_s": waited,
        "log_events": server.log_events(),
        "loadtest": lt,
    }
    if isinstance(server, Varan) and rss_end and rss_end.get("hwm_mib"):
        res["rss_hwm_mib"] = round(rss_end["hwm_mib"], 1)
    if isinstance(server, Peer) and samples:
        res["pss_peak_mib"] = round(max(s.get("pss_mib", 0) for s in samples), 1)
        res["procs_peak"] = max(s.get("procs", 0) for s in samples)
    lat = res["latency_ms"] or {}
    log(f"  accepted {accepted} ({fmt(res['accepted_per_s'])}/s), delivered {delivered} in {e2e_s:.1f} s = "
        f"{fmt(res['delivered_per_s'])}/s{' (E2E TIMEOUT)' if timed_out else ''}; p50 {fmt(pct(lat, 'p50'), 2)} "
        f"p99 {fmt(pct(lat, 'p99'), 2)} ms; failed {accepted and (int(lt.get('attempted', 0)) - accepted)}; "
        f"cpu s: server {fmt(server_cpu, 1)}, loadgen {loadgen_cpu:.1f}, kernel threads {kernel_cpu:.1f}, "
        f"other processes {other_cpu:.1f}{' ' + str(top_other[:3]) if other_cpu > 0.5 else ''}; "
        f"rss peak {fmt(peak, 1)} MiB")
    if not res["server_alive_after"]:
        log(f"  !! {server.name} is not running after the run")
    for ev in res["log_events"][:5]:
        log(f"  log: {ev['count']}× {ev['line'][:200]}")
    return res


def run_server(args, bin_dir, server, workdir):
    runs = []
    for label, size, conc in WORKLOADS:
        if args.only and label not in args.only:
            continue
        runs.append(one_run(args, bin_dir, server, label, size, conc, workdir=workdir))
    half = None
    base = next((r for r in runs if r["label"] == HALF_RATE_BASE), None)
    if base and not args.no_half_rate:
        rate = base.get("delivered_per_s") or base.get("accepted_per_s")
        if rate:
            # Longer than the closed-loop runs: the first ~100 messages of an
            # open-loop run wait for 100 simultaneous connection set-ups,
            # a start-up transient that would otherwise dominate the p99.
            half = one_run(args, bin_dir, server, HALF_RATE_BASE, 4096, 100, rate=rate / 2, workdir=workdir,
                           duration=args.duration * 2)
            half["half_of"] = {"label": HALF_RATE_BASE, "delivered_per_s": rate}
    return {"runs": runs, "half_rate": half}


# ---------------------------------------------------------------- IMAP / POP3

IMAP_WORKLOADS = [("imap c10", 10), ("imap c100", 100), ("imap c1000", 1000)]
POP3_WORKLOADS = [("pop3 c10", 10)]
TARGET_IMAP_RATIO = 5.0
TARGET_IDLE_CONNECTIONS = 10_000
TARGET_IDLE_RSS_MIB = 200.0
PEER_IMAP_PORT, PEER_POP3_PORT = 1143, 1110
PEER_DC = "/var/tmp/peers/pfdc/dovecot"
# Dovecot in "performance mode" serves one IMAP session per imap process:
# IDLE at 10,000 would need 10,000 processes, so the peer's IDLE run is capped.
PEER_IDLE_MAX = 1000


def sub_in_sections(text, sections, key, value):
    """Sets `key = value` wherever the key appears in the given [sections] of a
    TOML text (other sections, e.g. [outbound], keep their own limits);
    returns (text, replacements)."""
    total = 0
    for section in sections:
        m = re.search(rf"(?m)^\[{section}\]\s*$", text)
        if not m:
            continue
        end = re.search(r"(?m)^\[", text[m.end():])
        body_end = m.end() + (end.start() if end else len(text) - m.end())
        body, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text[m.end():body_end])
        total += n
        text = text[:m.end()] + body + text[body_end:]
    return text, total


def imap_ports(server, port_base):
    if isinstance(server, Varan):
        return port_base + 143, port_base + 110
    return PEER_IMAP_PORT, PEER_POP3_PORT


def varan_enable_imap(varan, idle):
    """Plain-text LOGIN on loopback (the peer runs without TLS too) and room
    for the IDLE connections in the generated varan.toml."""
    text = read_first(varan.config)
    room = max(2000, idle + 1000)
    for key in ("connections_max", "connections_per_ip_max", "connections_per_user_max"):
        text, _ = sub_in_sections(text, ("smtp", "imap", "pop3"), key, room)
    for section in ("imap", "pop3"):
        m = re.search(rf"(?m)^\[{section}\]\s*$", text)
        if not m:
            raise Abort(f"no [{section}] section in {varan.config}")
        end = re.search(r"(?m)^\[", text[m.end():])
        body_end = m.end() + (end.start() if end else len(text) - m.end())
        body = text[m.end():body_end]
        if re.search(r"(?m)^auth_without_tls\s*=", body):
            body = re.sub(r"(?m)^auth_without_tls\s*=.*$", "auth_without_tls = true", body)
        else:
            body = "\nauth_without_tls = true" + body
        text = text[:m.end()] + body + text[body_end:]
    with open(varan.config, "w") as f:
        f.write(text)
    varan.settings["imap_auth_without_tls"] = True
    varan.settings["connections_max_imap_run"] = room


def varan_password_hash(varan):
    m = re.search(r'(?ms)^\[\[directory\]\].*?^path\s*=\s*"([^"]+)"', read_first(varan.config))
    db = json.loads(read_first(m.group(1)))
    return db["users"][0]["password"]


def varan_set_password(varan, stored):
    """Every user of Varan's directory gets the stored password `stored`."""
    m = re.search(r'(?ms)^\[\[directory\]\].*?^path\s*=\s*"([^"]+)"', read_first(varan.config))
    db = json.loads(read_first(m.group(1)))
    for u in db["users"]:
        u["password"] = stored
    with open(m.group(1) + ".tmp", "w") as f:
        json.dump(db, f)
    os.replace(m.group(1) + ".tmp", m.group(1))


def peer_imap_prepare(peer, pw_hash, users):
    """Gives the Dovecot peer the same accounts as Varan (the same Argon2id
    PHC hash, Dovecot scheme ARGON2ID), Dovecot's auth cache and enough
    imap processes for 1,000 clients, then restarts Dovecot (Postfix is not
    needed for IMAP/POP3 and keeps running)."""
    scheme_hash = pw_hash if pw_hash.startswith("{") else "{ARGON2ID}" + pw_hash
    with open(os.path.join(PEER_DC, "users"), "w") as f:
        for i in range(users):
            f.write(f"u{i}@bench.test:{scheme_hash}::::::\n")
    conf_path = os.path.join(PEER_DC, "dovecot.conf")
    conf = read_first(conf_path)
    conf = re.sub(r"(?m)^default_process_limit\s*=.*$", "default_process_limit = 1500", conf)
    conf = re.sub(r"(?m)^default_client_limit\s*=.*$", "default_client_limit = 4000", conf)
    conf = re.sub(r"(?m)^auth_cache_.*\n", "", conf)
    conf = conf.replace("passdb {", "auth_cache_size = 10M\nauth_cache_ttl = 1 min\npassdb {", 1)
    with open(conf_path, "w") as f:
        f.write(conf)
    pid_file = os.path.join(PEER_DC, "run", "master.pid")
    try:
        pid = int(read_first(pid_file).split()[0])
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        pass
    run(["dovecot", "-c", conf_path], 60)
    for _ in range(100):
        if port_open(PEER_IMAP_PORT) and port_open(PEER_POP3_PORT):
            return
        time.sleep(0.1)
    raise Abort("Dovecot did not come back after the IMAP configuration")


def run_bounded(cmd, out_txt, limit):
    """Runs the load generator, at most `limit` seconds; returns (exit code, rusage, pid)."""
    with open(out_txt, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=raise_limits)
        deadline = time.time() + limit
        status = ru = None
        while time.time() < deadline:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        if not ru:
            p.kill()
            _, status, ru = os.wait4(p.pid, 0)
            log(f"  load generator did not finish within {limit:g} s; killed")
        return os.waitstatus_to_exitcode(status), ru, p.pid


def session_measure(args, server, label, cmd, out_json, out_txt, limit, count_for_cpu="ops"):
    cpu0 = server.cpu_s()
    m0 = machine_cpu()
    load0 = os.getloadavg()
    sampler = Sampler(server, 1.0 if isinstance(server, Peer) else 0.25)
    sampler.start()
    t0 = time.time()
    sampler.t0 = t0
    rc, ru, _ = run_bounded(cmd, out_txt, limit)
    wall = time.time() - t0
    samples = sampler.finish()
    cpu1 = server.cpu_s()
    m1 = machine_cpu()
    lt = json.loads(read_first(out_json) or "{}")
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    ops = int(lt.get("ops", 0))
    peak = max((s["rss_mib"] for s in samples if s.get("rss_mib") is not None), default=None)
    res = {
        "label": label, "server": server.name, "command": " ".join(cmd), "loadtest_exit": rc,
        "ops": ops, "ops_per_s": lt.get("ops_per_s"), "elapsed_s": lt.get("elapsed_s"),
        "protocol_errors": lt.get("protocol_errors"), "io_errors": lt.get("io_errors"), "timeouts": lt.get("timeouts"),
        "connections": lt.get("connections"), "latency_ms": lt.get("latency_ms"),
        "commands": {k: {"ok": v.get("ok"), "errors": (v.get("protocol_errors") or 0) + (v.get("io_errors") or 0)
                         + (v.get("timeouts") or 0), "p50": pct(v.get("latency_ms"), "p50"),
                         "p99": pct(v.get("latency_ms"), "p99")} for k, v in (lt.get("commands") or {}).items()},
        "failures": (lt.get("failures") or [])[:10],
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 2),
        "server_cpu_ms_per_op": round(server_cpu * 1000 / ops, 4) if server_cpu and ops else None,
        "loadgen_cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "machine_busy_cpu_s": round(m1[0] - m0[0], 2), "wall_s": round(wall, 2),
        "rss_peak_mib": None if peak is None else round(peak, 1),
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "server_alive_after": server.alive(),
        "extra": lt.get("extra"),
        # (seconds since start, RSS MiB), at most ~200 points: shows ramp vs steady state.
        "rss_samples": [[s["t"], s["rss_mib"]] for s in samples[::max(1, len(samples) // 200)] if "t" in s],
    }
    if isinstance(server, Peer) and samples:
        res["pss_peak_mib"] = round(max(s.get("pss_mib", 0) for s in samples), 1)
        res["procs_peak"] = max(s.get("procs", 0) for s in samples)
    lat = res["latency_ms"] or {}
    log(f"  {label}: {ops} ops, {fmt(res['ops_per_s'])} ops/s, protocol errors {res['protocol_errors']}, io errors "
        f"{res['io_errors']}, timeouts {res['timeouts']}; p50 {fmt(pct(lat, 'p50'), 2)} p99 {fmt(pct(lat, 'p99'), 2)} ms;"
        f" cpu s: server {fmt(server_cpu, 1)}, loadgen {res['loadgen_cpu_s']:.1f}; rss peak {fmt(peak, 1)} MiB; "
        f"load {load0[0]:.2f}")
    for fl in res["failures"][:3]:
        log(f"    failure: {fl['count']}× {fl['reason'][:160]}")
    return res


def imap_server(args, bin_dir, server, workdir, port_base):
    """Seed, mixed IMAP at 10/100/1000 clients, POP3, IDLE; one server."""
    imap_port, pop3_port = imap_ports(server, port_base)
    lt = os.path.join(bin_dir, "varan-loadtest")
    tag = server.name.replace("+", "-")
    common = ["--host", "127.0.0.1", "--users", str(args.imap_users), "--user-prefix", "u", "--domain", "bench.test",
              "--password", "pw", "--timeout", "30", "--seed", "42", "--threads", str(args.loadgen_threads)]
    res = {"runs": [], "pop3": [], "idle": None}
    # Seed.
    out = os.path.join(workdir, f"{tag}-imap-seed.json")
    cmd = [lt, "seed", "--port", str(imap_port), "--messages", str(args.imap_messages), "--size", "4096",
           "--concurrency", "8", "--quiet", "--json", out] + common
    log(f"{server.name}: seeding {args.imap_users} users x {args.imap_messages} messages over IMAP APPEND")
    t0 = time.time()
    rc, text = run(cmd, 900, check=False)
    seed = json.loads(read_first(out) or "{}")
    res["seed"] = {"exit": rc, "appended": (seed.get("extra") or {}).get("appended"), "s": round(time.time() - t0, 2),
                   "protocol_errors": seed.get("protocol_errors"), "io_errors": seed.get("io_errors"),
                   "append_ops_per_s": (seed.get("commands") or {}).get("APPEND", {}).get("ops_per_s")}
    log(f"  seeded: {res['seed']}")
    if rc != 0:
        raise Abort(f"{server.name}: seeding failed (rc {rc}):\n{text[-1500:]}")
    os.sync()
    for label, clients in IMAP_WORKLOADS:
        if args.quick and clients > 100:
            continue
        busy, waited = quiet_wait(min(args.quiet_wait, 20.0))
        out = os.path.join(workdir, f"{tag}-{label.replace(' ', '-')}.json")
        cmd = [lt, "imap", "--port", str(imap_port), "--clients", str(clients), "--duration", str(args.imap_duration),
               "--seeded", str(args.imap_messages), "--quiet", "--json", out] + common
        log(f"{server.name}: {label} mixed workload for {args.imap_duration:g} s")
        r = session_measure(args, server, label, cmd, out, out[:-5] + ".txt", args.imap_duration + 120)
        r["cpus_busy_before"], r["quiet_wait_s"] = busy, waited
        res["runs"].append(r)
    for label, clients in POP3_WORKLOADS:
        out = os.path.join(workdir, f"{tag}-{label.replace(' ', '-')}.json")
        cmd = [lt, "pop3", "--port", str(pop3_port), "--clients", str(clients), "--duration",
               str(args.imap_duration), "--retr", "3", "--quiet", "--json", out] + common
        log(f"{server.name}: {label} retrieval for {args.imap_duration:g} s")
        res["pop3"].append(session_measure(args, server, label, cmd, out, out[:-5] + ".txt", args.imap_duration + 120))
    n_idle = args.idle if isinstance(server, Varan) else min(args.idle, PEER_IDLE_MAX)
    if n_idle > 0:
        out = os.path.join(workdir, f"{tag}-imap-idle.json")
        cmd = [lt, "imap", "--port", str(imap_port), "--idle", str(n_idle), "--duration", str(args.idle_hold),
               "--idle-parallel", "64", "--idle-ramp-limit", "300", "--quiet", "--json", out] + common
        log(f"{server.name}: {n_idle} IDLE sessions held {args.idle_hold:g} s")
        rss_before = server.rss()
        r = session_measure(args, server, f"idle {n_idle}", cmd, out, out[:-5] + ".txt", args.idle_hold + 420)
        r["rss_before"] = rss_before
        r["idle"] = (r.get("extra") or {}).get("idle")
        log(f"  idle: {r['idle']}")
        res["idle"] = r
    return res


def imap_main(args, bin_dir, workdir, runs_dir, machine, started, out_dir):
    """The IMAP/POP3 part of a run: Varan, then (unless --varan-only) Dovecot."""
    t0 = time.time()
    varan = Varan(bin_dir, workdir, args.port_base)
    varan.setup(args.port_base)
    varan_enable_imap(varan, args.idle)
    if args.imap_password_scheme == "plain":
        pw_hash = "{PLAIN}pw"
        varan_set_password(varan, pw_hash)
        password_note = "scheme PLAIN ({PLAIN}pw) on both servers, as the peer script's default"
    else:
        pw_hash = varan_password_hash(varan)
        password_note = "the same Argon2id PHC hash for every user on both servers (Dovecot scheme ARGON2ID)"
    peer = None
    try:
        varan.start()
        varan_res = imap_server(args, bin_dir, varan, runs_dir, args.port_base)
        varan_res["log_events"] = varan.log_events()
        varan.stop()
        peer_res, pv = None, "skipped"
        if not args.varan_only and os.access(PEER_SCRIPT, os.X_OK) and os.geteuid() == 0:
            peer = Peer(PEER_SCRIPT)
            peer.start()
            pv = peer_versions()
            peer.reset()
            peer_imap_prepare(peer, pw_hash, args.imap_users)
            peer_res = imap_server(args, bin_dir, peer, runs_dir, args.port_base)
        elif not args.varan_only:
            log("IMAP: the Dovecot peer is not available (script missing or not root): Varan only")
    finally:
        varan.stop()
        if peer:
            try:
                peer.stop()
            except Abort as e:
                log(f"stopping the peer failed: {e}")
    results = {
        "schema": 1, "tool": "benches/compare.sh (IMAP/POP3)",
        "command": " ".join(["benches/compare.sh"] + sys.argv[1:]),
        "mode": "quick" if args.quick else "full", "started": started.isoformat(timespec="seconds"),
        "wall_s": round(time.time() - t0, 1), "machine": machine, "peer_versions": pv, "git": git_info(),
        "config": {"users": args.imap_users, "messages_per_user": args.imap_messages, "duration_s": args.imap_duration,
                   "idle": args.idle, "idle_hold_s": args.idle_hold, "peer_idle_max": PEER_IDLE_MAX,
                   "loadgen_threads": args.loadgen_threads,
                   "password": password_note,
                   "peer_tuning": "DOVECOT_PERF=1 (login processes serve many clients, imap processes reused, "
                                  "pre-forked) + auth_cache_size=10M, auth_cache_ttl=1 min, process limit 1500",
                   "varan_settings": varan.settings},
        "varan": varan_res, "peer": peer_res,
    }
    results["ratios_varan_over_peer"] = {}
    if peer_res:
        P = {r["label"]: r for r in peer_res["runs"] + peer_res["pop3"]}
        for r in varan_res["runs"] + varan_res["pop3"]:
            p = P.get(r["label"])
            if p:
                results["ratios_varan_over_peer"][r["label"]] = {
                    "ops_per_s": ratio(r["ops_per_s"], p["ops_per_s"]),
                    "p99_latency": ratio(pct(r["latency_ms"], "p99"), pct(p["latency_ms"], "p99")),
                    "cpu_per_op": ratio(r["server_cpu_ms_per_op"], p["server_cpu_ms_per_op"]),
                    "rss_peak": ratio(r["rss_peak_mib"], p["rss_peak_mib"]),
                }
    results["targets"] = imap_targets(results)
    stamp = started.strftime("%Y-%m-%d")
    jpath = write_imap_reports(results, out_dir, stamp)
    log(f"wrote {jpath}, {os.path.join(out_dir, 'imap-latest.md')}, imap.svg")
    for t in results["targets"]:
        log(f"target: {t['target']}: {t['measured']} -> {t['met']}")
    return results


def imap_exit(results):
    """1 when any of Varan's IMAP/POP3 load runs (or the seeding) failed:
    protocol errors, I/O errors, timeouts, IDLE sessions dropped."""
    V = results["varan"]
    bad = [r["label"] for r in V["runs"] + V["pop3"] + ([V["idle"]] if V.get("idle") else []) if r["loadtest_exit"] != 0]
    if V["seed"]["exit"] != 0:
        bad.append("seed")
    if bad:
        log(f"Varan IMAP/POP3 runs with failures: {', '.join(bad)}")
        return 1
    return 0


def imap_targets(results):
    out = []
    V = {r["label"]: r for r in results["varan"]["runs"]}
    R = results.get("ratios_varan_over_peer") or {}
    for label in ("imap c10", "imap c100"):
        v = V.get(label)
        if not v:
            continue
        rr = (R.get(label) or {}).get("ops_per_s")
        out.append({"target": f"{label}: >= {TARGET_IMAP_RATIO:g}x Dovecot ops/s",
                    "measured": f"{fmt(v['ops_per_s'])} ops/s, ratio {fmt(rr, 2)}" if rr else
                    f"{fmt(v['ops_per_s'])} ops/s (no peer in this run)",
                    "met": None if rr is None else rr >= TARGET_IMAP_RATIO})
    errs = sum((r.get("protocol_errors") or 0) for r in results["varan"]["runs"] + results["varan"]["pop3"])
    out.append({"target": "zero protocol errors (Varan, all IMAP/POP3 runs)", "measured": str(errs), "met": errs == 0})
    idle = results["varan"].get("idle")
    if idle and idle.get("idle"):
        i = idle["idle"]
        peak = idle.get("rss_peak_mib")
        ok = i.get("held") == i.get("requested") and peak is not None and peak < TARGET_IDLE_RSS_MIB
        if i.get("requested", 0) < TARGET_IDLE_CONNECTIONS:
            ok = None  # a smaller (--quick) run cannot show the target
        out.append({"target": f"{TARGET_IDLE_CONNECTIONS:,} IDLE connections in < {TARGET_IDLE_RSS_MIB:g} MB RSS",
                    "measured": f"{i.get('held')} of {i.get('requested')} held {i.get('hold_s')} s, "
                                f"peak RSS {fmt(peak, 1)} MiB",
                    "met": ok})
    return out


def write_imap_reports(results, out_dir, stamp):
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, f"imap-results-{stamp}.json")
    with open(jpath, "w") as f:
        json.dump(results, f, indent=1)
    V = results["varan"]
    P = results.get("peer") or {"runs": [], "pop3": [], "idle": None}
    labels = [r["label"] for r in V["runs"] + V["pop3"]]
    VD = {r["label"]: r for r in V["runs"] + V["pop3"]}
    PD = {r["label"]: r for r in P["runs"] + P["pop3"]}
    series, vals = ["Varan"], [[VD[l].get("ops_per_s") for l in labels]]
    if PD:
        series.append("Dovecot")
        vals.append([PD.get(l, {}).get("ops_per_s") for l in labels])
    svg_chart(os.path.join(out_dir, "imap.svg"), "IMAP mixed workload and POP3 retrieval: operations per second",
              labels, series, vals, "operations/s", log_y=True, xlabel="workload (clients)")
    m = results["machine"]
    L = []
    L.append("# IMAP and POP3: Varan vs Dovecot (latest run)\n")
    L.append(f"Generated by `{results['command']}` on {results['started']} ({results['mode']} mode, "
             f"{results['wall_s']:.0f} s). Machine: {m.get('nproc')} CPUs, load average at start "
             f"{' '.join(m.get('loadavg_at_start', []))}. Peer: {results['peer_versions']}.\n")
    c = results["config"]
    L.append(f"Workload: {c['users']} users, each seeded with {c['messages_per_user']} messages (~4 KB, every third "
             f"multipart/mixed with an attachment) by IMAP APPEND of identical bytes on both servers; "
             f"{c['duration_s']:g} s per run, closed loop. Each client: LOGIN, SELECT INBOX, then 50-150 commands "
             f"of the weighted mix LIST 5, STATUS 10, SELECT 10, FETCH 1-5 messages (UID FLAGS ENVELOPE "
             f"BODYSTRUCTURE) 20, FETCH 1-3 BODY.PEEK[] 15, STORE ±FLAGS 15, APPEND 13, UID STORE \\Deleted + "
             f"EXPUNGE of its own appended messages 12; then LOGOUT and a new connection. Every tagged response "
             f"is checked (NO/BAD/BYE/garbage = protocol error). An operation is one successful tagged command "
             f"(connection setup excluded). Passwords: {c['password']}. Dovecot: {c['peer_tuning']}.\n")
    L.append("## Results\n")
    L.append("| workload | Varan ops/s | Dovecot ops/s | ratio | Varan p50 / p99 ms | Dovecot p50 / p99 ms | "
             "Varan CPU ms/op | Dovecot CPU ms/op | Varan RSS peak MiB | Dovecot RSS peak MiB | "
             "protocol errors V / D | load avg before (V / D) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    R = results.get("ratios_varan_over_peer") or {}
    for l in labels:
        v, p = VD[l], PD.get(l, {})
        vl, pl = v.get("latency_ms") or {}, p.get("latency_ms") or {}
        L.append(f"| {l} | {fmt(v.get('ops_per_s'))} | {fmt(p.get('ops_per_s'))} | "
                 f"{fmt((R.get(l) or {}).get('ops_per_s'), 2)} | {fmt(pct(vl, 'p50'), 2)} / {fmt(pct(vl, 'p99'), 2)} | "
                 f"{fmt(pct(pl, 'p50'), 2)} / {fmt(pct(pl, 'p99'), 2)} | {fmt(v.get('server_cpu_ms_per_op'), 3)} | "
                 f"{fmt(p.get('server_cpu_ms_per_op'), 3)} | {fmt(v.get('rss_peak_mib'), 1)} | "
                 f"{fmt(p.get('rss_peak_mib'), 1)} | {v.get('protocol_errors')} / {p.get('protocol_errors', '-')} | "
                 f"{(v.get('loadavg_before') or ['-'])[0]} / {(p.get('loadavg_before') or ['-'])[0]} |")
    L.append("\n![IMAP/POP3 operations per second](imap.svg)\n")
    L.append("## IDLE\n")
    L.append("| server | sessions requested | in IDLE | held to the end (DONE → OK) | ramp s | hold s | "
             "RSS before MiB | RSS peak MiB |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, D in (("Varan", V), ("Dovecot", P)):
        r = D.get("idle")
        if not r or not r.get("idle"):
            continue
        i = r["idle"]
        rb = (r.get("rss_before") or {}).get("rss_mib")
        L.append(f"| {name} | {i.get('requested')} | {i.get('established')} | {i.get('held')} | {i.get('ramp_s')} | "
                 f"{i.get('hold_s')} | {fmt(rb, 1)} | {fmt(r.get('rss_peak_mib'), 1)} |")
    if P.get("idle"):
        L.append(f"\nDovecot's IDLE run is capped at {c['peer_idle_max']:,} sessions: it serves each IMAP session "
                 f"from its own imap process, so 10,000 would need 10,000 processes.\n")
    L.append("\n## Targets\n")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for t in results["targets"]:
        L.append(f"| {t['target']} | {t['measured']} | {'-' if t['met'] is None else ('yes' if t['met'] else '**no**')} |")
    L.append("\n## Per-command latency (Varan, ms)\n")
    for r in V["runs"]:
        L.append(f"- {r['label']}: " + ", ".join(f"{k} {v['ok']} ok p50 {fmt(v['p50'], 2)} p99 {fmt(v['p99'], 2)}"
                                                 for k, v in sorted(r["commands"].items())))
    if P["runs"]:
        L.append("\n## Per-command latency (Dovecot, ms)\n")
        for r in P["runs"]:
            L.append(f"- {r['label']}: " + ", ".join(f"{k} {v['ok']} ok p50 {fmt(v['p50'], 2)} p99 {fmt(v['p99'], 2)}"
                                                     for k, v in sorted(r["commands"].items())))
    L.append(f"\nRaw data: [{os.path.basename(jpath)}]({os.path.basename(jpath)}).\n")
    with open(os.path.join(out_dir, "imap-latest.md"), "w") as f:
        f.write("\n".join(L))
    return jpath


# ---------------------------------------------------------------- reports

def num(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def svg_chart(path, title, groups, series, values, ylabel, log_y=True, kind="bar", xlabel=""):
    """A small grouped bar chart (or line chart) as SVG. values[s][g] may be None."""
    W, H = 860, 440
    ml, mr, mt, mb = 80, 20, 50, 90
    pw, ph = W - ml - mr, H - mt - mb
    flat = [v for row in values for v in row if v is not None and v > 0]
    if not flat:
        flat = [1.0]
    if log_y:
        lo = 10 ** math.floor(math.log10(min(flat)))
        hi = 10 ** math.ceil(math.log10(max(flat)))
        if hi <= lo:
            hi = lo * 10

        def y(v):
            return mt + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
        ticks = [lo * 10 ** i for i in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        lo, hi = 0.0, max(flat) * 1.1

        def y(v):
            return mt + ph - (v - lo) / (hi - lo) * ph
        step = 10 ** math.floor(math.log10(hi / 5))
        ticks = [i * step for i in range(int(hi / step) + 1)]
    colors = ["#1f77b4", "#aec7e8", "#d62728", "#ff9896", "#2ca02c", "#98df8a", "#9467bd", "#c5b0d5"]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>']
    for t in ticks:
        ty = y(t)
        o.append(f'<line x1="{ml}" y1="{ty:.1f}" x2="{W - mr}" y2="{ty:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{ml - 6}" y="{ty + 4:.1f}" text-anchor="end">{t:g}</text>')
    o.append(f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" stroke="black"/>')
    o.append(f'<line x1="{ml}" y1="{mt + ph}" x2="{W - mr}" y2="{mt + ph}" stroke="black"/>')
    o.append(f'<text x="18" y="{mt + ph / 2}" transform="rotate(-90 18 {mt + ph / 2})" text-anchor="middle">'
             f'{ylabel}{" (log scale)" if log_y else ""}</text>')
    gw = pw / max(1, len(groups))
    for gi, g in enumerate(groups):
        cx = ml + gw * (gi + 0.5)
        o.append(f'<text x="{cx:.1f}" y="{mt + ph + 18}" text-anchor="middle">{g}</text>')
    if xlabel:
        o.append(f'<text x="{ml + pw / 2}" y="{mt + ph + 38}" text-anchor="middle">{xlabel}</text>')
    if kind == "bar":
        bw = gw * 0.8 / max(1, len(series))
        for si, s in enumerate(series):
            for gi, v in enumerate(values[si]):
                if v is None or v <= 0:
                    continue
                x = ml + gw * gi + gw * 0.1 + bw * si
                top = y(v)
                base = mt + ph
                o.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{bw - 1:.1f}" height="{base - top:.1f}" '
                         f'fill="{colors[si % len(colors)]}"><title>{s} {groups[gi]}: {v:,.3g}</title></rect>')
                o.append(f'<text x="{x + bw / 2:.1f}" y="{top - 3:.1f}" text-anchor="middle" font-size="9">'
                         f'{num(v)}</text>')
    else:
        for si, s in enumerate(series):
            pts = [(ml + gw * (gi + 0.5), y(v), v) for gi, v in enumerate(values[si]) if v is not None and v > 0]
            c = colors[(si * 2) % len(colors)] if len(series) <= 4 else colors[si % len(colors)]
            dash = ' stroke-dasharray="6 4"' if "accepted" in s else ""
            if len(pts) > 1:
                o.append(f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="'
                         + " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in pts) + '"/>')
            for px, py, v in pts:
                dy = -7 if si % 2 else 15
                o.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{c}"><title>{s}: {num(v)}</title></circle>')
                o.append(f'<text x="{px + 7:.1f}" y="{py + dy:.1f}" font-size="10" fill="{c}">{num(v)}</text>')
    # legend
    lx, ly = ml, H - 28
    for si, s in enumerate(series):
        c = colors[si % len(colors)] if kind == "bar" else (colors[(si * 2) % len(colors)] if len(series) <= 4 else colors[si % len(colors)])
        o.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{c}"/>')
        o.append(f'<text x="{lx + 16}" y="{ly}">{s}</text>')
        lx += 24 + 7 * len(s)
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def write_reports(results, out_dir, stamp):
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, f"results-{stamp}.json")
    with open(jpath, "w") as f:
        json.dump(results, f, indent=1)
    V = {r["label"]: r for r in results["varan"]["runs"]}
    P = {r["label"]: r for r in (results.get("peer") or {}).get("runs", [])}
    labels = [w[0] for w in WORKLOADS if w[0] in V or w[0] in P]

    # Plots.
    conc_labels = [w[0] for w in WORKLOADS if w[1] == 4096 and (w[0] in V or w[0] in P)]
    series, vals = [], []
    for name, D in (("Varan", V), ("Postfix+Dovecot", P)):
        if not D:
            continue
        series += [f"{name} delivered", f"{name} accepted"]
        vals += [[D.get(l, {}).get("delivered_per_s") for l in conc_labels],
                 [D.get(l, {}).get("accepted_per_s") for l in conc_labels]]
    svg_chart(os.path.join(out_dir, "throughput.svg"), "SMTP 4 KB messages: throughput vs concurrency (1,000 users)",
              [f"{next(w[2] for w in WORKLOADS if w[0] == l)} connections" for l in conc_labels], series, vals,
              "messages/s", kind="line", xlabel="closed loop, one message per connection")
    lat_groups = list(labels)
    halfV = results["varan"].get("half_rate")
    halfP = (results.get("peer") or {}).get("half_rate")
    if halfV or halfP:
        lat_groups.append("4KB c100 @ ½ own rate")
    series, vals = [], []
    for name, D, half in (("Varan", V, halfV), ("Postfix+Dovecot", P, halfP)):
        if not D:
            continue
        for q in ("p50", "p99"):
            series.append(f"{name} {q}")
            row = [pct(D.get(l, {}).get("latency_ms"), q) for l in labels]
            if len(lat_groups) > len(labels):
                row.append(pct((half or {}).get("latency_ms"), q))
            vals.append(row)
    svg_chart(os.path.join(out_dir, "latency.svg"), "SMTP transaction latency (MAIL FROM to 250 after the dot)",
              lat_groups, series, vals, "milliseconds")

    # Markdown.
    m = results["machine"]
    pr = results.get("probe") or {}
    L = []
    L.append(f"# Varan vs Postfix+Dovecot — {results['started']}")
    L.append("")
    L.append(f"Generated by `{results['command']}` ({results['mode']} mode). Raw data: "
             f"[`results-{stamp}.json`](results-{stamp}.json). Method: [../performance.md](../performance.md).")
    L.append("")
    disk = m.get("disk") or {}
    L.append(f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model', '?')}), {m.get('mem_total_mib')} MiB RAM, "
             f"{m.get('kernel')}, {m['fs']['type']}"
             f"{'' if m['fs'].get('ext4_journal') is None else (' with journal' if m['fs']['ext4_journal'] else ' without journal')}"
             f" on {m['fs']['device']} "
             f"({'rotational' if disk.get('rotational') == '1' else 'non-rotational'}, "
             f"write cache {disk.get('write_cache', '?')}); load average at start {' '.join(m.get('loadavg_at_start', []))}. "
             f"The load generator runs on the same CPUs.")
    L.append("")
    L.append(f"Varan {results['varan_build'].get('git', '?')}; peer: {results.get('peer_versions', 'skipped')}. "
             f"Each run: {results['config']['duration_s']} s closed loop, {results['config']['per_connection']} "
             f"message(s) per connection, recipients random among u0..u999@bench.test, "
             f"load generator with {results['config']['loadgen_threads']} threads. "
             f"Varan with `connections_max = connections_per_ip_max = 2000` (defaults 100/20 would refuse the load).")
    L.append("")
    L.append("## End to end (accepted by SMTP → file in the Maildir)")
    L.append("")
    L.append("| workload | Varan delivered/s | peer delivered/s | ratio | Varan accepted/s | peer accepted/s "
             "| Varan p50 / p99 ms | peer p50 / p99 ms | Varan CPU ms/msg | peer CPU ms/msg | Varan RSS peak MiB "
             "| peer RSS (PSS) peak MiB | load gen CPU s (V/P) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for l in labels:
        v, p = V.get(l, {}), P.get(l, {})
        vl, pl = v.get("latency_ms") or {}, p.get("latency_ms") or {}
        r = ratio(v.get("delivered_per_s"), p.get("delivered_per_s"))
        L.append(f"| {l} | {fmt(v.get('delivered_per_s'))}{' ⚠' if v.get('e2e_timed_out') else ''} "
                 f"| {fmt(p.get('delivered_per_s'))}{' ⚠' if p.get('e2e_timed_out') else ''} "
                 f"| {fmt(r, 1, '×')} | {fmt(v.get('accepted_per_s'))} | {fmt(p.get('accepted_per_s'))} "
                 f"| {fmt(pct(vl, 'p50'), 1)} / {fmt(pct(vl, 'p99'), 1)} | {fmt(pct(pl, 'p50'), 1)} / {fmt(pct(pl, 'p99'), 1)} "
                 f"| {fmt(v.get('server_cpu_ms_per_msg'), 2)} | {fmt(p.get('server_cpu_ms_per_msg'), 2)} "
                 f"| {fmt(v.get('rss_peak_mib'), 1)} | {fmt(p.get('rss_peak_mib'), 1)} ({fmt(p.get('pss_peak_mib'), 1)}) "
                 f"| {fmt(v.get('loadgen_cpu_s'), 1)} / {fmt(p.get('loadgen_cpu_s'), 1)} |")
    L.append("")
    L.append("![throughput](throughput.svg) ![latency](latency.svg)")
    L.append("")
    L.append("## Where the CPU went")
    L.append("")
    L.append(f"CPU seconds during each run (from its start until the last message was in the Maildir; "
             f"available = {m.get('cpus_usable')} CPUs × wall time). Kernel threads include writeback and "
             f"network softirq work done for the servers; other processes are everything else on the machine.")
    L.append("")
    L.append("| run | wall s | available | server | load generator | kernel threads | other processes | idle |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    allruns = [("Varan", r) for r in V.values()] + ([("Varan", halfV)] if halfV else []) + \
        [("Postfix+Dovecot", r) for r in P.values()] + ([("Postfix+Dovecot", halfP)] if halfP else [])
    for name, r in allruns:
        avail = r.get("machine_cpu_s_available") or 0
        idle = avail - (r.get("machine_busy_cpu_s") or 0)
        L.append(f"| {name} {r['label']}{' ½ rate' if r.get('open_loop_rate') else ''} | {fmt(r.get('e2e_s'), 1)} "
                 f"| {fmt(avail, 1)} | {fmt(r.get('server_cpu_s'), 1)} | {fmt(r.get('loadgen_cpu_s'), 1)} "
                 f"| {fmt(r.get('kernel_threads_cpu_s'), 1)} | {fmt(r.get('other_processes_cpu_s'), 1)} "
                 f"| {fmt(max(idle, 0.0), 1)} |")
    L.append("")
    L.append("## Latency at half rate (open loop, 4 KB, 100 connections)")
    L.append("")
    L.append("| server | offered msgs/s | accepted/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | failed |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, h in (("Varan", halfV), ("Postfix+Dovecot", halfP)):
        if not h:
            continue
        hl = h.get("latency_ms") or {}
        failed = int(h["loadtest"].get("attempted", 0)) - int(h.get("accepted", 0))
        L.append(f"| {name} | {fmt(h.get('open_loop_rate'))} | {fmt(h.get('accepted_per_s'))} | {fmt(pct(hl, 'p50'), 2)} "
                 f"| {fmt(pct(hl, 'p90'), 2)} | {fmt(pct(hl, 'p99'), 2)} | {fmt(pct(hl, 'p999'), 2)} | {fmt(pct(hl, 'max'), 2)} "
                 f"| {failed} |")
    L.append("")
    L.append("## Targets")
    L.append("")
    t = results["targets"]
    L.append("| target | measured | met |")
    L.append("|---|---:|---|")
    for row in t:
        L.append(f"| {row['target']} | {row['measured']} | {row['met']} |")
    L.append("")
    if pr:
        L.append("## Physical limits of this machine (same run)")
        L.append("")
        L.append("| probe | result |")
        L.append("|---|---:|")
        for k, label in (("fdatasync_4KB_x1", "append 4 KB + fdatasync, 1 record per sync"),
                         ("fdatasync_4KB_x16", "append 16 × 4 KB + one fdatasync"),
                         ("fdatasync_4KB_x64", "append 64 × 4 KB + one fdatasync")):
            if k in pr:
                L.append(f"| {label} | {fmt(pr[k]['records_per_s'])} records/s ({fmt(pr[k]['syncs_per_s'])} syncs/s, "
                         f"p50 {pr[k]['fdatasync_ms_p50']} ms) |")
        for k, label in (("create_empty_file", "create an empty file (inode allocation only, no fsync)"),
                         ("create_write4KB_fsync_serial", "create + write 4 KB + fsync, serial"),
                         ("create_write4KB_fsync_32", "create + write 4 KB + fsync, 32 in flight")):
            if k in pr:
                L.append(f"| {label} | {fmt(pr[k]['files_per_s'])} files/s |")
        if "maildir_fsync_by_the_book_serial" in pr:
            L.append(f"| Maildir delivery by the book (tmp, fsync, rename, fsync dir), serial "
                     f"| {fmt(pr['maildir_fsync_by_the_book_serial']['msgs_per_s'])} msgs/s |")
        if "loopback_tcp_one_stream" in pr:
            lb = pr["loopback_tcp_one_stream"]
            L.append(f"| loopback TCP, one stream (Python) | {fmt(lb['mb_per_s'])} MB/s ({lb['gbit_per_s']} Gbit/s) |")
        if "sha256_one_core_mb_per_s" in pr:
            L.append(f"| SHA-256, one core (CPU speed yardstick) | {fmt(pr['sha256_one_core_mb_per_s'])} MB/s |")
        L.append("")
    L.append("## Notes from this run")
    L.append("")
    for n in results["notes"] or ["nothing unusual"]:
        L.append(f"- {n}")
    L.append("")
    with open(os.path.join(out_dir, "latest.md"), "w") as f:
        f.write("\n".join(L))
    return jpath


def analyse(results):
    """Targets and notable events."""
    V = {r["label"]: r for r in results["varan"]["runs"]}
    P = {r["label"]: r for r in (results.get("peer") or {}).get("runs", [])}
    notes = []
    targets = []
    v, p = V.get(HALF_RATE_BASE), P.get(HALF_RATE_BASE)
    r = ratio((v or {}).get("delivered_per_s"), (p or {}).get("delivered_per_s"))
    targets.append({"target": f"delivered msgs/s Varan ≥ {TARGET_RATIO:g}× Postfix+Dovecot (4 KB, 100 conn., 1,000 users)",
                    "measured": f"{fmt(r, 1, '×')} ({fmt((v or {}).get('delivered_per_s'))} vs "
                                f"{fmt((p or {}).get('delivered_per_s'))})",
                    "met": "n/a (no peer)" if r is None else ("yes" if r >= TARGET_RATIO else "no")})
    h = results["varan"].get("half_rate")
    p99 = pct((h or {}).get("latency_ms"), "p99")
    targets.append({"target": f"p99 SMTP transaction latency < {TARGET_P99_MS:g} ms at half that rate",
                    "measured": f"{fmt(p99, 2)} ms at {fmt((h or {}).get('open_loop_rate'))} msgs/s offered",
                    "met": "n/a" if p99 is None else ("yes" if p99 < TARGET_P99_MS else "no")})
    # Peak RSS per run (sampled every 0.5 s; a fresh process per run).
    per_run = [(x["label"], x.get("rss_peak_mib") or 0) for x in V.values()]
    base_rss = dict(per_run).get(HALF_RATE_BASE)
    worst = max(per_run, key=lambda kv: kv[1], default=(None, 0))
    targets.append({"target": f"Varan RSS < {TARGET_RSS_MIB:g} MB",
                    "measured": f"{fmt(base_rss, 1)} MiB peak in {HALF_RATE_BASE}; highest {worst[1]:.1f} MiB ({worst[0]})",
                    "met": ("n/a" if base_rss is None else ("yes" if base_rss < TARGET_RSS_MIB else "no") + f" ({HALF_RATE_BASE}); "
                            + ("yes" if worst[1] < TARGET_RSS_MIB else "no") + " (all runs)")})
    ce = ((results.get("probe") or {}).get("create_empty_file") or {}).get("files_per_s")
    if ce is not None and ce < 10000:
        notes.append(f"creating an empty file ran at only {ce:,.0f}/s in the probe (37,000/s on a quiet file system): "
                     f"many inodes were freed on this ext4-without-journal file system in the last minutes (an earlier "
                     f"run's clean-up? leave 6 minutes between runs), which makes every file creation of both servers "
                     f"more expensive in this run")
    lim = results["config"].get("varan_limits_effective", {}).get("Max locked memory")
    if lim and lim != "unlimited":
        notes.append(f"RLIMIT_MEMLOCK could not be raised for Varan (effective {int(lim) >> 20 if lim.isdigit() else lim} "
                     f"MiB; the shipped unit sets infinity): Varan warns that io_uring buffer registration may be "
                     f"skipped, so its numbers may be slightly pessimistic")
    for name, runs in (("Varan", list(V.values()) + ([h] if h else [])),
                       ("Postfix+Dovecot", list(P.values()) + ([results["peer"]["half_rate"]] if P and results["peer"].get("half_rate") else []))):
        for x in runs:
            tag = f"{name} {x['label']}{' open loop' if x.get('open_loop_rate') else ''}"
            failed = int(x["loadtest"].get("attempted", 0)) - int(x.get("accepted", 0))
            if failed:
                reasons = "; ".join(f"{f['count']}× {f['reason']}" for f in x.get("failures", [])[:4])
                notes.append(f"{tag}: {failed} of {x['loadtest'].get('attempted')} messages not accepted "
                             f"(tempfail {x.get('tempfail')}, permfail {x.get('permfail')}, errors {x.get('errors')}, "
                             f"timeouts {x.get('timeouts')}): {reasons}")
            if x.get("e2e_timed_out"):
                notes.append(f"{tag}: only {x['delivered']} of {x['accepted']} accepted messages reached the Maildir "
                             f"within the e2e limit")
            elif x.get("delivered", 0) > x.get("accepted", 0):
                notes.append(f"{tag}: {x['delivered']} files for {x['accepted']} accepted messages (the server stored "
                             f"messages whose 250 the client did not get)")
            if not x.get("server_alive_after"):
                notes.append(f"{tag}: server not running after the run")
            for ev in x.get("log_events", [])[:5]:
                notes.append(f"{tag}: log {ev['count']}× `{ev['line'][:160]}`")
            st = x.get("reset")
            if st and isinstance(st, (list, tuple)) and st[1] not in ("sigterm", "reset", "not running"):
                notes.append(f"{tag}: stopping the previous instance: {st[1]} ({st[0]:.1f} s)")
            elif st and isinstance(st, (list, tuple)) and st[0] > 5:
                notes.append(f"{tag}: previous instance took {st[0]:.1f} s to stop on SIGTERM")
            if (x.get("cpus_busy_before") or 0) >= 0.25:
                notes.append(f"{tag}: the machine was busy before the run ({x['cpus_busy_before']:.2f} CPUs used by "
                             f"other processes after {x.get('quiet_wait_s')} s of waiting)")
            avail = x.get("machine_cpu_s_available") or 0
            other = x.get("other_processes_cpu_s")
            if other is not None and avail and other > 0.05 * avail:
                top = ", ".join(f"{c} {v:.1f} s" for c, v in x.get("other_processes_top", [])[:3])
                notes.append(f"{tag}: other processes used {other:.1f} of the {avail:.1f} CPU seconds available "
                             f"({top}): another workload shared the machine, the numbers are pessimistic")
            if x.get("loadtest_exit") not in (0, 1):
                notes.append(f"{tag}: varan-loadtest exit status {x.get('loadtest_exit')}")
    return targets, notes


# ---------------------------------------------------------------- main

def relay_part(args, bin_dir, workdir, runs_dir, machine, started, out_dir):
    """benches/relay.py: Varan and Postfix relaying DKIM-signed mail to smtp-sink."""
    import relay
    return relay.relay_main(sys.modules[__name__], args, bin_dir, workdir, runs_dir, machine, started, out_dir)


def relay_exit(res):
    """1 if a server did not relay every accepted message, none were
    accepted, or a sampled message was not validly DKIM-signed."""
    bad = []
    for r in (res["varan"], res["peer"]):
        if not r:
            continue
        d = r.get("dkim") or {}
        if r["timed_out"] or not r["accepted"]:
            bad.append(f"{r['server']} (not every accepted message reached the sink)")
        elif d.get("signed") != d.get("checked") or d.get("verified") not in (None, d.get("checked")):
            bad.append(f"{r['server']} (DKIM sample: {d})")
    if bad:
        log(f"relay: failed: {', '.join(bad)}")
        return 1
    return 0


def git_info():
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return f"{head}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "?"


def peer_versions():
    out = []
    try:
        out.append("Postfix " + subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True,
                                               timeout=30).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        out.append("Dovecot " + subprocess.run(["dovecot", "--version"], capture_output=True, text=True,
                                               timeout=30).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(out) + " (DOVECOT_PERF=1)"


def main():
    ap = argparse.ArgumentParser(prog="benches/compare.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke: 4 s runs, short probe (~1-2 min)")
    ap.add_argument("--varan-only", action="store_true", help="skip the Postfix+Dovecot peer")
    ap.add_argument("--duration", type=float, help="seconds per run (default 20, --quick 4)")
    ap.add_argument("--e2e-timeout", type=float, help="max seconds to wait after the load ends until all accepted "
                    "messages are in the Maildir (default 120, --quick 60)")
    ap.add_argument("--per-connection", type=int, default=1, help="messages per SMTP connection (default 1)")
    ap.add_argument("--loadgen-threads", type=int, default=2, help="varan-loadtest --threads (default 2)")
    ap.add_argument("--only", action="append", help="run only this workload label (repeatable), e.g. '4KB c100'")
    ap.add_argument("--no-half-rate", action="store_true", help="skip the open-loop half-rate latency runs")
    ap.add_argument("--no-warmup", action="store_true", help="do not create the 1,000 mailboxes (one message to "
                    "every user) before each run: measures first deliveries into new mailboxes too")
    ap.add_argument("--no-probe", action="store_true", help="skip the physical-limits probe")
    ap.add_argument("--quiet-wait", type=float, help="before each run wait up to this many seconds until other "
                    "processes use < 0.25 CPU (default 60, --quick 0)")
    ap.add_argument("--port-base", type=int, default=20000, help="Varan listens on BASE+25 (default 20000)")
    ap.add_argument("--workdir", default="/var/tmp/varan-bench", help="Varan's installation, probe files "
                    "(default /var/tmp/varan-bench; removed at the end unless --keep)")
    ap.add_argument("--out", help="output directory (default docs/performance; --quick: target/compare-quick)")
    ap.add_argument("--rebuild", action="store_true", help="run cargo build --release even if the binaries exist")
    ap.add_argument("--keep", action="store_true", help="keep --workdir (logs, loadtest reports) at the end")
    ap.add_argument("--imap", action="store_true", help="run only the IMAP/POP3 comparison (skip SMTP)")
    ap.add_argument("--no-imap", action="store_true", help="skip the IMAP/POP3 comparison")
    ap.add_argument("--relay", action="store_true", help="run only the relay comparison (Varan and Postfix relaying "
                    "DKIM-signed mail to smtp-sink)")
    ap.add_argument("--no-relay", action="store_true", help="skip the relay comparison")
    ap.add_argument("--relay-messages", type=int, help="messages relayed per server (default 20000, --quick 2000)")
    ap.add_argument("--imap-duration", type=float, help="seconds per IMAP/POP3 run (default 20, --quick 5)")
    ap.add_argument("--imap-users", type=int, help="IMAP users (default 100, --quick 20)")
    ap.add_argument("--imap-messages", type=int, help="messages seeded per user (default 20, --quick 10)")
    ap.add_argument("--idle", type=int, help="IDLE sessions held on Varan (default 10000, --quick 500; 0 = skip)")
    ap.add_argument("--imap-password-scheme", choices=["plain", "argon2id"], default="plain",
                    help="stored password form on both servers for the IMAP/POP3 runs (default plain, as the peer "
                         "script; argon2id: Varan's own hash, Dovecot scheme ARGON2ID)")
    ap.add_argument("--idle-hold", type=float, help="seconds the IDLE sessions are held (default 20, --quick 3)")
    ap.add_argument("--report-only", metavar="RESULTS_JSON", help="only rewrite latest.md and the plots (in --out or "
                    "the JSON's directory) from an existing results file")
    args = ap.parse_args()
    if args.report_only:
        with open(args.report_only) as f:
            results = json.load(f)
        results["targets"], results["notes"] = analyse(results)
        out = os.path.abspath(args.out) if args.out else os.path.dirname(os.path.abspath(args.report_only))
        stamp = re.sub(r"^results-|\.json$", "", os.path.basename(args.report_only))
        write_reports(results, out, stamp)
        log(f"rewrote {os.path.join(out, 'latest.md')} and the plots from {args.report_only}")
        return 0
    if args.duration is None:
        args.duration = 4.0 if args.quick else 20.0
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    if args.e2e_timeout is None:
        args.e2e_timeout = 60.0 if args.quick else 120.0
    if args.imap and args.no_imap:
        ap.error("--imap and --no-imap exclude each other")
    if args.relay and (args.no_relay or args.imap):
        ap.error("--relay excludes --no-relay and --imap")
    if args.relay_messages is None:
        args.relay_messages = 2000 if args.quick else 20_000
    if args.relay_messages < 1:
        ap.error("--relay-messages must be positive")
    for key, full, quick in (("imap_duration", 20.0, 5.0), ("imap_users", 100, 20), ("imap_messages", 20, 10),
                             ("idle", 10_000, 500), ("idle_hold", 20.0, 3.0)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.imap_duration <= 0 or args.imap_users < 1 or args.imap_messages < 1 or args.idle < 0 or args.idle_hold <= 0:
        ap.error("IMAP durations, users and messages must be positive")
    if args.duration <= 0 or args.e2e_timeout <= 0 or args.per_connection < 1:
        ap.error("durations and --per-connection must be positive")
    if args.out:
        out_dir = os.path.abspath(args.out)
    elif args.quick:
        out_dir = os.path.join(REPO, "target", "compare-quick")
    else:
        out_dir = os.path.join(REPO, "docs", "performance")
    workdir = os.path.abspath(args.workdir)
    bin_dir = os.path.join(REPO, "target", "release")
    started = datetime.datetime.now().astimezone()
    t_start = time.time()

    # Stop everything on Ctrl-C / SIGTERM / errors.
    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    varan = peer = None
    results = None
    try:
        need = [os.path.join(bin_dir, b) for b in ("varan", "varan-loadtest")]
        if args.rebuild or not all(os.access(b, os.X_OK) for b in need):
            log("building release binaries: cargo build --release -p varan-shards -p varan-loadtest")
            run(["cargo", "build", "--release", "-p", "varan-shards", "-p", "varan-loadtest"], 3600, cwd=REPO)
        os.makedirs(workdir, exist_ok=True)
        global GRAVEYARD
        GRAVEYARD = Graveyard(workdir)
        machine = machine_info(workdir)
        log(f"machine: {machine.get('nproc')} CPUs, {machine.get('mem_total_mib')} MiB, {machine.get('kernel')}, "
            f"load {' '.join(machine['loadavg_at_start'])}")
        build = {"git": git_info(),
                 "varan_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(need[0]))),
                 "loadtest_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(need[1])))}
        pr = None
        if not args.no_probe:
            log("probing disk and loopback limits")
            pr = probe(workdir, 0.5 if args.quick else 2.0)
            log(f"  fdatasync 4 KB x1: {pr['fdatasync_4KB_x1']['records_per_s']:.0f}/s, x64: "
                f"{pr['fdatasync_4KB_x64']['records_per_s']:.0f} records/s; create+fsync serial "
                f"{pr['create_write4KB_fsync_serial']['files_per_s']:.0f}/s, 32 in flight "
                f"{pr['create_write4KB_fsync_32']['files_per_s']:.0f}/s; loopback "
                f"{pr['loopback_tcp_one_stream']['mb_per_s']:.0f} MB/s")
        runs_dir = os.path.join(workdir, "runs")
        os.makedirs(runs_dir, exist_ok=True)
        if args.imap:
            imap_res = imap_main(args, bin_dir, workdir, runs_dir, machine, started, out_dir)
            return imap_exit(imap_res)
        if args.relay:
            return relay_exit(relay_part(args, bin_dir, workdir, runs_dir, machine, started, out_dir))

        varan = Varan(bin_dir, workdir, args.port_base)
        varan.setup(args.port_base)
        varan_res = run_server(args, bin_dir, varan, runs_dir)
        varan_limits = varan.limits()
        varan.stop()

        peer_res = None
        pv = "skipped"
        if args.varan_only:
            log("--varan-only: skipping the Postfix+Dovecot peer")
            peer_res = None
        elif not os.access(PEER_SCRIPT, os.X_OK):
            log(f"peer script {PEER_SCRIPT} not found: skipping the Postfix+Dovecot comparison")
        elif os.geteuid() != 0:
            log("the peer needs root (it installs packages and runs Postfix/Dovecot): skipping it")
        elif port_open(PEER_PORT) and "postfix: running" not in run([PEER_SCRIPT, "status"], 60, check=False)[1]:
            log(f"127.0.0.1:{PEER_PORT} is used by something else: skipping the peer")
        else:
            peer = Peer(PEER_SCRIPT)
            peer.start()
            pv = peer_versions()
            peer_res = run_server(args, bin_dir, peer, runs_dir)

        results = {
            "schema": 1,
            "tool": "benches/compare.sh",
            "command": " ".join(["benches/compare.sh"] + sys.argv[1:]),
            "mode": "quick" if args.quick else "full",
            "started": started.isoformat(timespec="seconds"),
            "wall_s": None,
            "machine": machine,
            "varan_build": build,
            "peer_versions": pv,
            "config": {"duration_s": args.duration, "per_connection": args.per_connection,
                       "loadgen_threads": args.loadgen_threads, "e2e_timeout_s": args.e2e_timeout,
                       "users": 1000, "warmup": not args.no_warmup, "varan_settings": varan.settings,
                       "varan_limits_wanted": "RLIMIT_MEMLOCK=infinity, RLIMIT_NOFILE=65536 (as docs/varan.service)",
                       "varan_limits_effective": varan_limits,
                       "workloads": [{"label": l, "size": s, "concurrency": c} for l, s, c in WORKLOADS]},
            "probe": pr,
            "varan": varan_res,
            "peer": peer_res,
        }
        if peer_res:
            results["ratios_varan_over_peer"] = {}
            P = {r["label"]: r for r in peer_res["runs"]}
            for r in varan_res["runs"]:
                p = P.get(r["label"])
                if p:
                    results["ratios_varan_over_peer"][r["label"]] = {
                        "delivered_per_s": ratio(r["delivered_per_s"], p["delivered_per_s"]),
                        "accepted_per_s": ratio(r["accepted_per_s"], p["accepted_per_s"]),
                        "p99_latency": ratio(pct(r["latency_ms"], "p99"), pct(p["latency_ms"], "p99")),
                        "cpu_per_msg": ratio(r["server_cpu_ms_per_msg"], p["server_cpu_ms_per_msg"]),
                        "rss_peak": ratio(r["rss_peak_mib"], p["rss_peak_mib"]),
                    }
        results["targets"], results["notes"] = analyse(results)
        results["wall_s"] = round(time.time() - t_start, 1)
        stamp = started.strftime("%Y-%m-%d")
        jpath = write_reports(results, out_dir, stamp)
        log(f"wrote {jpath}, {os.path.join(out_dir, 'latest.md')}, throughput.svg, latency.svg "
            f"({results['wall_s']:.0f} s)")
        for t in results["targets"]:
            log(f"target: {t['target']}: {t['measured']} -> {t['met']}")
        for n in results["notes"]:
            log(f"note: {n}")
        status = 0
        if not args.no_relay:
            status = relay_exit(relay_part(args, bin_dir, workdir, runs_dir, machine, started, out_dir))
        if not args.no_imap:
            imap_res = imap_main(args, bin_dir, workdir, runs_dir, machine, started, out_dir)
            status = max(status, imap_exit(imap_res))
        return status
    except Abort as e:
        log(f"ABORT: {e}")
        return 2
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if varan:
            varan.stop()
        if peer:
            try:
                peer.stop()
            except Abort as e:
                log(f"stopping the peer failed: {e}")
        if GRAVEYARD:
            GRAVEYARD.clear()
        if not args.keep:
            run(["rm", "-rf", "--one-file-system", workdir], 1800, check=False)
        else:
            log(f"kept {workdir}")


if __name__ == "__main__":
    sys.exit(main())
