"""Reading Varan's Maildirs: find delivered files, wait for them, split the
headers Varan added from the message as received."""
from __future__ import annotations

import re
import time
from pathlib import Path

ADDED_HEADERS = ["Return-Path", "Delivered-To", "Received"]


def message_files(maildir: Path) -> list[Path]:
    """Message files in new/ and cur/ of a Maildir and of all its folders (.Sent ...)."""
    out: list[Path] = []
    if not maildir.is_dir():
        return out
    for base in [maildir, *sorted(p for p in maildir.iterdir() if p.is_dir() and p.name.startswith("."))]:
        for sub in ("new", "cur"):
            d = base / sub
            if d.is_dir():
                out.extend(sorted(p for p in d.iterdir() if p.is_file()))
    return out


def all_message_files(root: Path) -> list[Path]:
    """Every message file under a maildir_root (<root>/<domain>/<local>/...)."""
    out: list[Path] = []
    if not root.is_dir():
        return out
    for dom in sorted(p for p in root.iterdir() if p.is_dir()):
        for user in sorted(p for p in dom.iterdir() if p.is_dir()):
            out.extend(message_files(user))
    return out


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except FileNotFoundError:      # moved new/ -> cur/ meanwhile
        return b""


def files_with(maildir: Path, needle: str | bytes, root: bool = False) -> list[Path]:
    needle = needle.encode() if isinstance(needle, str) else needle
    files = all_message_files(maildir) if root else message_files(maildir)
    return [p for p in files if needle in _read(p)]


def wait_for(maildir: Path, needle: str | bytes, count: int = 1, timeout: float = 10.0,
             root: bool = False) -> list[Path]:
    """Waits until `count` files containing `needle` exist; fails with what is there."""
    deadline = time.monotonic() + timeout
    while True:
        found = files_with(maildir, needle, root)
        if len(found) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(found) >= count, (
        f"expected {count} message(s) containing {needle!r} under {maildir} within {timeout} s, "
        f"found {len(found)}: {[str(p) for p in found]}; files there: "
        f"{[str(p.relative_to(maildir)) for p in (all_message_files(maildir) if root else message_files(maildir))][:40]}")
    return found


def header_block(data: bytes) -> bytes:
    end = data.find(b"\n\n")
    return data if end < 0 else data[:end + 1]


def headers(data: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) pairs of the header block."""
    out: list[tuple[str, str]] = []
    for line in header_block(data).split(b"\n"):
        if not line:
            continue
        text = line.decode("utf-8", "replace")
        if text[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + text.strip())
        elif ":" in text:
            name, value = text.split(":", 1)
            out.append((name.strip(), value.strip()))
    return out


def header(data: bytes, name: str) -> list[str]:
    return [v for n, v in headers(data) if n.lower() == name.lower()]


def split_added(data: bytes, original_lf: bytes) -> tuple[bytes, bytes]:
    """Splits a delivered file into (prefix Varan added, the original message)."""
    assert data.endswith(original_lf), (
        "the stored message does not end with the message as sent (CRLF -> LF):\n"
        f"--- stored ---\n{data[-1500:]!r}\n--- sent ---\n{original_lf[-1500:]!r}")
    return data[:len(data) - len(original_lf)], data[len(data) - len(original_lf):]


def check_delivered(path: Path, sent_crlf: bytes, envelope_from: str, rcpt: str) -> list[tuple[str, str]]:
    """The contract for one delivered file: LF line ends, the original message byte
    for byte (CRLF -> LF), and exactly Return-Path, Delivered-To, Received added on
    top; the name carries ,S=<size>,W=<size with CRLF>. Returns the added headers."""
    data = path.read_bytes()
    assert b"\r\n" not in data, f"{path} has CRLF line ends (Maildir files use LF)"
    original = sent_crlf.replace(b"\r\n", b"\n")
    prefix, _ = split_added(data, original)
    added = headers(prefix + b"\n")
    # With [checks] on, unauthenticated mail also carries our Received-SPF and
    # Authentication-Results just above Received (test_auth_checks.py checks them).
    checks = ("Authentication-Results", "Received-SPF")
    names = [n for n, _ in added if n not in checks]
    assert len(added) - len(names) <= 2, f"more check headers than expected:\n{prefix.decode(errors='replace')}"
    assert names == ADDED_HEADERS, f"added headers are {names}, expected {ADDED_HEADERS}:\n{prefix.decode(errors='replace')}"
    ret = dict(added)["Return-Path"]
    assert ret == f"<{envelope_from}>", f"Return-Path is {ret!r}, expected <{envelope_from}>"
    dto = dict(added)["Delivered-To"]
    assert dto.lower() == rcpt.lower(), f"Delivered-To is {dto!r}, expected {rcpt}"
    check_size_fields(path)
    return added


def check_size_fields(path: Path) -> None:
    data = path.read_bytes()
    m = re.search(r",S=(\d+)", path.name)
    w = re.search(r",W=(\d+)", path.name)
    assert m and w, f"file name {path.name!r} lacks ,S=<size>,W=<size>"
    assert int(m.group(1)) == len(data), f"{path.name}: S={m.group(1)} but the file has {len(data)} bytes"
    crlf = len(data) + data.count(b"\n")
    assert int(w.group(1)) == crlf, f"{path.name}: W={w.group(1)} but the CRLF size is {crlf}"
