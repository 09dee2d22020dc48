"""The optional transcoded ladder, on: extra renditions next to the copied source."""

from __future__ import annotations

from storage import keys as K
from tests.utils.media import publish_rtmp
from tests.utils.player import play
from tests.utils.service import Service, service_env
from transcode.playlists import parse_master_playlist, parse_media_playlist


def test_ladder_adds_renditions_below_the_source(tmp_path) -> None:
    env = service_env(tmp_path / "data", AFTERLIVE_LADDER="720p,360p")
    service = Service(env, tmp_path / "serve.log")
    try:
        service.wait_healthy()
        room = service.new_room(service.new_creator(), "video")
        publisher = publish_rtmp(room["rtmp_url"], seconds=10, size="640x480")
        assert publisher.wait(60) == 0, publisher.stderr.read()
        [recording] = service.wait_ended(room["id"])
        store = service.store()
        master = parse_master_playlist(store.get(K.master_playlist(recording.id)).decode())
        # 720p would be an upscale of a 480-line source: only 360p is made.
        assert [v.uri for v in master.variants] == [
            "source/index.m3u8",
            "360p/index.m3u8",
            "audio/index.m3u8",
        ]
        rung = master.variants[1]
        assert rung.resolution == (480, 360) and rung.codecs == "avc1.64001e,mp4a.40.2"
        assert 500_000 < rung.bandwidth < 2_000_000
        key = K.media_playlist(recording.id, "360p")
        playlist = parse_media_playlist(store.get(key).decode())
        assert playlist.ended and abs(playlist.duration_s() - 10) < 2.1
        played = play(store, key, tmp_path)
        assert played.width == 480 and played.video_frames >= 8 * 30
        source = parse_media_playlist(store.get(K.media_playlist(recording.id, "source")).decode())
        # Renditions line up in wall-clock time.
        first = playlist.segments[0].program_date_time - source.segments[0].program_date_time
        assert abs(first.total_seconds()) < 0.2
    finally:
        assert service.stop() == 0
