"""A private dnsmasq (package dnsmasq-base) on loopback answering from a fixed zone:
never forwards, NXDOMAIN for every name it does not know."""
import shutil
import subprocess
import time
from pathlib import Path

import pytest


class Dnsmasq:
    def __init__(self, workdir: Path, port: int, lines: list[str], address: str = "127.0.0.1"):
        self.dir = Path(workdir)
        self.port = port
        self.address = address
        self.lines = lines
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Dnsmasq":
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(exe).exists():
            pytest.fail("dnsmasq is missing (apt-get install dnsmasq-base; scripts/test.sh does)", pytrace=False)
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "dns.conf"
        conf.write_text("\n".join([f"port={self.port}", f"listen-address={self.address}", "bind-interfaces",
                                   "no-resolv", "no-hosts", "local=/#/", *self.lines]) + "\n")
        self.proc = subprocess.Popen([exe, f"--conf-file={conf}", "--keep-in-foreground",
                                      f"--pid-file={self.dir / 'dnsmasq.pid'}"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "dnsmasq.log", "wb"))
        time.sleep(0.3)
        assert self.proc.poll() is None, (self.dir / "dnsmasq.log").read_text()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def txt_record(name: str, value: str) -> str:
    """A dnsmasq txt-record line; long values go in as several strings."""
    parts = [value[i:i + 255] for i in range(0, len(value), 255)]
    return "txt-record=" + name + "," + ",".join(f'"{p}"' for p in parts)
