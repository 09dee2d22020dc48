"""A bounded byte pipe from the event loop to a blocking reader thread: an HTTP push's demuxer,
the optional ladder's ffmpeg feed.

The writer awaits when the pipe is full, so a segmenter that falls behind slows its own publisher
(TCP backpressure) and nobody else; memory per room stays bounded. The reader sees `b""` once the
writer has closed and everything was read.

Wake-ups are batched. Waking a reader thread costs far more than the bytes it is given (a
condition notify, a GIL hand-over, a context switch): with one wake-up per RTMP message, 100
audio rooms spent a quarter of the process's time in `Condition.notify`. A waiting reader is
woken at once when `wake_bytes` (16 KB) are buffered, otherwise `wake_delay_s` (0.1 s) after
the first byte it has not seen, instead of once per write. `wake_bytes` stays small on purpose:
at 64 KB or 256 KB the reader met each segment cut with a backlog to chew through first, and a
video segment's p95 visibility went from 39 ms to ~125 ms (bench/ingest.py), with no gain in
rooms per machine.

RTMP media does not come through here: it needs no demuxer, and goes to a pool thread through
a `MediaLane` (ingest/lanes.py), which batches by the same rules plus the media time the
segmenter next needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from ingest.errors import IngestError

WAKE_BYTES = 16 << 10
WAKE_DELAY_S = 0.1


class ChannelClosed(IngestError):
    """The reader is gone: nothing more can be written."""


class ByteChannel:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_bytes: int = 4 << 20,
        wake_bytes: int = WAKE_BYTES,
        wake_delay_s: float = WAKE_DELAY_S,
    ) -> None:
        self._loop = loop
        self._max = max_bytes
        self._wake_bytes = min(wake_bytes, max_bytes)
        self._wake_delay_s = wake_delay_s
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._closed = False  # by the writer: no more data
        self._abandoned = False  # by the reader: stop writing
        self._cond = threading.Condition()
        self._reader_waiting = False
        self._wake_timer: asyncio.TimerHandle | None = None
        self._space: asyncio.Event | None = None

    # -- event loop side ------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Append, waiting while the pipe is full."""
        while True:
            with self._cond:
                if self._abandoned:
                    raise ChannelClosed("the reader stopped")
                if self._size < self._max:
                    self._append(data)
                    return
                space = self._space = asyncio.Event()
            await space.wait()

    def try_write(self, data: bytes) -> bool:
        """Append without waiting; False if full or abandoned (for consumers that may fall
        behind without slowing the publisher down, such as the optional ladder)."""
        with self._cond:
            if self._abandoned or self._size + len(data) > self._max:
                return False
            self._append(data)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def buffered(self) -> int:
        return self._size

    def _append(self, data: bytes) -> None:
        """Holding the lock."""
        self._chunks.append(data)
        self._size += len(data)
        if not self._reader_waiting:
            return  # it is busy and will find the bytes when it next reads
        if self._size >= self._wake_bytes or not self._on_loop():
            self._cond.notify()
        elif self._wake_timer is None:
            self._wake_timer = self._loop.call_later(self._wake_delay_s, self._wake_reader)

    def _on_loop(self) -> bool:
        """Timers are the loop's; a write from another thread (the ladder's first bytes, from
        the segmenter's) wakes the reader at once instead."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _wake_reader(self) -> None:
        with self._cond:
            self._wake_timer = None
            if self._chunks:
                self._cond.notify()

    # -- reader thread side (a file-like object for PyAV) ---------------------------------------

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed and not self._abandoned:
                self._reader_waiting = True
                try:
                    self._cond.wait()
                finally:
                    self._reader_waiting = False
            if not self._chunks:
                return b""
            out = bytearray()
            while self._chunks and (n < 0 or len(out) < n):
                chunk = self._chunks.popleft()
                if n >= 0 and len(out) + len(chunk) > n:
                    cut = n - len(out)
                    self._chunks.appendleft(chunk[cut:])
                    chunk = chunk[:cut]
                out += chunk
            self._size -= len(out)
            self._wake_writer()
            return bytes(out)

    def seekable(self) -> bool:
        return False

    def abandon(self) -> None:
        """Stop the pipe from either side (the input is not decodable, or the live was taken
        down): writers get ChannelClosed, the reader gets end of stream."""
        with self._cond:
            self._abandoned = True
            self._chunks.clear()
            self._size = 0
            self._cond.notify_all()
            self._wake_writer()

    def _wake_writer(self) -> None:
        space, self._space = self._space, None
        if space is not None and self._size < self._max:
            self._loop.call_soon_threadsafe(space.set)
        elif space is not None:
            self._space = space
