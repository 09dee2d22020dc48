"""A real `afterlive serve` (uvicorn, the embedded store) under what anyone who reaches its port
can send: bodies answered before they are read, memory that stays flat under 200 MB bodies with
no token, and health and the rooms API that keep answering while the store is hung."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from storage import Catalog
from tests.utils.net import chunked, http_get, json_body, upload, wait_until
from tests.utils.proc import rss_bytes
from tests.utils.service import Service, service_env

MB = 1 << 20


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("hostile-http")
    running = Service(service_env(tmp / "data"), tmp / "serve.log")
    try:
        running.wait_healthy()
        yield running
    finally:
        running.kill()
    assert "Traceback" not in running.log.read_text()


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.new_creator("hostile-http")


def port(service: Service) -> int:
    return int(service.env["AFTERLIVE_API_PORT"])


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / MB


JSON = {"Content-Type": "application/json"}


def test_a_huge_declared_body_is_answered_after_a_few_bytes(service: Service, token: str) -> None:
    """Headers that promise 200 MB, then 20 bytes: the answer comes at once (had the server
    waited for the body, it would not have come at all) and the connection is closed."""
    few = [b'{"title": "x", "kin']
    big = JSON | {"Content-Length": str(200 * MB)}
    auth = {"Authorization": f"Bearer {token}"}
    for path, headers, status in (
        ("/api/rooms", big, 401),
        ("/api/programmes", big, 401),
        ("/api/rooms", big | auth, 413),
        ("/api/programmes/0123456789abcdef/artwork", big | auth, 413),
    ):
        sent = upload(port(service), "POST" if "artwork" not in path else "PUT", path,
                      headers=headers, chunks=few, timeout=10)  # fmt: skip
        assert sent.status == status, sent.reply
        assert sent.seconds < 2
        assert sent.closed, "the server kept the connection to read the rest"
        assert json.loads(sent.reply.partition(b"\r\n\r\n")[2])["detail"]


def test_a_chunked_body_is_cut_at_the_limit(service: Service, token: str) -> None:
    sent = upload(
        port(service),
        "POST",
        "/api/rooms",
        headers=JSON | {"Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"},
        chunks=chunked(json_body(200 * MB, piece=16 * 1024)),
        timeout=10,
    )
    assert sent.status == 413
    assert b"AFTERLIVE_MAX_JSON_BODY_KB" in sent.reply
    assert sent.closed
    assert sent.sent < 8 * MB  # the limit, the socket buffers, not 200 MB


def test_memory_stays_flat_under_200_mb_bodies_without_a_token(service: Service) -> None:
    """Six 200 MB JSON bodies at once with no token (half with a Content-Length, half chunked):
    each is answered 401 before it is read, and the server's memory does not grow with them.
    (Before the edge read bodies first, three took the process to 1.59 GB.)"""
    pid = service.proc.pid
    before = rss_mb(pid)
    results = []

    def attack(n: int) -> None:
        if n % 2:
            headers = JSON | {"Content-Length": str(200 * MB)}
            chunks = json_body(200 * MB)
        else:
            headers = JSON | {"Transfer-Encoding": "chunked"}
            chunks = chunked(json_body(200 * MB))
        path = "/api/rooms" if n % 3 else "/api/programmes"
        results.append(upload(port(service), "POST", path, headers=headers, chunks=chunks))

    threads = [threading.Thread(target=attack, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    peak = before
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.05)
    assert [r.status for r in results] == [401] * 6
    assert all(r.sent < 16 * MB for r in results), [r.sent for r in results]
    assert peak - before < 64, f"RSS {before:.0f} -> {peak:.0f} MB"
    # And it serves as before.
    assert httpx.get(f"{service.api}/api/recordings", timeout=5).status_code == 200


def seed_recording(service: Service) -> str:
    """An ended recording in the catalog whose playlists must come from the store."""
    catalog: Catalog = service.catalog()
    creator, _ = catalog.add_creator(f"seeded-{time.monotonic_ns()}")
    room = catalog.add_room(creator_id=creator.id, title="seeded", kind="audio")
    recording = catalog.start_recording(room.id)
    catalog.end_recording(recording.id, retention=timedelta(hours=1))
    catalog.dispose()
    return recording.id


def test_store_hung_health_answers_in_2_s_and_rooms_in_half_a_second(
    service: Service, token: str
) -> None:
    """weed stopped (SIGSTOP: connections accepted, nothing answered) while 50 health probes and
    40 playlist requests (which need the store) wait: every probe answers 503 within 2 s naming
    the store, and the rooms API, which needs only the catalog, answers within 0.5 s."""
    health = service.wait_healthy()
    weed = health["store"]["pid"]
    recording = seed_recording(service)
    rooms = f"{service.api}/api/rooms"
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(rooms, headers=auth, timeout=5).status_code == 200
    probes: list[tuple[int, float, dict]] = []
    playlists: list[int | None] = []

    def probe() -> None:
        # urllib: an httpx client per thread costs ~20 ms of CPU to make, 2 s for 100 of them.
        t0 = time.monotonic()
        status, _, body = http_get(f"{service.api}/healthz", timeout=30)
        probes.append((status, time.monotonic() - t0, json.loads(body)))

    def playlist() -> None:
        try:
            url = f"{service.api}/api/recordings/{recording}/master.m3u8"
            playlists.append(http_get(url, timeout=60)[0])
        except OSError:
            playlists.append(None)

    os.kill(weed, signal.SIGSTOP)
    try:
        waiting = [threading.Thread(target=playlist) for _ in range(40)]
        waiting += [threading.Thread(target=probe) for _ in range(50)]
        for thread in waiting:
            thread.start()
        time.sleep(0.5)  # everyone is waiting on the store now
        rooms_s = []
        for _ in range(10):
            t0 = time.monotonic()
            status, _, _ = http_get(rooms, headers=auth, timeout=10)
            rooms_s.append(time.monotonic() - t0)
            assert status == 200
            time.sleep(0.1)
        for thread in waiting[40:]:
            thread.join(10)
        # A second wave finds no pile-up behind the first.
        second = [threading.Thread(target=probe) for _ in range(50)]
        for thread in second:
            thread.start()
        for thread in second:
            thread.join(10)
    finally:
        os.kill(weed, signal.SIGCONT)
    for thread in waiting:
        thread.join(60)

    assert max(rooms_s) < 0.5, rooms_s
    assert len(probes) == 100
    assert max(seconds for _, seconds, _ in probes) < 2, sorted(
        (round(s, 2), b["store"]["latency_ms"]) for _, s, b in probes
    )[-10:]
    for status, _, body in probes:
        assert status == 503
        assert body["status"] == "degraded" and body["catalog"]["ok"]
        assert "did not answer within 1 s" in body["store"]["error"]
        assert body["detail"].startswith(f"store at {health['store']['endpoint']}")
    # The playlists failed with a store error (503), none with a 5xx of ours or a hang.
    assert set(playlists) <= {503, 404}, playlists
    wait_until(
        lambda: httpx.get(f"{service.api}/healthz", timeout=5).status_code == 200,
        timeout=30,
        what="health back after SIGCONT",
    )
