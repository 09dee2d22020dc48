"""MediaLane and LanePool with real threads: order per lane, no lane run twice at once, batched
hand-overs, the hinted wake-up, backpressure, abandon, and lanes taking turns."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ingest.channel import ChannelClosed
from ingest.lanes import LanePool, MediaLane


class Recorded:
    """A lane's consumer: what it got, when, and whether two threads ever ran it at once."""

    def __init__(self, work_s: float = 0.0) -> None:
        self.batches: list[tuple[float, list[int]]] = []
        self.ended = threading.Event()
        self.ends = 0
        self.overlapped = False
        self._running = False
        self.work_s = work_s  # per item

    def push(self, items: list[int]) -> None:
        self.overlapped |= self._running
        self._running = True
        if self.work_s:
            time.sleep(self.work_s * len(items))
        self.batches.append((time.monotonic(), items))
        self._running = False

    def end(self) -> None:
        self.ends += 1
        self.ended.set()

    @property
    def items(self) -> list[int]:
        return [item for _, batch in self.batches for item in batch]


def lane(pool: LanePool, got: Recorded, **kwargs) -> MediaLane:
    return MediaLane(pool, asyncio.get_running_loop(), push=got.push, end=got.end, **kwargs)


def test_many_lanes_on_two_threads_keep_order_and_end_once() -> None:
    pool = LanePool(2)

    async def main() -> list[Recorded]:
        consumers = [Recorded() for _ in range(50)]
        lanes = [lane(pool, got, wake_bytes=300) for got in consumers]
        for i in range(400):
            for one in lanes:
                await one.put(i, 100, i * 0.02)
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        for one in lanes:
            one.close()
        for got in consumers:
            assert await asyncio.to_thread(got.ended.wait, 10)
        return consumers

    consumers = asyncio.run(main())
    pool.close()
    for got in consumers:
        assert got.items == list(range(400))
        assert got.ends == 1 and not got.overlapped
        assert len(got.batches) < 400 / 2  # handed over 3 at a time or more, not one by one


def test_small_items_go_in_batches_within_the_delay() -> None:
    pool = LanePool(1)

    async def main() -> tuple[Recorded, list[float]]:
        got = Recorded()
        one = lane(pool, got, wake_delay_s=0.05)
        sent = []
        for i in range(40):  # a 64 kb/s audio room: a ~190-byte frame every ~21 ms
            sent.append(time.monotonic())
            await one.put(i, 190, i * 0.021)
            await asyncio.sleep(0.021)
        await asyncio.sleep(0.1)
        assert got.items == list(range(40))  # all there before the close
        one.close()
        await asyncio.to_thread(got.ended.wait, 10)
        return got, sent

    got, sent = asyncio.run(main())
    pool.close()
    assert len(got.batches) <= 20
    waits = sorted(at - sent[i] for at, batch in got.batches for i in batch)
    assert waits[len(waits) // 2] < 0.05 + 0.05


def test_the_media_time_the_segmenter_waits_for_is_handed_over_at_once() -> None:
    pool = LanePool(1)

    async def main() -> tuple[Recorded, float]:
        got = Recorded()
        one = lane(pool, got, hinted_delay_s=1.0)
        one.wake_at(2.0)  # the segmenter's next cut
        for i in range(20):  # 0.0 .. 0.38 s of media, 20 ms apart
            await one.put(i, 100, i * 0.02)
            await asyncio.sleep(0.02)
        assert got.batches == []  # held: nothing is needed before 2.0 s
        due = time.monotonic()
        await one.put(99, 100, 2.0)
        for _ in range(100):
            if got.batches:
                break
            await asyncio.sleep(0.005)
        one.close()
        await asyncio.to_thread(got.ended.wait, 10)
        return got, due

    got, due = asyncio.run(main())
    pool.close()
    first_at, first = got.batches[0]
    assert first == [*range(20), 99]
    assert first_at - due < 0.2


def test_a_pending_cut_lets_a_video_lane_hold_bigger_batches() -> None:
    """A 2.5 Mb/s room's ~10 KB frames: 16 KB batches without a pending cut, up to 256 KB with
    one (each hand-over wakes a pool thread)."""
    pool = LanePool(1)

    async def wait_for_batches(got: Recorded, count: int) -> None:
        for _ in range(100):
            if len(got.batches) >= count:
                return
            await asyncio.sleep(0.005)

    async def main() -> tuple[Recorded, Recorded]:
        plain, hinted = Recorded(), Recorded()
        plain_lane, hinted_lane = lane(pool, plain), lane(pool, hinted)
        hinted_lane.wake_at(2.0)
        for i in range(25):  # 250 KB of media before the cut
            await plain_lane.put(i, 10_000, i * 0.033)
            await hinted_lane.put(i, 10_000, i * 0.033)
            await asyncio.sleep(0.005)
        await wait_for_batches(plain, 12)
        assert hinted.batches == []  # held: under 256 KB, under 1 s, before 2.0 s
        await hinted_lane.put(25, 10_000, 25 * 0.033)  # 260 KB
        await wait_for_batches(hinted, 1)
        for one in (plain_lane, hinted_lane):
            one.close()
        for got in (plain, hinted):
            await asyncio.to_thread(got.ended.wait, 10)
        return plain, hinted

    plain, hinted = asyncio.run(main())
    pool.close()
    assert [len(batch) for _, batch in plain.batches[:12]] == [2] * 12
    assert hinted.batches[0][1] == list(range(26))


def test_a_full_lane_makes_the_publisher_wait_and_abandon_stops_it() -> None:
    pool = LanePool(1)
    release = threading.Event()

    async def main() -> tuple[Recorded, int]:
        got = Recorded()

        def stuck(items: list[int]) -> None:  # a segmenter stuck on a slow disk
            release.wait(10)
            got.push(items)

        one = MediaLane(
            pool,
            asyncio.get_running_loop(),
            push=stuck,
            end=got.end,
            max_bytes=1000,
            wake_bytes=100,
        )
        put = 0

        async def publisher() -> None:
            nonlocal put
            for i in range(100):
                await one.put(i, 100, i * 0.1)
                put += 1

        task = asyncio.create_task(publisher())
        await asyncio.sleep(0.3)
        assert not task.done() and put < 20  # it waits: at most max_bytes held
        one.abandon()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(task, 5)
        release.set()
        assert await asyncio.to_thread(got.ended.wait, 10)
        with pytest.raises(ChannelClosed):
            await one.put(0, 1, 0)
        return got, put

    got, put = asyncio.run(main())
    pool.close()
    assert got.ends == 1
    # What was handed over before the abandon (up to the put that waited), in order.
    assert got.items == list(range(len(got.items))) and len(got.items) <= put + 1


def test_a_busy_lane_does_not_starve_the_others() -> None:
    """One thread; a lane with a long backlog of slow batches goes to the back of the queue
    after each batch, so a quiet lane waits for one batch, not the whole backlog."""
    pool = LanePool(1)

    async def main() -> tuple[float, float]:
        busy, quiet = Recorded(work_s=0.05), Recorded()
        busy_lane = lane(pool, busy, wake_bytes=1)
        quiet_lane = lane(pool, quiet, wake_bytes=1)
        for i in range(20):  # 50 ms each: 1 s of work
            await busy_lane.put(i, 1, i)
            await asyncio.sleep(0.001)
        sent = time.monotonic()
        await quiet_lane.put(0, 1, 0)
        assert await asyncio.to_thread(quiet.ended.wait, 0) is False
        for lane_ in (busy_lane, quiet_lane):
            lane_.close()
        for got in (busy, quiet):
            assert await asyncio.to_thread(got.ended.wait, 10)
        return quiet.batches[0][0] - sent, busy.batches[-1][0] - sent

    quiet_waited, busy_took = asyncio.run(main())
    pool.close()
    assert quiet_waited < 0.3 < busy_took
