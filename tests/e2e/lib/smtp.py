"""SMTP helpers: a raw line-level client (for what smtplib cannot send), TLS
contexts that accept the quickstart's self-signed certificate, and messages with
unique markers."""
from __future__ import annotations

import re
import smtplib
import socket
import ssl
import uuid
from dataclasses import dataclass

HOST = "127.0.0.1"


def insecure_tls() -> ssl.SSLContext:
    """A client context for the self-signed test certificate (no verification)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def marker(tag: str = "m") -> str:
    return f"e2e-{tag}-{uuid.uuid4().hex[:16]}"


def make_message(mark: str, sender: str = "sender@example.org", to: str = "u1@bench.test",
                 body: str | None = None, subject: str | None = None) -> bytes:
    """A small RFC 5322 message with CRLF line ends; `mark` is in the Subject,
    the Message-ID and the body so the delivered file can be found."""
    if body is None:
        body = (f"Hello from the e2e suite.\r\nmarker: {mark}\r\n"
                f".a line that starts with a dot\r\n..two dots\r\n\r\nlast line\r\n")
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject or mark}\r\n"
            f"Message-ID: <{mark}@e2e.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def dot_stuff(data: bytes) -> bytes:
    """DATA transparency (RFC 5321 4.5.2): a line starting with "." gets another "."."""
    out = b"." + data if data.startswith(b".") else data
    return out.replace(b"\r\n.", b"\r\n..")


@dataclass
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        m = re.match(r"(\d\.\d{1,3}\.\d{1,3})\b", self.lines[0] if self.lines else "")
        return m.group(1) if m else None

    def __str__(self) -> str:
        return "\n".join(f"{self.code} {l}" for l in self.lines)


class Closed(ConnectionError):
    """The server closed the connection (EOF or reset) while a reply was awaited."""


class RawSMTP:
    """A line-level SMTP client over a plain or TLS socket; keeps a transcript."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 10.0, tls: bool = False,
                 source: str | None = None):
        """`source`: a local address to connect from (127.0.0.x: another client)."""
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        if tls:
            self.sock = insecure_tls().wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.transcript: list[str] = []

    # ---------------------------------------------------------------- bytes
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        shown = data if len(data) <= 300 else data[:150] + b"...<%d bytes>..." % len(data) + data[-60:]
        self.transcript.append("C: " + shown.decode("utf-8", "replace"))
        self.sock.sendall(data)

    def _read_line(self) -> bytes:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError) as e:
                raise Closed(f"connection reset: {e}") from e
            if not chunk:
                raise Closed("connection closed by server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self) -> Reply:
        """Reads one (possibly multi-line) reply."""
        lines, code = [], None
        while True:
            raw = self._read_line()
            self.transcript.append("S: " + raw.decode("utf-8", "replace"))
            m = re.match(rb"(\d{3})([ -])?(.*)", raw)
            if not m:
                raise AssertionError(f"malformed reply line {raw!r}\n" + self.dump())
            code = int(m.group(1))
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    def expect(self, line: str | bytes | None, code: int) -> Reply:
        r = self.reply() if line is None else self.cmd(line)
        assert r.code == code, f"expected {code} to {line!r}, got:\n{r}\ntranscript:\n{self.dump()}"
        return r

    def greet(self, helo: str = "client.e2e.test") -> Reply:
        self.expect(None, 220)
        return self.expect(f"EHLO {helo}", 250)

    def starttls(self) -> None:
        self.expect("STARTTLS", 220)
        assert not self.buf, "data after the STARTTLS reply (response injection)"
        self.sock = insecure_tls().wrap_socket(self.sock, server_hostname="localhost")

    def closed_within(self, timeout: float) -> bool:
        """True when the server closes the connection within `timeout` seconds
        (any data that arrives first is kept in the transcript)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.transcript.append("S: " + chunk.decode("utf-8", "replace"))
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False

    def dump(self) -> str:
        return "\n".join(self.transcript[-80:])

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def smtp(port: int, timeout: float = 10.0) -> smtplib.SMTP:
    s = smtplib.SMTP(HOST, port, local_hostname="client.e2e.test", timeout=timeout)
    return s


def smtp_ssl(port: int, timeout: float = 10.0) -> smtplib.SMTP_SSL:
    return smtplib.SMTP_SSL(HOST, port, local_hostname="client.e2e.test", timeout=timeout,
                            context=insecure_tls())


def send_plain(port: int, sender: str, rcpts: list[str], msg: bytes) -> dict:
    """Sends one message over port 25 without TLS or AUTH; returns smtplib's refusals."""
    with smtp(port) as s:
        s.ehlo()
        refused = s.sendmail(sender, rcpts, msg)
        s.quit()
    return refused
