"""Shared fixtures: a real SeaweedFS for the session, and the external store CI points us at.

The storage contract runs against every backend in `STORE_BACKENDS`: always the embedded
SeaweedFS, plus the store named by AWS_ENDPOINT_URL when it is set (Ceph's RADOS Gateway in CI).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import EmbeddedStore, ObjectStore, StoreConfig
from tests.utils.net import free_port

EXTERNAL = os.environ.get("AWS_ENDPOINT_URL")
EXTERNAL_NAME = os.environ.get("AFTERLIVE_TEST_STORE_NAME", "external")
STORE_BACKENDS = ["seaweedfs"] + ([EXTERNAL_NAME] if EXTERNAL else [])


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    """One real SeaweedFS for the whole session, started by afterlive's own supervisor."""
    embedded = EmbeddedStore(tmp_path_factory.mktemp("seaweedfs"), port=free_port())
    embedded.start()
    yield embedded
    embedded.stop()


def seaweedfs_config(embedded: EmbeddedStore, bucket: str, **overrides) -> StoreConfig:
    creds = embedded.credentials
    return StoreConfig(
        endpoint_url=embedded.endpoint_url,
        access_key_id=creds.access_key_id,
        secret_access_key=creds.secret_access_key,
        bucket=bucket,
        **overrides,
    )


def external_config(bucket: str, **overrides) -> StoreConfig:
    return StoreConfig(
        endpoint_url=EXTERNAL,
        access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        bucket=bucket,
        **overrides,
    )


@pytest.fixture(scope="session", params=STORE_BACKENDS)
def store_factory(request: pytest.FixtureRequest):
    """Makes ObjectStores on one backend, all on one fresh bucket for the session."""
    bucket = f"afterlive-test-{secrets.token_hex(4)}"

    def make(**overrides) -> ObjectStore:
        if request.param == "seaweedfs":
            embedded = request.getfixturevalue("seaweedfs")
            return ObjectStore(seaweedfs_config(embedded, bucket, **overrides))
        return ObjectStore(external_config(bucket, **overrides))

    make.backend = request.param  # type: ignore[attr-defined]
    first = make()
    first.ensure_bucket()
    yield make
    first.delete_many(info.key for info in first.list())


@pytest.fixture
def store(store_factory) -> ObjectStore:
    return store_factory()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's objects."""
    return f"t/{secrets.token_hex(6)}/"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
