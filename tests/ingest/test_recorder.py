"""The recorder's rules for who may publish, on a real catalog and store (no media needed)."""

from __future__ import annotations

import asyncio

import pytest

from ingest.errors import AlreadyLive, UnknownStreamKey
from ingest.recorder import Recorder, RecorderConfig
from storage import Catalog
from storage.catalog import sqlite_url
from storage.uploader import Uploader


@pytest.fixture
def recorder(tmp_path, store):
    catalog = Catalog(sqlite_url(tmp_path / "c.db"))
    catalog.create_schema()
    uploader = Uploader(store)
    yield Recorder(
        catalog=catalog,
        uploader=uploader,
        config=RecorderConfig(spool_dir=tmp_path / "spool", reconnect_grace_s=0),
    )
    uploader.close()


def room_key(recorder: Recorder) -> tuple[str, str]:
    creator, _ = recorder.catalog.add_creator("c")
    room = recorder.catalog.add_room(creator_id=creator.id, title="t", kind="audio")
    return room.id, room.stream_key


def test_two_publishers_arriving_together_get_one_recording(recorder) -> None:
    room_id, key = room_key(recorder)

    async def race():
        results = await asyncio.gather(
            recorder.open_publish("live", key, "a"),
            recorder.open_publish("live", key, "b"),
            return_exceptions=True,
        )
        sessions = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, AlreadyLive)]
        assert len(sessions) == 1 and len(refused) == 1
        await sessions[0].on_close("unpublished")

    asyncio.run(race())
    # No media arrived, so the recording was discarded rather than left empty for viewers.
    assert recorder.catalog.recordings(room_id=room_id) == []


def test_unknown_key_is_refused_without_a_recording(recorder) -> None:
    room_id, key = room_key(recorder)
    with pytest.raises(UnknownStreamKey):
        asyncio.run(recorder.open_publish("live", key + "x", "a"))
    with pytest.raises(UnknownStreamKey):
        asyncio.run(recorder.open_publish("live", "no-such-room-key", "a"))
    assert recorder.catalog.recordings(room_id=room_id) == []


def test_wall_clock_continues_across_a_timestamp_jump(recorder, tmp_path) -> None:
    from datetime import timedelta
    from pathlib import Path

    from transcode.segmenter import SegmentClosed

    _, key = room_key(recorder)

    def seg(seq: int, start: float, jump: bool = False) -> SegmentClosed:
        return SegmentClosed(
            rendition="source",
            sequence=seq,
            path=Path("x"),
            start_s=start,
            duration_s=2.0,
            size_bytes=1,
            discontinuity=jump,
            closed_at=0,
        )

    async def run():
        session = await recorder.open_publish("live", key, "a")
        await session.write(b"FLV")  # the first bytes fix the wall-clock origin
        first = session.segment_start(seg(0, 10.0))
        second = session.segment_start(seg(1, 12.0))
        # The publisher's clock jumps back to 0: wall time carries on from the last end.
        third = session.segment_start(seg(2, 0.0, jump=True))
        fourth = session.segment_start(seg(3, 2.0))
        await session.on_close("unpublished")
        return first, second, third, fourth

    first, second, third, fourth = asyncio.run(run())
    assert second - first == timedelta(seconds=2)
    assert third - second == timedelta(seconds=2)
    assert fourth - third == timedelta(seconds=2)
