"""The viewers' API: listing, details, playlists rewritten to the store, errors, /metrics."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx

from storage import keys as K
from storage.models import Recording
from tests.api.conftest import Api, seed_recording
from transcode.playlists import MediaSegment, parse_master_playlist, parse_media_playlist


def expire(api: Api, recording_id: str) -> None:
    with api.catalog.session() as s:
        recording = s.get(Recording, recording_id)
        recording.status = "expired"
        recording.deleted_at = api.clock()


def test_no_recordings_is_an_empty_page(api: Api) -> None:
    reply = api.client.get("/api/recordings")
    assert reply.status_code == 200
    assert reply.json() == {"items": [], "total": 0, "limit": 20, "offset": 0}


def test_list_is_newest_first_and_paginated(api: Api) -> None:
    creator, _ = api.creator()
    made = []
    for n in range(5):
        made.append(seed_recording(api, creator, title=f"room {n}", segments=1))
        api.clock.advance(minutes=1)
    newest_first = [r.id for r in reversed(made)]

    pages = [api.client.get(f"/api/recordings?limit=2&offset={o}").json() for o in (0, 2, 4)]
    assert [p["total"] for p in pages] == [5, 5, 5]
    assert [[i["id"] for i in p["items"]] for p in pages] == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:],
    ]
    assert api.client.get("/api/recordings?offset=5").json()["items"] == []
    for bad in ("limit=0", "limit=101", "offset=-1", "status=expired"):
        reply = api.client.get(f"/api/recordings?{bad}")
        assert reply.status_code == 422, bad
        assert reply.json()["detail"]


def test_item_fields(api: Api) -> None:
    creator, _ = api.creator("Ada Host")
    recording = seed_recording(api, creator, title="Morning show", kind="audio", segments=3)
    api.clock.advance(hours=1)

    [item] = api.client.get("/api/recordings").json()["items"]
    assert item == {
        "id": recording.id,
        "room_id": recording.room_id,
        "title": "Morning show",
        "kind": "audio",
        "host": "Ada Host",
        "status": "ended",
        "started_at": item["started_at"],
        "ended_at": item["ended_at"],
        "duration_s": 6.0,
        "expires_at": item["expires_at"],
        "expires_in_s": 23 * 3600,
        "playback_url": f"http://127.0.0.1:8000/api/recordings/{recording.id}/master.m3u8",
    }
    assert item["expires_at"].startswith(
        (recording.ended_at + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S")
    )


def test_status_and_room_filters_and_empty_lives_hidden(api: Api) -> None:
    creator, _ = api.creator()
    ended = seed_recording(api, creator, segments=2)
    live = seed_recording(api, creator, segments=2, ended=False)
    # A live that has not closed a segment yet has nothing to play: not listed.
    room = api.catalog.add_room(creator_id=creator, title="warming up", kind="video")
    api.catalog.start_recording(room.id)

    def ids(query: str) -> list[str]:
        return [i["id"] for i in api.client.get(f"/api/recordings{query}").json()["items"]]

    assert ids("?status=live") == [live.id]
    assert ids("?status=ended") == [ended.id]
    assert sorted(ids("")) == sorted([live.id, ended.id])
    assert ids(f"?room_id={ended.room_id}") == [ended.id]
    [item] = api.client.get("/api/recordings?status=live").json()["items"]
    assert item["ended_at"] is None and item["expires_at"] is None
    assert item["expires_in_s"] is None


def test_detail_lists_renditions(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator)
    reply = api.client.get(f"/api/recordings/{recording.id}")
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"] == recording.id
    base = f"http://127.0.0.1:8000/api/recordings/{recording.id}"
    assert [(r["name"], r["playlist_url"]) for r in body["renditions"]] == [
        ("source", f"{base}/source/index.m3u8"),
        ("audio", f"{base}/audio/index.m3u8"),
    ]


def test_unknown_is_404_and_expired_is_410_everywhere(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator)
    for path in ("", "/master.m3u8", "/source/index.m3u8"):
        reply = api.client.get(f"/api/recordings/nope{path}")
        assert reply.status_code == 404, path
        assert reply.json() == {"detail": "no recording nope"}

    expire(api, recording.id)
    for path in ("", "/master.m3u8", "/source/index.m3u8"):
        reply = api.client.get(f"/api/recordings/{recording.id}{path}")
        assert reply.status_code == 410, path
        assert reply.json()["detail"].startswith(f"recording {recording.id} expired at ")
    assert api.client.get("/api/recordings").json()["total"] == 0


def test_master_playlist_is_served_with_relative_variants(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator)
    reply = api.client.get(
        f"/api/recordings/{recording.id}/master.m3u8", headers={"Origin": "https://elsewhere.test"}
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert reply.headers["access-control-allow-origin"] == "*"
    master = parse_master_playlist(reply.text)
    assert [v.uri for v in master.variants] == ["source/index.m3u8", "audio/index.m3u8"]
    assert reply.text == api.store.get(K.master_playlist(recording.id)).decode()


def test_media_playlist_points_at_the_store_with_urls_that_need_no_credentials(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator, segments=4)
    url = f"/api/recordings/{recording.id}/audio/index.m3u8"
    reply = api.client.get(url)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "private, max-age=10"
    playlist = parse_media_playlist(reply.text)
    assert playlist.ended and len(playlist.segments) == 4
    endpoint = api.store.config.endpoint_url
    for seq, seg in enumerate(playlist.segments):
        assert seg.uri.startswith(f"{endpoint}/{api.store.bucket}/recordings/{recording.id}/")
        assert "X-Amz-Signature=" in seg.uri
        fetched = httpx.get(seg.uri, timeout=10)
        assert fetched.status_code == 200
        assert fetched.content == f"audio segment {seq}".encode()
    # Within a signing bucket a repeat request is byte-identical (and served from cache).
    assert api.client.get(url).text == reply.text


def test_public_base_url_replaces_presigning(api_factory) -> None:
    api = api_factory(public_media_base_url="https://cdn.example.test/media")
    creator, _ = api.creator()
    recording = seed_recording(api, creator, segments=2)
    text = api.client.get(f"/api/recordings/{recording.id}/source/index.m3u8").text
    uris = [s.uri for s in parse_media_playlist(text).segments]
    keys = [s.key for s in api.catalog.find_segments(recording.id, "source")]
    assert uris == [f"https://cdn.example.test/media/{key}" for key in keys]


def test_live_playlist_grows_and_is_not_cached_by_clients(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator, segments=2, ended=False)
    url = f"/api/recordings/{recording.id}/source/index.m3u8"
    first = api.client.get(url)
    assert first.headers["cache-control"] == "no-cache"
    playlist = parse_media_playlist(first.text)
    assert playlist.playlist_type == "EVENT" and not playlist.ended

    key = K.media_playlist(recording.id, "source")
    grown = parse_media_playlist(api.store.get(key).decode())
    grown.segments.append(MediaSegment(uri="0000000000000-000002.ts", duration_s=2.0))
    api.store.put_bytes(key, grown.render().encode())
    time.sleep(api.runtime.playback.live_refresh_s + 0.1)
    assert len(parse_media_playlist(api.client.get(url).text).segments) == 3


def test_unknown_rendition_is_404(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator, renditions=("source",))
    reply = api.client.get(f"/api/recordings/{recording.id}/720p/index.m3u8")
    assert reply.status_code == 404
    assert "no playlist yet" in reply.json()["detail"]


def test_metrics_are_prometheus_text(api: Api) -> None:
    creator, _ = api.creator()
    seed_recording(api, creator, segments=1)
    reply = api.client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = reply.text.splitlines()
    for expected in (
        "afterlive_live_rooms 0.0",
        "afterlive_publishers_connected 0.0",
        "afterlive_spool_depth 0.0",
        "afterlive_segments_uploaded_total 0.0",
        "afterlive_upload_latency_seconds_count 0.0",
    ):
        assert expected in lines, expected
    # seed_recording stored objects through the same store: counted per operation.
    assert any(line.startswith('afterlive_store_requests_total{operation="put"}') for line in lines)
    assert "# TYPE afterlive_store_errors_total counter" in lines


def test_long_playlists_are_gzipped_for_clients_that_accept_it(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator, segments=60)
    url = f"/api/recordings/{recording.id}/source/index.m3u8"
    plain = api.client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    for _ in range(2):  # the first from the store, the second from memory
        zipped = api.client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert "Accept-Encoding" in zipped.headers["vary"]
        assert zipped.text == plain.text  # the client inflates it
        assert int(zipped.headers["content-length"]) < len(plain.content) / 4


def test_an_expiry_is_seen_within_a_second_even_from_memory(api: Api) -> None:
    creator, _ = api.creator()
    recording = seed_recording(api, creator)
    for path in ("/master.m3u8", "/source/index.m3u8"):
        assert api.client.get(f"/api/recordings/{recording.id}{path}").status_code == 200
    expire(api, recording.id)
    time.sleep(api.runtime.playback.view_ttl_s)
    for path in ("/master.m3u8", "/source/index.m3u8"):
        assert api.client.get(f"/api/recordings/{recording.id}{path}").status_code == 410


def test_a_multi_host_recording_lists_its_hosts_seats_and_speaker_turns(api: Api) -> None:
    creator, _ = api.creator("Ana")
    recording = seed_recording(
        api, creator, renditions=("source", "hosts/2/source", "hosts/2/audio"), segments=4
    )
    room = api.catalog.room(recording.room_id)
    bea = api.catalog.add_host(room.id, name="Bea", max_seats=4)
    for seat in (
        api.catalog.seat_by_stream_key(room.stream_key),
        api.catalog.seat_by_stream_key(bea.stream_key),
    ):
        api.catalog.seat_joined(recording.id, seat)
    at = recording.started_at
    api.catalog.add_speaker_turns(
        recording.id,
        [
            (2, at + timedelta(seconds=3.5), at + timedelta(seconds=6)),
            (1, at + timedelta(seconds=0.25), at + timedelta(seconds=3.25)),
        ],
    )
    body = api.client.get(f"/api/recordings/{recording.id}").json()
    assert [(h["seat"], h["name"], h["recorded"]) for h in body["hosts"]] == [
        (1, "Ana", True),
        (2, "Bea", True),
    ]
    base = f"http://127.0.0.1:8000/api/recordings/{recording.id}"
    assert [(r["name"], r["seat"], r["playlist_url"]) for r in body["renditions"]] == [
        ("source", 1, f"{base}/source/index.m3u8"),
        ("hosts/2/source", 2, f"{base}/hosts/2/source/index.m3u8"),
        ("hosts/2/audio", 2, f"{base}/hosts/2/audio/index.m3u8"),
    ]
    playlist = api.client.get(f"/api/recordings/{recording.id}/hosts/2/audio/index.m3u8")
    assert playlist.status_code == 200
    assert len(parse_media_playlist(playlist.text).segments) == 4
    assert (
        api.client.get(f"/api/recordings/{recording.id}/hosts/3/audio/index.m3u8").status_code
        == 404
    )
    assert (
        api.client.get(f"/api/recordings/{recording.id}/hosts/1/audio/index.m3u8").status_code
        == 422
    )

    turns = api.client.get(f"/api/recordings/{recording.id}/speakers")
    assert turns.status_code == 200
    assert [(t["seat"], t["host"], t["start_s"], t["end_s"]) for t in turns.json()] == [
        (1, "Ana", 0.25, 3.25),
        (2, "Bea", 3.5, 6.0),
    ]

    api.catalog.begin_deletion(recording.id, reason="takedown", actor="admin")
    api.catalog.finish_deletion(recording.id, objects_deleted=0, bytes_deleted=0, detail={})
    for path in ("/speakers", "/hosts/2/audio/index.m3u8"):
        assert api.client.get(f"/api/recordings/{recording.id}{path}").status_code == 410, path
    # Who sat and who spoke go with the media.
    assert api.catalog.recording_seats(recording.id) == []
    assert api.catalog.speaker_turns(recording.id) == []


def test_studio_lanes_place_turns_on_the_mix_timeline(api: Api) -> None:
    """The lanes use the timeline clips are cut from (the mix's segments), not the recording's
    start: here the mix is dated 1 s after it and has a 2 s gap (everyone away) after 4 s."""
    creator, headers = api.creator("Ana")
    recording = seed_recording(api, creator, renditions=("source", "hosts/2/source"), segments=6)
    room = api.catalog.room(recording.room_id)
    bea = api.catalog.add_host(room.id, name="Bea", max_seats=4)
    for seat in (
        api.catalog.seat_by_stream_key(room.stream_key),
        api.catalog.seat_by_stream_key(bea.stream_key),
    ):
        api.catalog.seat_joined(recording.id, seat)
    at = recording.started_at
    for seq, offset in enumerate((1, 3, 7, 9)):
        api.catalog.add_segment(
            recording_id=recording.id,
            rendition="mix",
            sequence=seq,
            start_at=at + timedelta(seconds=offset),
            duration_s=2.0,
            key=K.media_segment(recording.id, "mix", at, seq, "ts"),
            size_bytes=1,
        )
    api.catalog.set_rendition(
        recording_id=recording.id, name="mix", playlist_key=K.media_playlist(recording.id, "mix")
    )
    s = timedelta(seconds=1)
    api.catalog.add_speaker_turns(
        recording.id,
        [
            (1, at + 1.5 * s, at + 4 * s),
            (2, at + 5.5 * s, at + 8 * s),  # starts in the gap: at the next segment's start
            (1, at + 10 * s, at + 12 * s),  # ends after the mix: at its end
            (2, at + 14 * s, at + 15 * s),  # after the mix: no place on its timeline
        ],
    )
    url = f"/api/recordings/{recording.id}/lanes"
    reply = api.client.get(url, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "lanes": [
            {
                "seat": 1,
                "host": "Ana",
                "turns": [{"start_s": 0.5, "end_s": 3.0}, {"start_s": 7.0, "end_s": 8.0}],
            },
            {"seat": 2, "host": "Bea", "turns": [{"start_s": 4.0, "end_s": 5.0}]},
        ]
    }
    assert api.client.get(url, headers=api.creator()[1]).status_code == 403
    assert api.client.get(url).status_code == 401
    assert api.client.get("/api/recordings/nope/lanes", headers=headers).status_code == 404

    # A single host who never spoke (no mix, no turns): no lanes.
    alone = seed_recording(api, creator)
    api.catalog.seat_joined(
        alone.id, api.catalog.seat_by_stream_key(api.catalog.room(alone.room_id).stream_key)
    )
    reply = api.client.get(f"/api/recordings/{alone.id}/lanes", headers=headers)
    assert reply.json() == {"lanes": []}
