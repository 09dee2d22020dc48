"""A node at its room limit refuses new lives at both doors, with a clear answer, and the lives
it has go on. A real ffmpeg publishes over RTMP into the in-process service."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.utils.media import publish_rtmp
from tests.utils.net import wait_until


def test_full_node_refuses_rtmp_and_http_push_and_keeps_its_live(api_factory) -> None:
    api: Api = api_factory(max_live_rooms=1)
    _, headers = api.creator()
    rooms = [
        api.client.post("/api/rooms", json={"title": f"r{i}", "kind": "audio"}, headers=headers)
        for i in range(3)
    ]
    first, second, third = (r.json() for r in rooms)
    port = api.runtime.rtmp.port
    url = f"rtmp://127.0.0.1:{port}/live/"
    live = publish_rtmp(url + first["stream_key"], video=False, seconds=6)
    try:
        wait_until(
            lambda: api.runtime.recorder.live_counts()[0] == 1, timeout=20, what="first live"
        )
        refused = publish_rtmp(url + second["stream_key"], video=False, seconds=2)
        assert refused.wait(30) != 0
        assert "takes no new live now" in refused.stderr.read()

        push = api.client.put(f"/ingest/{third['stream_key']}", content=b"\x47" * 188 * 10)
        assert push.status_code == 503
        assert push.headers["Retry-After"] == "60"
        assert "1 rooms are live here" in push.json()["detail"]
        assert live.wait(60) == 0
    finally:
        live.kill()
    [recording] = wait_until(
        lambda: [r for r in api.catalog.recordings(room_id=first["id"]) if r.status == "ended"],
        timeout=30,
        what="the live ended",
    )
    assert recording.media_s > 4
    for room in (second, third):
        assert api.catalog.recordings(room_id=room["id"]) == []
    metrics = api.client.get("/metrics").text
    assert "afterlive_publishes_refused_busy_total 2.0" in metrics
