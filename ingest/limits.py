"""Limits on what an RTMP peer controls, and how peer input is shown in logs.

Everything here bounds a peer that has not been authenticated yet (no accepted `publish`):
what it may make the server hold, for how long, how many such peers at once, and how much log
it may cause. The defaults are in `RtmpLimits`; `api.settings` exposes each as a setting
(README, "Limits on peer input"). After `publish` is accepted the peer is a room's publisher
and the media limits apply instead (`max_message_bytes`, `max_buffered_bytes`).
"""

from __future__ import annotations

import logging
import reprlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SHOWN_CHARS = 200
"""How much of a peer's value a log line or error message shows."""


@dataclass(kw_only=True, frozen=True)
class RtmpLimits:
    # Connections at once, publishing or not, and those of them not yet publishing. Beyond
    # either, a new connection is closed at once (counted, logged at most once a second).
    max_connections: int = 2000
    max_pending: int = 128
    # From the TCP accept: the handshake must be done within this, and `publish` accepted
    # within the second, whatever bytes trickle in meanwhile.
    handshake_timeout_s: float = 10.0
    publish_timeout_s: float = 15.0
    # Before publish: the largest message (connect, createStream, publish are a few hundred
    # bytes), the bytes held for messages not yet complete, and how many messages may come.
    max_pending_message_bytes: int = 16 << 10
    max_pending_buffered_bytes: int = 64 << 10
    max_pending_messages: int = 100
    # While publishing: the largest media message (a 4K keyframe is a few MB; the protocol's
    # own limit is 16 MB) and the bytes held for messages not yet complete, all chunk streams.
    max_message_bytes: int = (1 << 24) - 1
    max_buffered_bytes: int = 32 << 20


def shown(value: Any, size: int | None = None) -> str:
    """A peer's value for a log line or an error message: a bounded repr, followed by the size
    of the whole (`size`, else a string's own length) when that is more than the repr shows."""
    text = _repr.repr(value)
    if len(text) > SHOWN_CHARS:
        text = text[: SHOWN_CHARS - 1] + "…"
    if size is None and isinstance(value, str | bytes | bytearray):
        size = len(value) if len(value) > _repr.maxstring else None
    return text if size is None else f"{text} ({size:,} bytes)"


def _bounded_repr() -> reprlib.Repr:
    # reprlib stops walking at these limits, so showing a huge or deeply nested value costs
    # about as much as the text it returns, not as much as the value.
    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxdict = r.maxlist = r.maxtuple = r.maxset = 6
    r.maxstring = r.maxother = 60
    r.maxlong = 40
    return r


_repr = _bounded_repr()


class LogBudget:
    """At most `burst` lines at once and `per_s` a second after that, for log lines that any
    peer can cause before it is authenticated (refused connections, broken handshakes, unknown
    keys). What is held back is counted and said with the next line that goes out, so a flood
    costs a line a second, not a line a connection."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        per_s: float = 1.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.per_s = per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._held = 0
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: Any) -> bool:
        """Log the line if the budget allows; False when it was held back."""
        if not self.logger.isEnabledFor(level):
            return False
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
            self._at = now
            if self._tokens < 1:
                self._held += 1
                return False
            self._tokens -= 1
            held, self._held = self._held, 0
        if held:
            msg += " (%d similar line%s held back)"
            args = (*args, held, "" if held == 1 else "s")
        self.logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, msg, *args)
