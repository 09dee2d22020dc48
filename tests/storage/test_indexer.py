"""The segment index, batched on the indexer's thread, from real threads into a real SQLite
catalog."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from storage import Catalog
from storage import keys as K
from storage.catalog import sqlite_url
from storage.indexer import SegmentIndexer


def _row(rec_id: str, seq: int, t0, rendition: str = "source") -> dict:
    start = t0 + timedelta(seconds=2 * seq)
    return {
        "recording_id": rec_id,
        "rendition": rendition,
        "sequence": seq,
        "start_at": start,
        "duration_s": 2.0,
        "key": K.media_segment(rec_id, rendition, start, seq),
        "size_bytes": 1000,
    }


def _catalog(tmp_path) -> tuple[Catalog, list]:
    catalog = Catalog(sqlite_url(tmp_path / "afterlive.db"))
    catalog.create_schema()
    creator, _ = catalog.add_creator("alice")
    recordings = []
    for i in range(4):
        room = catalog.add_room(creator_id=creator.id, title=f"room {i}", kind="audio")
        recordings.append(catalog.start_recording(room.id))
    return catalog, recordings


class Outcomes:
    """The `done` callbacks' outcomes, by row key, from the indexer's thread."""

    def __init__(self) -> None:
        self.by_key: dict[str, BaseException | None] = {}
        self.lock = threading.Lock()

    def done(self, key: str):
        def record(error: BaseException | None) -> None:
            with self.lock:
                self.by_key[key] = error

        return record


def test_rows_from_many_threads_are_all_indexed_in_a_few_transactions(tmp_path) -> None:
    catalog, recordings = _catalog(tmp_path)
    indexer = SegmentIndexer(catalog, interval_s=0.5)
    t0 = recordings[0].started_at
    outcomes = Outcomes()
    barrier = threading.Barrier(16)

    def upload_thread(n: int) -> None:
        barrier.wait()
        for seq in range(n * 25, n * 25 + 25):
            rec = recordings[seq % 4]
            for rendition in ("source", "audio"):
                row = _row(rec.id, seq, t0, rendition)
                indexer.add(row, outcomes.done(row["key"]))

    threads = [threading.Thread(target=upload_thread, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert indexer.flush(timeout_s=30)
    assert len(outcomes.by_key) == 800 and set(outcomes.by_key.values()) == {None}
    assert indexer.stats.rows == 800
    assert indexer.stats.transactions <= 4  # rows that arrived within the interval share one
    for i, rec in enumerate(recordings):
        sequences = [s.sequence for s in catalog.find_segments(rec.id, "source")]
        assert sequences == list(range(i, 400, 4))
        stored = catalog.recording(rec.id)
        assert stored.object_count == 200
        assert stored.byte_count == 200_000
        assert stored.media_s == 200.0  # source segments only


def test_a_row_waits_for_the_interval_without_holding_its_caller(tmp_path) -> None:
    catalog, recordings = _catalog(tmp_path)
    rec = recordings[0]
    indexer = SegmentIndexer(catalog, interval_s=0.6)
    committed = threading.Event()
    added = time.monotonic()
    indexer.add(_row(rec.id, 0, rec.started_at), lambda error: committed.set())
    indexer.add(_row(rec.id, 1, rec.started_at), lambda error: None)
    assert time.monotonic() - added < 0.3  # the upload thread went on at once
    assert catalog.find_segments(rec.id, "source") == []
    assert committed.wait(10)
    assert time.monotonic() - added >= 0.5  # gathered for the interval, then one commit
    assert len(catalog.find_segments(rec.id, "source")) == 2
    assert indexer.stats.transactions == 1


def test_flush_writes_at_once_and_waits(tmp_path) -> None:
    catalog, recordings = _catalog(tmp_path)
    rec = recordings[0]
    indexer = SegmentIndexer(catalog, interval_s=3600)
    assert indexer.flush(timeout_s=1)  # nothing handed over: nothing to wait for
    told: list = []
    for seq in range(3):
        indexer.add(_row(rec.id, seq, rec.started_at), told.append)
    started = time.monotonic()
    assert indexer.flush(timeout_s=10)
    assert time.monotonic() - started < 5
    assert told == [None] * 3  # the callers were told before flush returned
    assert len(catalog.find_segments(rec.id, "source")) == 3


def test_refusals_go_to_their_own_row_and_a_failing_callback_stops_nothing(
    tmp_path, caplog
) -> None:
    catalog, recordings = _catalog(tmp_path)
    rec = recordings[0]
    t0 = rec.started_at
    catalog.add_segment(**_row(rec.id, 0, t0))
    indexer = SegmentIndexer(catalog, interval_s=3600)
    outcomes = Outcomes()
    rows = [_row(rec.id, 0, t0), _row("gone", 1, t0), _row(rec.id, 2, t0)]

    def broken_callback(error: BaseException | None) -> None:
        raise RuntimeError("a bug in a caller")

    indexer.add(_row(rec.id, 1, t0), broken_callback)
    for row in rows:
        indexer.add(row, outcomes.done(row["key"]))
    assert indexer.flush(timeout_s=10)
    assert isinstance(outcomes.by_key[rows[0]["key"]], IntegrityError)  # indexed already
    assert isinstance(outcomes.by_key[rows[1]["key"]], KeyError)  # its recording is gone
    assert outcomes.by_key[rows[2]["key"]] is None
    assert [s.sequence for s in catalog.find_segments(rec.id, "source")] == [0, 1, 2]
    assert "after indexing" in caplog.text
    # The thread goes on after the failing callback.
    later = threading.Event()
    indexer.add(_row(rec.id, 3, t0), lambda error: later.set())
    assert indexer.flush(timeout_s=10) and later.is_set()


def test_a_bad_row_is_refused_alone(tmp_path) -> None:
    catalog, recordings = _catalog(tmp_path)
    rec = recordings[0]
    t0 = rec.started_at
    catalog.add_segment(**_row(rec.id, 0, t0))
    # A replayed row (indexed already), a row of a recording that is gone, two good ones.
    outcomes = catalog.add_segments(
        [_row(rec.id, 1, t0), _row(rec.id, 0, t0), _row("gone", 5, t0), _row(rec.id, 2, t0)]
    )
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert isinstance(outcomes[2], KeyError)
    assert [s.sequence for s in catalog.find_segments(rec.id, "source")] == [0, 1, 2]
    assert catalog.recording(rec.id).object_count == 3


def _renditions(rec_id: str, bandwidth: int) -> list[dict]:
    return [
        {
            "recording_id": rec_id,
            "name": "source",
            "playlist_key": K.media_playlist(rec_id, "source"),
            "codecs": "avc1.64001f,mp4a.40.2",
            "bandwidth": bandwidth,
            "width": 1280,
            "height": 720,
        },
        {
            "recording_id": rec_id,
            "name": "audio",
            "playlist_key": K.media_playlist(rec_id, "audio"),
            "codecs": "mp4a.40.2",
            "bandwidth": 130_000,
        },
    ]


def test_renditions_ride_with_their_segment_in_the_batch(tmp_path) -> None:
    catalog, recordings = _catalog(tmp_path)
    indexer = SegmentIndexer(catalog, interval_s=0.2)
    t0 = recordings[0].started_at
    outcomes = Outcomes()
    for rec in recordings:
        row = _row(rec.id, 0, t0) | {"renditions": _renditions(rec.id, 1)}
        indexer.add(row, outcomes.done(row["key"]))
    assert indexer.flush(timeout_s=10)
    assert list(outcomes.by_key.values()) == [None] * len(recordings)
    for rec in recordings:
        got = {r.name: r for r in catalog.renditions(rec.id)}
        assert set(got) == {"source", "audio"}
        assert (got["source"].codecs, got["source"].width, got["source"].height) == (
            "avc1.64001f,mp4a.40.2",
            1280,
            720,
        )
        assert (got["audio"].width, got["audio"].height) == (None, None)

    # A later master (the peak grew) updates the rows in place, with the segment that brought it.
    rec = recordings[0]
    row = _row(rec.id, 1, t0) | {"renditions": _renditions(rec.id, 2_900_000)}
    indexer.add(row, outcomes.done(row["key"]))
    assert indexer.flush(timeout_s=10) and outcomes.by_key[row["key"]] is None
    got = {r.name: r for r in catalog.renditions(rec.id)}
    assert len(got) == 2 and got["source"].bandwidth == 2_900_000


def test_renditions_of_a_refused_row_are_not_saved_and_the_others_are(tmp_path) -> None:
    catalog, recordings = _catalog(tmp_path)
    rec, other = recordings[0], recordings[1]
    t0 = rec.started_at
    catalog.add_segment(**_row(rec.id, 0, t0))
    outcomes = catalog.add_segments(
        [
            _row("gone", 0, t0) | {"renditions": _renditions("gone", 1)},
            _row(other.id, 0, t0) | {"renditions": _renditions(other.id, 1)},
            _row(rec.id, 0, t0) | {"renditions": _renditions(rec.id, 7)},  # indexed already
        ]
    )
    assert isinstance(outcomes[0], KeyError)
    assert outcomes[1] is None
    assert isinstance(outcomes[2], IntegrityError)
    assert catalog.renditions("gone") == []
    assert {r.name for r in catalog.renditions(other.id)} == {"source", "audio"}
    assert catalog.renditions(rec.id) == []  # its transaction was rolled back whole
