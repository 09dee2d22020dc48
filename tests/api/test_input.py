"""What a peer sends is checked at the edge and answered in words, in the one error shape; what
the API answers never carries the request's Host. On the real app, store and catalog."""

from __future__ import annotations

import pytest

from api.schemas import ErrorOut
from api.settings import SettingsError, load_settings
from tests.api.conftest import ADMIN_TOKEN, Api, seed_recording

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HUGE = 2**63


def error(reply, status: int) -> ErrorOut:
    """The reply's error, checked to be the one shape with a message."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    parsed = ErrorOut.model_validate(reply.json())
    assert parsed.detail and isinstance(parsed.detail, str)
    return parsed


@pytest.mark.parametrize(
    ("path", "admin"),
    [
        (f"/api/recordings?offset={HUGE}", False),
        (f"/api/recordings?limit={HUGE}", False),
        (f"/api/recordings?offset={HUGE * 4}", False),
        (f"/api/admin/recordings?offset={HUGE}", True),
        (f"/api/admin/recordings?limit={-HUGE}", True),
        (f"/api/admin/audit?limit={HUGE}", True),
    ],
)
def test_huge_integers_are_422_not_an_overflow(api: Api, path: str, admin: bool) -> None:
    found = error(api.client.get(path, headers=ADMIN if admin else {}), 422)
    assert found.detail.startswith(("query.offset: ", "query.limit: "))
    assert found.errors and found.errors[0].loc[0] == "query"


def test_waveform_points_bounded(api: Api) -> None:
    creator, headers = api.creator()
    recording = seed_recording(api, creator)
    url = f"/api/recordings/{recording.id}/waveform?points={HUGE}"
    assert "query.points" in error(api.client.get(url, headers=headers), 422).detail


@pytest.fixture
def recording_of(api: Api):
    creator, headers = api.creator()
    return seed_recording(api, creator), headers


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "t", "start_s": NaN, "end_s": 3}',
        b'{"title": "t", "start_s": 0, "end_s": Infinity}',
        b'{"title": "t", "start_s": -Infinity, "end_s": 1}',
    ],
)
def test_clip_times_must_be_finite(api: Api, recording_of, body: bytes) -> None:
    recording, headers = recording_of
    reply = api.client.post(
        f"/api/recordings/{recording.id}/clips",
        content=body,
        headers=headers | {"content-type": "application/json"},
    )
    assert "finite number" in error(reply, 422).detail
    assert api.catalog.clips_of(api.catalog.room(recording.room_id).creator_id) == []


@pytest.mark.parametrize(
    ("start_at", "words"),
    [
        ("2026-12-07T12:00:00", "body.start_at: needs a time zone, e.g. 2026-11-22T12:00:00Z"),
        ("0001-01-01T00:00:00+05:00", "body.start_at: is out of range once read as UTC"),
        ("9999-12-31T23:59:59-05:00", "body.start_at: is out of range once read as UTC"),
    ],
)
def test_clip_wall_clock_times_need_a_zone_and_a_range(
    api: Api, recording_of, start_at: str, words: str
) -> None:
    recording, headers = recording_of
    body = {"title": "t", "start_at": start_at, "end_at": "2026-12-07T12:00:03Z"}
    reply = api.client.post(f"/api/recordings/{recording.id}/clips", json=body, headers=headers)
    assert error(reply, 422).detail == words


def test_admin_expiring_before_needs_a_zone(api: Api) -> None:
    reply = api.client.get(
        "/api/admin/recordings?expiring_before=2026-12-07T12:00:00", headers=ADMIN
    )
    assert "query.expiring_before: needs a time zone" in error(reply, 422).detail
    reply = api.client.get("/api/admin/recordings?status=gone", headers=ADMIN)
    assert "query.status" in error(reply, 422).detail
    ok = api.client.get("/api/admin/recordings?expiring_before=2026-12-07T12:00:00Z", headers=ADMIN)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "rendition", ["a%00b", "source%00", "a%20b", "x" * 41, "%C3%A9", "a%0Ab", "a.b"]
)
def test_a_bad_rendition_name_is_422_with_a_message_not_a_store_error(
    api: Api, recording_of, rendition: str
) -> None:
    recording, _ = recording_of
    for base in (f"/api/recordings/{recording.id}", "/api/clips/0123456789abcdef"):
        reply = api.client.get(f"{base}/{rendition}/index.m3u8")
        assert error(reply, 422).detail == (
            "path.rendition: must be a rendition name such as source, audio or 720p"
        )
    assert api.client.get(f"/api/recordings/{recording.id}/source/index.m3u8").status_code == 200
    assert api.client.get(f"/api/recordings/{recording.id}/nope/index.m3u8").status_code == 404


@pytest.mark.parametrize(
    "title", [r"nul\u0000byte", r"bell\u0007", r"escape\u001b[31m", r"\ud800 lone surrogate"]
)
def test_text_with_control_characters_or_surrogates_is_422(api: Api, title: str) -> None:
    """`title` as JSON escapes: a lone surrogate is valid JSON, and no HTTP client encodes one."""
    _, headers = api.creator()
    json_ = headers | {"content-type": "application/json"}
    for path, body in (
        ("/api/rooms", f'{{"title": "{title}", "kind": "audio"}}'),
        ("/api/programmes", f'{{"title": "{title}"}}'),
    ):
        reply = api.client.post(path, content=body.encode(), headers=json_)
        assert error(reply, 422).detail.startswith("body.title: must be text")
    # Text is otherwise free: accents, emoji, tabs and line breaks in a description.
    fine = {"title": "Café 🎙", "description": "line one\nline two\tand a tab"}
    assert api.client.post("/api/programmes", json=fine, headers=headers).status_code == 201


def test_ids_with_nul_or_slash_are_422(api: Api) -> None:
    _, headers = api.creator()
    for path in ("/api/rooms/a%00b", "/api/programmes/a%00b", "/api/clips/%20"):
        assert "must be an id" in error(api.client.get(path, headers=headers), 422).detail
    assert error(api.client.get("/api/recordings?room_id=a%00"), 422).detail.startswith(
        "query.room_id: must be an id"
    )


def test_malformed_json_and_missing_bodies_are_said_in_words(api: Api) -> None:
    _, headers = api.creator()
    json_ = headers | {"content-type": "application/json"}
    reply = api.client.post("/api/rooms", content=b'{"title": ', headers=json_)
    assert error(reply, 422).detail.startswith("the body is not valid JSON: ")
    for garbage in (b"\xff\xfe\x00", b"\xff\xfe", b"\x80abc"):
        reply = api.client.post("/api/rooms", content=garbage, headers=json_)
        assert error(reply, 422).detail.startswith("the body is not valid JSON")
    assert error(api.client.post("/api/rooms", headers=headers), 422).detail == (
        "a JSON body is required"
    )
    many = {"title": "", "kind": "radio", "pad": 1}
    found = error(api.client.post("/api/rooms", json=many, headers=headers), 422)
    assert [e.loc for e in found.errors] == [["body", "title"], ["body", "kind"]]
    assert "input" not in str(reply.json())  # what was sent is not echoed back


def test_our_own_422s_have_the_same_shape(api: Api, recording_of) -> None:
    recording, headers = recording_of
    reply = api.client.post(
        f"/api/recordings/{recording.id}/clips",
        json={"title": "t", "start_s": 2, "end_s": 1},
        headers=headers,
    )
    assert error(reply, 422).detail == "end_s 1 must be after start_s 2"
    assert reply.json().get("errors") is None


HOSTILE = {"Host": "evil.example:666", "X-Forwarded-Host": "evil.example"}


def test_absolute_urls_never_come_from_the_host_header(api_factory) -> None:
    api = api_factory(api_port=8000)
    creator, headers = api.creator()
    recording = seed_recording(api, creator)
    room = api.client.post(
        "/api/rooms", json={"title": "t", "kind": "audio"}, headers=headers | HOSTILE
    )
    assert room.status_code == 201
    replies = [
        room,
        api.client.get("/api/rooms", headers=headers | HOSTILE),
        api.client.get("/api/recordings", headers=HOSTILE),
        api.client.get(f"/api/recordings/{recording.id}", headers=HOSTILE),
        api.client.post(
            f"/api/recordings/{recording.id}/clips",
            json={"title": "c", "start_s": 0, "end_s": 2},
            headers=headers | HOSTILE,
        ),
        api.client.get("/api/clips", headers=headers | HOSTILE),
    ]
    for reply in replies:
        assert reply.status_code < 300, reply.text
        assert "evil" not in reply.text
    key = room.json()["stream_key"]
    port = api.runtime.settings.rtmp_port
    assert room.json()["rtmp_url"] == f"rtmp://127.0.0.1:{port}/live/{key}"
    assert room.json()["http_push_url"] == f"http://127.0.0.1:8000/ingest/{key}"
    detail = replies[3].json()
    assert (
        detail["playback_url"] == f"http://127.0.0.1:8000/api/recordings/{recording.id}/master.m3u8"
    )
    assert detail["renditions"][0]["playlist_url"].startswith("http://127.0.0.1:8000/")


def test_a_trailing_slash_is_not_redirected_to_the_host_header(api: Api) -> None:
    for path in ("/api/rooms/", "/api/recordings/", "/admin/"):
        reply = api.client.get(path, headers=HOSTILE, follow_redirects=False)
        assert reply.status_code == 404
        assert "location" not in reply.headers
        assert "evil" not in reply.text


def test_absolute_urls_from_the_public_settings(api_factory) -> None:
    api = api_factory(
        public_url="https://live.example.org", public_rtmp_url="rtmps://ingest.example.org/app"
    )
    creator, headers = api.creator()
    recording = seed_recording(api, creator)
    room = api.client.post(
        "/api/rooms", json={"title": "t", "kind": "audio"}, headers=headers | HOSTILE
    ).json()
    assert room["rtmp_url"] == f"rtmps://ingest.example.org/app/{room['stream_key']}"
    assert room["http_push_url"] == f"https://live.example.org/ingest/{room['stream_key']}"
    [item] = api.client.get("/api/recordings", headers=HOSTILE).json()["items"]
    assert item["playback_url"] == (
        f"https://live.example.org/api/recordings/{recording.id}/master.m3u8"
    )


def test_wildcard_listen_hosts_read_as_loopback(tmp_path) -> None:
    settings = load_settings(
        data_dir=tmp_path, api_host="0.0.0.0", api_port=8123, rtmp_host="::", rtmp_port=1940
    )
    assert settings.api_url == "http://127.0.0.1:8123"
    assert settings.rtmp_url == "rtmp://127.0.0.1:1940/live"
    v6 = load_settings(data_dir=tmp_path, rtmp_host="::1", rtmp_port=1940)
    assert v6.rtmp_url == "rtmp://[::1]:1940/live"
    with pytest.raises(SettingsError, match="AFTERLIVE_PUBLIC_RTMP_URL"):
        load_settings(data_dir=tmp_path, public_rtmp_url="http://not-rtmp.example")
