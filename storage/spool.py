"""The local spool's journal: what a recording's spooled segments are, so that a restart can
store and index what a killed process left behind.

Every segment a live recording closes is a file in the spool until it is stored and indexed
(the uploader deletes it then). Its catalog row, and where its file is, is one line of the
recording's journal: an append-only file of JSON lines in the recording's spool directory. A
line is one `write`. The small JSON file per segment that the journal replaced cost a file
creation and a deletion: 50-800 us of CPU on the ext4 disks measured here, against ~6 us.

A journal line is pending while its file exists. A restart replays the pending lines, in the
order they were written. A recording's directory (its journal, segment files, the ladder's
logs) is removed once the recording has ended and none of its lines is pending.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"


class SpoolJournal:
    """The journal of one recording's spool directory. Thread-safe: segments close on several
    threads (the segmenter's, the ladder's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / JOURNAL
        self._lock = threading.Lock()
        self._fd: int | None = None

    def append(self, entry: dict[str, Any], file: Path) -> None:
        """Record a spooled segment: its file (in this directory or below) and `entry`, a
        JSON-able dict that `pending` gives back. Raises OSError (a full disk)."""
        entry = entry | {"file": str(file.relative_to(self.directory))}
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self._fd = os.open(self.path, flags, 0o600)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def pending(directory: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """A recording spool directory's journal lines whose segment file is still there, in the
    order they were written: (entry, file). A line that cannot be read (cut short by a power
    cut or a full disk) is skipped with a log line: its segment is what that crash loses. Also
    reads the JSON file per segment that versions before the journal wrote (`<segment>.json`
    beside `<segment>.ts`)."""
    try:
        with (directory / JOURNAL).open("rb") as journal:
            lines = journal.read().splitlines()
    except FileNotFoundError:
        lines = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
            file = directory / entry.pop("file")
        except (ValueError, KeyError, TypeError, AttributeError):  # not JSON, not an object
            log.error("spool: %s line %d is unreadable; skipped", directory / JOURNAL, number)
            continue
        if file.exists():
            yield entry, file
    for sidecar in sorted(directory.glob("*.json")):
        file = sidecar.with_suffix(".ts")
        try:
            entry = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            log.error("spool: unreadable %s; left in place", sidecar)
            continue
        if file.exists():
            yield entry, file


def remove_if_done(directory: Path) -> bool:
    """Remove a recording's spool directory unless a segment of it still waits to be stored
    and indexed; whether it was removed. Only for a recording that has ended."""
    if next(pending(directory), None) is not None:
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


class SpoolSpace:
    """Free bytes on the spool's file system, read at most every `every_s` (a statvfs, called
    per closed segment of every room and per new live)."""

    def __init__(self, directory: Path, *, every_s: float = 0.5) -> None:
        self.directory = directory
        self.every_s = every_s
        self._free = 0
        self._at = -math.inf
        self._lock = threading.Lock()

    def free(self) -> int:
        now = time.monotonic()
        with self._lock:
            if now - self._at >= self.every_s:
                self._free = self._read()
                self._at = now
            return self._free

    def _read(self) -> int:
        directory = self.directory
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent  # the spool is made with the first live
        stat = os.statvfs(directory)
        return stat.f_bavail * stat.f_frsize
