"""Clip and episode jobs under load and faults, on a real `afterlive serve`: one creator's flood
neither starves another creator (fair queue) nor grows without bound (429 past the limit), and a
render killed with the process leaves no work directory behind and runs again to done."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.utils.media import publish_rtmp
from tests.utils.net import wait_until
from tests.utils.service import Service, module_service, service_env

pytestmark = pytest.mark.slow

LIMIT = 10  # AFTERLIVE_MAX_QUEUED_JOBS_PER_CREATOR's default


def _creator(service: Service, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.new_creator(name)}"}


def _recording(service: Service, creator: dict, seconds: int = 12) -> str:
    room = httpx.post(
        f"{service.api}/api/rooms",
        json={"title": "source", "kind": "video"},
        headers=creator,
        timeout=10,
    ).json()
    publisher = publish_rtmp(room["rtmp_url"], seconds=seconds)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [rec] = service.wait_ended(room["id"])
    return rec.id


def _clip(service: Service, creator: dict, recording_id: str) -> httpx.Response:
    return httpx.post(
        f"{service.api}/api/recordings/{recording_id}/clips",
        json={"title": "part", "start_s": 3.5, "end_s": 9.2},
        headers=creator,
        timeout=10,
    )


def _done(url: str, creator: dict, timeout: float = 300) -> dict:
    def done():
        body = httpx.get(url, headers=creator, timeout=10).json()
        assert body["status"] != "failed", body["error"]
        return body if body["status"] == "done" else None

    return wait_until(done, timeout=timeout, interval=0.05, what=url)


service = module_service("jobs")


def test_a_flood_of_jobs_from_one_creator_does_not_starve_another(service: Service) -> None:
    flooder, other = _creator(service, "Flooder"), _creator(service, "Other")
    flooded, own = _recording(service, flooder), _recording(service, other)

    t0 = time.monotonic()
    alone = _done(_clip(service, other, own).json()["status_url"], other)
    time_alone = time.monotonic() - t0

    with ThreadPoolExecutor(20) as pool:  # twenty at once
        replies = list(pool.map(lambda _: _clip(service, flooder, flooded), range(20)))
    accepted = [r for r in replies if r.status_code == 202]
    refused = [r for r in replies if r.status_code == 429]
    assert len(accepted) + len(refused) == 20, [r.status_code for r in replies]
    assert refused and refused[0].headers["retry-after"].isdigit()
    assert f"({LIMIT})" in refused[0].json()["detail"]
    statuses = [
        c["status"]
        for c in httpx.get(f"{service.api}/api/clips", headers=flooder, timeout=10).json()
    ]
    assert sum(s in ("queued", "running") for s in statuses) <= LIMIT  # never more waiting

    t0 = time.monotonic()
    fair = _done(_clip(service, other, own).json()["status_url"], other)
    time_fair = time.monotonic() - t0
    flood_left = sum(
        httpx.get(r.json()["status_url"], headers=flooder, timeout=10).json()["status"] != "done"
        for r in accepted
    )
    print(
        f"\nalone {time_alone:.2f} s, behind the flood {time_fair:.2f} s; "
        f"{flood_left} of the flood's {LIMIT} jobs not done when it finished"
    )
    assert alone["duration_s"] == pytest.approx(fair["duration_s"])
    # At most one flood job (already running) goes before it: within twice its time alone.
    assert time_fair < 2 * time_alone, (time_fair, time_alone)
    assert flood_left >= len(accepted) // 2  # and it did not wait for the flood to drain
    for reply in accepted:  # the flood runs to the end too
        _done(reply.json()["status_url"], flooder)


def test_a_render_killed_with_the_process_leaves_nothing_and_runs_again(tmp_path) -> None:
    env = service_env(tmp_path / "data")
    service = Service(env, tmp_path / "serve.log")
    restarted = None
    try:
        service.wait_healthy()
        creator = _creator(service, "Host")
        recording = _recording(service, creator, seconds=20)
        clips = []
        for start in (1.0, 7.0, 13.0):
            reply = httpx.post(
                f"{service.api}/api/recordings/{recording}/clips",
                json={"title": f"at {start}", "start_s": start, "end_s": start + 5.5},
                headers=creator,
                timeout=10,
            )
            clips.append(_done(reply.json()["status_url"], creator))
        programme = httpx.post(
            f"{service.api}/api/programmes",
            json={"title": "Killed", "description": "d", "author": "Host"},
            headers=creator,
            timeout=10,
        ).json()
        reply = httpx.post(
            f"{service.api}/api/programmes/{programme['id']}/episodes",
            json={"title": "one", "clips": [c["id"] for c in clips], "crossfade_s": 1.0},
            headers=creator,
            timeout=10,
        )
        assert reply.status_code == 202, reply.text
        episode_url = f"{service.api}/api/episodes/{reply.json()['id']}"
        work = service.data_dir / "work"

        def rendering():
            body = httpx.get(episode_url, headers=creator, timeout=10).json()
            busy = [p for p in work.glob("episode-*") if any(p.rglob("*"))]
            return busy if body["status"] == "running" and busy else None

        [killed_dir] = wait_until(rendering, timeout=60, interval=0.02, what="the render")
        service.kill()  # SIGKILL mid-render: no clean-up code runs
        assert killed_dir.exists()  # what the kill leaves behind

        restarted = Service(env, tmp_path / "serve.log")
        restarted.wait_healthy()
        assert not killed_dir.exists()
        assert "leftover job work directory" in restarted.log.read_text()
        episode = _done(episode_url, creator)
        assert abs(episode["duration_s"] - (3 * 5.5 - 2 * 1.0)) < 0.2
        wait_until(lambda: not any(work.iterdir()), timeout=10, what="the work dir emptied")
        assert restarted.stop() == 0
    finally:
        service.kill()
        if restarted is not None:
            restarted.kill()
