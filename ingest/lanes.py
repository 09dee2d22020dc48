"""Many rooms' segmenting on a few threads: one lane per RTMP publish, batched hand-overs.

A thread per room (a demuxer reading a byte pipe) was the limit at a few hundred rooms: PyAV
releases the GIL around every demuxed and every muxed packet, so each packet cost GIL
hand-overs among hundreds of threads queueing behind the event loop, and that delay landed on
the upload threads too. A synthetic check (300 rooms of 64 kb/s AAC muxed to TS next to a busy
Python thread) measured the same CPU either way but a p99 lateness of 65 ms with a thread per
room against 6.8 ms with 2 pool threads.

So RTMP media (tag bodies, which need no demuxer: transcode/flv.py) goes into a `MediaLane`
per publish, and a `LanePool` of a few threads runs the lanes: each lane's batches in order, one
at a time, and lanes in turn (a lane with more waiting goes to the back of the queue).

Hand-overs are batched by the rules `ByteChannel` uses for a reader thread, for the same reason
(a hand-over costs far more than the media it carries): a batch goes to the pool when media
reaches the time the segmenter said it next needs (`wake_at`, its next cut: a segment closes as
soon as its last packet is in), when 16 KB are held, or 100 ms after the first held item; while
a `wake_at` is pending, nothing waits for media before it, so 256 KB or 1 s. A lane holds at
most `max_bytes` not yet segmented; the publisher's `put` then waits (or `offer` says so, and
`room()` waits), which slows its TCP stream and nobody else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ingest.channel import WAKE_BYTES, WAKE_DELAY_S, ChannelClosed

log = logging.getLogger(__name__)

# While the segmenter has said when it next needs media (`wake_at`), what comes before waits
# longer, and more of it: an audio room's lane is then handed over about once a second, not ten
# times, and a 2.5 Mb/s video room's about twice, not twenty times at 16 KB (each hand-over
# wakes a pool thread; muxing what was held when the cut comes costs ~1 ms).
HINTED_DELAY_S = 1.0
HINTED_BYTES = 256 << 10


class LanePool:
    """A few named threads running lanes' batches. Threads start on first use."""

    def __init__(self, threads: int = 4, *, name: str = "segmenter") -> None:
        self.size = max(1, threads)
        self.name = name
        self._queue: queue.SimpleQueue[MediaLane | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    def submit(self, lane: MediaLane) -> None:
        if len(self._threads) < self.size:
            self._start()
        self._queue.put(lane)

    def _start(self) -> None:
        with self._start_lock:
            while len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while (lane := self._queue.get()) is not None:
            try:
                lane._run()
            except Exception:  # a lane's owner handles its errors; the thread must go on
                log.exception("%s: a lane failed", threading.current_thread().name)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the threads once the lanes queued before this are done."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout_s)


class MediaLane:
    """One publish's items on their way from the event loop to a pool thread, in order.

    `push(items)` runs on a pool thread for each batch; `end()` once after the last, when the
    lane was closed (everything handed over is pushed first) or abandoned (what waits is
    dropped). Neither may raise: their owner records errors and abandons the lane.
    """

    def __init__(
        self,
        pool: LanePool,
        loop: asyncio.AbstractEventLoop,
        *,
        push: Callable[[list[Any]], None],
        end: Callable[[], None],
        max_bytes: int = 4 << 20,
        wake_bytes: int = WAKE_BYTES,
        wake_delay_s: float = WAKE_DELAY_S,
        hinted_delay_s: float = HINTED_DELAY_S,
        hinted_bytes: int = HINTED_BYTES,
    ) -> None:
        self._pool = pool
        self._loop = loop
        self._push = push
        self._end = end
        self._max = max_bytes
        self._wake_bytes = min(wake_bytes, max_bytes)
        self._wake_delay_s = wake_delay_s
        self._hinted_delay_s = hinted_delay_s
        self._hinted_bytes = min(max(hinted_bytes, self._wake_bytes), max_bytes // 2)
        self._wake_at: float | None = None  # media seconds, from the pool side
        # Event loop only.
        self._held: list[Any] = []
        self._held_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        # Shared, under `_lock`.
        self._lock = threading.Lock()
        self._ready: list[Any] = []
        self._ready_bytes = 0
        self._running_bytes = 0
        self._scheduled = False  # queued in the pool or running there
        self._closing = False
        self._abandoned = False
        self._ended = False
        self._space: asyncio.Event | None = None

    # -- event loop side ------------------------------------------------------------------------

    async def put(self, item: Any, size: int, media_s: float) -> None:
        """Queue an item of `size` bytes carrying media time `media_s`; waits while the lane
        holds `max_bytes`. Raises ChannelClosed once the lane was abandoned."""
        if not self.offer(item, size, media_s):
            await self.room()

    def offer(self, item: Any, size: int, media_s: float) -> bool:
        """`put` without the wait, for a caller in an event loop callback: the item is taken;
        False means the lane is full and `room()` must be awaited before the next."""
        if self._abandoned:
            raise ChannelClosed("the segmenter stopped")
        self._held.append(item)
        self._held_bytes += size
        wake_at = self._wake_at
        if wake_at is not None and media_s >= wake_at:
            # One shot: until the segmenter says again, batches go every 100 ms (a keyframe
            # later than the target is not a second late).
            self._wake_at = None
            self._hand_over()
        elif self._held_bytes >= (self._wake_bytes if wake_at is None else self._hinted_bytes):
            self._hand_over()
        elif self._timer is None:
            delay = self._wake_delay_s if wake_at is None else self._hinted_delay_s
            self._timer = self._loop.call_later(delay, self._hand_over)
        # Unlocked read: a stale value only sends the caller to `room()`, which locks.
        return self._held_bytes + self._ready_bytes + self._running_bytes < self._max

    async def room(self) -> None:
        """Wait until the lane holds less than `max_bytes`; ChannelClosed once abandoned."""
        while True:
            with self._lock:
                if self._abandoned:
                    raise ChannelClosed("the segmenter stopped")
                if self._held_bytes + self._ready_bytes + self._running_bytes < self._max:
                    return
                space = self._space = asyncio.Event()
            await space.wait()

    def close(self) -> None:
        """No more items: push what is held, then end."""
        self._hand_over()
        with self._lock:
            self._closing = True
            self._schedule()

    def _hand_over(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._held:
            return
        items, self._held = self._held, []
        size, self._held_bytes = self._held_bytes, 0
        with self._lock:
            if self._abandoned:
                return
            self._ready.extend(items)
            self._ready_bytes += size
            self._schedule()

    # -- either side ----------------------------------------------------------------------------

    def abandon(self) -> None:
        """Stop: what waits is dropped, `put` raises ChannelClosed, `end` runs."""
        with self._lock:
            self._abandoned = True
            self._ready.clear()
            self._ready_bytes = 0
            self._schedule()
            space, self._space = self._space, None
        if space is not None:
            self._wake(space)

    # -- pool side ------------------------------------------------------------------------------

    def wake_at(self, media_s: float) -> None:
        """Nothing is needed before media time `media_s` (the segmenter's next cut)."""
        self._wake_at = media_s

    def next_cut_s(self) -> float | None:
        """What `wake_at` said last, until media reached it (any side)."""
        return self._wake_at

    def _schedule(self) -> None:
        """Holding the lock."""
        if not self._scheduled and not self._ended:
            self._scheduled = True
            self._pool.submit(self)

    def _run(self) -> None:
        """One batch (a pool thread): lanes take turns."""
        with self._lock:
            batch, self._ready = self._ready, []
            self._running_bytes, self._ready_bytes = self._ready_bytes, 0
        if batch and not self._abandoned:
            self._push(batch)
        with self._lock:
            self._running_bytes = 0
            end = not self._ready and (self._closing or self._abandoned) and not self._ended
            if end:
                self._ended = True
            elif self._ready and not self._abandoned:
                self._pool.submit(self)  # still scheduled: to the back of the queue
            else:
                self._scheduled = False
            space = None
            if self._space is not None and self._ready_bytes + self._held_bytes < self._max:
                space, self._space = self._space, None
        if space is not None:
            self._wake(space)
        if end:
            self._end()

    def _wake(self, space: asyncio.Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (service shutdown)
            self._loop.call_soon_threadsafe(space.set)
