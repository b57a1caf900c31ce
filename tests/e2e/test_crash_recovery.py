"""Durability: every message that got 250 before a kill -9 is in the Maildir after a
restart, exactly once; no message at all is stored twice."""
import collections
import random
import smtplib
import threading
import time
import uuid

import pytest

from lib import maildir as M
from lib.smtp import smtp

THREADS = 20
PER_CONNECTION = 5
MESSAGES_MAX = 3000          # bound on the whole run
RUN_SECONDS_MAX = 30         # bound on the client threads
USERS = [f"u{i}@bench.test" for i in range(1, 6)]


class Clients:
    """THREADS smtplib clients sending 4 KB messages with unique Message-IDs; records
    the Message-ID of each message whose end of data got 250."""

    def __init__(self, port: int):
        self.port = port
        self.run_id = uuid.uuid4().hex[:10]
        self.lock = threading.Lock()
        self.next_seq = 0
        self.acked: list[str] = []
        self.errors = collections.Counter()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + RUN_SECONDS_MAX
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(THREADS)]

    def take_seq(self):
        with self.lock:
            if self.next_seq >= MESSAGES_MAX:
                return None
            self.next_seq += 1
            return self.next_seq

    def message(self, seq: int, rcpt: str) -> tuple[str, bytes]:
        mid = f"<crash-{self.run_id}-{seq}@e2e.test>"
        body = "".join(f"line {i:03d} of message {seq}: " + "x" * 50 + "\r\n" for i in range(56))
        return mid, (f"From: <load@example.org>\r\nTo: <{rcpt}>\r\nSubject: crash {seq}\r\n"
                     f"Message-ID: {mid}\r\n\r\n{body}").encode()

    def worker(self, n: int) -> None:
        rng = random.Random(n)
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                with smtp(self.port, timeout=10) as s:
                    s.ehlo()
                    for _ in range(PER_CONNECTION):
                        seq = self.take_seq()
                        if seq is None or self.stop.is_set():
                            return
                        rcpt = rng.choice(USERS)
                        mid, msg = self.message(seq, rcpt)
                        s.sendmail("load@example.org", [rcpt], msg)   # raises unless DATA got 250
                        with self.lock:
                            self.acked.append(mid)
                    s.quit()
            except (OSError, smtplib.SMTPException) as e:
                with self.lock:
                    self.errors[type(e).__name__] += 1
                if self.stop.is_set():
                    return
                time.sleep(0.05)
            if self.next_seq >= MESSAGES_MAX:
                return

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)
        assert not any(t.is_alive() for t in self.threads), "client threads did not stop"


def scan_message_ids(root) -> dict[str, list]:
    ids = collections.defaultdict(list)
    for p in M.all_message_files(root):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue
        for v in M.header(data, "Message-ID"):
            ids[v.strip()].append(p)
    return ids


def run_and_kill(varan, kill_after: float) -> Clients:
    """Starts the clients, kills the server with SIGKILL after `kill_after` seconds (or
    sooner when a third of the run is acknowledged), but only once some messages got
    their 250; returns the stopped clients."""
    clients = Clients(varan.smtp_port)
    clients.start()
    t0 = time.monotonic()
    while True:
        time.sleep(0.02)
        with clients.lock:
            n = len(clients.acked)
        elapsed = time.monotonic() - t0
        if n >= 20 and (elapsed >= kill_after or n >= MESSAGES_MAX // 3):
            break
        if elapsed > 15:
            break
    varan.kill9()
    clients.join()
    assert len(clients.acked) >= 20, (f"only {len(clients.acked)} messages acknowledged in 15 s before "
                                      f"the kill; errors {dict(clients.errors)}")
    assert clients.next_seq < MESSAGES_MAX, "all messages were sent before the kill: the crash hit an idle server"
    return clients


@pytest.mark.timeout(180)
def test_acknowledged_messages_survive_kill9(varan):
    acked: set[str] = set()
    started = 0
    for rnd, kill_after in enumerate((0.5, 0.2, 1.0), 1):
        clients = run_and_kill(varan, kill_after)
        acked |= set(clients.acked)
        started += clients.next_seq
        varan.start(ready_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            ids = scan_message_ids(varan.maildir_root)
            missing = acked - ids.keys()
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        dups = {k: [str(p) for p in v] for k, v in ids.items() if len(v) > 1}
        ours = {k for k in ids if k.startswith("<crash-")}
        summary = (f"round {rnd} (kill after {kill_after} s): {started} messages started, {len(acked)} acknowledged, "
                   f"{len(ours)} stored, {len(missing)} acknowledged but missing, {len(dups)} duplicated; "
                   f"client errors {dict(clients.errors)}")
        print(summary)
        assert not missing, f"{summary}\nmissing (first 20): {sorted(missing)[:20]}"
        assert not dups, f"{summary}\nduplicates (first 10): {list(dups.items())[:10]}"
