from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """An injected `now()` that only moves when a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current
