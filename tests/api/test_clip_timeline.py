"""`api.clips.Timeline`: positions on a rendition (the sum of its EXTINF durations) against the
wall clock (its EXT-X-PROGRAM-DATE-TIME), across a host's gap. Pure: catalog rows, no media."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.clips import Timeline
from storage.models import Segment

T0 = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def seat_timeline() -> Timeline:
    # 0-2, 2-4 s; away 4-7 s; back 7-9 s (a discontinuity).
    spans = [(0.0, 2.0, False), (2.0, 2.0, False), (7.0, 2.0, True)]
    return Timeline(
        [
            Segment(key=f"r/s/{n}.ts", start_at=at(a), duration_s=d, discontinuity=disc)
            for n, (a, d, disc) in enumerate(spans)
        ]
    )


def test_positions_skip_the_gap_and_clamp_at_the_ends() -> None:
    timeline = seat_timeline()
    assert timeline.length_s == 6.0
    assert timeline.position(at(-1)) == 0.0  # before the host joined: their first frame
    assert timeline.position(at(3.5)) == 3.5
    assert timeline.position(at(5.0)) == 4.0  # while away: where they came back
    assert timeline.position(at(8.0)) == 5.0
    assert timeline.position(at(9.5)) is None  # after they left


def test_wall_times_on_a_boundary_take_the_next_start_or_the_previous_end() -> None:
    timeline = seat_timeline()
    assert timeline.wall(1.0) == at(1.0)
    assert timeline.wall(4.0) == at(7.0)  # a start at the gap: when they came back
    assert timeline.wall(4.0, end=True) == at(4.0)  # an end at the gap: when they left
    assert timeline.wall(6.0, end=True) == at(9.0)
