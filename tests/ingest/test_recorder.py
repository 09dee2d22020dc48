"""The recorder's rules for who may publish, on a real catalog and store (no media needed)."""

from __future__ import annotations

import asyncio

import pytest

from ingest.errors import (
    AlreadyLive,
    HostRemoved,
    NodeBusy,
    SeatClosed,
    SeatRemoved,
    TakenDown,
    UnknownStreamKey,
)
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
    creators = recorder.catalog.creators()
    creator = creators[0] if creators else recorder.catalog.add_creator("c")[0]
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
        # The first media fixes the wall-clock origin (an AAC AudioSpecificConfig).
        assert session.on_media(8, 0, b"\xaf\x00\x12\x10")
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


def test_recordings_ending_on_a_stuck_store_do_not_hold_up_new_publishes(tmp_path, store):
    """Eight recordings end while the store fails every upload (their lanes stay busy); a new
    publisher on another room must still be answered at once. Waiting for those lanes used to
    park the event loop's few pool threads, which the key lookup of every publish needs."""
    import time

    from storage import ObjectStore, StoreConfig
    from storage.uploader import Upload
    from tests.utils.faulty_proxy import FaultyProxy

    catalog = Catalog(sqlite_url(tmp_path / "c.db"))
    catalog.create_schema()
    creator, _ = catalog.add_creator("c")
    rooms = [catalog.add_room(creator_id=creator.id, title=f"r{i}", kind="audio") for i in range(9)]
    with FaultyProxy(store.config.endpoint_url, failures=10**6) as proxy:
        down = ObjectStore(
            StoreConfig(**{**store.config.__dict__, "endpoint_url": proxy.url, "max_attempts": 1})
        )
        uploader = Uploader(down, max_backoff_s=0.2)
        recorder = Recorder(
            catalog=catalog,
            uploader=uploader,
            config=RecorderConfig(spool_dir=tmp_path / "spool", reconnect_grace_s=0),
        )

        async def scenario() -> float:
            sessions = [await recorder.open_publish("live", r.stream_key, "p") for r in rooms[:8]]
            for session in sessions:
                session.state.sequences["source"] = 1  # as if a segment had closed
                uploader.put(session.state.id, Upload(key=f"stuck/{session.state.id}", data=b"x"))
            ending = [asyncio.create_task(s.on_close("unpublished")) for s in sessions]
            await asyncio.sleep(0.5)
            started = time.monotonic()
            late = await asyncio.wait_for(
                recorder.open_publish("live", rooms[8].stream_key, "q"), 10
            )
            answered_in = time.monotonic() - started
            for task in ending:
                task.cancel()
            await asyncio.gather(*ending, return_exceptions=True)
            late.abandon()
            return answered_in

        answered_in = asyncio.run(scenario())
        uploader.close(drain_timeout_s=0.1)
    assert answered_in < 2.0


def _recorder(tmp_path, uploader: Uploader, **config) -> Recorder:
    catalog = Catalog(sqlite_url(tmp_path / "c.db"))
    catalog.create_schema()
    return Recorder(
        catalog=catalog,
        uploader=uploader,
        config=RecorderConfig(spool_dir=tmp_path / "spool", **config),
    )


def test_room_limit_refuses_new_lives_but_not_reconnects(tmp_path, store) -> None:
    uploader = Uploader(store)
    recorder = _recorder(tmp_path, uploader, max_live_rooms=2, reconnect_grace_s=30)
    keys = [room_key(recorder)[1] for _ in range(3)]

    async def scenario() -> None:
        first = await recorder.open_publish("live", keys[0], "a")
        second = await recorder.open_publish("live", keys[1], "b")
        with pytest.raises(NodeBusy, match="2 rooms are live here") as refused:
            await recorder.open_publish("live", keys[2], "c")
        assert refused.value.http_status == 503
        # The first publisher drops: its room waits in the grace and still counts, and its
        # publisher coming back is let in even though the node is full.
        await first.on_close("connection lost")
        assert recorder.live_counts() == (2, 1)
        back = await recorder.open_publish("live", keys[0], "a2")
        assert back.state is first.state
        with pytest.raises(NodeBusy):
            await recorder.open_publish("live", keys[2], "c")
        # No media reached these sessions, so they end as unreadable input and wait in the
        # grace; an admin ending both frees their places.
        for session in (back, second):
            await session.on_close("unpublished")
            await recorder.take_down(session.state.id)
        third = await recorder.open_publish("live", keys[2], "c")  # room again
        await third.on_close("unpublished")

    asyncio.run(scenario())
    assert recorder.refused_busy == 2
    assert recorder._claims == {}  # one lock per room ever was a leak
    uploader.close()


def test_uploads_far_behind_refuse_new_lives(tmp_path, store) -> None:
    """The store fails every upload: once the oldest waiting upload is older than the lag
    limit, a new live is refused with the reason, and it is let in again when the store is
    back and the backlog is gone."""
    from storage import ObjectStore, StoreConfig
    from storage.uploader import Upload
    from tests.utils.faulty_proxy import FaultyProxy

    with FaultyProxy(store.config.endpoint_url, failures=10**6) as proxy:
        down = ObjectStore(
            StoreConfig(**{**store.config.__dict__, "endpoint_url": proxy.url, "max_attempts": 1})
        )
        uploader = Uploader(down, max_backoff_s=0.1)
        recorder = _recorder(tmp_path, uploader, max_upload_lag_s=0.5, reconnect_grace_s=0)
        keys = [room_key(recorder)[1] for _ in range(2)]

        async def scenario() -> None:
            uploader.put("earlier-live", Upload(key="waiting/segment.ts", data=b"x" * 1000))
            assert uploader.stats.backlog_bytes == 1000
            await asyncio.sleep(0.7)
            with pytest.raises(NodeBusy, match=r"uploads to the store are \d+ s behind"):
                await recorder.open_publish("live", keys[0], "a")
            proxy.failures_left = 0  # the store is back
            await asyncio.to_thread(uploader.wait_idle, "earlier-live", 20)
            assert uploader.stats.backlog_bytes == 0
            session = await recorder.open_publish("live", keys[1], "b")
            await session.on_close("unpublished")

        asyncio.run(scenario())
        uploader.close()


def test_a_large_backlog_refuses_new_lives(tmp_path, store) -> None:
    from storage import ObjectStore, StoreConfig
    from storage.uploader import Upload
    from tests.utils.faulty_proxy import FaultyProxy

    with FaultyProxy(store.config.endpoint_url, failures=10**6) as proxy:
        down = ObjectStore(
            StoreConfig(**{**store.config.__dict__, "endpoint_url": proxy.url, "max_attempts": 1})
        )
        uploader = Uploader(down, max_backoff_s=0.1)
        recorder = _recorder(tmp_path, uploader, max_upload_backlog_bytes=3 << 20)
        _, key = room_key(recorder)
        for i in range(4):
            uploader.put("earlier-live", Upload(key=f"waiting/{i}.ts", data=b"x" * (1 << 20)))
        with pytest.raises(NodeBusy, match=r"4 MB of media wait for the store \(max_upload_"):
            asyncio.run(recorder.open_publish("live", key, "a"))
        proxy.failures_left = 0
        assert uploader.wait_idle("earlier-live", 20)
        uploader.close()


# -- seats: several hosts in one room ----------------------------------------------------------


def video_room_with_hosts(recorder: Recorder, hosts: int) -> tuple[str, list[str]]:
    """A video room and the keys of its seats, the creator's first."""
    creators = recorder.catalog.creators()
    creator = creators[0] if creators else recorder.catalog.add_creator("c")[0]
    room = recorder.catalog.add_room(creator_id=creator.id, title="t", kind="video")
    keys = [room.stream_key]
    for n in range(hosts):
        keys.append(recorder.catalog.add_host(room.id, name=f"h{n}", max_seats=4).stream_key)
    return room.id, keys


def test_seats_share_one_recording_and_each_refuses_a_second_publisher(recorder) -> None:
    room_id, keys = video_room_with_hosts(recorder, 2)

    async def run():
        sessions = [await recorder.open_publish("live", key, f"p{n}") for n, key in enumerate(keys)]
        state = recorder.state_of(room_id)
        assert sorted(state.seats) == [1, 2, 3]
        assert all(s.state is state for s in sessions)  # one recording
        assert recorder.live_counts() == (1, 1) and recorder.seats_live() == 3
        for key in keys:
            with pytest.raises(AlreadyLive):
                await recorder.open_publish("live", key, "again")
        # The creator leaves cleanly: the room goes on with its hosts.
        await sessions[0].on_close("unpublished")
        assert recorder.state_of(room_id) is state and recorder.seats_live() == 2
        back = await recorder.open_publish("live", keys[0], "back")  # the seat is free again
        assert back.state is state
        for session in (back, *sessions[1:]):
            await session.on_close("unpublished")
        assert recorder.state_of(room_id) is None  # ended with the last seat

    asyncio.run(run())


def test_removed_and_closed_seats_are_refused_in_words(recorder) -> None:
    room_id, keys = video_room_with_hosts(recorder, 3)
    recorder.catalog.remove_host(room_id, 2)
    with pytest.raises(HostRemoved, match="removed from the room"):
        asyncio.run(recorder.open_publish("live", keys[1], "a"))
    recorder.config.seats["video"] = 3  # the node's setting went down: seat 4 has no place
    with pytest.raises(SeatClosed, match="seat 4 is beyond the 3 seats of a video room"):
        asyncio.run(recorder.open_publish("live", keys[3], "a"))
    assert recorder.catalog.recordings(room_id=room_id) == []


def test_a_removed_live_host_is_cut_off_and_the_room_goes_on(recorder) -> None:
    room_id, keys = video_room_with_hosts(recorder, 1)

    async def run():
        ana = await recorder.open_publish("live", keys[0], "a")
        bea = await recorder.open_publish("live", keys[1], "b")
        assert recorder.remove_seat(room_id, 2) is True
        with pytest.raises(SeatRemoved):
            bea.on_media(8, 0, b"\xaf\x00\x12\x10")
        await bea.on_close("connection lost")  # no grace for a removed host
        state = recorder.state_of(room_id)
        assert state is not None and not state.seats[2].present
        await ana.on_close("unpublished")
        assert recorder.state_of(room_id) is None

    asyncio.run(run())


def test_a_takedown_cuts_every_seat(recorder) -> None:
    room_id, keys = video_room_with_hosts(recorder, 2)

    async def run():
        sessions = [await recorder.open_publish("live", key, f"p{n}") for n, key in enumerate(keys)]
        recording_id = recorder.state_of(room_id).id
        done = asyncio.create_task(recorder.take_down(recording_id))
        await asyncio.sleep(0)
        for session in sessions:
            with pytest.raises(TakenDown):
                session.on_media(8, 0, b"\xaf\x00\x12\x10")
            await session.on_close("taken down")
        assert await asyncio.wait_for(done, 10) is True
        assert recorder.state_of(room_id) is None

    asyncio.run(run())
