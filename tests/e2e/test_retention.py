"""Retention for real: `afterlive serve` with a 20 s retention and its scheduler sweeping every
2 s; an admin taking a room down while a real ffmpeg publisher is live."""

from __future__ import annotations

import time

import httpx
import pytest

from storage import keys as K
from tests.utils.media import publish_rtmp
from tests.utils.net import wait_until
from tests.utils.service import Service, module_service, service_env

RETENTION_S = 20


service = module_service(
    "retention",
    AFTERLIVE_RETENTION=f"{RETENTION_S}s",
    AFTERLIVE_SWEEP_INTERVAL="2s",
    AFTERLIVE_RECONNECT_GRACE="30s",
)


@pytest.fixture(scope="module")
def admin(service: Service) -> dict[str, str]:
    token = (service.data_dir / "admin_token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def test_recording_disappears_after_the_retention(service, admin) -> None:
    token = service.new_creator()
    room = service.new_room(token, "audio", title="Short-lived")
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=6)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])
    store = service.store()
    prefix = K.recording_prefix(recording.id)
    assert list(store.list(prefix))
    url = f"{service.api}/api/recordings/{recording.id}"
    assert httpx.get(url, timeout=5).status_code == 200

    def gone() -> bool:
        return httpx.get(url, timeout=5).status_code == 410

    wait_until(gone, timeout=RETENTION_S + 15, interval=0.5, what="410 after the retention")
    expired_after = time.time() - recording.ended_at.timestamp()
    assert RETENTION_S <= expired_after <= RETENTION_S + 10
    # 410 comes with the sweeper's claim; the objects go right after, then the audit entry.
    [event] = wait_until(
        lambda: httpx.get(
            f"{service.api}/api/admin/audit?recording_id={recording.id}", headers=admin, timeout=5
        ).json(),
        timeout=30,
        what="the expiry's audit entry",
    )
    assert event["action"] == "expire" and event["objects_deleted"] >= 4
    assert list(store.list(prefix)) == []


def test_takedown_while_live_disconnects_and_refuses_the_key(service, admin) -> None:
    token = service.new_creator()
    room = service.new_room(token, "video", title="To be taken down")
    publisher = publish_rtmp(room["rtmp_url"], seconds=60)
    try:
        [item] = wait_until(
            lambda: httpx.get(
                f"{service.api}/api/recordings?status=live&room_id={room['id']}", timeout=5
            ).json()["items"],
            timeout=20,
            what="the live to be listed",
        )
        reply = httpx.delete(
            f"{service.api}/api/admin/recordings/{item['id']}", headers=admin, timeout=60
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["action"] == "takedown" and reply.json()["objects_deleted"] > 0
        # The publisher is cut off at once: ffmpeg fails well before its 60 s of media.
        assert publisher.wait(15) != 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
    assert list(service.store().list(K.recording_prefix(item["id"]))) == []
    assert httpx.get(item["playback_url"], timeout=5).status_code == 410
    # Its key is revoked: publishing again is refused, and no new recording appears.
    again = publish_rtmp(room["rtmp_url"], seconds=3)
    assert again.wait(30) != 0
    assert "unknown or revoked stream key" in again.stderr.read()
    assert [r.status for r in service.recordings_of(room["id"])] == ["taken_down"]


def test_cli_goes_through_the_running_service(service, admin) -> None:
    token = service.new_creator()
    room = service.new_room(token, "audio", title="CLI")
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=4)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])

    held = service.cli("hold", recording.id, "--reason", "press inquiry")
    assert held.returncode == 0, held.stderr
    assert held.stdout.startswith(f"{recording.id} ended (held)")
    assert "not answering" not in held.stderr
    time.sleep(RETENTION_S + 3)  # past its expiry, but held: the scheduler leaves it
    assert httpx.get(f"{service.api}/api/recordings/{recording.id}", timeout=5).status_code == 200
    dry = service.cli("sweep", "--dry-run")
    assert dry.returncode == 0 and recording.id not in dry.stdout

    down = service.cli("takedown", recording.id)
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith(f"{recording.id} taken down: ")
    again = service.cli("takedown", recording.id)
    assert again.returncode == 1 and "409" in again.stderr and "already taken_down" in again.stderr
    missing = service.cli("hold", "nope")
    assert missing.returncode == 1 and "404: no recording nope" in missing.stderr
    actions = [
        e["action"]
        for e in httpx.get(
            f"{service.api}/api/admin/audit?recording_id={recording.id}", headers=admin, timeout=5
        ).json()
    ]
    assert actions == ["takedown", "hold"]


def test_cli_sweeps_a_stopped_node_on_its_own(tmp_path) -> None:
    env = service_env(tmp_path / "data", AFTERLIVE_RETENTION="3s")
    svc = Service(env, tmp_path / "serve.log")
    try:
        svc.wait_healthy()
        room = svc.new_room(svc.new_creator(), "audio")
        publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=4)
        assert publisher.wait(60) == 0, publisher.stderr.read()
        [recording] = svc.wait_ended(room["id"])
    finally:
        assert svc.stop() == 0
    time.sleep(3)

    swept = svc.cli("sweep")
    assert swept.returncode == 0, swept.stderr
    assert "not answering: working on the store directly" in swept.stderr
    assert f"deleted {recording.id} (expire): " in swept.stdout
    assert svc.catalog().recording(recording.id).status == "expired"
    assert svc.cli("sweep").stdout.strip().startswith("0 recording(s) deleted")
