"""The job queue in the catalog: claims fair across creators, a limit per creator, and a cap on
how long a queued job keeps its recording from expiring (a fake clock decides)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import Catalog
from storage.catalog import JobLimitReached, sqlite_url
from tests.utils.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _catalog(path, clock, **options) -> Catalog:
    catalog = Catalog(sqlite_url(path / "afterlive.db"), now=clock, **options)
    catalog.create_schema()
    return catalog


@pytest.fixture
def catalog(tmp_path, clock) -> Catalog:
    return _catalog(tmp_path, clock, job_pin_max=timedelta(hours=1))


def _ended_recording(catalog: Catalog, creator_id: str, clock: FakeClock):
    room = catalog.add_room(creator_id=creator_id, title="room", kind="audio")
    recording = catalog.start_recording(room.id)
    catalog.end_recording(recording.id, retention=timedelta(hours=24), ended_at=clock())
    return recording


def _clip(catalog: Catalog, creator_id: str, recording_id: str, clock: FakeClock, **kw):
    clock.advance(seconds=1)  # jobs come one after another
    _, job = catalog.start_clip(
        creator_id=creator_id, recording_id=recording_id, title="c", start_s=0, end_s=1, **kw
    )
    return job


def _run_all(catalog: Catalog, clock: FakeClock) -> list[str]:
    """Claim and finish jobs one at a time (one worker): the creators in the order served."""
    order = []
    while (job := catalog.claim_job("clip")) is not None:
        order.append(job.creator_id)
        clock.advance(seconds=5)
        catalog.update_job(job.id, status="done", finished_at=clock())
    return order


def test_one_creators_flood_takes_turns_with_anothers_job(catalog, clock) -> None:
    flooder, _ = catalog.add_creator("flooder")
    other, _ = catalog.add_creator("other")
    rec_a = _ended_recording(catalog, flooder.id, clock)
    rec_b = _ended_recording(catalog, other.id, clock)
    for _ in range(5):
        _clip(catalog, flooder.id, rec_a.id, clock)
    first = catalog.claim_job("clip")  # the flood's first job is running
    assert first.creator_id == flooder.id and first.status == "running"
    assert catalog.clip(first.payload["clip_id"]).status == "running"  # the clip follows
    _clip(catalog, other.id, rec_b.id, clock)  # comes in last
    clock.advance(seconds=5)
    catalog.update_job(first.id, status="done", finished_at=clock())
    # Next is the other creator's one job, not the flood's second.
    assert _run_all(catalog, clock) == [other.id] + [flooder.id] * 4


def test_a_creators_own_jobs_run_in_the_order_they_came(catalog, clock) -> None:
    creator, _ = catalog.add_creator("c")
    recording = _ended_recording(catalog, creator.id, clock)
    jobs = [_clip(catalog, creator.id, recording.id, clock).id for _ in range(4)]
    claimed = []
    while (job := catalog.claim_job("clip")) is not None:
        claimed.append(job.id)
        catalog.update_job(job.id, status="done")
    assert claimed == jobs


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=24))
def test_the_queue_is_round_robin_across_creators(tmp_path_factory, arrivals) -> None:
    """Whatever the order jobs came in (all before the first claim): served one at a time,
    no creator gets a second job while another creator with a job waiting has had fewer."""
    clock = FakeClock()
    catalog = _catalog(tmp_path_factory.mktemp("q"), clock)
    creators = [catalog.add_creator(f"c{i}")[0].id for i in range(4)]
    recordings = {c: _ended_recording(catalog, c, clock) for c in creators}
    for i in arrivals:
        _clip(catalog, creators[i], recordings[creators[i]].id, clock)
    order = _run_all(catalog, clock)
    assert sorted(order) == sorted(creators[i] for i in arrivals)
    served = dict.fromkeys(creators, 0)
    left = {c: sum(1 for i in arrivals if creators[i] == c) for c in creators}
    for creator in order:
        waiting = [c for c in creators if left[c] > 0]
        assert served[creator] == min(served[c] for c in waiting), (order, arrivals)
        served[creator] += 1
        left[creator] -= 1


def test_a_creator_with_the_limit_of_jobs_waiting_is_refused(catalog, clock) -> None:
    creator, _ = catalog.add_creator("busy")
    other, _ = catalog.add_creator("other")
    recording = _ended_recording(catalog, creator.id, clock)
    for _ in range(3):
        _clip(catalog, creator.id, recording.id, clock, job_limit=3)
    with pytest.raises(JobLimitReached, match=r"you have 3 clip and episode jobs .* \(3\)"):
        _clip(catalog, creator.id, recording.id, clock, job_limit=3)
    # Episodes count too; another creator is not affected.
    with pytest.raises(JobLimitReached):
        catalog.start_episode(
            programme_id="p",
            title="e",
            description="",
            recipe={},
            creator_id=creator.id,
            job_limit=3,
        )
    other_rec = _ended_recording(catalog, other.id, clock)
    _clip(catalog, other.id, other_rec.id, clock, job_limit=3)
    # One done: room for one more.
    job = catalog.claim_job("clip")
    catalog.update_job(job.id, status="done")
    _clip(catalog, creator.id, recording.id, clock, job_limit=3)


def test_a_queued_job_pins_its_recording_for_at_most_job_pin_max(catalog, clock) -> None:
    """Two recordings expire at the same moment, each with a clip job made 30 min before: one
    job runs, one waits. Both pin their recording for a while; after the job pin cap (1 h of
    waiting) the waiting one no longer does, the running one still does (it is reading)."""
    creator, _ = catalog.add_creator("c")
    read = _ended_recording(catalog, creator.id, clock)
    waited = _ended_recording(catalog, creator.id, clock)
    clock.advance(hours=23, minutes=30)
    _clip(catalog, creator.id, read.id, clock)
    _clip(catalog, creator.id, waited.id, clock)
    assert catalog.claim_job("clip").recording_id == read.id
    clock.advance(minutes=31)  # both past expiry; the waiting job has waited 31 min
    assert catalog.due_for_deletion(clock()) == []
    clock.advance(minutes=30)  # now 61 min
    assert [r.id for r in catalog.due_for_deletion(clock())] == [waited.id]
    catalog.begin_deletion(waited.id, reason="expire", actor="sweeper")  # claimable, too


def test_jobs_left_running_by_a_dead_process_go_back_to_the_queue(catalog, clock) -> None:
    creator, _ = catalog.add_creator("c")
    recording = _ended_recording(catalog, creator.id, clock)
    a = _clip(catalog, creator.id, recording.id, clock)
    _clip(catalog, creator.id, recording.id, clock)
    assert catalog.claim_job("clip").id == a.id
    assert catalog.requeue_running_jobs("clip") == 2
    assert catalog.job(a.id).status == "queued"
    assert catalog.clip(a.payload["clip_id"]).status == "queued"
    assert catalog.claim_job("clip").id == a.id  # its place in the queue is kept
