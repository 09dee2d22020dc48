"""The segment index, written in batches on a thread of its own.

Every stored segment gets a catalog row. In `afterlive serve` one transaction cost ~0.6 ms of
CPU (SQLAlchemy's execute path, cold, more than SQLite itself): two per cut of every video room
were a seventh of the process. So an upload thread hands its row over and goes on with the
next upload, and the indexer commits what has arrived once `interval_s` after the first row of
a batch: one transaction a second, whatever the number of rooms.

A row is written after its segment is stored, and the segment's spool file is kept until the
row is committed (the caller's `done` removes it), so a crash in between loses nothing: the
next start replays the spool. `flush()` waits for everything handed over before it: a
recording that ends flushes before it calls itself ended, so "ended" still means "every
segment is stored and indexed".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.catalog import Catalog

log = logging.getLogger(__name__)

Done = Callable[[BaseException | None], None]


@dataclass
class IndexerStats:
    rows: int = 0
    transactions: int = 0


class SegmentIndexer:
    def __init__(self, catalog: Catalog, *, interval_s: float = 1.0, max_batch: int = 500) -> None:
        self.catalog = catalog
        self.interval_s = interval_s
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[tuple[dict[str, Any], Done]] = []
        self._added = 0  # rows handed over, ever
        self._written = 0  # of those, rows written and told (in order)
        self._flushing = 0  # callers of flush() waiting: write now
        self._thread: threading.Thread | None = None
        self.stats = IndexerStats()

    def add(self, row: dict[str, Any], done: Done) -> None:
        """Index one segment (`Catalog.add_segment`'s arguments, and optionally `renditions`)
        soon. `done(error)` is called on the indexer's thread once the row is committed (None)
        or refused: KeyError (its recording is gone), IntegrityError (indexed already), or what
        the catalog raised."""
        with self._cond:
            self._queue.append((row, done))
            self._added += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)
                self._thread.start()
            elif len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write what was handed over before this call now, and wait until it is written and
        its callers told; False if that took longer than the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            target = self._added
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._written < target:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                # A batch gathers for `interval_s` from its first row, unless it is full or a
                # flush waits.
                deadline = time.monotonic() + self.interval_s
                while len(self._queue) < self.max_batch and not self._flushing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
            self._write(batch)
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[tuple[dict[str, Any], Done]]) -> None:
        try:
            outcomes = self.catalog.add_segments([row for row, _ in batch])
        except Exception as exc:  # the catalog failed: every caller hears it
            outcomes = [exc] * len(batch)
        self.stats.rows += len(batch)
        self.stats.transactions += 1
        for (row, done), outcome in zip(batch, outcomes, strict=True):
            try:
                done(outcome)
            except Exception:
                log.exception("after indexing %s", row.get("key"))
