"""Random sequences of record / clip / hold / release / extend / takedown / sweep / time passing,
against the retention invariants, on the real store (SeaweedFS) and a real catalog:

- nothing expired or taken down is readable: the API answers 410 and no object is left;
- nothing held, live, pinned by a running clip job, or belonging to a programme is deleted;
- every deletion is audited exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from api.playback import Gone, Playback
from api.retention import Retention
from ingest.recorder import Recorder, RecorderConfig
from storage import Catalog, ObjectStore
from storage import keys as K
from storage.catalog import RetentionConflict, sqlite_url
from storage.models import Job, new_id
from storage.sweeper import Sweeper
from storage.uploader import Uploader
from tests.conftest import seaweedfs_config
from tests.utils.clock import FakeClock

RETENTION = timedelta(hours=24)


@pytest.fixture(scope="module")
def shared_store(seaweedfs) -> ObjectStore:
    store = ObjectStore(seaweedfs_config(seaweedfs, f"props-{secrets.token_hex(4)}"))
    store.ensure_bucket()
    return store


def test_retention_invariants(shared_store, tmp_path_factory) -> None:
    class Retained(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = FakeClock()
            directory = tmp_path_factory.mktemp("props")
            self.catalog = Catalog(sqlite_url(directory / "catalog.db"), now=self.clock)
            self.catalog.create_schema()
            self.store = shared_store
            self.sweeper = Sweeper(catalog=self.catalog, store=self.store, now=self.clock)
            recorder = Recorder(
                catalog=self.catalog,
                uploader=Uploader(self.store, workers=1),
                config=RecorderConfig(spool_dir=directory / "spool"),
                now=self.clock,
            )
            self.retention = Retention(
                catalog=self.catalog, store=self.store, sweeper=self.sweeper, recorder=recorder
            )
            self.playback = Playback(
                store=self.store, catalog=self.catalog, url_ttl_s=600, now=self.clock
            )
            self.creator, _ = self.catalog.add_creator("host")
            self.programme_key = K.programme_feed(new_id())
            self.store.put_bytes(self.programme_key, b"<rss/>")
            self.recordings: list[str] = []
            self.jobs: dict[str, str] = {}  # job id -> recording id, running

        # -- actions --------------------------------------------------------------------------

        made = Bundle("recordings")

        @rule(target=made, live=st.booleans())
        def record(self, live: bool) -> str:
            room = self.catalog.add_room(creator_id=self.creator.id, title="r", kind="audio")
            rec = self.catalog.start_recording(room.id)
            for seq in range(2):
                key = K.media_segment(rec.id, "source", self.clock(), seq, "ts")
                self.store.put_bytes(key, b"x" * 10)
                self.catalog.add_segment(
                    recording_id=rec.id,
                    rendition="source",
                    sequence=seq,
                    start_at=self.clock(),
                    duration_s=2.0,
                    key=key,
                    size_bytes=10,
                )
            self.store.put_bytes(K.media_playlist(rec.id, "source"), b"#EXTM3U\n")
            if not live:
                self.catalog.end_recording(rec.id, retention=RETENTION)
            self.recordings.append(rec.id)
            return rec.id

        @rule(rec_id=made)
        def end_live(self, rec_id: str) -> None:
            self.catalog.end_recording(rec_id, retention=RETENTION)

        @rule(rec_id=made)
        def start_clip(self, rec_id: str) -> None:
            if self.catalog.recording(rec_id).status not in ("live", "ended"):
                return  # the clips API refuses (410/409); nothing to pin
            job = Job(
                id=new_id(),
                kind="clip",
                status="running",
                recording_id=rec_id,
                created_at=self.clock(),
            )
            with self.catalog.session() as s:
                s.add(job)
            self.jobs[job.id] = rec_id

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def finish_clip(self, data) -> None:
            job_id = data.draw(st.sampled_from(sorted(self.jobs)))
            with self.catalog.session() as s:
                s.get(Job, job_id).status = "done"
            del self.jobs[job_id]

        @rule(rec_id=made)
        def hold(self, rec_id: str) -> None:
            with contextlib.suppress(RetentionConflict):
                self.retention.hold(rec_id, actor="admin")

        @rule(rec_id=made)
        def release(self, rec_id: str) -> None:
            with contextlib.suppress(RetentionConflict):
                self.retention.release(rec_id, actor="admin")

        @rule(rec_id=made, hours=st.floats(min_value=0.5, max_value=48))
        def extend(self, rec_id: str, hours: float) -> None:
            with contextlib.suppress(RetentionConflict):
                self.retention.extend(rec_id, actor="admin", hours=hours)

        @rule(rec_id=made)
        def take_down(self, rec_id: str) -> None:
            try:
                asyncio.run(self.retention.take_down(rec_id, actor="admin"))
            except RetentionConflict:
                assert self.catalog.recording(rec_id).status in ("expired", "taken_down")

        @rule(hours=st.sampled_from([1, 12, 25, 49]))
        def time_passes(self, hours: float) -> None:
            self.clock.advance(hours=hours)

        @rule()
        def sweep(self) -> None:
            report = self.sweeper.sweep()
            assert not report.failed

        # -- invariants -------------------------------------------------------------------------

        @invariant()
        def gone_is_unreadable_and_kept_is_intact(self) -> None:
            pinned = set(self.jobs.values())
            for rec_id in self.recordings:
                rec = self.catalog.recording(rec_id)
                stored = list(self.store.list(K.recording_prefix(rec_id)))
                if rec.status in ("expired", "taken_down"):
                    assert stored == [], rec.status
                    with pytest.raises(Gone):
                        self.playback.recording(rec_id)
                    actions = [e.action for e in self.catalog.audit_log(recording_id=rec_id)]
                    assert actions.count("expire") + actions.count("takedown") == 1
                else:
                    assert rec.status in ("live", "ended"), rec.status
                    assert len(stored) == 3
                    self.playback.recording(rec_id)
                if rec.status == "expired":
                    assert not rec.held and rec_id not in pinned
                    assert rec.expires_at <= self.clock()
            assert self.store.get(self.programme_key) == b"<rss/>"

        def teardown(self) -> None:
            self.catalog.dispose()

    Retained.TestCase.settings = settings(
        max_examples=30,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    Retained.TestCase().runTest()
