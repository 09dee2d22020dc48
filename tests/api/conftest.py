"""The API in process: the real app on a real store (the session's SeaweedFS) and a real catalog,
with an injected clock. Media comes from `seed_recording`, which writes what the recorder writes
(segments, media and master playlists, catalog rows); the e2e suite plays real published media.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import Runtime, assemble
from api.settings import load_settings
from storage import Catalog, ObjectStore
from storage import keys as K
from storage.catalog import sqlite_url
from storage.models import Recording
from tests.conftest import seaweedfs_config
from tests.utils.clock import FakeClock
from tests.utils.net import free_port
from transcode.playlists import MasterPlaylist, MediaPlaylist, MediaSegment, Variant

ADMIN_TOKEN = "admin-" + secrets.token_urlsafe(24)


@dataclass(kw_only=True)
class Api:
    client: TestClient
    runtime: Runtime
    clock: FakeClock

    @property
    def catalog(self) -> Catalog:
        return self.runtime.catalog

    @property
    def store(self) -> ObjectStore:
        return self.runtime.store

    def creator(self, name: str | None = None) -> tuple[str, dict[str, str]]:
        """A new creator's id and the headers that authenticate as them."""
        creator, token = self.catalog.add_creator(name or f"creator-{secrets.token_hex(3)}")
        return creator.id, {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clock() -> FakeClock:
    # Near real time: presigned URLs signed at this time must be accepted by the real store.
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def api_factory(seaweedfs, tmp_path, clock) -> Iterator:
    started: list[TestClient] = []

    def make(*, retention_tags: bool = False, **settings) -> Api:
        data_dir = tmp_path / f"data-{len(started)}"
        config = load_settings(
            data_dir=data_dir, rtmp_port=free_port(), admin_token=ADMIN_TOKEN, **settings
        )
        store = ObjectStore(
            seaweedfs_config(
                seaweedfs, f"api-{secrets.token_hex(4)}", retention_tags=retention_tags
            )
        )
        store.ensure_bucket()
        catalog = Catalog(sqlite_url(tmp_path / f"catalog-{len(started)}.db"), now=clock)
        catalog.create_schema()
        runtime = assemble(config, store=store, catalog=catalog, now=clock)
        client = TestClient(create_app(config, runtime), base_url="http://127.0.0.1:8000")
        client.__enter__()
        started.append(client)
        return Api(client=client, runtime=runtime, clock=clock)

    yield make
    for client in started:
        client.__exit__(None, None, None)
        client.app.state.runtime.close()


@pytest.fixture
def api(api_factory) -> Api:
    return api_factory()


def seed_recording(
    api: Api,
    creator_id: str,
    *,
    title: str = "A room",
    kind: str = "video",
    segments: int = 3,
    ended: bool = True,
    renditions: tuple[str, ...] = ("source", "audio"),
) -> Recording:
    """A recording as the recorder leaves it: segments and playlists stored, rows indexed."""
    catalog, store = api.catalog, api.store
    room = catalog.add_room(creator_id=creator_id, title=title, kind=kind)
    recording = catalog.start_recording(room.id)
    start = api.clock()
    variants = []
    for name in renditions:
        playlist = MediaPlaylist(segments=[], playlist_type="EVENT", ended=ended)
        for seq in range(segments):
            at = start + timedelta(seconds=2 * seq)
            key = K.media_segment(recording.id, name, at, seq, "ts")
            data = f"{name} segment {seq}".encode()
            store.put_bytes(key, data)
            catalog.add_segment(
                recording_id=recording.id,
                rendition=name,
                sequence=seq,
                start_at=at,
                duration_s=2.0,
                key=key,
                size_bytes=len(data),
            )
            playlist.segments.append(
                MediaSegment(uri=key.rsplit("/", 1)[1], duration_s=2.0, program_date_time=at)
            )
        store.put_bytes(K.media_playlist(recording.id, name), playlist.render().encode())
        variant = Variant(uri=f"{name}/index.m3u8", bandwidth=800_000, codecs="mp4a.40.2")
        catalog.set_rendition(
            recording_id=recording.id,
            name=name,
            playlist_key=K.media_playlist(recording.id, name),
            codecs=variant.codecs,
            bandwidth=variant.bandwidth,
        )
        variants.append(variant)
    store.put_bytes(
        K.master_playlist(recording.id), MasterPlaylist(variants=variants).render().encode()
    )
    if ended:
        api.clock.advance(seconds=2 * segments)
        recording = catalog.end_recording(recording.id, retention=timedelta(hours=24))
    return catalog.recording(recording.id)
