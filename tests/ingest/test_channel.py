"""ByteChannel between the event loop and a real reader thread: order, wake-ups, backpressure."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ingest.channel import ByteChannel, ChannelClosed


def _reader(channel: ByteChannel, got: list[tuple[float, bytes]], n: int = 1 << 16):
    def run() -> None:
        while chunk := channel.read(n):
            got.append((time.monotonic(), chunk))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_bytes_arrive_in_order_and_end_on_close() -> None:
    async def main() -> bytes:
        channel = ByteChannel(asyncio.get_running_loop(), max_bytes=64 << 10)
        got: list[tuple[float, bytes]] = []
        thread = _reader(channel, got, n=1000)
        for i in range(2000):
            await channel.write(i.to_bytes(4, "big") * 25)
        channel.close()
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()
        return b"".join(chunk for _, chunk in got)

    data = asyncio.run(main())
    assert data == b"".join(i.to_bytes(4, "big") * 25 for i in range(2000))


def test_small_writes_wake_the_reader_within_the_delay_and_in_batches() -> None:
    async def main() -> tuple[list[tuple[float, bytes]], list[float]]:
        channel = ByteChannel(asyncio.get_running_loop(), wake_bytes=1 << 20, wake_delay_s=0.05)
        got: list[tuple[float, bytes]] = []
        thread = _reader(channel, got)
        await asyncio.sleep(0.05)  # the reader is waiting
        sent = []
        for _ in range(40):  # a 64 kb/s audio room: one ~190-byte frame every ~21 ms
            sent.append(time.monotonic())
            await channel.write(b"a" * 190)
            await asyncio.sleep(0.021)
        await asyncio.sleep(0.1)
        channel.close()
        await asyncio.to_thread(thread.join, 10)
        return got, sent

    got, sent = asyncio.run(main())
    assert sum(len(chunk) for _, chunk in got) == 40 * 190
    # Batched: far fewer reads than writes. Woken by the timer, not by the close: reads came
    # while the writes went on, and a typical byte waited about the delay (a loaded machine
    # may stretch one wake-up, so the median is what is checked).
    assert len(got) <= 40 // 2
    assert sum(1 for t, _ in got if t < sent[-1]) >= 5
    first_read_after = sorted(min(t for t, _ in got if t >= s) - s for s in sent)
    assert first_read_after[len(sent) // 2] < 0.05 + 0.1


def test_a_full_wake_size_wakes_the_reader_at_once() -> None:
    async def main() -> float:
        channel = ByteChannel(asyncio.get_running_loop(), wake_bytes=1000, wake_delay_s=10.0)
        got: list[tuple[float, bytes]] = []
        thread = _reader(channel, got)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await channel.write(b"v" * 1000)
        while not got:
            await asyncio.sleep(0.001)
        waited = got[0][0] - started
        channel.close()
        await asyncio.to_thread(thread.join, 10)
        return waited

    assert asyncio.run(main()) < 1.0  # not the 10 s delay


def test_a_full_channel_makes_the_writer_wait_and_abandon_stops_it() -> None:
    async def main() -> None:
        channel = ByteChannel(asyncio.get_running_loop(), max_bytes=1000)
        await channel.write(b"x" * 1000)
        blocked = asyncio.create_task(channel.write(b"y"))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # nobody reads: backpressure
        assert await asyncio.to_thread(channel.read, 600) == b"x" * 600
        await asyncio.wait_for(blocked, 1)  # room again
        channel.abandon()
        assert await asyncio.to_thread(channel.read) == b""
        with pytest.raises(ChannelClosed):
            await channel.write(b"z")

    asyncio.run(main())
