"""The store hangs for 60 s (weed SIGSTOPped: connections accepted, nothing answered) while three
rooms are live and 50 health probes keep asking: health answers within 2 s throughout (503 naming
the store), the rooms API within 0.5 s, and once the store is back every segment of the three
lives is stored: nothing lost."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from storage import keys as K
from tests.utils.media import publish_rtmp
from tests.utils.net import http_get, wait_until
from tests.utils.service import Service, service_env
from transcode.playlists import parse_media_playlist

pytestmark = pytest.mark.slow

LIVE_S = 90
HUNG_S = 60
PROBES = 50


def test_three_lives_lose_nothing_while_the_store_hangs_and_health_keeps_answering(
    tmp_path,
) -> None:
    service = Service(service_env(tmp_path / "data"), tmp_path / "serve.log")
    try:
        health = service.wait_healthy()
        weed = health["store"]["pid"]
        token = service.new_creator("Hung store")
        rooms = [service.new_room(token, kind, kind) for kind in ("video", "video", "audio")]
        publishers = [
            publish_rtmp(r["rtmp_url"], video=r["kind"] == "video", seconds=LIVE_S) for r in rooms
        ]
        for room in rooms:
            wait_until(lambda r=room: service.recordings_of(r["id"]), timeout=20, what="a live")
        time.sleep(8)

        probes: list[tuple[float, int, dict]] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                status, _, body = http_get(f"{service.api}/healthz", timeout=30)
                probes.append((time.monotonic() - t0, status, json.loads(body)))

        rooms_s: list[float] = []
        os.kill(weed, signal.SIGSTOP)
        hung_at = time.monotonic()
        try:
            threads = [threading.Thread(target=probe, daemon=True) for _ in range(PROBES)]
            for thread in threads:
                thread.start()
            while time.monotonic() - hung_at < HUNG_S:
                t0 = time.monotonic()
                status, _, _ = http_get(
                    f"{service.api}/api/rooms", headers={"Authorization": f"Bearer {token}"}
                )
                rooms_s.append(time.monotonic() - t0)
                assert status == 200
                time.sleep(0.5)
            assert all(p.poll() is None for p in publishers)  # the lives went on meanwhile
        finally:
            os.kill(weed, signal.SIGCONT)
            stop.set()
        for thread in threads:
            thread.join(35)

        hung = [p for p in probes if p[1] == 503]
        print(
            f"\n{len(probes)} health answers while hung ({len(hung)} x 503), slowest "
            f"{max(p[0] for p in probes):.2f} s; rooms API slowest {max(rooms_s):.3f} s"
        )
        assert len(hung) >= PROBES * 10  # every probe answered again and again
        assert max(p[0] for p in probes) < 2.0
        assert all("store" in p[2]["detail"] for p in hung)
        assert max(rooms_s) < 0.5, sorted(rooms_s)[-5:]

        for publisher in publishers:
            assert publisher.wait(LIVE_S + 30) == 0, publisher.stderr.read()
        store, catalog = service.store(), service.catalog()
        for room in rooms:
            [recording] = service.wait_ended(room["id"], timeout=120)
            key = K.media_playlist(recording.id, "source")
            playlist = parse_media_playlist(store.get(key).decode())
            assert playlist.ended
            assert abs(playlist.duration_s() - LIVE_S) < 0.05, (room["kind"], playlist.duration_s())
            assert not any(s.discontinuity for s in playlist.segments)
            stored = {info.key for info in store.list(K.recording_prefix(recording.id))}
            base = key.rsplit("/", 1)[0]
            assert all(f"{base}/{s.uri}" in stored for s in playlist.segments)
            indexed = catalog.find_segments(recording.id, "source")
            assert [s.sequence for s in indexed] == list(range(len(playlist.segments)))
        assert service.stop() == 0
    finally:
        service.kill()
