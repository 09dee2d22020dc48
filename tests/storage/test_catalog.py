"""The catalog on SQLite, with a fake clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError

from storage import Catalog, StorageError
from storage import keys as K
from storage.catalog import hash_token, sqlite_url
from storage.models import Creator
from tests.utils.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def catalog(tmp_path, clock) -> Catalog:
    cat = Catalog(sqlite_url(tmp_path / "afterlive.db"), now=clock)
    cat.create_schema()
    return cat


@pytest.fixture
def room(catalog):
    creator, _ = catalog.add_creator("alice")
    return catalog.add_room(creator_id=creator.id, title="Morning show", kind="video")


def test_creator_token_is_shown_once_and_stored_hashed(catalog: Catalog) -> None:
    creator, token = catalog.add_creator("  alice ")
    assert creator.name == "alice"
    assert len(token) >= 40
    assert catalog.creator_by_token(token).id == creator.id
    assert catalog.creator_by_token(token + "x") is None
    with catalog.session() as s:
        stored = s.scalar(select(Creator.token_hash))
    assert stored == hash_token(token) != token


def test_creator_names_are_unique_and_not_empty(catalog: Catalog) -> None:
    catalog.add_creator("alice")
    with pytest.raises(ValueError, match="already exists"):
        catalog.add_creator("alice")
    with pytest.raises(ValueError, match="empty"):
        catalog.add_creator("  ")
    assert [c.name for c in catalog.creators()] == ["alice"]


def test_stream_keys_find_their_room_and_rotate(catalog: Catalog, room) -> None:
    assert catalog.room_by_stream_key(room.stream_key).id == room.id
    other = "y" if room.stream_key.endswith("x") else "x"  # a different last character
    assert catalog.room_by_stream_key(room.stream_key[:-1] + other) is None
    assert catalog.room_by_stream_key("no-dash-key".replace("-", "")) is None
    assert catalog.room_by_stream_key(f"{room.id}-") is None
    old = room.stream_key
    rotated = catalog.rotate_stream_key(room.id)
    assert rotated.stream_key != old
    assert catalog.room_by_stream_key(old) is None
    assert catalog.room_by_stream_key(rotated.stream_key).id == room.id


def test_room_kind_is_checked(catalog: Catalog) -> None:
    creator, _ = catalog.add_creator("bob")
    with pytest.raises(ValueError, match="audio"):
        catalog.add_room(creator_id=creator.id, title="x", kind="podcast")


def test_recording_lifecycle_sets_expiry_from_the_end(catalog, room, clock) -> None:
    rec = catalog.start_recording(room.id)
    assert (rec.status, rec.ended_at, rec.expires_at) == ("live", None, None)
    assert rec.title == room.title and rec.kind == "video"
    clock.advance(minutes=45)
    ended = catalog.end_recording(rec.id, retention=timedelta(hours=24))
    assert ended.status == "ended"
    assert ended.ended_at == clock()
    assert ended.expires_at == clock() + timedelta(hours=24)
    clock.advance(minutes=5)
    again = catalog.end_recording(rec.id, retention=timedelta(hours=1))
    assert again.expires_at == ended.expires_at  # ending twice changes nothing


def test_times_come_back_aware_utc(catalog, room, clock) -> None:
    rec = catalog.start_recording(room.id)
    fetched = catalog.recording(rec.id)
    assert fetched.started_at == clock()
    assert fetched.started_at.tzinfo is not None
    with pytest.raises(StatementError, match="naive datetime"):
        catalog.add_segment(
            recording_id=rec.id,
            rendition="source",
            sequence=0,
            start_at=datetime(2026, 1, 1),
            duration_s=2,
            key="k",
            size_bytes=1,
        )


def test_recordings_newest_first_filtered_and_paged(catalog, room, clock) -> None:
    ids = []
    for _ in range(5):
        ids.append(catalog.start_recording(room.id).id)
        clock.advance(minutes=1)
    catalog.end_recording(ids[0], retention=timedelta(hours=24))
    listed = [r.id for r in catalog.recordings()]
    assert listed == ids[::-1]
    assert [r.id for r in catalog.recordings(limit=2, offset=1)] == ids[::-1][1:3]
    assert [r.id for r in catalog.recordings(status="ended")] == [ids[0]]
    assert len(catalog.recordings(status="live", room_id=room.id)) == 4
    assert catalog.recordings(room_id="other") == []


def test_expiring_excludes_live_held_and_future(catalog, room, clock) -> None:
    due, held, later, _live = (catalog.start_recording(room.id) for _ in range(4))
    for rec in (due, held):
        catalog.end_recording(rec.id, retention=timedelta(hours=1))
    catalog.end_recording(later.id, retention=timedelta(hours=48))
    with catalog.session() as s:
        s.get(type(held), held.id).held = True
    clock.advance(hours=2)
    assert [r.id for r in catalog.recordings_expiring_before(clock())] == [due.id]


def test_segments_index_and_time_range_queries(catalog, room, clock) -> None:
    rec = catalog.start_recording(room.id)
    t0 = clock()
    for seq in range(10):
        start = t0 + timedelta(seconds=2 * seq)
        catalog.add_segment(
            recording_id=rec.id,
            rendition="source",
            sequence=seq,
            start_at=start,
            duration_s=2.0,
            key=K.media_segment(rec.id, "source", start, seq),
            size_bytes=1000,
            discontinuity=(seq == 5),
        )
    assert catalog.recording(rec.id).object_count == 10
    assert catalog.recording(rec.id).byte_count == 10_000
    all_segments = catalog.find_segments(rec.id, "source")
    assert [s.sequence for s in all_segments] == list(range(10))
    assert [s.sequence for s in all_segments if s.discontinuity] == [5]
    # [5 s, 9 s) overlaps segments starting at 4, 6 and 8 s.
    window = catalog.find_segments(
        rec.id, "source", t0 + timedelta(seconds=5), t0 + timedelta(seconds=9)
    )
    assert [s.sequence for s in window] == [2, 3, 4]
    assert catalog.find_segments(rec.id, "audio") == []
    with pytest.raises(IntegrityError):
        catalog.add_segment(
            recording_id=rec.id,
            rendition="source",
            sequence=3,
            start_at=t0,
            duration_s=2,
            key="dup",
            size_bytes=1,
        )


def test_renditions_upsert(catalog, room) -> None:
    rec = catalog.start_recording(room.id)
    catalog.set_rendition(
        recording_id=rec.id,
        name="source",
        playlist_key="a",
        codecs="avc1.64001f,mp4a.40.2",
        bandwidth=2_500_000,
        width=1280,
        height=720,
    )
    catalog.set_rendition(recording_id=rec.id, name="audio", playlist_key="b", codecs="mp4a.40.2")
    catalog.set_rendition(
        recording_id=rec.id, name="source", playlist_key="a2", bandwidth=2_600_000
    )
    names = {r.name: r for r in catalog.renditions(rec.id)}
    assert set(names) == {"source", "audio"}
    assert (names["source"].playlist_key, names["source"].bandwidth) == ("a2", 2_600_000)


def test_audit_log_is_appended_newest_first(catalog, room, clock) -> None:
    rec = catalog.start_recording(room.id)
    catalog.audit(actor="admin", action="hold", recording_id=rec.id)
    clock.advance(hours=1)
    catalog.audit(
        actor="sweeper",
        action="expire",
        recording_id=rec.id,
        objects_deleted=1800,
        bytes_deleted=10**9,
        detail={"reason": "retention"},
    )
    log = catalog.audit_log()
    assert [(e.action, e.actor) for e in log] == [("expire", "sweeper"), ("hold", "admin")]
    assert log[0].bytes_deleted == 10**9 and log[0].detail == {"reason": "retention"}
    assert log[0].at == clock()
    assert len(catalog.audit_log(recording_id="other")) == 0


def test_catalog_survives_reopen(tmp_path, clock) -> None:
    url = sqlite_url(tmp_path / "c.db")
    first = Catalog(url, now=clock)
    first.create_schema()
    _, token = first.add_creator("carol")
    first.dispose()
    second = Catalog(url, now=clock)
    second.create_schema()  # idempotent on an existing file
    assert second.creator_by_token(token).name == "carol"
    second.ping()


def test_unreachable_database_is_a_storage_error(tmp_path) -> None:
    catalog = Catalog(sqlite_url(tmp_path / "missing-dir" / "c.db"))
    with pytest.raises(StorageError, match="did not answer"):
        catalog.ping()
    with pytest.raises(StorageError, match="cannot create schema"):
        catalog.create_schema()


def test_segment_keys_sort_by_start_time(catalog, room, clock) -> None:
    """Keys encode start time, so the store's listing and the index agree on order."""
    rec = catalog.start_recording(room.id)
    starts = [clock() + timedelta(seconds=s) for s in (0, 2, 4, 10, 100)]
    keys = [K.media_segment(rec.id, "audio", t, i, "ts") for i, t in enumerate(starts)]
    assert keys == sorted(keys)
    assert keys[0].endswith(f"{int(starts[0].timestamp() * 1000):013d}-000000.ts")


def test_an_older_catalog_gets_the_new_columns(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    Catalog(sqlite_url(path)).create_schema()
    with sqlite3.connect(path) as db:  # as a catalog made before these columns existed
        for column in ("media_s", "delete_started_at", "delete_reason"):
            db.execute(f"ALTER TABLE recordings DROP COLUMN {column}")
    catalog = Catalog(sqlite_url(path))
    catalog.create_schema()
    creator, _ = catalog.add_creator("old")
    room = catalog.add_room(creator_id=creator.id, title="t", kind="audio")
    rec = catalog.start_recording(room.id)
    assert catalog.recording(rec.id).media_s == 0.0
    assert catalog.recording(rec.id).delete_started_at is None
