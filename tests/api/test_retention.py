"""Retention with an injected clock: expiry, holds, extensions, takedowns, the clip pin, resuming a
sweep cut short, and the admin API's roles. Real store (SeaweedFS), real catalog."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage import keys as K
from storage.models import Clip, Job, new_id
from tests.api.conftest import ADMIN_TOKEN, Api, seed_recording

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def objects(api: Api, recording_id: str) -> list[str]:
    return [info.key for info in api.store.list(K.recording_prefix(recording_id))]


def sweep(api: Api) -> dict:
    reply = api.client.post("/api/admin/sweep", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return reply.json()


def audit(api: Api, recording_id: str) -> list[dict]:
    reply = api.client.get(f"/api/admin/audit?recording_id={recording_id}", headers=ADMIN)
    assert reply.status_code == 200
    return reply.json()


def test_a_recording_expires_24h_after_its_live_ends(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator, segments=3)
    kept = seed_recording(api, creator, segments=1)  # ended 6 s later: not yet due
    stored = objects(api, rec.id)
    stored_bytes = sum(info.size for info in api.store.list(K.recording_prefix(rec.id)))
    assert len(stored) == 3 * 2 + 2 + 1  # segments of two renditions, their playlists, master
    assert rec.expires_at == rec.ended_at + timedelta(hours=24)

    api.clock.current = rec.expires_at - timedelta(seconds=1)
    assert sweep(api)["deleted"] == []
    assert api.client.get(f"/api/recordings/{rec.id}").status_code == 200

    api.clock.current = rec.expires_at
    [event] = sweep(api)["deleted"]
    assert event["action"] == "expire" and event["actor"] == "sweeper"
    assert event["objects_deleted"] == len(stored)
    assert event["bytes_deleted"] == stored_bytes
    assert objects(api, rec.id) == []
    reply = api.client.get(f"/api/recordings/{rec.id}")
    assert reply.status_code == 410 and "expired" in reply.json()["detail"]
    assert objects(api, kept.id) != []  # others untouched
    assert api.client.get(f"/api/recordings/{kept.id}").status_code == 200
    # Sweeping again deletes nothing and audits nothing more.
    assert sweep(api)["deleted"] == []
    assert [e["action"] for e in audit(api, rec.id)] == ["expire"]
    assert api.catalog.find_segments(rec.id, "source") == []


def test_a_live_recording_never_expires(api: Api) -> None:
    creator, _ = api.creator()
    live = seed_recording(api, creator, ended=False)
    api.clock.advance(days=400)
    assert sweep(api)["deleted"] == []
    assert objects(api, live.id)
    assert api.client.get(f"/api/recordings/{live.id}").json()["status"] == "live"


def test_hold_stops_expiry_and_release_gives_at_least_an_hour(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator)
    reply = api.client.post(
        f"/api/admin/recordings/{rec.id}/hold", json={"reason": "court order"}, headers=ADMIN
    )
    assert reply.status_code == 200 and reply.json()["held"] is True

    api.clock.current = rec.expires_at + timedelta(days=3)
    assert sweep(api)["deleted"] == []
    assert objects(api, rec.id)

    released = api.client.post(f"/api/admin/recordings/{rec.id}/release", headers=ADMIN).json()
    assert released["held"] is False
    assert released["expires_in_s"] == 3600
    api.clock.advance(minutes=59)
    assert sweep(api)["deleted"] == []
    api.clock.advance(minutes=1)
    assert len(sweep(api)["deleted"]) == 1
    assert objects(api, rec.id) == []
    trail = audit(api, rec.id)
    assert [e["action"] for e in trail] == ["expire", "release", "hold"]
    assert trail[2]["detail"] == {"reason": "court order"} and trail[2]["actor"] == "admin"
    # Release without a hold, hold after expiry: clear conflicts.
    reply = api.client.post(f"/api/admin/recordings/{rec.id}/hold", headers=ADMIN)
    assert reply.status_code == 409 and "too late" in reply.json()["detail"]


def test_release_keeps_a_later_expiry(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator)
    api.client.post(f"/api/admin/recordings/{rec.id}/hold", headers=ADMIN)
    released = api.client.post(f"/api/admin/recordings/{rec.id}/release", headers=ADMIN).json()
    assert released["expires_in_s"] == 24 * 3600
    reply = api.client.post(f"/api/admin/recordings/{rec.id}/release", headers=ADMIN)
    assert reply.status_code == 409 and reply.json()["detail"].endswith("is not held")


def test_extend_moves_expiry(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator)
    live = seed_recording(api, creator, ended=False)
    reply = api.client.post(
        f"/api/admin/recordings/{rec.id}/extend", json={"hours": 5}, headers=ADMIN
    )
    assert reply.status_code == 200
    assert reply.json()["expires_at"].startswith(
        (rec.expires_at + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S")
    )
    api.clock.current = rec.expires_at + timedelta(hours=4, minutes=59)
    assert sweep(api)["deleted"] == []
    api.clock.advance(minutes=1)
    assert len(sweep(api)["deleted"]) == 1
    [event] = [e for e in audit(api, rec.id) if e["action"] == "extend"]
    assert event["detail"]["hours"] == 5

    for body, code in (({"hours": 0}, 422), ({"hours": -1}, 422), ({}, 422)):
        r = api.client.post(f"/api/admin/recordings/{live.id}/extend", json=body, headers=ADMIN)
        assert r.status_code == code, body
    r = api.client.post(f"/api/admin/recordings/{live.id}/extend", json={"hours": 1}, headers=ADMIN)
    assert r.status_code == 409 and "still live" in r.json()["detail"]
    r = api.client.post("/api/admin/recordings/nope/extend", json={"hours": 1}, headers=ADMIN)
    assert r.status_code == 404 and r.json() == {"detail": "no recording nope"}


def test_takedown_deletes_now_and_audits_once(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator)
    other = seed_recording(api, creator)
    count = len(objects(api, rec.id))
    reply = api.client.delete(f"/api/admin/recordings/{rec.id}", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    event = reply.json()
    assert (event["action"], event["actor"], event["objects_deleted"]) == (
        "takedown",
        "admin",
        count,
    )
    assert objects(api, rec.id) == []
    gone = api.client.get(f"/api/recordings/{rec.id}/master.m3u8")
    assert gone.status_code == 410 and "taken down" in gone.json()["detail"]
    assert api.client.delete(f"/api/admin/recordings/{rec.id}", headers=ADMIN).status_code == 409
    assert api.client.delete("/api/admin/recordings/nope", headers=ADMIN).status_code == 404
    assert objects(api, other.id)
    assert [e["action"] for e in audit(api, rec.id)] == ["takedown"]


def test_takedown_with_derived_clips_deletes_them_and_says_so(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator)
    clip = Clip(
        id=new_id(),
        creator_id=creator,
        recording_id=rec.id,
        title="best bit",
        start_s=0,
        end_s=2,
        prefix=K.clip_prefix(new_id()),
        created_at=api.clock(),
    )
    with api.catalog.session() as s:
        s.add(clip)
    api.store.put_bytes(clip.prefix + "index.m3u8", b"#EXTM3U\n")
    reply = api.client.delete(f"/api/admin/recordings/{rec.id}?include_derived=true", headers=ADMIN)
    assert reply.status_code == 200
    assert reply.json()["detail"]["derived_clips_deleted"] == 1
    assert audit(api, rec.id)[0]["detail"]["derived_clips_deleted"] == 1
    assert list(api.store.list(clip.prefix)) == []


def test_a_clip_job_reading_a_recording_pins_it(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator)
    job = Job(
        id=new_id(), kind="clip", status="running", recording_id=rec.id, created_at=api.clock()
    )
    with api.catalog.session() as s:
        s.add(job)
    api.clock.current = rec.expires_at + timedelta(hours=1)
    assert sweep(api)["deleted"] == []
    assert objects(api, rec.id)
    with api.catalog.session() as s:
        s.get(Job, job.id).status = "done"
    assert len(sweep(api)["deleted"]) == 1
    assert objects(api, rec.id) == []


def test_a_sweep_cut_short_is_finished_by_the_next_one(api: Api) -> None:
    creator, _ = api.creator()
    rec = seed_recording(api, creator, segments=5)
    stored = objects(api, rec.id)
    bytes_stored = sum(info.size for info in api.store.list(K.recording_prefix(rec.id)))
    api.clock.current = rec.expires_at
    # What a crash leaves: claimed, then killed after deleting part of the objects.
    api.catalog.begin_deletion(rec.id, reason="expire", actor="sweeper")
    segments = [k for k in stored if k.endswith(".ts")]
    api.store.delete_many([*segments[:4], K.master_playlist(rec.id)])
    assert api.client.get(f"/api/recordings/{rec.id}").status_code == 410

    # A fresh claim belongs to whoever made it; once older than the lease, a sweep takes over.
    assert sweep(api)["deleted"] == []
    api.clock.advance(minutes=2)
    [event] = sweep(api)["deleted"]
    # Indexed segments are counted from the index, deleted early or not; the master playlist,
    # not indexed, went before the crash and is the one object the audit cannot know about.
    assert event["objects_deleted"] == len(stored) - 1
    assert objects(api, rec.id) == []
    assert sweep(api)["deleted"] == []
    assert [e["action"] for e in audit(api, rec.id)] == ["expire"]
    assert bytes_stored >= event["bytes_deleted"] > 0


def test_admin_listing_shows_what_goes_when_and_its_size(api: Api) -> None:
    creator, _ = api.creator("Host")
    soon = seed_recording(api, creator, segments=2)
    api.clock.advance(hours=2)
    later = seed_recording(api, creator, segments=3)
    live = seed_recording(api, creator, ended=False)
    body = api.client.get("/api/admin/recordings", headers=ADMIN).json()
    assert [i["id"] for i in body["items"]] == [soon.id, later.id, live.id]
    first = body["items"][0]
    assert first["objects"] == 4 and first["bytes"] > 0 and first["host"] == "Host"
    cutoff = (soon.expires_at + timedelta(minutes=1)).isoformat()
    only = api.client.get(
        "/api/admin/recordings", params={"expiring_before": cutoff}, headers=ADMIN
    ).json()
    assert [i["id"] for i in only["items"]] == [soon.id]
    live_only = api.client.get("/api/admin/recordings?status=live", headers=ADMIN).json()
    assert [i["id"] for i in live_only["items"]] == [live.id]
    assert api.client.get("/api/admin/recordings?status=bogus", headers=ADMIN).status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/admin/recordings"),
        ("post", "/api/admin/recordings/x/hold"),
        ("post", "/api/admin/recordings/x/release"),
        ("post", "/api/admin/recordings/x/extend"),
        ("delete", "/api/admin/recordings/x"),
        ("get", "/api/admin/audit"),
        ("post", "/api/admin/sweep"),
    ],
)
def test_admin_routes_refuse_everyone_else(api: Api, method: str, path: str) -> None:
    _, creator = api.creator()
    for headers, code in (
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, 401),
        (creator, 403),
    ):
        reply = api.client.request(method, path, headers=headers, json={"hours": 1})
        assert reply.status_code == code, (headers, reply.text)
        assert reply.json()["detail"]


def test_hold_and_release_retag_objects_for_the_lifecycle_safety_net(api_factory) -> None:
    api = api_factory(retention_tags=True)
    creator, _ = api.creator()
    rec = seed_recording(api, creator, segments=2)
    stored = objects(api, rec.id)
    assert {api.store.retention_tag(k) for k in stored} == {"ephemeral"}
    api.client.post(f"/api/admin/recordings/{rec.id}/hold", headers=ADMIN)
    assert {api.store.retention_tag(k) for k in stored} == {"held"}
    api.client.post(f"/api/admin/recordings/{rec.id}/release", headers=ADMIN)
    assert {api.store.retention_tag(k) for k in stored} == {"ephemeral"}
