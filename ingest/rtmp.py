"""The RTMP server: many publishers on one port, routed by stream key.

ffmpeg's and PyAV's `listen` mode take one publisher and check no key (FACTS.md), so this is our
own: handshake, chunk stream (rtmp_chunks), AMF0 commands, acknowledgements. What a publish is
allowed to do is not decided here: `open_publish(app, key, peer)` returns a `PublishSink` or
raises `PublishRefused`, before any media is accepted.

Publishers this is written against: the ffmpeg binary (`-f flv rtmp://...`), OBS (librtmp
commands: connect, releaseStream, FCPublish, createStream, publish, FCUnpublish, deleteStream),
PyAV, and SFU egress that speaks the same.

Anyone who can reach the port is a peer before it is a publisher, so what a peer controls is
bounded until its `publish` is accepted (`ingest.limits.RtmpLimits`): connections at once, the
time to handshake and to publish (from the accept, whatever trickles in), the size of each
message and of what is held for messages not yet complete, how many messages, and how much log
it causes (`LogBudget`, `shown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ingest import amf0
from ingest.errors import IngestError, ProtocolError, PublishEnded, PublishRefused
from ingest.limits import LogBudget, RtmpLimits, shown
from ingest.rtmp_chunks import (
    ACK,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkParser,
    Message,
    encode_message,
)

log = logging.getLogger(__name__)

HANDSHAKE_SIZE = 1536
OUT_CHUNK_SIZE = 4096
ACK_WINDOW = 2_500_000
_CONTROL_CSID = 2
_COMMAND_CSID = 3
_STREAM_BEGIN = 0

# While media flows, the kernel is asked to wake us only once a batch is in (SO_RCVLOWAT): each
# read costs an epoll wake-up, a recv and a callback, ~75 a second for a paced 30 fps publisher,
# and that was the largest part of a video room's CPU. A batch is the bytes the stream carries
# (measured per media second) up to READ_MARGIN_S before the sink's next cut, at most
# READ_AHEAD_S of media: what the sink would only hold until then waits in the socket instead,
# and the cut is read as soon as it arrives. When the batch is READ_LATE_S later than the rate
# promised (the stream slowed down, or a command ends it), whatever is there is read.
READ_AHEAD_S = 1.0
READ_MARGIN_S = 0.25
READ_LATE_S = 0.25
READ_MAX_BYTES = 256 << 10
READ_SIZE = 1 << 16  # what the connection's task reads at a time
ACCEPT_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
RATE_WINDOW_MS = 2000


class PublishSink(Protocol):
    """Where an accepted publish sends what it receives. Calls come in stream order."""

    async def on_metadata(self, metadata: dict[str, Any]) -> None: ...

    def on_media(self, type_id: int, timestamp_ms: int, payload: bytes) -> bool:
        """An FLV audio (8) or video (9) tag body with its RTMP timestamp, taken at once (it may
        be called in an event loop callback). False: full, await `room()` before the next."""

    def next_cut_s(self) -> float | None:
        """The media time (s) at which the sink next needs media at once (its next cut); until
        then what it is given only waits. None: it needs every message at once."""

    async def room(self) -> None:
        """Wait until the sink takes media again."""

    async def on_close(self, reason: str) -> None:
        """The publish ended: `unpublished` when the publisher said so, else what broke."""


OpenPublish = Callable[[str, str, str], Awaitable[PublishSink]]


class RtmpServer:
    def __init__(
        self,
        *,
        open_publish: OpenPublish,
        host: str = "127.0.0.1",
        port: int = 1935,
        app: str = "live",
        idle_timeout_s: float = 30.0,
        limits: RtmpLimits | None = None,
    ) -> None:
        self.open_publish = open_publish
        self.host = host
        self.port = port
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.limits = limits or RtmpLimits()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # Connections open now, and those of them with no accepted publish (counted from the
        # accept, before their task starts, so a burst of connects cannot overshoot).
        self.open = 0
        self.pending = 0
        self.refused: dict[str, int] = {"connections": 0, "pending": 0}
        self.peer_log = LogBudget(log)  # lines any unauthenticated peer can cause

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # A deep accept queue: a burst of connects beyond it would sit in the kernel unaccepted
        # (their final ACKs dropped and retried for seconds), out of reach of our limits.
        self._server = await loop.create_server(
            lambda: self._protocol(loop), self.host, self.port, backlog=ACCEPT_BACKLOG
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("RTMP listening on rtmp://%s:%s/%s/<stream key>", self.host, self.port, self.app)

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> asyncio.Protocol:
        """A new connection's protocol: ours, or one that closes it at once when the server
        holds as many connections (or unauthenticated ones) as it takes."""
        limits = self.limits
        if self.open >= limits.max_connections:
            why = "connections", f"{self.open} connections open (max_connections)"
        elif self.pending >= limits.max_pending:
            why = "pending", f"{self.pending} connections not yet publishing (max_pending)"
        else:
            return _RtmpProtocol(self, loop)
        self.refused[why[0]] += 1
        return _Refused(self, why[1])

    async def close(self) -> None:
        """Stop listening and end every connection (their sinks get on_close)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: _RtmpProtocol,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        connection = RtmpConnection(self, reader, writer, protocol)
        try:
            await connection.run()
        finally:
            self._connections.discard(task)


class _Refused(asyncio.Protocol):
    """A connection over the server's limits: closed at once, nothing read."""

    def __init__(self, server: RtmpServer, why: str) -> None:
        self.server = server
        self.why = why

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.server.peer_log.warning("rtmp %s: connection refused: %s", _peer(peer), self.why)
        transport.abort()


class _RtmpProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol with a fast path for media.

    Until a publish starts, and whenever the fast path hands back, the connection's task reads
    the bytes through the StreamReader. While media flows, `fast` takes each read in the event
    loop's callback itself: per RTMP message (one read each, from a paced publisher), waking
    the task through the StreamReader (a future, a task step, a copy) cost more than parsing
    the message and handing it to the segmenting.
    """

    def __init__(self, server: RtmpServer, loop: asyncio.AbstractEventLoop) -> None:
        self.fast: Callable[[bytes], None] | None = None
        self.on_end: Callable[[], None] | None = None  # told when the fast path met the end
        self.buffered = 0  # bytes given to the StreamReader that the connection has not read
        self.ended = False  # the end (EOF, a reset) is in the StreamReader
        self.server = server
        self.pending = True  # counted in server.pending until its publish is accepted
        server.open += 1
        server.pending += 1
        # The reader stops reading from the socket once it holds twice its limit (the
        # connection's task reads 64 KB at a time): what a peer can park here is that.
        super().__init__(
            asyncio.StreamReader(limit=READ_SIZE, loop=loop),
            lambda reader, writer: server._serve(reader, writer, self),
            loop=loop,
        )

    def published(self) -> None:
        if self.pending:
            self.pending = False
            self.server.pending -= 1

    def data_received(self, data: bytes) -> None:
        fast = self.fast
        if fast is not None:
            fast(data)
        else:
            self.buffered += len(data)
            super().data_received(data)

    def eof_received(self) -> bool:
        keep_open = super().eof_received()
        self._ended()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.published()  # no longer pending either way
        self.server.open -= 1
        self._ended()

    def _ended(self) -> None:
        """The end is in the StreamReader: the connection must go back to reading it."""
        self.ended = True
        on_end = self.on_end
        self.fast = self.on_end = None
        if on_end is not None:
            on_end()


class RtmpConnection:
    def __init__(
        self,
        server: RtmpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: _RtmpProtocol,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        # The fast path's hand-back: messages for the task, in order, and why it stopped.
        self._backlog: deque[Message] = deque()
        self._full = False  # the sink wants `room()` awaited before the next message
        self._fast_error: BaseException | None = None
        self._handed_back: asyncio.Future[None] | None = None
        self._last_read = 0.0
        # Batched reads (SO_RCVLOWAT) while on the fast path; None where the option is missing.
        self._socket: Any = writer.get_extra_info("socket")
        self._lowat = 1
        self._read_by = math.inf  # loop time by which a batch is late
        self._late_timer: asyncio.TimerHandle | None = None
        self._media_ms: int | None = None  # the last media message's timestamp
        self._rate = 0.0  # bytes per media second
        self._rate_from = (0, 0)  # bytes received, media ms: where the rate's window began
        self.peer = _peer(writer.get_extra_info("peername"))
        limits = server.limits
        self.parser = ChunkParser(
            max_message=limits.max_pending_message_bytes,
            max_partial=limits.max_pending_buffered_bytes,
        )
        self._messages = 0  # before publish: how many came
        self._fc_publish = False  # the publisher asked with FCPublish: answer it with the start
        self.app: str | None = None
        self.key: str | None = None
        self.sink: PublishSink | None = None
        self.publish_stream_id = 0
        self._next_stream_id = 1
        self._received = 0
        self._acked = 0
        self._ack_window = ACK_WINDOW
        self.out_chunk_size = 128  # the protocol's default until we announce ours

    async def run(self) -> None:
        reason = "connection closed"
        limits = self.server.limits
        loop = self._loop
        # Deadlines run from the accept: bytes trickling in extend neither.
        publish_by = loop.time() + limits.publish_timeout_s
        stage = "handshake"
        try:
            await asyncio.wait_for(self._handshake(), limits.handshake_timeout_s)
            stage = "publish"
            # Once publishing, one deadline pushed forward as reads come (wait_for would make
            # a task per read), at most once a second: rescheduling a timer per read showed in
            # profiles. The second is added, so a publisher silent for idle_timeout_s is cut
            # within a second after, never before.
            idle_s = self.server.idle_timeout_s + 1.0
            pushed = -math.inf
            async with asyncio.timeout_at(publish_by) as idle:
                while True:
                    if not await self._catch_up():
                        reason = "unpublished"
                        return
                    protocol = self._protocol
                    if self.sink is None:
                        pass  # the publish deadline stands
                    elif not protocol.buffered and not protocol.ended:
                        idle.reschedule(None)
                        pushed = -math.inf
                        await self._run_fast(idle_s)
                        continue
                    elif (now := loop.time()) - pushed >= 1.0:
                        idle.reschedule(now + idle_s)
                        pushed = now
                    data = await self.reader.read(READ_SIZE)
                    protocol.buffered -= len(data)
                    if not data:
                        reason = "publisher disconnected"
                        break
                    self._received_bytes(len(data))
                    if not await self._take_read(data):
                        reason = "unpublished"
                        return
        except TimeoutError:
            if self.sink is not None:
                reason = "timed out"
                log.warning("rtmp %s (key %s): %s", self.peer, _redact(self.key), reason)
            else:
                reason = (
                    f"no handshake within {limits.handshake_timeout_s:g} s"
                    if stage == "handshake"
                    else f"no publish within {limits.publish_timeout_s:g} s of connecting"
                )
                self.server.peer_log.warning("rtmp %s: %s; closing", self.peer, reason)
        except asyncio.IncompleteReadError:
            reason = "connection closed during handshake"
            self.server.peer_log.info("rtmp %s: %s", self.peer, reason)
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            self._log_peer_error(reason)
        except PublishRefused as exc:
            reason = f"refused: {exc}"
        except PublishEnded as exc:
            reason = str(exc)
            log.warning("rtmp %s (key %s): %s; closing", self.peer, _redact(self.key), exc)
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(
                    self._status(self.publish_stream_id, "error", exc.code, str(exc)), 1.0
                )
        except IngestError as exc:
            reason = str(exc)
            self._log_peer_error(reason)
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
            self.server.peer_log.info("rtmp %s: %s", self.peer, reason)
        except asyncio.CancelledError:
            reason = "server shutting down"
            raise
        finally:
            await self._finish(reason)

    def _log_peer_error(self, reason: str) -> None:
        """A publisher's broken stream is worth a line each; an unauthenticated peer's, a line
        within the server's budget."""
        if self.sink is not None:
            log.warning("rtmp %s (key %s): %s; closing", self.peer, _redact(self.key), reason)
        else:
            self.server.peer_log.warning("rtmp %s: %s; closing", self.peer, reason)

    async def _take_read(self, data: bytes) -> bool:
        """Parse and handle a read on the task's path; False when the publisher has finished.

        Before publish, parsing stops after each command: an accepted `publish` lifts the
        limits the bytes after it are parsed under."""
        parser = self.parser
        while True:
            before = self.sink is None
            messages = parser.feed(data, stop_after_command=before)
            data = b""
            if before:
                self._messages += len(messages)
                if self._messages > self.server.limits.max_pending_messages:
                    raise ProtocolError(
                        f"more than {self.server.limits.max_pending_messages} messages "
                        "before publish"
                    )
            for message in messages:
                if not await self._dispatch(message):
                    return False
            if not parser.stopped:
                return True

    # -- the fast path (publishing) --------------------------------------------------------------

    async def _run_fast(self, idle_s: float) -> None:
        """Let `_feed` take the reads until it hands back; raise what it met. TimeoutError when
        no byte came for `idle_s`."""
        loop, protocol = self._loop, self._protocol
        handed_back = self._handed_back = loop.create_future()
        self._last_read = loop.time()
        protocol.fast, protocol.on_end = self._feed, self._hand_back
        try:
            while not handed_back.done():
                remaining = self._last_read + idle_s - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait((handed_back,), timeout=remaining)
        finally:
            protocol.fast = protocol.on_end = None
            self._handed_back = None
            self._read_each()
        error, self._fast_error = self._fast_error, None
        if error is not None:
            raise error

    def _feed(self, data: bytes) -> None:
        """A read while publishing, in the event loop's callback: media goes straight to the
        sink. The first message that needs the task (a command, the sink full) and those after
        it go to the backlog, and the task takes over."""
        self._last_read = self._loop.time()
        try:
            self._received_bytes(len(data))
            messages = self.parser.feed(data)
            for i, message in enumerate(messages):
                if message.type_id == AUDIO or message.type_id == VIDEO:
                    if self._take_media(message):
                        continue
                    self._full = True
                    self._backlog.extend(messages[i + 1 :])
                else:
                    self._backlog.extend(messages[i:])
                self._hand_back()
                return
            self._pace()
        except Exception as exc:  # raised in the task, where every error is handled
            self._fast_error = exc
            self._hand_back()

    def _pace(self) -> None:
        """Size the next read: the bytes of the media up to shortly before the sink's next
        cut (see READ_AHEAD_S)."""
        ts = self._media_ms
        if ts is None or self._socket is None or self.sink is None:
            return
        start_bytes, start_ms = self._rate_from
        span_ms = ts - start_ms
        if span_ms >= RATE_WINDOW_MS or span_ms < 0:  # a full window, or time went back
            if span_ms > 0:
                self._rate = (self._received - start_bytes) * 1000 / span_ms
            self._rate_from = (self._received, ts)
        due = self.sink.next_cut_s()
        ahead = 0.0 if due is None else min(due - ts / 1000, READ_AHEAD_S) - READ_MARGIN_S
        # Below half the acknowledgement window: a publisher may wait for our ACK to send more.
        cap = min(READ_MAX_BYTES, self._ack_window // 2)
        want = min(int(self._rate * ahead), cap) if ahead > 0 else 1
        if want <= 1:
            self._read_each()
            return
        if not 0.8 * self._lowat <= want <= 1.25 * self._lowat:  # a setsockopt is a syscall
            self._set_lowat(want)
        if self._lowat > 1:
            self._read_by = self._last_read + self._lowat / self._rate + READ_LATE_S
            if self._late_timer is None:
                self._late_timer = self._loop.call_at(self._read_by, self._late)

    def _late(self) -> None:
        """The batch has not come by the time its rate promised: read what is there."""
        self._late_timer = None
        if self._loop.time() < self._read_by:  # reads came since: the batch after is due then
            self._late_timer = self._loop.call_at(self._read_by, self._late)
        else:
            self._read_each()  # the kernel signals at once if bytes wait

    def _read_each(self) -> None:
        """Read every byte as it comes."""
        if self._late_timer is not None:
            self._late_timer.cancel()
            self._late_timer = None
        self._read_by = math.inf
        self._set_lowat(1)

    def _set_lowat(self, size: int) -> None:
        if size == self._lowat or self._socket is None:
            return
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
        except (OSError, AttributeError):  # closed, or no SO_RCVLOWAT here: read as it comes
            self._socket = None
        else:
            self._lowat = size

    def _hand_back(self) -> None:
        """From here on the task reads: what arrives next queues in the StreamReader, behind
        the backlog."""
        self._protocol.fast = self._protocol.on_end = None
        if self._handed_back is not None and not self._handed_back.done():
            self._handed_back.set_result(None)

    async def _catch_up(self) -> bool:
        """What the fast path handed back, in order; False when the publisher has finished."""
        if self._full:
            self._full = False
            assert self.sink is not None
            await self.sink.room()
        while self._backlog:
            if not await self._dispatch(self._backlog.popleft()):
                return False
        return True

    async def _finish(self, reason: str) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            try:
                await sink.on_close(reason)
            except Exception:
                log.exception("rtmp %s: sink failed to close", self.peer)
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await self.writer.wait_closed()

    # -- handshake ------------------------------------------------------------------------------

    async def _handshake(self) -> None:
        c0 = await self._read_exactly(1)
        if c0[0] != 3:
            raise ProtocolError(f"not RTMP: first byte 0x{c0[0]:02x}, expected version 3")
        c1 = await self._read_exactly(HANDSHAKE_SIZE)
        # The simple handshake: S1 with zero version bytes tells clients not to expect a digest.
        s1 = struct.pack(">II", 0, 0) + os.urandom(HANDSHAKE_SIZE - 8)
        self.writer.write(b"\x03" + s1 + c1)
        await self.writer.drain()
        await self._read_exactly(HANDSHAKE_SIZE)  # C2 echoes S1; nothing to verify

    async def _read_exactly(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self._protocol.buffered -= n
        return data

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch(self, message: Message) -> bool:
        """Handle one message; False when the publisher has finished."""
        type_id = message.type_id
        if type_id in (AUDIO, VIDEO):
            if not self._take_media(message):
                assert self.sink is not None
                await self.sink.room()
        elif type_id in (COMMAND_AMF0, COMMAND_AMF3):
            payload = message.payload[1:] if type_id == COMMAND_AMF3 else message.payload
            return await self._command(message.stream_id, amf0.decode_all(payload))
        elif type_id in (DATA_AMF0, DATA_AMF3):
            payload = message.payload[1:] if type_id == DATA_AMF3 else message.payload
            await self._data(amf0.decode_all(payload))
        elif type_id == AGGREGATE:
            for sub in _split_aggregate(message):  # media and data only: no recursion
                if not await self._dispatch(sub):
                    return False
        elif type_id == WINDOW_ACK_SIZE and len(message.payload) >= 4:
            self._ack_window = max(1, struct.unpack_from(">I", message.payload)[0])
        return True

    def _take_media(self, message: Message) -> bool:
        """Media to the sink; False when the sink is full (await its `room()` first)."""
        if self.sink is None or message.stream_id != self.publish_stream_id:
            return True  # media before publish or on another stream: not ours to keep
        self._media_ms = message.timestamp
        return self.sink.on_media(message.type_id, message.timestamp, message.payload)

    def _received_bytes(self, count: int) -> None:
        self._received += count
        if self._received - self._acked >= self._ack_window:
            self._acked = self._received
            # Not drained: 16 bytes per window, and this may run in an event loop callback.
            ack = Message(ACK, 0, 0, struct.pack(">I", self._received & 0xFFFFFFFF), _CONTROL_CSID)
            self.writer.write(encode_message(ack, self.out_chunk_size))

    async def _command(self, stream_id: int, values: list[Any]) -> bool:
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError(f"malformed command {shown(values[:2])}")
        name, txn = values[0], values[1] if isinstance(values[1], float) else 0.0
        args = values[3:]
        if name == "connect":
            await self._connect(txn, values[2] if len(values) > 2 else None)
        elif name in ("releaseStream", "FCPublish"):
            await self._result(txn, None, amf0.UNDEFINED)
            # onFCPublish says the publish started: only once the key has been accepted.
            self._fc_publish = self._fc_publish or name == "FCPublish"
        elif name == "createStream":
            stream = self._next_stream_id
            self._next_stream_id += 1
            await self._result(txn, None, float(stream))
        elif name == "publish":
            await self._publish(stream_id, args)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.sink is not None:
                log.info("rtmp %s (key %s): %s", self.peer, _redact(self.key), name)
                if name != "FCUnpublish":
                    await self._status(
                        stream_id, "status", "NetStream.Unpublish.Success", "Stopped."
                    )
                return False
        elif name in ("play", "play2"):
            await self._status(
                stream_id,
                "error",
                "NetStream.Play.Failed",
                "This server records; watch over HLS instead.",
            )
            raise ProtocolError("play is not supported on the ingest port")
        elif name in ("_checkbw", "getStreamLength"):
            await self._result(txn, None)
        else:
            log.debug("rtmp %s: ignoring command %s", self.peer, shown(name))
        return True

    async def _connect(self, txn: float, props: Any) -> None:
        if self.app is not None:
            raise ProtocolError("second connect on one connection")
        app = props.get("app", "") if isinstance(props, dict) else ""
        app = app.split("?")[0].strip("/") if isinstance(app, str) else ""
        self.app = app
        if app != self.server.app:
            await self._send_command(
                "_error",
                txn,
                None,
                _status(
                    "error",
                    "NetConnection.Connect.Rejected",
                    f"Unknown application {shown(app)}: "
                    f"publish to rtmp://HOST/{self.server.app}/<stream key>",
                ),
            )
            self.server.peer_log.warning("rtmp %s: unknown application %s", self.peer, shown(app))
            raise PublishRefused(f"unknown application {shown(app)}")
        await self._send(WINDOW_ACK_SIZE, struct.pack(">I", ACK_WINDOW), _CONTROL_CSID)
        await self._send(SET_PEER_BANDWIDTH, struct.pack(">IB", ACK_WINDOW, 2), _CONTROL_CSID)
        await self._send(SET_CHUNK_SIZE, struct.pack(">I", OUT_CHUNK_SIZE), _CONTROL_CSID)
        self.out_chunk_size = OUT_CHUNK_SIZE
        await self._send_command(
            "_result",
            txn,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        )

    async def _publish(self, stream_id: int, args: list[Any]) -> None:
        if self.app is None:
            raise ProtocolError("publish before connect")
        if self.sink is not None:
            raise ProtocolError("second publish on one connection")
        name = args[0] if args and isinstance(args[0], str) else ""
        key = name.split("?")[0].strip()
        self.key = key
        if not key:
            await self._status(stream_id, "error", "NetStream.Publish.BadName", "No stream key.")
            raise PublishRefused("no stream key")
        try:
            sink = await self.server.open_publish(self.app, key, self.peer)
        except PublishRefused as exc:
            self.server.peer_log.warning(
                "rtmp %s: publish refused for key %s: %s", self.peer, _redact(key), exc
            )
            await self._status(stream_id, "error", exc.code, str(exc))
            raise
        except IngestError as exc:
            log.error("rtmp %s: cannot start publish for key %s: %s", self.peer, _redact(key), exc)
            await self._status(stream_id, "error", "NetStream.Publish.Failed", str(exc))
            raise PublishRefused(str(exc)) from exc
        self.sink = sink
        self.publish_stream_id = stream_id
        # A room's publisher now: the media limits apply, and it no longer counts as pending.
        limits = self.server.limits
        self.parser.max_message = limits.max_message_bytes
        self.parser.max_partial = limits.max_buffered_bytes
        self._protocol.published()
        await self._send(USER_CONTROL, struct.pack(">HI", _STREAM_BEGIN, stream_id), _CONTROL_CSID)
        if self._fc_publish:
            await self._send_command(
                "onFCPublish", 0, None, _status("status", "NetStream.Publish.Start", name)
            )
        await self._status(
            stream_id, "status", "NetStream.Publish.Start", f"Publishing {_redact(key)}."
        )
        log.info("rtmp %s: publishing key %s", self.peer, _redact(key))

    async def _data(self, values: list[Any]) -> None:
        if self.sink is None:
            return
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            await self.sink.on_metadata(dict(values[1]))

    # -- sending --------------------------------------------------------------------------------

    async def _send(self, type_id: int, payload: bytes, csid: int, stream_id: int = 0) -> None:
        self.writer.write(
            encode_message(Message(type_id, stream_id, 0, payload, csid), self.out_chunk_size)
        )
        await self.writer.drain()

    async def _send_command(self, name: str, txn: float, *values: Any, stream_id: int = 0) -> None:
        await self._send(COMMAND_AMF0, amf0.encode(name, txn, *values), _COMMAND_CSID, stream_id)

    async def _result(self, txn: float, *values: Any) -> None:
        await self._send_command("_result", txn, *values)

    async def _status(self, stream_id: int, level: str, code: str, description: str) -> None:
        await self._send_command(
            "onStatus", 0.0, None, _status(level, code, description), stream_id=stream_id
        )


def _status(level: str, code: str, description: str) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description}


_AGGREGATED = (AUDIO, VIDEO, DATA_AMF0)


def _split_aggregate(message: Message) -> list[Message]:
    """An aggregate message holds FLV tags (audio, video, data: an aggregate inside one is not
    valid RTMP, and would let a small message nest without bound); their timestamps are
    relative to the first one's."""
    data = message.payload
    out: list[Message] = []
    pos = 0
    base: int | None = None
    while pos + 11 <= len(data):
        type_id = data[pos]
        if type_id not in _AGGREGATED:
            what = "an aggregate" if type_id == AGGREGATE else f"a type-{type_id} message"
            raise ProtocolError(f"{what} inside an aggregate message (only FLV tags may be)")
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        end = pos + 11 + size
        if end > len(data):
            raise ProtocolError("aggregate message tag runs past its end")
        base = ts if base is None else base
        timestamp = (message.timestamp + ts - base) & 0xFFFFFFFF
        out.append(Message(type_id, message.stream_id, timestamp, data[pos + 11 : end]))
        pos = end + 4  # previous tag size
    return out


def _redact(key: str | None) -> str:
    """Enough of a key to tell rooms apart in logs (its room id part), never the secret."""
    if not key:
        return "-"
    room, sep, _ = key.partition("-")
    shown_part = room[:32] if sep else key[:4]  # a peer's key may be anything, any length
    return repr(shown_part)[1:-1] + ("-…" if sep else "…")


def _peer(peername: Any) -> str:
    host, port = peername[:2] if isinstance(peername, tuple) else ("?", "?")
    return f"{host}:{port}"
