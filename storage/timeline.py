"""Positions on a recording's timeline: wall-clock times to seconds into the recording.

The timeline is the sum of the timeline rendition's segment durations (EXT-X-PROGRAM-DATE-TIME
gives where each sits on the wall clock): a gap between segments (a reconnect) counts for
nothing, as in a player. Clips, the studio and episodes' speaker chapters all place wall-clock
moments (a speaker turn, `start_at` of a clip request) with `timeline_position`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from storage.models import Segment


def timeline_position(segments: Sequence[Segment], moment: datetime) -> float | None:
    """Seconds into the timeline of `segments` (in order) at which `moment` plays: inside a
    segment, its position there; before the first or in a gap, the start of the next segment;
    None after the last one ends."""
    position = 0.0
    for seg in segments:
        end = seg.start_at + timedelta(seconds=seg.duration_s)
        if moment < end:
            into = (moment - seg.start_at).total_seconds()
            return position + min(max(into, 0.0), seg.duration_s)
        position += seg.duration_s
    return None


def timeline_end(segments: Sequence[Segment]) -> float:
    return sum(seg.duration_s for seg in segments)
