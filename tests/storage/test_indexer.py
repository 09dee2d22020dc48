"""Group commit of the segment index, from real threads into a real SQLite catalog."""

from __future__ import annotations

import threading
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


def test_rows_from_many_threads_are_all_indexed_in_fewer_transactions(tmp_path) -> None:
    catalog, recordings = _catalog(tmp_path)
    indexer = SegmentIndexer(catalog)
    t0 = recordings[0].started_at
    errors: list = []
    barrier = threading.Barrier(16)

    def upload_thread(n: int) -> None:
        barrier.wait()
        for seq in range(n * 25, n * 25 + 25):
            rec = recordings[seq % 4]
            errors.append(indexer.add(_row(rec.id, seq, t0)))
            errors.append(indexer.add(_row(rec.id, seq, t0, rendition="audio")))

    threads = [threading.Thread(target=upload_thread, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [None] * 800
    assert indexer.stats.rows == 800
    assert indexer.stats.transactions < 800  # rows that arrived together shared a commit
    for i, rec in enumerate(recordings):
        sequences = [s.sequence for s in catalog.find_segments(rec.id, "source")]
        assert sequences == list(range(i, 400, 4))
        stored = catalog.recording(rec.id)
        assert stored.object_count == 200
        assert stored.byte_count == 200_000
        assert stored.media_s == 200.0  # source segments only


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
