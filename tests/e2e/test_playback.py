"""Replay through the API as a viewer's player does it: `afterlive serve`, a real ffmpeg publisher,
then PyAV (FFmpeg's HLS demuxer) opening `playback_url` over HTTP. The API serves the playlists;
every segment comes straight from the store through a presigned URL that needs no credentials
and stops working after its TTL."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.utils import player
from tests.utils.media import publish_rtmp
from tests.utils.net import wait_until
from tests.utils.service import Service, module_service
from transcode.playlists import parse_master_playlist, parse_media_playlist

TTL_S = 12


service = module_service("playback", AFTERLIVE_PLAYBACK_URL_TTL=f"{TTL_S}s")


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.new_creator("Playback Tester")


def decode(url: str) -> tuple[float, int, int]:
    """Decode a playlist URL to the end: (seconds of media, video frames, audio frames)."""
    played = player.decode(url)
    return played.duration_s, played.video_frames, played.audio_frames


def segment_urls(service: Service, playback_url: str) -> list[str]:
    master = parse_master_playlist(httpx.get(playback_url, timeout=10).text)
    urls = []
    for variant in master.variants:
        media = httpx.get(playback_url.rsplit("/", 1)[0] + "/" + variant.uri, timeout=10)
        assert media.status_code == 200
        urls += [seg.uri for seg in parse_media_playlist(media.text).segments]
    return urls


def test_finished_recording_plays_from_its_playback_url(service, token) -> None:
    room = service.new_room(token, "video", title="Replay me")
    publisher = publish_rtmp(room["rtmp_url"], seconds=10)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])

    item = httpx.get(f"{service.api}/api/recordings/{recording.id}", timeout=10).json()
    assert item["status"] == "ended" and abs(item["duration_s"] - 10) <= 2.1
    t0 = time.monotonic()
    seconds, video, audio = decode(item["playback_url"])
    assert abs(seconds - 10) <= 2.1
    assert video >= 8 * 30 and audio > 10 * 40

    # Every media URL works with no credentials, until its TTL runs out.
    urls = segment_urls(service, item["playback_url"])
    assert len(urls) >= 2 * 4  # source and audio renditions, ~5 segments each
    for url in urls:
        assert "127.0.0.1" in url and "X-Amz-Signature=" in url
        assert httpx.get(url, timeout=10).status_code == 200
    time.sleep(max(0.0, TTL_S + 1.5 - (time.monotonic() - t0)))
    for url in urls:
        assert httpx.get(url, timeout=10).status_code == 403, url
    # A fresh playlist request hands out fresh URLs that work again.
    fresh = segment_urls(service, item["playback_url"])
    assert all(httpx.get(url, timeout=10).status_code == 200 for url in fresh[:3])


def test_live_recording_plays_from_the_start_and_grows(service, token) -> None:
    room = service.new_room(token, "audio", title="Live talk")
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=16)
    try:
        listed = wait_until(
            lambda: httpx.get(
                f"{service.api}/api/recordings?status=live&room_id={room['id']}", timeout=5
            ).json()["items"],
            timeout=20,
            what="the live recording to be listed",
        )
        [item] = listed
        assert item["status"] == "live" and item["expires_at"] is None
        media_url = item["playback_url"].rsplit("/", 1)[0] + "/source/index.m3u8"
        first = httpx.get(media_url, timeout=5)
        assert first.headers["cache-control"] == "no-cache"
        playlist = parse_media_playlist(first.text)
        # DVR: an EVENT playlist keeps every segment from the start of the live.
        assert playlist.playlist_type == "EVENT" and not playlist.ended
        assert playlist.media_sequence == 0
        time.sleep(4.5)
        later = parse_media_playlist(httpx.get(media_url, timeout=5).text)
        assert len(later.segments) >= len(playlist.segments) + 2
        assert [s.uri.split("?")[0] for s in later.segments[: len(playlist.segments)]] == [
            s.uri.split("?")[0] for s in playlist.segments
        ]
    finally:
        assert publisher.wait(60) == 0, publisher.stderr.read()
    service.wait_ended(room["id"])
    seconds, video, audio = decode(item["playback_url"])
    assert abs(seconds - 16) <= 2.1 and video == 0 and audio > 16 * 40
