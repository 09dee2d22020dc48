"""Hosts of a room: invited into seats, each with a key of its own; listed, renamed, rotated and
removed. In process on a real store and catalog; publishing with these keys is in
tests/e2e/test_live_rooms.py."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api


def room_of(api: Api, kind: str) -> tuple[dict, dict[str, str]]:
    _, headers = api.creator("Ana")
    reply = api.client.post(
        "/api/rooms", json={"title": "Four of us", "kind": kind}, headers=headers
    )
    assert reply.status_code == 201, reply.text
    return reply.json(), headers


def invite(api: Api, room: dict, headers, name: str, **body) -> dict:
    reply = api.client.post(
        f"/api/rooms/{room['id']}/hosts", json={"name": name, **body}, headers=headers
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_a_video_room_has_four_seats_the_creators_first(api: Api) -> None:
    room, headers = room_of(api, "video")
    hosts = [invite(api, room, headers, name) for name in ("Bea", "Cai", "Dan")]
    assert [h["seat"] for h in hosts] == [2, 3, 4]
    for host in hosts:
        assert host["creator"] is False and host["recorded"] is True and host["live"] is False
        assert host["stream_key"] != room["stream_key"]
        assert host["rtmp_url"].endswith("/" + host["stream_key"])
        assert host["http_push_url"].endswith("/ingest/" + host["stream_key"])
    assert len({h["stream_key"] for h in hosts}) == 3

    fifth = api.client.post(f"/api/rooms/{room['id']}/hosts", json={"name": "Eve"}, headers=headers)
    assert fifth.status_code == 409
    assert fifth.json()["detail"].startswith("every seat of this video room is taken (4 seats")

    listed = api.client.get(f"/api/rooms/{room['id']}/hosts", headers=headers).json()
    assert [(h["seat"], h["name"], h["creator"]) for h in listed] == [
        (1, "Ana", True),
        (2, "Bea", False),
        (3, "Cai", False),
        (4, "Dan", False),
    ]
    assert listed[0]["stream_key"] == room["stream_key"]


def test_an_audio_room_has_ten_seats(api: Api) -> None:
    room, headers = room_of(api, "audio")
    seats = [invite(api, room, headers, f"Speaker {n}")["seat"] for n in range(2, 11)]
    assert seats == list(range(2, 11))
    eleventh = api.client.post(
        f"/api/rooms/{room['id']}/hosts", json={"name": "One more"}, headers=headers
    )
    assert eleventh.status_code == 409 and "10 seats" in eleventh.json()["detail"]


def test_rename_not_recorded_rotate_and_remove(api: Api) -> None:
    room, headers = room_of(api, "video")
    base = f"/api/rooms/{room['id']}/hosts"
    bea = invite(api, room, headers, "Bea")
    cai = invite(api, room, headers, "Cai", recorded=False)
    assert cai["recorded"] is False

    renamed = api.client.patch(f"{base}/2", json={"name": "  Bea   B. "}, headers=headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Bea B."
    assert renamed.json()["stream_key"] == bea["stream_key"]
    recorded = api.client.patch(f"{base}/3", json={"recorded": True}, headers=headers)
    assert recorded.json()["recorded"] is True and recorded.json()["name"] == "Cai"

    rotated = api.client.post(f"{base}/2/rotate-key", headers=headers).json()
    assert rotated["stream_key"] != bea["stream_key"] and rotated["seat"] == 2
    assert api.catalog.seat_by_stream_key(bea["stream_key"]) is None
    seat = api.catalog.seat_by_stream_key(rotated["stream_key"])
    assert (seat.room.id, seat.number, seat.name, seat.removed) == (room["id"], 2, "Bea B.", False)

    assert api.client.delete(f"{base}/2", headers=headers).status_code == 204
    removed = api.catalog.seat_by_stream_key(rotated["stream_key"])
    assert removed is not None and removed.removed  # refused in words, not as unknown
    assert [h["seat"] for h in api.client.get(base, headers=headers).json()] == [1, 3]
    assert api.client.patch(f"{base}/2", json={"name": "x"}, headers=headers).status_code == 404
    # The freed seat goes to the next invitation, with a new key.
    again = invite(api, room, headers, "Fay")
    assert again["seat"] == 2 and again["stream_key"] != rotated["stream_key"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("patch", "/hosts/1", {"name": "x"}),
        ("post", "/hosts/1/rotate-key", None),
        ("delete", "/hosts/1", None),
    ],
)
def test_seat_one_is_the_creators_and_changes_through_the_room(
    api: Api, method, path, body
) -> None:
    room, headers = room_of(api, "video")
    reply = api.client.request(method, f"/api/rooms/{room['id']}{path}", json=body, headers=headers)
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("seat 1 is the room's creator")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\u0000b"}, "name"),
        ({}, "name"),
    ],
)
def test_bad_host_bodies_422(api: Api, body, field) -> None:
    room, headers = room_of(api, "video")
    reply = api.client.post(f"/api/rooms/{room['id']}/hosts", json=body, headers=headers)
    assert reply.status_code == 422
    assert any(e["loc"][-1] == field for e in reply.json()["errors"]), reply.json()


def test_seat_numbers_out_of_range_422(api: Api) -> None:
    room, headers = room_of(api, "video")
    for seat in ("0", "33", "two"):
        reply = api.client.delete(f"/api/rooms/{room['id']}/hosts/{seat}", headers=headers)
        assert reply.status_code == 422, seat
