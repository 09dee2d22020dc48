"""The RTMP server with a real publisher (the ffmpeg binary) and a recording sink: media taken
on the fast path (in the event loop's callback, no task wake-up per message), in order, with a
full sink slowing the publisher down, and the idle timeout still cutting a stalled publisher.
Reads come in batches up to shortly before the sink's next cut, and the cut itself at once; a
scripted publisher (exact timing) shows that a batch that never fills is read anyway."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from typing import Any

import pytest

from ingest import amf0, rtmp
from ingest.rtmp import RtmpServer
from ingest.rtmp_chunks import AUDIO, COMMAND_AMF0, VIDEO, Message, encode_message
from tests.utils.media import publish_rtmp


class Sink:
    """Takes media; every `full_every`-th message it says it is full, and `room()` waits. With
    `cut_every_s` its next cut is the next multiple of that after the last media it took."""

    def __init__(self, full_every: int = 0, cut_every_s: float | None = None) -> None:
        # type, timestamp, AVC/AAC packet type (0: sequence header), in a task
        self.media: list[tuple[int, int, int, bool]] = []
        self.arrived: list[float] = []  # time.monotonic() per message
        self.full_every = full_every
        self.cut_every_s = cut_every_s
        self.fulls = 0
        self.rooms = 0
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_metadata(self, metadata: dict[str, Any]) -> None:
        pass

    def on_media(self, type_id: int, timestamp_ms: int, payload: bytes) -> bool:
        in_task = asyncio.current_task() is not None
        self.media.append((type_id, timestamp_ms, payload[1], in_task))
        self.arrived.append(time.monotonic())
        if self.full_every and len(self.media) % self.full_every == 0:
            self.fulls += 1
            return False
        return True

    def next_cut_s(self) -> float | None:
        if self.cut_every_s is None or not self.media:
            return None
        every = self.cut_every_s
        return (math.floor(self.media[-1][1] / 1000 / every) + 1) * every

    async def room(self) -> None:
        self.rooms += 1
        await asyncio.sleep(0.05)

    async def on_close(self, reason: str) -> None:
        self.closed.set_result(reason)


async def serve(sink: Sink, **kwargs) -> RtmpServer:
    async def open_publish(app: str, key: str, peer: str) -> Sink:
        return sink

    server = RtmpServer(open_publish=open_publish, port=0, **kwargs)
    await server.start()
    return server


def publish_into(sink_options: dict[str, Any], seconds: float) -> tuple[Sink, str, int]:
    """ffmpeg publishes `seconds` of media to a server with a new Sink(**sink_options): the
    sink, why the publish ended, and ffmpeg's exit code."""

    async def main() -> tuple[Sink, str, int]:
        sink = Sink(**sink_options)
        server = await serve(sink)
        publisher = publish_rtmp(f"rtmp://127.0.0.1:{server.port}/live/key", seconds=seconds)
        try:
            reason = await asyncio.wait_for(sink.closed, 30)
            code = await asyncio.to_thread(publisher.wait, 30)
        finally:
            publisher.kill()
            await server.close()
        return sink, reason, code

    return asyncio.run(main())


@pytest.mark.parametrize("full_every", [0, 25])
def test_media_is_taken_on_the_fast_path_in_order_and_a_full_sink_is_waited_for(
    full_every: int,
) -> None:
    sink, reason, code = publish_into({"full_every": full_every}, seconds=4)
    assert code == 0 and reason == "unpublished"
    video = [m for m in sink.media if m[0] == VIDEO]
    audio = [m for m in sink.media if m[0] == AUDIO]
    # 4 s at 30 fps and 44.1 kHz AAC (1024 samples a frame), and a sequence header each.
    assert [m[2] for m in video].count(1) == 120
    assert [m[2] for m in audio].count(1) >= 4 * 44100 // 1024
    assert video[0][2] == 0 and audio[0][2] == 0
    for kind in (video, audio):
        stamps = [ts for _, ts, _, _ in kind]
        assert stamps == sorted(stamps)
    in_task = [task for *_, task in sink.media]
    if full_every:
        # Every full was waited for before the next message, and media went on after it.
        assert sink.fulls >= 10 and sink.rooms == sink.fulls
    else:
        # What came in the same read as the publish command (ffmpeg's first burst) goes
        # through the task; everything after it on the fast path.
        first_fast = in_task.index(False)
        assert first_fast < len(in_task) // 4 and not any(in_task[first_fast:])
        assert sink.rooms == 0


@pytest.mark.parametrize("how", ["stalls", "is killed"])
def test_a_publisher_that_stalls_or_dies_on_the_fast_path_is_let_go(how: str) -> None:
    """A stalled publisher (SIGSTOP: the connection open and silent) is cut by the idle
    timeout, never before it; a killed one (the socket closed, no unpublish) at once."""

    async def main() -> tuple[Sink, str, float]:
        sink = Sink()
        server = await serve(sink, idle_timeout_s=1.0)
        publisher = publish_rtmp(f"rtmp://127.0.0.1:{server.port}/live/key", seconds=30)
        loop = asyncio.get_running_loop()
        try:
            while len(sink.media) < 50:
                assert publisher.poll() is None, publisher.stderr.read() if publisher.stderr else ""
                await asyncio.sleep(0.05)
            if how == "stalls":
                os.kill(publisher.pid, signal.SIGSTOP)
            else:
                publisher.kill()
            since = loop.time()
            reason = await asyncio.wait_for(sink.closed, 10)
            return sink, reason, loop.time() - since
        finally:
            publisher.kill()
            await server.close()

    sink, reason, waited = asyncio.run(main())
    assert not sink.media[-1][3]  # the last media before it came on the fast path
    if how == "stalls":
        assert reason == "timed out"
        assert 1.0 <= waited < 3.0
    else:
        assert reason == "publisher disconnected" or reason.startswith("connection error"), reason
        assert waited < 0.5


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reads the server's protocol gets (one list item per read)."""
    counted: list[int] = []
    original = rtmp._RtmpProtocol.data_received

    def data_received(self: rtmp._RtmpProtocol, data: bytes) -> None:
        counted.append(len(data))
        original(self, data)

    monkeypatch.setattr(rtmp._RtmpProtocol, "data_received", data_received)
    return counted


def test_reads_come_in_batches_until_shortly_before_the_next_cut(reads: list[int]) -> None:
    """A paced publisher sends each message as its own write. Once the stream's rate is known,
    the server reads it in batches of up to READ_AHEAD_S of media, and stops batching
    READ_MARGIN_S before the sink's next cut, so the cut is taken as soon as it arrives."""
    sink, reason, code = publish_into({"cut_every_s": 2.0}, seconds=8)
    assert code == 0 and reason == "unpublished"
    assert [m[2] for m in sink.media if m[0] == VIDEO].count(1) == 240  # nothing lost
    # ffmpeg -re sends media on the wall clock: a message's lag is when the sink got it, less
    # when it was sent (the publisher's start plus its timestamp; the start is the least lag).
    lag = [at - ts / 1000 for (_, ts, *_), at in zip(sink.media, sink.arrived, strict=True)]
    start = min(lag)
    lag = [x - start for x in lag]
    # After the first rate window (2 s) and ffmpeg's start-up burst: batches.
    steady = [i for i, m in enumerate(sink.media) if 3000 <= m[1] < 7500]
    assert len(reads) < len(sink.media) / 3, (len(reads), len(sink.media))
    assert max(lag[i] for i in steady) > 0.3  # held in the socket for a batch...
    # ...but the message that closes a segment (the first at or after a cut, at 4 s and 6 s)
    # and those shortly before it are taken as they come.
    for cut in (4000, 6000):
        near = [i for i in steady if cut - 150 <= sink.media[i][1]]
        near = near[: near.index(next(i for i in near if sink.media[i][1] >= cut)) + 1]
        assert len(near) >= 5 and max(lag[i] for i in near) < 0.15, [
            (sink.media[i][1], round(lag[i], 3)) for i in near
        ]


class ScriptedPublisher:
    """An RTMP publisher that sends exactly what a test says, when it says it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def publish(cls, port: int, key: str) -> ScriptedPublisher:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x03" + bytes(rtmp.HANDSHAKE_SIZE))
        await reader.readexactly(1 + 2 * rtmp.HANDSHAKE_SIZE)
        writer.write(bytes(rtmp.HANDSHAKE_SIZE))
        publisher = cls(reader, writer)
        publisher.command(0, "connect", 1.0, {"app": "live"})
        publisher.command(0, "createStream", 2.0, None)
        publisher.command(1, "publish", 3.0, None, key, "live")
        await writer.drain()
        return publisher

    def command(self, stream_id: int, *values: Any) -> None:
        self.send(Message(COMMAND_AMF0, stream_id, 0, amf0.encode(*values), 3))

    def send(self, message: Message) -> None:
        self.writer.write(encode_message(message, 128))  # the protocol's default chunk size


def test_a_batch_that_does_not_fill_is_read_anyway(reads: list[int]) -> None:
    """The stream stops short of a full batch (the publisher goes quiet and then unpublishes):
    what waits in the socket is read READ_LATE_S after the rate said it would be complete, and
    the unpublish too, long before the idle timeout."""

    async def main() -> tuple[Sink, str, list[float], float]:
        sink = Sink(cut_every_s=60.0)  # no cut near: batches as big as READ_AHEAD_S allows
        server = await serve(sink, idle_timeout_s=30.0)
        publisher = await ScriptedPublisher.publish(server.port, "key")
        loop = asyncio.get_running_loop()
        try:
            sent: list[float] = []
            for i in range(300):  # 6 s of 1 KB audio messages, 20 ms apart
                publisher.send(Message(AUDIO, 1, i * 20, b"\xaf\x01" + bytes(1000), 4))
                sent.append(time.monotonic())
                await asyncio.sleep(0.02)
            quiet = loop.time()
            await asyncio.sleep(2.0)  # the last batch is short; nothing else comes
            publisher.command(1, "deleteStream", 4.0, None, 1.0)
            reason = await asyncio.wait_for(sink.closed, 10)
            unpublished_after = loop.time() - quiet - 2.0
        finally:
            publisher.writer.close()
            await server.close()
        return sink, reason, sent, unpublished_after

    sink, reason, sent, unpublished_after = asyncio.run(main())
    assert reason == "unpublished"
    assert [m[1] for m in sink.media] == [i * 20 for i in range(300)]
    # The first 2 s (the rate's window) a read per message, then batches of ~0.75 s.
    assert len(reads) < 300 / 2
    late = [at - was for at, was in zip(sink.arrived, sent, strict=True)]
    bound = rtmp.READ_AHEAD_S - rtmp.READ_MARGIN_S + rtmp.READ_LATE_S + 0.2
    assert max(late) < bound, max(late)
    assert unpublished_after < rtmp.READ_AHEAD_S + rtmp.READ_LATE_S + 0.2
