"""Hostile input against a real `afterlive serve` while a real publisher records a room.

Every RTMP attack of the hardening issue (tests/utils/rtmp_attacks.py), hundreds of
connections of them and a flood past the pending-connection cap, goes to the service's RTMP port
while ffmpeg publishes a 60 s video live; at the same time its HTTP port gets 200 MB bodies
with no token and over the limit with one, empty and garbage HTTP pushes, and input no route
takes (a NUL in a rendition name, NaN, huge offsets, times without a zone). Afterwards: the live
is complete (summed EXTINF within a frame of what was published, every segment in the store and
the index), the serve process's RSS grew by less than RSS_BOUND, its log by less than LOG_BOUND,
/healthz answered within 2 s throughout, and a new publisher gets in once the flood is over.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from storage import keys as K
from tests.utils.media import publish_rtmp
from tests.utils.net import chunked, http_get, json_body, upload, wait_until
from tests.utils.player import play
from tests.utils.proc import Watch
from tests.utils.rtmp_attacks import swarm
from tests.utils.service import Service, module_service
from transcode.playlists import parse_media_playlist

pytestmark = pytest.mark.slow

LIVE_S = 60
FRAME_S = 1 / 30
RSS_BOUND = 64 << 20
LOG_BOUND = 128 << 10
HEALTH_S = 2.0

# attack -> connections: the quick ones all at once, then the slow ones (held open until a
# deadline closes them) with a flood of idle connections past max_pending (128) on top.
QUICK = {"nested-aggregate": 20, "amf0-bomb": 20, "partial-streams": 40, "unknown-key": 100}
QUICK |= {"garbage": 100}
SLOW = {"trickle": 60, "idle": 60}
FLOOD = 100
MB = 1 << 20


def http_attacks(service: Service, token: str, room: dict, recording_id: str) -> list[str]:
    """The HTTP rows, each with the answer it must get; what went otherwise, in words."""
    port = int(service.env["AFTERLIVE_API_PORT"])
    json = {"Content-Type": "application/json"}
    auth = {"Authorization": f"Bearer {token}"}
    wrong: list[str] = []
    lock = threading.Lock()

    def expect(what: str, status: int | None, want: int) -> None:
        if status != want:
            with lock:
                wrong.append(f"{what}: {status}, not {want}")

    def body(n: int) -> None:
        sized = n % 2 == 0
        headers = json | ({"Content-Length": str(200 * MB)} if sized else {})
        chunks = json_body(200 * MB)
        if not sized:
            headers |= {"Transfer-Encoding": "chunked"}
            chunks = chunked(chunks)
        with_token = n >= 6
        headers |= auth if with_token else {}
        sent = upload(port, "POST", "/api/rooms", headers=headers, chunks=chunks)
        expect(f"200 MB body #{n}", sent.status, 413 if with_token else 401)

    def pushes() -> None:
        for data in (b"", b"garbage" * 10_000):
            reply = httpx.put(f"{service.api}/ingest/{room['stream_key']}", content=data)
            expect(f"a push of {len(data)} bytes", reply.status_code, 422)
            if "Errno" in reply.text:
                with lock:
                    wrong.append(f"the push answer names an FFmpeg error: {reply.text}")

    def inputs() -> None:
        base = f"{service.api}/api/recordings/{recording_id}"
        expect("a NUL in a rendition", http_get(base + "/a%00b/index.m3u8")[0], 422)
        offset = http_get(f"{service.api}/api/recordings?offset={2**63}")[0]
        expect("offset 2^63", offset, 422)
        naive = {"start_at": "2026-12-07T10:00:00", "end_at": "2026-12-07T10:01:00"}
        for clip, what in (
            ({"title": "x", "start_s": "NaN", "end_s": 3}, "NaN"),
            ({"title": "x"} | naive, "a time without a zone"),
        ):
            reply = httpx.post(f"{base}/clips", json=clip, headers=auth)
            expect(what, reply.status_code, 422)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(9)]
    threads += [threading.Thread(target=pushes), threading.Thread(target=inputs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return wrong


service = module_service("hostile")


def _rtmp_port(service: Service) -> int:
    return int(service.env["AFTERLIVE_RTMP_PORT"])


def test_a_live_room_is_kept_whole_under_every_rtmp_attack(service: Service, tmp_path) -> None:
    token = service.new_creator("Under attack")
    room = service.new_room(token, "video", "attacked")
    pushed_into = service.new_room(token, "video", "garbage pushes")
    publisher = publish_rtmp(room["rtmp_url"], seconds=LIVE_S)
    [live] = wait_until(
        lambda: service.recordings_of(room["id"]), timeout=20, what="the live's recording"
    )
    time.sleep(4)  # the live is in its stride: the baseline includes its own buffers
    log_before = service.log.stat().st_size

    def health() -> None:
        reply = httpx.get(f"{service.api}/healthz", timeout=10)
        assert reply.status_code == 200, reply.text

    watch = Watch(service.proc.pid, health)

    async def attacks():
        port = _rtmp_port(service)
        quick = [swarm(n, "127.0.0.1", port, c, hold_s=25) for n, c in QUICK.items()]
        quick_out = [o for wave in await asyncio.gather(*quick) for o in wave]
        slow = [swarm(n, "127.0.0.1", port, c, hold_s=25) for n, c in SLOW.items()]
        slow_task = asyncio.gather(*slow)
        await asyncio.sleep(1.0)  # the slow ones are in: the pending cap is nearly reached
        flood = await swarm("idle", "127.0.0.1", port, FLOOD, hold_s=25)
        trickle, idle = await slow_task
        return quick_out, trickle, idle, flood

    t0 = time.monotonic()
    http_wrong: list[str] = []
    http = threading.Thread(
        target=lambda: http_wrong.extend(http_attacks(service, token, pushed_into, live.id))
    )
    http.start()
    quick, trickle, idle, flood = asyncio.run(attacks())
    http.join(180)
    outcomes = quick + trickle + idle + flood
    attack_s = time.monotonic() - t0
    time.sleep(2)  # what the attacks left behind is freed, or not

    # Once the flood is over, a new publisher gets in.
    late_room = service.new_room(token, "audio", "after the flood")
    late = publish_rtmp(late_room["rtmp_url"], video=False, seconds=4)
    assert late.wait(60) == 0, late.stderr.read()
    assert publisher.wait(LIVE_S + 30) == 0, publisher.stderr.read()
    watch.stop()
    log_growth = service.log.stat().st_size - log_before

    # Every attacking connection was closed by the server: the quick ones at once, the slow
    # ones by their deadline (trickled bytes extend nothing), the flood past max_pending at
    # once rather than queued.
    not_closed = [o for o in outcomes if not o.closed_by_server]
    assert not not_closed, not_closed[:5]
    assert max(o.seconds for o in quick) < 5
    assert all(14.5 < o.seconds < 17 for o in trickle), sorted(o.seconds for o in trickle)
    assert all(9.5 < o.seconds < 12 for o in idle), sorted(o.seconds for o in idle)
    refused = [o for o in flood if o.seconds < 1]
    assert len(refused) >= FLOOD - (128 - sum(SLOW.values())), sorted(o.seconds for o in flood)
    metrics = httpx.get(f"{service.api}/metrics", timeout=10).text
    assert 'afterlive_rtmp_connections_refused_total{reason="pending"}' in metrics
    assert "afterlive_rtmp_pending_connections 0.0" in metrics

    assert not http_wrong, http_wrong

    # Bounded: memory, log, health.
    growth = watch.peak_rss - watch.start_rss
    print(
        f"\nattacks: {len(outcomes)} connections in {attack_s:.1f} s; serve RSS "
        f"{watch.start_rss / 2**20:.0f} MB -> peak {watch.peak_rss / 2**20:.0f} MB; log +"
        f"{log_growth / 1024:.1f} KB; health p100 {max(watch.probe_s) * 1000:.0f} ms"
    )
    assert growth < RSS_BOUND, f"serve RSS grew {growth / 2**20:.0f} MB"
    assert log_growth < LOG_BOUND, f"the log grew {log_growth / 1024:.0f} KB"
    assert not watch.failures, watch.failures[:5]
    assert max(watch.probe_s) < HEALTH_S, max(watch.probe_s)
    assert "RecursionError" not in service.log.read_text()

    # The live is whole: what was published, every segment stored and indexed, decodable.
    [recording] = service.wait_ended(room["id"], timeout=90)
    store = service.store()
    key = K.media_playlist(recording.id, "source")
    playlist = parse_media_playlist(store.get(key).decode())
    assert playlist.ended
    assert abs(playlist.duration_s() - LIVE_S) <= FRAME_S + 0.001, playlist.duration_s()
    assert not any(s.discontinuity for s in playlist.segments)  # never dropped, never rejoined
    stored = {info.key for info in store.list(K.recording_prefix(recording.id))}
    base = key.rsplit("/", 1)[0]
    assert all(f"{base}/{s.uri}" in stored for s in playlist.segments)
    indexed = service.catalog().find_segments(recording.id, "source")
    assert [s.sequence for s in indexed] == list(range(len(playlist.segments)))
    played = play(store, key, tmp_path)
    assert played.video_frames == LIVE_S * 30
