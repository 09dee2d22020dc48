"""A bounded byte pipe from the event loop to a blocking reader thread (PyAV's demuxer).

The writer awaits when the pipe is full, so a segmenter that falls behind slows its own publisher
(TCP backpressure) and nobody else; memory per room stays bounded. The reader sees `b""` once the
writer has closed and everything was read.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from ingest.errors import IngestError


class ChannelClosed(IngestError):
    """The reader is gone: nothing more can be written."""


class ByteChannel:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_bytes: int = 4 << 20) -> None:
        self._loop = loop
        self._max = max_bytes
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._closed = False  # by the writer: no more data
        self._abandoned = False  # by the reader: stop writing
        self._cond = threading.Condition()
        self._space: asyncio.Event | None = None

    # -- event loop side ------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        while True:
            with self._cond:
                if self._abandoned:
                    raise ChannelClosed("the reader stopped")
                if self._size < self._max:
                    self._chunks.append(data)
                    self._size += len(data)
                    self._cond.notify()
                    return
                space = self._space = asyncio.Event()
            await space.wait()

    def try_write(self, data: bytes) -> bool:
        """Append without waiting; False if full or abandoned (for consumers that may fall
        behind without slowing the publisher down, such as the optional ladder)."""
        with self._cond:
            if self._abandoned or self._size + len(data) > self._max:
                return False
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def buffered(self) -> int:
        return self._size

    # -- reader thread side (a file-like object for PyAV) ---------------------------------------

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed and not self._abandoned:
                self._cond.wait()
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
