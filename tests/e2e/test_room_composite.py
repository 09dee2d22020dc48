"""The composite grid end to end (AFTERLIVE_ROOM_COMPOSITE=after): a 3-host video room published
by real ffmpeg publishers (each host a picture of their own colour and a tone of their own),
the grid made by the job after the live, its master playlist read through the API and decoded
by a real player (PyAV), tile by tile; then a host removed from the recording, and the grid
made again without them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import av
import httpx
import numpy as np
from sqlalchemy import select

from storage import keys as K
from storage.models import Job
from tests.utils.media import publish_http, publish_rtmp, tones_per_second
from tests.utils.net import wait_until
from tests.utils.player import WHITELIST
from tests.utils.service import Service, module_service
from transcode.composite import TILE, Cell, layout
from transcode.playlists import parse_master_playlist, parse_media_playlist

service = module_service("composite", AFTERLIVE_ROOM_COMPOSITE="after")

RED, BLUE = (255, 0, 0), (0, 0, 255)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def invite(service: Service, token: str, room: dict, name: str) -> dict:
    reply = httpx.post(
        f"{service.api}/api/rooms/{room['id']}/hosts",
        json={"name": name},
        headers=auth(token),
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def job_done(service: Service, recording_id: str, kind: str, count: int = 1):
    """The recording's `count`th job of `kind`, once done (any failure fails the test)."""

    def done():
        with service.catalog().session() as s:
            rows = s.scalars(
                select(Job)
                .where(Job.recording_id == recording_id, Job.kind == kind)
                .order_by(Job.created_at)
            ).all()
        for job in rows:
            assert job.status != "failed", job.error
        finished = [j for j in rows if j.status == "done"]
        return finished[count - 1] if len(finished) >= count else None

    return wait_until(done, timeout=120, interval=0.5, what=f"{kind} job {count}")


def pictures(url: str, at: dict[str, float]) -> tuple[dict[str, np.ndarray], list]:
    """Decoded RGB pictures of the playlist's video at seconds `at` from its first frame, and
    its audio (first channel) with its rate."""
    found: dict[str, np.ndarray] = {}
    audio, rate = [], 0
    with av.open(url, options=WHITELIST, timeout=20) as container:
        video = container.streams.video[0]
        sound = container.streams.audio[0]
        rate = sound.rate
        first = None
        for frame in container.decode(video, sound):
            if isinstance(frame, av.AudioFrame):
                audio.append(frame.to_ndarray()[0])
                continue
            t = float(frame.pts * video.time_base)
            first = t if first is None else first
            for name, want in at.items():
                if name not in found and t - first >= want:
                    found[name] = frame.to_ndarray(format="rgb24")
    assert found.keys() == at.keys(), (found.keys(), at)
    return found, [np.concatenate(audio), rate]


def mean(picture: np.ndarray, cell: Cell) -> np.ndarray:
    part = picture[
        cell.y + cell.h // 4 : cell.y + 3 * cell.h // 4,
        cell.x + cell.w // 8 : cell.x + 7 * cell.w // 8,
    ]
    return part.reshape(-1, 3).mean(axis=0)


def near(colour: np.ndarray, want: tuple[int, int, int]) -> bool:
    return bool(np.abs(colour - np.array(want)).max() <= 40)


def name_tile(picture: np.ndarray, cell: Cell) -> bool:
    """The tile's grey with white letters (the host's name) across its middle."""
    middle = picture[cell.y + cell.h // 3 : cell.y + 2 * cell.h // 3, cell.x : cell.x + cell.w]
    grey = int(TILE[2:4], 16)
    background = np.median(middle.reshape(-1, 3), axis=0)
    lettered = (middle.min(axis=2) > 200).mean()
    return bool(np.abs(background - grey).max() <= 12 and 0.002 < lettered < 0.3)


def first_date(service: Service, recording_id: str, rendition: str) -> datetime:
    text = service.store().get(K.media_playlist(recording_id, rendition)).decode()
    return parse_media_playlist(text).segments[0].program_date_time


def test_a_three_host_room_gets_a_grid_stock_players_play_and_a_removed_host_leaves_it(
    service, tmp_path
) -> None:
    token = service.new_creator("Ana")
    room = service.new_room(token, "video", "Three of us")
    bea, cai = (invite(service, token, room, name) for name in ("Bea", "Cai"))
    t0 = time.monotonic()
    ana = publish_rtmp(room["rtmp_url"], seconds=14, tone_hz=300, picture="color=c=red")
    cai_live = publish_http(cai["http_push_url"], seconds=14, tone_hz=700, video=False)
    time.sleep(max(0, t0 + 4 - time.monotonic()))
    bea_live = publish_rtmp(bea["rtmp_url"], seconds=6, tone_hz=500, picture="color=c=blue")
    for publisher in (ana, cai_live, bea_live):
        _, err = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, err
    [recording] = service.wait_ended(room["id"], timeout=30)
    rid = recording.id
    job = job_done(service, rid, "composite")
    assert job.result["grid"] is True and job.result["seats"] == [1, 2, 3]

    # The master lists the grid first (H.264 + the mix's AAC, 640x360), then the mix.
    detail = httpx.get(f"{service.api}/api/recordings/{rid}", timeout=10).json()
    master = parse_master_playlist(httpx.get(detail["playback_url"], timeout=10).text)
    assert [v.uri for v in master.variants] == ["grid/index.m3u8", "mix/index.m3u8"]
    assert master.variants[0].codecs.startswith("avc1.")
    assert master.variants[0].codecs.endswith(",mp4a.40.2")
    assert master.variants[0].resolution == (640, 360)
    grid = next(r for r in detail["renditions"] if r["name"] == "grid")
    assert (grid["seat"], grid["width"], grid["height"]) == (0, 640, 360)
    stored = {i.key for i in service.store().list(K.recording_prefix(rid) + "grid/")}
    assert len(stored) >= 6 and K.media_playlist(rid, "grid") in stored  # under its prefix

    # Each host in their tile at their wall-clock time; Bea's tile her name before she came
    # and after she left, Cai's (no camera) his name throughout.
    origin = first_date(service, rid, "grid")
    assert abs((origin - first_date(service, rid, "mix")).total_seconds()) < 0.01
    bea_in = (first_date(service, rid, "hosts/2/source") - origin).total_seconds()
    assert 3 <= bea_in <= 6.5, bea_in
    at = {"before Bea": 1.5, "with Bea": bea_in + 3, "after Bea": bea_in + 8}
    seen, (sound, rate) = pictures(detail["playback_url"], at)
    ana_cell, bea_cell, cai_cell, _ = layout(4, 640, 360)
    for moment, picture in seen.items():
        assert near(mean(picture, ana_cell), RED), (moment, mean(picture, ana_cell))
        assert name_tile(picture, cai_cell), (moment, mean(picture, cai_cell))
    assert name_tile(seen["before Bea"], bea_cell)
    assert near(mean(seen["with Bea"], bea_cell), BLUE), mean(seen["with Bea"], bea_cell)
    assert name_tile(seen["after Bea"], bea_cell)
    # Its sound is the room mix: everyone's tone while they were live.
    heard = tones_per_second(sound, rate, [300, 500, 700])
    assert sum(1 for t in heard if t == {300, 500, 700}) >= 3, heard

    # Bea is removed from the recording: the grid goes with her, then comes back without her.
    old = stored
    reply = httpx.delete(f"{service.api}/api/recordings/{rid}/hosts/2", headers=auth(token))
    assert reply.status_code == 202, reply.text
    job = job_done(service, rid, "composite", count=2)
    assert job.result["seats"] == [1, 3]
    after = {i.key for i in service.store().list(K.recording_prefix(rid) + "grid/")}
    assert not (old - {K.media_playlist(rid, "grid")}) & after  # new keys, the old ones gone
    master = parse_master_playlist(httpx.get(detail["playback_url"], timeout=10).text)
    assert [v.uri for v in master.variants] == ["grid/index.m3u8", "mix/index.m3u8"]
    seen, _ = pictures(detail["playback_url"], {"with Bea": at["with Bea"]})
    ana_half, cai_half = layout(2, 640, 360)  # two seats now: side by side
    assert near(mean(seen["with Bea"], ana_half), RED)
    assert name_tile(seen["with Bea"], cai_half)
    blue = (seen["with Bea"][:, :, 2] > 150) & (seen["with Bea"][:, :, 0] < 80)
    assert blue.mean() < 0.001  # nothing of her picture anywhere
    assert timedelta(0) < recording.ended_at - recording.started_at < timedelta(seconds=20)
