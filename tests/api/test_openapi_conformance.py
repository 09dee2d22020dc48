"""The API does what its OpenAPI document says: schemathesis generates requests for every
operation of the app's own `/openapi.json` (valid and invalid ones), sends them to the real app on
the real store and catalog, and checks every answer: no 5xx, no status the operation does not
document, content types and bodies (errors included) as documented.

Once with a creator's token, once with the admin's. Path parameters are drawn either as generated
or from rows seeded here (a creator's recordings live, ended and expired, a done clip and a done
episode with their files in the store, another creator's programme), and bodies at times replaced
by ones that do real work (a clip, an episode, artwork, a hold), so requests reach past the 404s
and 422s into the routes' work; a delete or a takedown gets a target made for it.

Bounded examples find what is near the schema's edges (schemathesis's coverage phase tries each
declared bound and one past it) more surely than a value far outside them: the explicit cases
(2^63, NaN, naive times, NUL) are in tests/api/test_input.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from api.app import create_app
from api.runtime import assemble
from api.settings import load_settings
from storage import Catalog, ObjectStore
from storage import keys as K
from storage.catalog import sqlite_url
from storage.models import Clip, Episode, Recording, new_id
from tests.api.conftest import ADMIN_TOKEN, Api, seed_recording
from tests.conftest import seaweedfs_config
from tests.utils.clock import FakeClock
from tests.utils.net import free_port

pytestmark = pytest.mark.slow

# An HTTP push body is raw bytes (MPEG-TS), sent as they are.
schemathesis.serializer.alias("video/mp2t", "application/octet-stream")

# Generated examples per operation and role: 41 operations, two roles, ~50 s on 2 cores.
EXAMPLES = 40
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


@dataclass(kw_only=True)
class World:
    api: Api
    creator_id: str
    creator_token: str
    # Real values each path parameter may take, besides generated ones.
    real: dict[str, list[str]] = field(default_factory=dict)
    # Bodies that do real work on a real target, sent instead of the generated body at times.
    good: dict[str, object] = field(default_factory=dict)

    @property
    def client(self) -> TestClient:
        return self.api.client

    def throwaway(self, operation: str) -> str | None:
        """A target made for one destructive call, so the seeded ones stay for the others."""
        headers = {"Authorization": f"Bearer {self.creator_token}"}
        if operation == "DELETE /api/programmes/{programme_id}":
            reply = self.client.post("/api/programmes", json={"title": "x"}, headers=headers)
            return reply.json()["id"]
        if operation == "DELETE /api/admin/recordings/{recording_id}":
            return seed_recording(self.api, self.creator_id, segments=1).id
        return None


@pytest.fixture(scope="module")
def world(seaweedfs, tmp_path_factory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("conformance")
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    config = load_settings(data_dir=tmp / "data", rtmp_port=free_port(), admin_token=ADMIN_TOKEN)
    store = ObjectStore(seaweedfs_config(seaweedfs, f"oas-{secrets.token_hex(4)}"))
    store.ensure_bucket()
    catalog = Catalog(sqlite_url(tmp / "catalog.db"), now=clock)
    catalog.create_schema()
    runtime = assemble(config, store=store, catalog=catalog, now=clock)
    client = TestClient(create_app(config, runtime), base_url="http://127.0.0.1:8000")
    with client:
        api = Api(client=client, runtime=runtime, clock=clock)
        yield seed(api)
    runtime.close()


def seed(api: Api) -> World:
    creator_id, headers = api.creator("conformance")
    other_id, other = api.creator("someone-else")
    ended = seed_recording(api, creator_id, title="ended")
    live = seed_recording(api, creator_id, title="live", ended=False)
    gone = seed_recording(api, creator_id, title="expired")
    with api.catalog.session() as s:
        row = s.get(Recording, gone.id)
        row.status, row.deleted_at = "expired", api.clock()
    clip = Clip(
        id=new_id(),
        creator_id=creator_id,
        recording_id=ended.id,
        title="a clip",
        start_s=0,
        end_s=4,
        status="done",
        prefix=K.clip_prefix("x"),
        duration_s=4,
        created_at=api.clock(),
    )
    with api.catalog.session() as s:
        s.add(clip)
    api.store.put_bytes(
        K.clip_master(clip.id), b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nsource/index.m3u8\n"
    )
    api.store.put_bytes(
        K.clip_media_playlist(clip.id, "source"),
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n",
    )
    programme = api.client.post("/api/programmes", json={"title": "Show"}, headers=headers).json()
    theirs = api.client.post("/api/programmes", json={"title": "Theirs"}, headers=other).json()
    episode = Episode(
        id=new_id(),
        programme_id=programme["id"],
        title="Episode 1",
        status="done",
        audio_key=K.episode_audio(programme["id"], "e1"),
        duration_s=4,
        published_at=api.clock(),
        created_at=api.clock(),
        number=1,
        rendered={"hls_key": K.clip_media_playlist(clip.id, "source"), "chapters": []},
    )
    with api.catalog.session() as s:
        s.add(episode)
    theirs_room = api.catalog.add_room(creator_id=other_id, title="x", kind="audio")
    rooms = [ended.room_id, live.room_id, theirs_room.id]
    return World(
        api=api,
        creator_id=creator_id,
        creator_token=headers["Authorization"].removeprefix("Bearer "),
        real={
            "recording_id": [ended.id, live.id, gone.id],
            "room_id": rooms,
            "clip_id": [clip.id],
            "programme_id": [programme["id"], theirs["id"]],
            "episode_id": [episode.id],
            "rendition": ["source", "audio"],
            "ext": ["mp3", "m4a"],
        },
        good={
            "POST /api/recordings/{recording_id}/clips": {"title": "c", "start_s": 0, "end_s": 2},
            "POST /api/programmes/{programme_id}/episodes": {"title": "e", "clips": [clip.id]},
            "PUT /api/programmes/{programme_id}/artwork": b"\xff\xd8\xff\xe0" + b"\0" * 64,
            "POST /api/admin/recordings/{recording_id}/extend": {"hours": 1},
            "POST /api/admin/recordings/{recording_id}/hold": {"reason": "legal"},
        },
    )


@pytest.fixture(scope="module")
def api_schema(world: World):
    return schemathesis.openapi.from_dict(world.client.app.openapi())


schema = schemathesis.pytest.from_fixture("api_schema")


def call_and_check(case, world: World, token: str, data) -> None:
    operation = case.operation.label
    for name, values in world.real.items():
        if name in (case.path_parameters or {}) and data.draw(st.booleans(), label=name):
            target = world.throwaway(operation) or data.draw(st.sampled_from(values), label=name)
            case.path_parameters[name] = target
    if operation in world.good and data.draw(st.booleans(), label="good body"):
        case.body = world.good[operation]
    kwargs = case.as_transport_kwargs(
        base_url="http://127.0.0.1:8000", headers={"Authorization": f"Bearer {token}"}
    )
    kwargs.pop("cookies", None)
    if "data" in kwargs:  # requests' raw body is httpx's `content`
        kwargs["content"] = kwargs.pop("data")
    response = world.client.request(**kwargs, follow_redirects=False)
    case.validate_response(response, checks=CHECKS)


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@schema.parametrize()
@schema.given(data=st.data())
@_SETTINGS
def test_as_a_creator(case, data, world: World) -> None:
    call_and_check(case, world, world.creator_token, data)


@schema.parametrize()
@schema.given(data=st.data())
@_SETTINGS
def test_as_the_admin(case, data, world: World) -> None:
    call_and_check(case, world, ADMIN_TOKEN, data)
