"""RTMP publishes sharing the segmenting pool, fed real FLV media made by ffmpeg, on a real
catalog and store: a room whose media breaks is stopped alone."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from ingest.errors import ProtocolError
from ingest.recorder import Recorder, RecorderConfig
from storage import Catalog
from storage.catalog import sqlite_url
from storage.uploader import Uploader
from tests.utils.flvfile import read_tags
from tests.utils.media import FFMPEG, synthetic_input
from transcode.flv import VIDEO

SECONDS = 6


@pytest.fixture(scope="module")
def tags(tmp_path_factory) -> list[tuple[int, int, bytes]]:
    path = tmp_path_factory.mktemp("media") / "av.flv"
    args = [a for a in synthetic_input(seconds=SECONDS) if a != "-re"]
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args, "-f", "flv", str(path)],
        check=True,
    )
    return [(t.type_id, t.timestamp, t.body) for t in read_tags(path)]


def broken(tags: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """From 3 s on, the H.264 frames are zeros: the muxer refuses them."""
    return [
        (t, ts, body[:5] + bytes(len(body) - 5))
        if t == VIDEO and ts >= 3000 and body[1] == 1
        else (t, ts, body)
        for t, ts, body in tags
    ]


def test_a_broken_room_is_stopped_and_the_others_on_its_thread_are_recorded(
    tmp_path: Path, store, tags
) -> None:
    catalog = Catalog(sqlite_url(tmp_path / "c.db"))
    catalog.create_schema()
    creator, _ = catalog.add_creator("c")
    rooms = [catalog.add_room(creator_id=creator.id, title=n, kind="video") for n in "abc"]
    uploader = Uploader(store)
    # One segmenting thread for all three rooms: the broken one shares it with the others.
    recorder = Recorder(
        catalog=catalog,
        uploader=uploader,
        config=RecorderConfig(
            spool_dir=tmp_path / "spool", reconnect_grace_s=0, segmenter_threads=1
        ),
    )
    feeds = {rooms[0].id: tags, rooms[1].id: broken(tags), rooms[2].id: tags}

    async def scenario() -> dict[str, str]:
        sessions = {r.id: await recorder.open_publish("live", r.stream_key, r.id) for r in rooms}
        outcome = {}

        async def publish(room_id: str) -> None:
            session = sessions[room_id]
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                for type_id, ts, body in feeds[room_id]:
                    # Paced at 4x real time: the break at 3 s is seen while media still
                    # comes (the refusal is told on the next message).
                    await asyncio.sleep(max(0.0, started + ts / 4000 - loop.time()))
                    if not session.on_media(type_id, ts, body):
                        await session.room()
                outcome[room_id] = "unpublished"
            except ProtocolError as exc:
                outcome[room_id] = f"refused: {exc}"
            await session.on_close(outcome[room_id])

        await asyncio.wait_for(asyncio.gather(*(publish(r.id) for r in rooms)), 60)
        await recorder.close()
        return outcome

    try:
        outcome = asyncio.run(scenario())
    finally:
        uploader.close()
    good, bad = [rooms[0], rooms[2]], rooms[1]
    # Every recording ended with its segments stored and indexed: its spool directory is gone.
    assert list((tmp_path / "spool").iterdir()) == []
    assert outcome[bad.id].startswith("refused: the media could not be read")
    assert "could not be segmented" in outcome[bad.id]
    for room in good:
        assert outcome[room.id] == "unpublished"
        (recording,) = catalog.recordings(room_id=room.id)
        assert recording.ended_at is not None
        for rendition in ("source", "audio"):
            segments = catalog.find_segments(recording.id, rendition)
            assert sum(s.duration_s for s in segments) == pytest.approx(SECONDS, abs=0.1)
            for s in segments:  # stored, not only indexed
                assert store.head(s.key).size == s.size_bytes
    # The broken room keeps what it recorded before its media broke, and is ended.
    (recording,) = catalog.recordings(room_id=bad.id)
    assert recording.ended_at is not None
    kept = catalog.find_segments(recording.id, "source")
    assert len(kept) >= 1 and sum(s.duration_s for s in kept) <= 4.1


@pytest.mark.parametrize(
    "spooled_as",
    [
        "000000.ts",  # a segment of the source or the audio-only rendition
        "ladder/000000.ts",  # a segment of the optional ladder
        "000000.ts+sidecar",  # a JSON file beside the segment, as versions before the journal
    ],
)
def test_a_first_segment_left_in_the_spool_brings_its_renditions_on_recovery(
    tmp_path: Path, store, spooled_as: str
) -> None:
    """The process died after spooling a live's first segment, before indexing it: its
    journal line carries the renditions its master playlist announced, so the restart can
    close the live's playlists (finalising walks the catalog's renditions)."""
    import json
    from datetime import timedelta

    from storage import keys as K
    from storage.spool import SpoolJournal

    catalog = Catalog(sqlite_url(tmp_path / "c.db"))
    catalog.create_schema()
    creator, _ = catalog.add_creator("c")
    room = catalog.add_room(creator_id=creator.id, title="r", kind="audio")
    recording = catalog.start_recording(room.id)  # live, nothing indexed, no renditions
    spool = tmp_path / "spool"
    name, _, legacy = spooled_as.partition("+")
    segment = spool / recording.id / name
    segment.parent.mkdir(parents=True)
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
         *[a for a in synthetic_input(video=False, seconds=2) if a != "-re"],
         "-c:a", "aac", "-f", "mpegts", str(segment)],
        check=True,
    )  # fmt: skip
    start = recording.started_at
    key = K.media_segment(recording.id, "source", start, 0, "ts")
    playlist_key = K.media_playlist(recording.id, "source")
    fields = {
        "recording_id": recording.id,
        "rendition": "source",
        "sequence": 0,
        "start_at": start.isoformat(),
        "duration_s": 2.0,
        "key": key,
        "size_bytes": (size := segment.stat().st_size),
        "discontinuity": False,
        "renditions": [
            {
                "recording_id": recording.id,
                "name": "source",
                "playlist_key": playlist_key,
                "codecs": "mp4a.40.2",
                "bandwidth": 70_000,
                "width": None,
                "height": None,
            }
        ],
    }
    if legacy:
        segment.with_suffix(".json").write_text(json.dumps(fields))
    else:
        journal = SpoolJournal(spool / recording.id)
        journal.append(fields, segment)
        journal.close()
    uploader = Uploader(store)
    recorder = Recorder(catalog=catalog, uploader=uploader, config=RecorderConfig(spool_dir=spool))
    try:
        assert recorder.recover() == 1
    finally:
        uploader.close()
    (rendition,) = catalog.renditions(recording.id)
    assert (rendition.name, rendition.codecs, rendition.bandwidth) == (
        "source",
        "mp4a.40.2",
        70_000,
    )
    assert [s.key for s in catalog.find_segments(recording.id, "source")] == [key]
    assert store.head(key).size == size
    text = store.get(playlist_key).decode()
    assert "#EXT-X-ENDLIST" in text and key.rsplit("/", 1)[1] in text
    ended = catalog.recording(recording.id)
    assert ended.ended_at == start + timedelta(seconds=2)
    assert list(spool.iterdir()) == []  # stored and indexed: the recording's spool is gone


def test_segments_stored_but_not_yet_indexed_stay_in_the_spool_for_the_next_start(
    tmp_path: Path, store, tags
) -> None:
    """The process dies while stored segments wait for the index's next commit: their spool
    files and journal lines are still there, and the next start indexes them and closes the
    live's playlists."""
    from storage import keys as K
    from transcode.playlists import parse_media_playlist

    catalog = Catalog(sqlite_url(tmp_path / "c.db"))
    catalog.create_schema()
    creator, _ = catalog.add_creator("c")
    room = catalog.add_room(creator_id=creator.id, title="r", kind="video")
    spool = tmp_path / "spool"
    uploader = Uploader(store)
    # An index that would commit in an hour: every stored segment waits for it.
    config = RecorderConfig(spool_dir=spool, index_interval_s=3600, segmenter_threads=1)
    recorder = Recorder(catalog=catalog, uploader=uploader, config=config)

    async def publish_without_ending() -> str:
        session = await recorder.open_publish("live", room.stream_key, "peer")
        for type_id, ts, body in tags:
            if not session.on_media(type_id, ts, body):
                await session.room()
        state = recorder.state_of(room.id)
        assert state is not None
        # SECONDS of media at 2 s: all but the segment still open get closed and stored.
        for _ in range(200):
            if state.next_sequence >= SECONDS // 2 - 1 and uploader.pending() == 0:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(uploader.wait_idle, None, 30)
        return state.id

    recording_id = asyncio.run(publish_without_ending())
    stored = store.list(f"recordings/{recording_id}/source/")
    assert len([o for o in stored if o.key.endswith(".ts")]) >= SECONDS // 2 - 1
    assert catalog.find_segments(recording_id, "source") == []  # nothing committed yet
    assert len(list((spool / recording_id).glob("*.ts"))) >= 2 * (SECONDS // 2 - 1)
    uploader.close(drain_timeout_s=1)  # ... and the process is gone (its indexer never wrote)
    recorder.pool.close()

    restarted_uploader = Uploader(store)
    restarted = Recorder(
        catalog=catalog, uploader=restarted_uploader, config=RecorderConfig(spool_dir=spool)
    )
    try:
        assert restarted.recover() == 1
    finally:
        restarted_uploader.close()
    for rendition in ("source", "audio"):
        segments = catalog.find_segments(recording_id, rendition)
        assert [s.sequence for s in segments] == list(range(len(segments)))
        assert len(segments) >= SECONDS // 2 - 1
        text = store.get(K.media_playlist(recording_id, rendition)).decode()
        playlist = parse_media_playlist(text)
        assert playlist.ended and len(playlist.segments) == len(segments)
    assert catalog.recording(recording_id).ended_at is not None
    assert list(spool.iterdir()) == []


def test_a_camera_turned_on_mid_live_gets_video_and_an_audio_rendition(
    tmp_path: Path, store, tags
) -> None:
    """The host starts with the camera off (audio only) and turns it on at 2.5 s: from the
    first keyframe (4 s) the recording has video, the master playlist announces it and the
    audio-only rendition, and the new rendition's segments are timed like the source's."""
    from storage import keys as K
    from transcode.flv import AUDIO, is_frame
    from transcode.playlists import parse_media_playlist

    feed = []
    for type_id, ts, body in tags:
        if type_id == AUDIO:
            feed.append((type_id, ts, body))
        elif type_id == VIDEO and not is_frame(VIDEO, body) and ts == 0:
            feed.append((VIDEO, 2500, body))  # the sequence header, when the camera starts
        elif type_id == VIDEO and ts >= 2500:
            feed.append((type_id, ts, body))
    feed.sort(key=lambda t: t[1])
    catalog = Catalog(sqlite_url(tmp_path / "c.db"))
    catalog.create_schema()
    creator, _ = catalog.add_creator("c")
    room = catalog.add_room(creator_id=creator.id, title="cam", kind="video")
    uploader = Uploader(store)
    recorder = Recorder(
        catalog=catalog,
        uploader=uploader,
        config=RecorderConfig(spool_dir=tmp_path / "spool", reconnect_grace_s=0),
    )

    async def scenario() -> None:
        session = await recorder.open_publish("live", room.stream_key, "peer")
        loop = asyncio.get_running_loop()
        started = loop.time()
        for type_id, ts, body in feed:
            await asyncio.sleep(max(0.0, started + ts / 4000 - loop.time()))
            if not session.on_media(type_id, ts, body):
                await session.room()
        await session.on_close("unpublished")
        await recorder.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        uploader.close()
    (recording,) = catalog.recordings(room_id=room.id)
    assert recording.ended_at is not None
    renditions = {r.name: r for r in catalog.renditions(recording.id)}
    assert set(renditions) == {"source", "audio"}
    assert renditions["source"].codecs.startswith("avc1.") and renditions["source"].width == 320
    master = store.get(K.master_playlist(recording.id)).decode()
    assert "RESOLUTION=320x240" in master and "audio/index.m3u8" in master
    source = parse_media_playlist(store.get(K.media_playlist(recording.id, "source")).decode())
    audio = parse_media_playlist(store.get(K.media_playlist(recording.id, "audio")).decode())
    assert sum(s.duration_s for s in source.segments) == pytest.approx(SECONDS, abs=0.1)
    assert [s.discontinuity for s in source.segments].count(True) == 1
    assert sum(s.duration_s for s in audio.segments) == pytest.approx(2, abs=0.1)
    turn = next(s for s in source.segments if s.discontinuity)
    gap = abs((audio.segments[0].program_date_time - turn.program_date_time).total_seconds())
    assert gap < 0.1
