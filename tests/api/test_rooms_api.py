"""Rooms belong to creators: every route and role, in process on a real store and catalog."""

from __future__ import annotations

import pytest

from tests.api.conftest import ADMIN_TOKEN, Api

ROUTES = [
    ("post", "/api/rooms", {"title": "t", "kind": "audio"}),
    ("get", "/api/rooms", None),
    ("get", "/api/rooms/{room}", None),
    ("post", "/api/rooms/{room}/rotate-key", None),
    ("get", "/api/rooms/{room}/hosts", None),
    ("post", "/api/rooms/{room}/hosts", {"name": "Bea"}),
    ("patch", "/api/rooms/{room}/hosts/2", {"name": "Bea B."}),
    ("post", "/api/rooms/{room}/hosts/2/rotate-key", None),
    ("delete", "/api/rooms/{room}/hosts/2", None),
]


@pytest.fixture
def owned(api: Api) -> tuple[dict, dict[str, str]]:
    _, headers = api.creator()
    reply = api.client.post(
        "/api/rooms", json={"title": "Friday Spaces", "kind": "audio"}, headers=headers
    )
    assert reply.status_code == 201, reply.text
    return reply.json(), headers


def call(api: Api, method: str, path: str, body, room: dict, headers: dict[str, str]):
    return api.client.request(method, path.format(room=room["id"]), json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    ("who", "detail"),
    [
        ({}, "a creator token is required"),
        ({"Authorization": "Bearer not-a-token"}, "unknown creator token"),
        # The admin token is not a creator's: it owns no rooms.
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, "unknown creator token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "a creator token is required"),
    ],
)
def test_without_a_creator_token_401(api: Api, owned, method, path, body, who, detail) -> None:
    room, _ = owned
    reply = call(api, method, path, body, room, who)
    assert reply.status_code == 401
    assert reply.json()["detail"].startswith(detail)
    assert reply.headers["www-authenticate"] == "Bearer"
    assert "stream_key" not in reply.text


@pytest.mark.parametrize(("method", "path", "body"), ROUTES[2:])
def test_another_creators_room_403_and_unknown_404(api: Api, owned, method, path, body) -> None:
    room, _ = owned
    _, stranger = api.creator()
    reply = call(api, method, path, body, room, stranger)
    assert reply.status_code == 403
    assert reply.json() == {"detail": "this room belongs to another creator"}
    assert room["stream_key"] not in reply.text
    reply = call(api, method, path, body, {"id": "nope"}, stranger)
    assert reply.status_code == 404
    assert reply.json() == {"detail": "no room nope"}


def test_create_returns_urls_and_list_shows_only_own_rooms(api: Api, owned) -> None:
    room, headers = owned
    assert room["title"] == "Friday Spaces" and room["kind"] == "audio"
    assert room["stream_key"].startswith(room["id"] + "-") and len(room["stream_key"]) > 40
    port = api.runtime.rtmp.port
    assert room["rtmp_url"] == f"rtmp://127.0.0.1:{port}/live/{room['stream_key']}"
    assert room["http_push_url"] == f"http://127.0.0.1:8000/ingest/{room['stream_key']}"
    assert room["live"] is False

    _, stranger = api.creator()
    api.client.post("/api/rooms", json={"title": "Other", "kind": "video"}, headers=stranger)
    assert [r["id"] for r in api.client.get("/api/rooms", headers=headers).json()] == [room["id"]]
    assert api.client.get(f"/api/rooms/{room['id']}", headers=headers).json() == room


@pytest.mark.parametrize(
    "body", [{"title": "", "kind": "audio"}, {"title": "x", "kind": "radio"}, {"title": "x"}]
)
def test_bad_room_body_422(api: Api, body) -> None:
    _, headers = api.creator()
    reply = api.client.post("/api/rooms", json=body, headers=headers)
    assert reply.status_code == 422
    assert reply.json()["detail"]


def test_rotate_key_replaces_the_key(api: Api, owned) -> None:
    room, headers = owned
    rotated = api.client.post(f"/api/rooms/{room['id']}/rotate-key", headers=headers).json()
    assert rotated["stream_key"] != room["stream_key"]
    assert api.catalog.room_by_stream_key(room["stream_key"]) is None
    assert api.catalog.room_by_stream_key(rotated["stream_key"]).id == room["id"]
