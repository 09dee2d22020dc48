"""What the consent and composite jobs both do with the store: fetch a recording's segments to
work on, and store the segments they made under their own keys, with the catalog rows and the
media playlist for them."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from storage import keys as K
from storage.store import ObjectStore
from transcode.playlists import MediaPlaylist, MediaSegment
from transcode.segmenter import SegmentClosed

STORE_REQUESTS_AT_ONCE = 8


def download_all(store: ObjectStore, downloads: Sequence[tuple[str, Path]], label: str) -> None:
    """(key, local path) pairs, fetched a few at once."""
    for _, path in downloads:
        path.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(STORE_REQUESTS_AT_ONCE, thread_name_prefix=f"{label}-io") as io:
        list(io.map(lambda d: store.download(*d), downloads))


def store_made(
    store: ObjectStore,
    recording_id: str,
    rendition: str,
    made: Sequence[SegmentClosed],
    start: datetime,
    *,
    playlist_type: str,
    label: str,
) -> tuple[list[dict[str, Any]], MediaPlaylist]:
    """Upload the segments a job made (media times from `start`) under their dated keys: their
    segment rows (not yet in the catalog) and their media playlist (not yet stored)."""
    rows, playlist = [], MediaPlaylist(segments=[], playlist_type=playlist_type, ended=True)
    for seg in made:
        at = start + timedelta(seconds=seg.start_s)
        key = K.media_segment(recording_id, rendition, at, seg.sequence, "ts")
        rows.append(
            {
                "recording_id": recording_id,
                "rendition": rendition,
                "sequence": seg.sequence,
                "start_at": at,
                "duration_s": seg.duration_s,
                "key": key,
                "size_bytes": seg.size_bytes,
            }
        )
        playlist.segments.append(
            MediaSegment(uri=key.rsplit("/", 1)[1], duration_s=seg.duration_s, program_date_time=at)
        )
    with ThreadPoolExecutor(STORE_REQUESTS_AT_ONCE, thread_name_prefix=f"{label}-io") as io:
        list(
            io.map(
                lambda pair: store.put_file(pair[0]["key"], pair[1].path),
                zip(rows, made, strict=True),
            )
        )
    return rows, playlist
