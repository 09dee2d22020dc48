"""Group commit of the segment index: many upload threads, one transaction at a time.

Every stored segment gets a catalog row. One transaction per row made the catalog a fifth of
`afterlive serve`'s time at 100 live rooms. Here the first upload thread to arrive writes its row
and every row queued while that transaction runs goes into the next one: no timer, no added
latency when the load is light, and batches that grow with the load. A caller returns once its
row is committed, so "the lane is idle" still means "everything is stored and indexed".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from storage.catalog import Catalog


@dataclass
class _Pending:
    row: dict[str, Any]
    wake: threading.Event = field(default_factory=threading.Event)
    written: bool = False
    lead: bool = False  # woken to write the next batch, not because its row is written
    error: BaseException | None = None


@dataclass
class IndexerStats:
    rows: int = 0
    transactions: int = 0


class SegmentIndexer:
    def __init__(self, catalog: Catalog, *, max_batch: int = 500) -> None:
        self.catalog = catalog
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._writing = False
        self.stats = IndexerStats()

    def add(self, row: dict[str, Any]) -> BaseException | None:
        """Index one segment (`Catalog.add_segment`'s arguments); blocks until it is committed.
        Returns None, or why the row was refused (KeyError: its recording is gone;
        IntegrityError: indexed already)."""
        pending = _Pending(row)
        with self._lock:
            self._queue.append(pending)
            lead = not self._writing
            self._writing = True
        while not lead:
            pending.wake.wait()
            pending.wake.clear()
            if pending.written:
                return pending.error  # in a batch that another thread wrote
            lead = pending.lead
        # The writer: its row is first in the queue, so in this batch.
        self._write_batch()
        self._hand_over()
        return pending.error

    def _write_batch(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            outcomes = self.catalog.add_segments([p.row for p in batch])
        except Exception as exc:  # the catalog failed: every caller hears it
            outcomes = [exc] * len(batch)
        self.stats.rows += len(batch)
        self.stats.transactions += 1
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending.error = outcome
            pending.written = True
            pending.wake.set()

    def _hand_over(self) -> None:
        """A writer whose own row is in: the first row still queued writes the next batch, so
        no upload thread writes others' rows for longer than one transaction."""
        with self._lock:
            if not self._queue:
                self._writing = False
                return
            nxt = self._queue[0]
            nxt.lead = True
        nxt.wake.set()
