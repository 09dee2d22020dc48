"""Ordered uploads from the local spool to the store, in a bounded pool of threads.

Each recording has its own queue (a "lane"): a segment goes up before the playlist that lists it,
in the order they were queued. Lanes run in parallel on a shared pool, so a slow or failing room
never holds up another, and the media path only ever appends to a queue.

A failed upload is retried with capped backoff for as long as it takes: if the store is down for
minutes, the queue (and the spool on disk) grows and catches up when it returns. When a newer
playlist for the same key is queued behind an older one, the older one is skipped: after an outage
a room uploads its backlog of segments and one playlist, not one playlist per segment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from storage.errors import StorageError
from storage.store import ObjectStore

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Upload:
    """One object to put. Either a spooled file (deleted once stored and `then` has run,
    unless `keep_file`) or bytes."""

    key: str
    path: Path | None = None
    data: bytes | None = None
    # Called in the upload thread after the object is stored (e.g. to index a segment).
    then: Callable[[], None] | None = None
    # The spooled file stays after the upload: `then` takes it over (deletes it when done).
    keep_file: bool = False
    queued_at: float = field(default_factory=time.monotonic)
    nbytes: int = 0  # set when queued

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        if self.path is None:
            return 0
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


@dataclass
class UploaderStats:
    uploaded: int = 0
    uploaded_bytes: int = 0
    segments: int = 0  # spooled files (media segments) among `uploaded`
    latency_sum_s: float = 0.0
    skipped_playlists: int = 0
    failures: int = 0
    backlog_bytes: int = 0  # queued or uploading
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=2048))


class Uploader:
    def __init__(
        self,
        store: ObjectStore,
        *,
        workers: int = 8,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.store = store
        self.max_backoff_s = max_backoff_s
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="upload")
        self._lock = threading.Lock()
        self._lanes: dict[str, deque[Upload]] = {}
        self._running: set[str] = set()
        self._uploading: dict[str, Upload] = {}  # by lane: the upload in flight (or retrying)
        self._idle_callbacks: dict[str, list[Callable[[], None]]] = {}
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        # Injected so tests can step retries without waiting; returns True when stopping.
        self._sleep = sleep or self._stopping.wait
        self.stats = UploaderStats()

    def put(self, lane: str, upload: Upload) -> None:
        """Queue an upload at the end of its lane."""
        upload.nbytes = upload.size
        with self._lock:
            self.stats.backlog_bytes += upload.nbytes
            self._lanes.setdefault(lane, deque()).append(upload)
            if lane not in self._running:
                self._running.add(lane)
                self._pool.submit(self._drain, lane)

    def pending(self, lane: str | None = None) -> int:
        with self._lock:
            if lane is not None:
                return len(self._lanes.get(lane, ()))
            return sum(len(q) for q in self._lanes.values())

    def oldest_wait_s(self) -> float:
        """How long the oldest upload still queued has waited: the uploads' lag behind the
        live. Each lane is in order, so only lane heads are looked at."""
        with self._lock:
            heads = [u.queued_at for u in self._uploading.values()]
            heads += [queue[0].queued_at for queue in self._lanes.values() if queue]
        return time.monotonic() - min(heads) if heads else 0.0

    def when_idle(self, lane: str, callback: Callable[[], None]) -> None:
        """Call `callback` once the lane has nothing queued or uploading: now, or later from an
        upload thread. Lets an event loop wait for a lane without parking a thread on it."""
        with self._lock:
            if lane in self._running:
                self._idle_callbacks.setdefault(lane, []).append(callback)
                return
        callback()

    def wait_idle(self, lane: str | None = None, timeout: float | None = None) -> bool:
        """Block until the lane (or every lane) is empty and not uploading."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def idle() -> bool:
            if lane is not None:
                return lane not in self._running
            return not self._running

        with self._idle:
            while not idle():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
            return True

    def close(self, *, drain_timeout_s: float = 30.0) -> None:
        """Finish what is queued (up to the timeout), then stop; the spool keeps the rest."""
        self.wait_idle(timeout=drain_timeout_s)
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _drain(self, lane: str) -> None:
        while True:
            with self._lock:
                queue = self._lanes.get(lane)
                if not queue or self._stopping.is_set():
                    self._running.discard(lane)
                    if not queue:
                        self._lanes.pop(lane, None)
                    self._idle.notify_all()
                    callbacks = self._idle_callbacks.pop(lane, [])
                    break
                upload = queue.popleft()
                # A newer version of the same playlist is already queued: this one is stale.
                if upload.data is not None and any(u.key == upload.key for u in queue):
                    self.stats.skipped_playlists += 1
                    self.stats.backlog_bytes -= upload.nbytes
                    continue
                self._uploading[lane] = upload
            try:
                self._upload(lane, upload)
            finally:
                with self._lock:
                    del self._uploading[lane]
                    self.stats.backlog_bytes -= upload.nbytes
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("idle callback of lane %s", lane)

    def _upload(self, lane: str, upload: Upload) -> None:
        backoff = 0.1
        while True:
            try:
                if upload.data is not None:
                    self.store.put_bytes(upload.key, upload.data)
                elif upload.path is not None:
                    self.store.put_file(upload.key, upload.path)
                break
            except FileNotFoundError:
                log.error("upload %s: spooled file %s is gone; skipping", upload.key, upload.path)
                return
            except StorageError as exc:
                self.stats.failures += 1
                log.warning(
                    "upload %s (lane %s) failed, retrying in %.1f s: %s",
                    upload.key,
                    lane,
                    backoff,
                    exc,
                )
                if self._sleep(backoff):
                    return  # stopping: the spool keeps the file for the next start
                backoff = min(backoff * 2, self.max_backoff_s)
        self.stats.uploaded += 1
        self.stats.uploaded_bytes += upload.nbytes
        latency = time.monotonic() - upload.queued_at
        self.stats.latency_s.append(latency)
        self.stats.latency_sum_s += latency
        if upload.path is not None:
            self.stats.segments += 1
        if upload.then is not None:
            try:
                upload.then()
            except Exception:
                # The spooled file stays, so the next start does it again (e.g. the index).
                log.exception("after upload of %s; %s stays in the spool", upload.key, upload.path)
                return
        if upload.path is not None and not upload.keep_file:
            upload.path.unlink(missing_ok=True)
