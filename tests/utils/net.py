"""Small network helpers for tests."""

from __future__ import annotations

import select
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(
    url: str, *, headers: dict[str, str] | None = None, method: str = "GET", timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass(kw_only=True)
class Upload:
    status: int | None  # None: no answer came
    reply: bytes
    sent: int  # body bytes the socket took before the answer, or before the server closed
    closed: bool  # the server closed the connection after answering
    seconds: float


def upload(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    chunks: Iterable[bytes],
    timeout: float = 30,
) -> Upload:
    """Send a request with a body as a client that keeps sending until the server answers or
    closes, as an attacker would; `chunks` go out as they are (add a Transfer-Encoding header
    and frame them yourself for a chunked body)."""
    t0 = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sent, reply = 0, b""
    with sock:
        sock.sendall(head.encode())
        answered = False
        for chunk in chunks:
            view = memoryview(chunk)
            while view and not answered:
                readable, writable, _ = select.select([sock], [sock], [], timeout)
                if readable or not writable:
                    answered = True  # the answer (or the close) came, or the server stopped reading
                    break
                try:
                    n = sock.send(view)
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
                sent += n
                view = view[n:]
            if answered:
                break
        deadline = time.monotonic() + timeout
        closed = False
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            except TimeoutError:
                break
            if not data:
                closed = True
                break
            reply += data
            if b"\r\n\r\n" in reply and _whole(reply):
                # Answered: wait briefly to see whether the server closes the connection.
                sock.settimeout(2)
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None
    return Upload(
        status=status, reply=reply, sent=sent, closed=closed, seconds=time.monotonic() - t0
    )


def _whole(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def json_body(size: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """`size` bytes of a JSON document, made as they are sent."""
    yield b'{"title": "'
    left = size - 13
    while left > 0:
        yield b"x" * min(piece, left)
        left -= piece
    yield b'"}'


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"
