"""storage.http1 against scripted servers (real sockets, exact bytes): every answer framing, kept
connections, a connection the server closed while idle, a reused connection that gets no answer,
broken answers, and TLS with a verifying context. The S3 behaviour over it (retries, errors,
signing) is tests/storage/test_s3put.py's, against the real store."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trustme

from storage.http1 import BadAnswer, Origin

OK = b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 2\r\n\r\nok'


class Scripted:
    """A server that reads each request (head and Content-Length body) and sends what
    `reply(connection number, request number on it)` says; None closes without an answer."""

    def __init__(
        self,
        reply: Callable[[int, int], bytes | None],
        tls: ssl.SSLContext | None = None,
        close_after: bool = False,
    ) -> None:
        self.reply = reply
        self.close_after = close_after  # close each connection after its first answer
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._tls = tls
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            number = self.connections
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
            with sock:
                self._requests(sock, number)
        except OSError:  # the client went away, or refused our certificate
            sock.close()

    def _requests(self, sock: socket.socket, number: int) -> None:
        buf = b""
        for request in range(1000):
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                buf += sock.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
            answer = self.reply(number, request)
            if answer is None:
                return
            sock.sendall(answer)
            if self.close_after:
                return

    def close(self) -> None:
        self._listener.close()


@contextlib.contextmanager
def serving(
    reply: Callable[[int, int], bytes | None], *, close_after: bool = False, read_s: float = 60.0
) -> Iterator[tuple[Scripted, Origin]]:
    """A scripted server and an Origin for it, both closed after."""
    server = Scripted(reply, close_after=close_after)
    origin = Origin("127.0.0.1", server.port, read_s=read_s)
    try:
        yield server, origin
    finally:
        origin.close()
        server.close()


def put(origin: Origin, body: bytes = b"x"):
    return origin.request(
        "PUT", "/b/k", {"Host": "127.0.0.1", "Content-Length": str(len(body))}, body
    )


@pytest.mark.parametrize(
    ("answer", "body", "kept"),
    [
        (OK, b"ok", True),
        (
            b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\n<Erro\r\n3;ext=1\r\nr/>\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"<Error/>",
            True,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b"ok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    ],
)
def test_every_answer_framing(answer: bytes, body: bytes, kept: bool) -> None:
    with serving(lambda conn, req: answer) as (server, origin):
        first, second = put(origin, b"a" * 100_000), put(origin)
    assert first.body == second.body == body
    status = int(answer.rsplit(b"HTTP/1.", 1)[1][2:5])  # the last status line: after any 1xx
    assert first.status == second.status == status
    assert server.connections == (1 if kept else 2)
    # The request went out whole: head and the 100 KB body.
    assert server.requests[0].startswith(b"PUT /b/k HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert server.requests[0].endswith(b"\r\n\r\n" + b"a" * 100_000)


def test_an_answer_to_the_end_of_the_connection() -> None:
    to_the_end = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    with serving(lambda conn, req: to_the_end, close_after=True) as (server, origin):
        answers = [put(origin), put(origin)]
    assert [a.body for a in answers] == [b"all of it"] * 2
    assert server.connections == 2


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    """An answer without `Connection: close`, then the server hangs up: the next request gets
    through on a new connection (the idle socket reads as ended, so it is not even tried)."""
    with serving(lambda conn, req: OK, close_after=True) as (server, origin):
        first = put(origin)
        time.sleep(0.1)  # the hang-up reaches us
        second = put(origin)
    assert first.status == second.status == 200
    assert server.connections == 2 and len(server.requests) == 2


def test_a_reused_connection_that_gets_no_answer_is_tried_once_more_on_a_new_one() -> None:
    """The server closes a kept connection as the next request arrives (its idle timeout in
    the same instant): that request is sent again on a new connection, once."""
    with serving(lambda conn, req: OK if req == 0 else None) as (server, origin):
        answers = [put(origin), put(origin)]
    assert [a.status for a in answers] == [200, 200]
    assert server.connections == 2 and len(server.requests) == 3


def test_no_answer_on_a_new_connection_is_an_error_for_the_caller() -> None:
    """Not retried here: S3Put's retry policy (with its backoff and quota) decides."""
    with (
        serving(lambda conn, req: None) as (server, origin),
        pytest.raises(BadAnswer, match="before an answer"),
    ):
        put(origin)
    assert server.connections == 1


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "middle of an answer's body"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "middle of an answer"),
    ],
)
def test_broken_answers_are_bad_answers(answer: bytes, says: str) -> None:
    with (
        serving(lambda conn, req: answer, close_after=True) as (_, origin),
        pytest.raises(BadAnswer, match=says),
    ):
        put(origin)


def test_a_silent_server_times_out() -> None:
    def silent(conn: int, req: int) -> None:
        time.sleep(1)

    with serving(silent, read_s=0.3) as (_, origin), pytest.raises(TimeoutError):
        put(origin)


def test_tls_with_a_verifying_context() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    server = Scripted(lambda conn, req: OK, tls=server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    origin = Origin("localhost", server.port, tls=trusting)
    try:
        answers = [put(origin), put(origin)]
        # A context that does not trust this CA refuses the server.
        stranger = Origin("localhost", server.port, tls=ssl.create_default_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            put(stranger)
    finally:
        origin.close()
        server.close()
    assert [a.body for a in answers] == [b"ok", b"ok"]
    assert answers[0].headers["etag"] == '"e"'
    assert server.connections == 2  # one kept for both requests, one refused


def test_a_kept_connection_is_reused_above_select_s_1024_descriptors() -> None:
    """A busy server (hundreds of RTMP sockets, spool files) has descriptors above 1024, where
    select() refuses; the idle check must still say "not closed" and reuse the connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with serving(lambda conn, req: OK) as (server, origin):
            answers = [put(origin), put(origin), put(origin)]
            assert origin._idle[0].fileno() > 1024
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [a.status for a in answers] == [200] * 3
    assert server.connections == 1
