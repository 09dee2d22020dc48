"""Programmes: every route and role in process on the real store, and a feed that feedparser
reads without complaint. Rendering episodes from real clips is in tests/e2e/test_episodes.py."""

from __future__ import annotations

import feedparser
import pytest

from storage import keys as K
from storage.models import Clip, new_id
from tests.api.conftest import Api

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def owner(api: Api) -> tuple[str, dict[str, str]]:
    return api.creator("Podcaster")


def new_programme(api: Api, headers, **fields) -> dict:
    body = {"title": "Night Talks", "description": "Late <conversations> & more", **fields}
    reply = api.client.post("/api/programmes", json=body, headers=headers)
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_create_list_get_patch_delete(api: Api, owner) -> None:
    _, headers = owner
    programme = new_programme(api, headers, author="Ada", language="fr", category="Technology")
    assert programme["feed_url"] == (
        f"{api.runtime.settings.api_url}/api/programmes/{programme['id']}/feed.xml"
    )
    assert programme["artwork_url"] is None
    assert api.client.get("/api/programmes", headers=headers).json() == [programme]
    got = api.client.get(f"/api/programmes/{programme['id']}", headers=headers).json()
    assert got == programme

    patched = api.client.patch(
        f"/api/programmes/{programme['id']}", json={"title": "Day Talks"}, headers=headers
    ).json()
    assert patched["title"] == "Day Talks" and patched["author"] == "Ada"
    assert b"Day Talks" in api.store.get(K.programme_feed(programme["id"]))

    reply = api.client.delete(f"/api/programmes/{programme['id']}", headers=headers)
    assert reply.status_code == 204
    assert api.client.get(f"/api/programmes/{programme['id']}", headers=headers).status_code == 404
    assert list(api.store.list(K.programme_prefix(programme["id"]))) == []


def test_roles(api: Api, owner) -> None:
    _, headers = owner
    programme = new_programme(api, headers)
    _, stranger = api.creator()
    base = f"/api/programmes/{programme['id']}"
    for method, path, body in (
        ("get", base, None),
        ("patch", base, {"title": "mine now"}),
        ("delete", base, None),
        ("put", f"{base}/artwork", None),
        ("post", f"{base}/episodes", {"title": "e", "clips": ["x"]}),
        ("get", f"{base}/episodes", None),
    ):
        reply = api.client.request(method, path, json=body, headers=stranger)
        assert reply.status_code == 403, (method, path, reply.text)
        assert reply.json() == {"detail": "this programme belongs to another creator"}
        assert api.client.request(method, path, json=body).status_code == 401
    assert api.client.get("/api/programmes/nope", headers=headers).status_code == 404
    # The feed is public.
    assert api.client.get(f"{base}/feed.xml").status_code == 200


def test_bad_programme_bodies_422(api: Api, owner) -> None:
    _, headers = owner
    for body in ({"title": ""}, {"title": "t", "language": "english!"}, {}):
        reply = api.client.post("/api/programmes", json=body, headers=headers)
        assert reply.status_code == 422, body


def test_artwork_upload(api: Api, owner) -> None:
    _, headers = owner
    programme = new_programme(api, headers)
    url = f"/api/programmes/{programme['id']}/artwork"
    bad = api.client.put(url, content=b"GIF89a....", headers=headers)
    assert bad.status_code == 422 and "JPEG or PNG" in bad.json()["detail"]
    jpeg = api.client.put(url, content=JPEG, headers=headers | {"Content-Type": "image/jpeg"})
    assert jpeg.status_code == 200
    assert jpeg.json()["artwork_url"].endswith(f"/api/programmes/{programme['id']}/artwork")
    assert api.store.get(K.programme_artwork(programme["id"], "jpg")) == JPEG
    png = api.client.put(url, content=PNG, headers=headers)
    assert png.status_code == 200
    assert api.store.head(K.programme_artwork(programme["id"], "jpg")) is None  # replaced
    redirect = api.client.get(url, follow_redirects=False)
    assert redirect.status_code == 302
    assert "X-Amz-Signature=" in redirect.headers["location"]


def test_feed_parses_clean(api: Api, owner) -> None:
    _, headers = owner
    programme = new_programme(api, headers, author="Ada & Bob", explicit=True)
    api.client.put(f"/api/programmes/{programme['id']}/artwork", content=JPEG, headers=headers)
    reply = api.client.get(f"/api/programmes/{programme['id']}/feed.xml")
    assert reply.headers["content-type"] == "application/rss+xml; charset=utf-8"
    feed = feedparser.parse(reply.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.title == "Night Talks"
    assert feed.feed.subtitle == "Late <conversations> & more" or feed.feed.description
    assert feed.feed.author_detail.name == "Ada & Bob"
    # Apple's current values are true/false (feedparser only maps the older yes/clean).
    assert b"<itunes:explicit>true</itunes:explicit>" in reply.content
    assert feed.feed.image.href.endswith("/artwork")
    assert feed.feed.language == "en"
    assert [t.term for t in feed.feed.tags] == ["Society & Culture"]
    assert feed.entries == []  # nothing published yet
    assert api.store.get(K.programme_feed(programme["id"])) == reply.content


def test_episode_recipes_are_checked(api: Api, owner) -> None:
    creator_id, headers = owner
    programme = new_programme(api, headers)
    other_id, _ = api.creator()
    recording = api.catalog.start_recording(
        api.catalog.add_room(creator_id=creator_id, title="r", kind="audio").id
    )

    def clip(owner_id: str, status: str, duration: float = 30.0) -> str:
        row = Clip(
            id=new_id(),
            creator_id=owner_id,
            recording_id=recording.id,
            title="c",
            start_s=0,
            end_s=duration,
            status=status,
            prefix="clips/x/",
            duration_s=duration,
            created_at=api.clock(),
        )
        with api.catalog.session() as s:
            s.add(row)
        return row.id

    url = f"/api/programmes/{programme['id']}/episodes"
    for clips, code, words in (
        (["nope"], 422, "no clip nope"),
        ([clip(creator_id, "running")], 422, "is running, not done yet"),
        ([clip(other_id, "done")], 403, "belongs to another creator"),
        ([clip(creator_id, "done", duration=0.5)], 422, "not longer than the crossfade"),
        ([], 422, ""),
    ):
        reply = api.client.post(url, json={"title": "Ep", "clips": clips}, headers=headers)
        assert reply.status_code == code, (clips, reply.text)
        assert words in str(reply.json()["detail"])
    body = {"title": "Ep", "clips": [clip(creator_id, "done")], "chapters": "hosts"}
    reply = api.client.post(url, json=body, headers=headers)
    assert reply.status_code == 422 and "'clips' or 'speakers'" in str(reply.json()["detail"])
