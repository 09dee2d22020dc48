"""HTTP/1.1 to one origin over kept-alive sockets: what `storage.s3put` needs and nothing more.

The upload hot path PUTs a playlist or a segment and reads a short answer. Through urllib3 and
http.client a 1 KB PUT cost ~0.27 ms of CPU (an email-package header parser, Timeout objects,
two sends, layers of wrappers) and a 600 KB PUT ~0.6 ms; here ~0.06 ms and ~0.26 ms, measured
against the embedded store. At 300 audio rooms (~300 PUTs a second) that is ~6% of a core.

What it does: one request per connection at a time, the request head and a small body in one
send, an answer with a Content-Length, a chunked body or a body to the end of the connection,
`Connection: close` honoured, 1xx answers skipped. A kept-alive connection the server has closed
while idle is noticed before it is used (a readable idle socket is closed or carries junk), and
a request on a reused connection that gets no answer byte at all is sent once more on a new
connection: the server may have closed it in the same instant, and every request this client
sends (PUT) is idempotent. TLS through the `ssl` module with a verifying context. Timeouts per
socket operation, like urllib3's: `connect_s` to connect, `read_s` for each send and receive.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections import deque

MAX_HEAD = 64 << 10  # an answer's status line and headers
_ONE_SEND = 64 << 10  # bodies up to this go in the same send as the head


class BadAnswer(OSError):
    """The server's bytes are not an HTTP/1.1 answer (or stop in the middle of one)."""


class Answer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body


class _NothingBack(BadAnswer):
    """The connection ended before a single byte of the answer."""


class Origin:
    """Kept-alive connections to scheme://host:port, up to `keep` idle ones. Thread-safe."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        connect_s: float = 60.0,
        read_s: float = 60.0,
        keep: int = 10,
    ) -> None:
        self.host, self.port = host, port
        self._tls = tls
        self._connect_s, self._read_s = connect_s, read_s
        self._keep = max(1, keep)
        self._idle: deque[socket.socket] = deque()
        self._lock = threading.Lock()

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        head = "".join(
            [f"{method} {target} HTTP/1.1\r\n"] + [f"{k}: {v}\r\n" for k, v in headers.items()]
        )
        head_bytes = (head + "\r\n").encode("latin-1")
        sock = self._take()
        if sock is not None:
            try:
                return self._exchange(sock, method, head_bytes, body)
            except (_NothingBack, ConnectionResetError, BrokenPipeError):
                pass  # closed by the server as we reused it: once more, on a new connection
        return self._exchange(self._connect(), method, head_bytes, body)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, deque()
        for sock in idle:
            sock.close()

    # -- connections ---------------------------------------------------------------------------

    def _take(self) -> socket.socket | None:
        """An idle connection the server has not closed, or None."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                sock = self._idle.pop()  # the most recently used: the least likely to be stale
            if not _readable(sock):
                return sock
            sock.close()  # an idle connection has nothing to say: it was closed (or is broken)

    def _give(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(sock)
                return
        sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self._connect_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self._read_s)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- one exchange ---------------------------------------------------------------------------

    def _exchange(self, sock: socket.socket, method: str, head: bytes, body: bytes) -> Answer:
        try:
            if len(body) <= _ONE_SEND:
                sock.sendall(head + body)
            else:
                sock.sendall(head)
                sock.sendall(body)
            answer, keep = _read_answer(sock, method)
        except BaseException:
            sock.close()
            raise
        if keep:
            self._give(sock)
        else:
            sock.close()
        return answer


def _readable(sock: socket.socket) -> bool:
    """Whether the socket has something to read (or has ended) right now. poll, not select:
    a busy server holds more than select's 1024 file descriptors."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True  # closed or unusable: not to be reused


def _read_answer(sock: socket.socket, method: str) -> tuple[Answer, bool]:
    """The answer to one request, and whether the connection can carry another."""
    buf = bytearray()
    received = False
    while True:  # 1xx answers (100 Continue sent anyway) come before the real one
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEAD:
                raise BadAnswer(f"an answer head longer than {MAX_HEAD} bytes")
            chunk = sock.recv(65536)
            if not chunk:
                if received:
                    raise BadAnswer("the connection ended in the middle of an answer")
                raise _NothingBack("the connection ended before an answer")
            received = True
            buf += chunk
        lines = buf[:end].decode("latin-1").split("\r\n")
        del buf[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise BadAnswer(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200:
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise BadAnswer(f"a malformed header line: {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        break
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(sock, buf)
    elif (length := headers.get("content-length")) is not None:
        if not length.isdigit():
            raise BadAnswer(f"a malformed Content-Length: {length[:40]!r}")
        body = _read_exactly(sock, buf, int(length))
    else:
        while chunk := sock.recv(65536):
            buf += chunk
        body, keep = bytes(buf), False
        buf.clear()
    if buf:  # bytes after the answer: nothing was asked for them
        keep = False
    return Answer(status, headers, body), keep


def _read_exactly(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(max(65536, n - len(buf)))
        if not chunk:
            raise BadAnswer("the connection ended in the middle of an answer's body")
        buf += chunk
    body = bytes(buf[:n])
    del buf[:n]
    return body


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while (end := buf.find(b"\r\n")) < 0:
        if len(buf) > MAX_HEAD:
            raise BadAnswer("a chunk size line too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise BadAnswer("the connection ended in the middle of a chunked body")
        buf += chunk
    line = bytes(buf[:end])
    del buf[: end + 2]
    return line


def _read_chunked(sock: socket.socket, buf: bytearray) -> bytes:
    parts = []
    while True:
        size_text = _read_line(sock, buf).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadAnswer(f"a malformed chunk size: {size_text[:40]!r}") from None
        if size == 0:
            while _read_line(sock, buf):  # trailers, up to the empty line
                pass
            return b"".join(parts)
        parts.append(_read_exactly(sock, buf, size))
        if _read_line(sock, buf):
            raise BadAnswer("a chunk not followed by CRLF")
