"""The RTMP server with a real publisher (the ffmpeg binary) and a recording sink: media taken
on the fast path (in the event loop's callback, no task wake-up per message), in order, with a
full sink slowing the publisher down, and the idle timeout still cutting a stalled publisher."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from ingest.rtmp import RtmpServer
from ingest.rtmp_chunks import AUDIO, VIDEO
from tests.utils.media import publish_rtmp


class Sink:
    """Takes media; every `full_every`-th message it says it is full, and `room()` waits."""

    def __init__(self, full_every: int = 0) -> None:
        # type, timestamp, AVC/AAC packet type (0: sequence header), in a task
        self.media: list[tuple[int, int, int, bool]] = []
        self.full_every = full_every
        self.fulls = 0
        self.rooms = 0
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_metadata(self, metadata: dict[str, Any]) -> None:
        pass

    def on_media(self, type_id: int, timestamp_ms: int, payload: bytes) -> bool:
        in_task = asyncio.current_task() is not None
        self.media.append((type_id, timestamp_ms, payload[1], in_task))
        if self.full_every and len(self.media) % self.full_every == 0:
            self.fulls += 1
            return False
        return True

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


@pytest.mark.parametrize("full_every", [0, 25])
def test_media_is_taken_on_the_fast_path_in_order_and_a_full_sink_is_waited_for(
    full_every: int,
) -> None:
    async def main() -> tuple[Sink, str, int]:
        sink = Sink(full_every=full_every)
        server = await serve(sink)
        publisher = publish_rtmp(f"rtmp://127.0.0.1:{server.port}/live/key", seconds=4)
        try:
            reason = await asyncio.wait_for(sink.closed, 30)
            code = await asyncio.to_thread(publisher.wait, 30)
        finally:
            publisher.kill()
            await server.close()
        return sink, reason, code

    sink, reason, code = asyncio.run(main())
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
